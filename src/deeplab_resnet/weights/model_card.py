"""The ``README.md`` model card of a model folder for the Hub.

YAML front matter for the Hub (``library_name``, ``pipeline_tag``, ``tags``, and ``license`` and
``datasets`` when given; with an evaluation report, a ``model-index`` entry with its mean IoU),
then what a reader needs: how to load the model, its classes and colours, its convention, where
the weights came from and the paper to cite, and the scores of a ``report.json`` that
``deeplab evaluate`` wrote (mean IoU, per-class IoU, the list scored and the test protocol).
Values in the front matter are written as JSON strings, which YAML reads as they are.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from ..errors import DeepLabError
from .hub_config import LIBRARY_NAME
from .native import WeightsMeta
from .registry import CITATION

DEFAULT_TAGS = ("semantic-segmentation", "deeplab", "deeplab-v2", "resnet-101", "pytorch")
# The protocol fields of a report.json (commands/evaluate.py writes them), in the order shown.
PROTOCOL_KEYS = ("scales", "pad_size", "flip", "crf", "input_size", "tile", "convention")


def read_report(path: str | Path) -> dict:
    """A ``report.json`` of ``deeplab evaluate``, checked for what the card shows."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DeepLabError(f"--report {path}: file not found (deeplab evaluate writes report.json)") from exc
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DeepLabError(f"--report {path}: not readable JSON ({exc.__class__.__name__})") from exc
    if not isinstance(report, dict) or not isinstance(report.get("per_class"), dict) or "mean_iou" not in report:
        raise DeepLabError(f"--report {path}: not a report.json of deeplab evaluate (no mean_iou / per_class)")
    return report


def check_report_classes(report: dict, class_names: Sequence[str], where: str) -> None:
    """A report scores these weights' classes, or it belongs to another model."""
    names = report.get("class_names", list(report["per_class"]))
    if list(names) != list(class_names):
        raise DeepLabError(
            f"{where}: the report scores classes {list(names)[:4]}... but the weights have {list(class_names)[:4]}...; "
            "give the report of an evaluation of these weights"
        )


def _pct(value: object) -> str:
    return "-" if not isinstance(value, (int, float)) or math.isnan(value) else f"{100 * value:.2f}"


def _front_matter(meta: WeightsMeta, report: dict | None, license: str | None, datasets: Sequence[str],
                  tags: Sequence[str]) -> list[str]:  # fmt: skip
    lines = ["---", f"library_name: {LIBRARY_NAME}", "pipeline_tag: image-segmentation"]
    if license:
        lines.append(f"license: {json.dumps(license)}")
    lines.append("tags:")
    lines += [f"- {json.dumps(t)}" for t in dict.fromkeys([*DEFAULT_TAGS, *tags])]
    if datasets:
        lines.append("datasets:")
        lines += [f"- {json.dumps(d)}" for d in datasets]
    if report is not None and isinstance(report.get("mean_iou"), (int, float)):
        dataset = datasets[0] if datasets else meta.dataset.name
        lines += [
            "model-index:",
            f"- name: {json.dumps(meta.architecture.get('name', 'deeplab_v2_resnet101'))}",
            "  results:",
            "  - task:",
            "      type: image-segmentation",
            "    dataset:",
            f"      name: {json.dumps(meta.dataset.name)}",
            f"      type: {json.dumps(dataset)}",
            "    metrics:",
            "    - type: mean_iou",
            f"      value: {round(100 * report['mean_iou'], 2)}",
            "      name: mean IoU (%)",
        ]
    return [*lines, "---", ""]


def _classes_section(meta: WeightsMeta) -> list[str]:
    lines = ["## Classes", "", "| # | class | colour (RGB) |", "|---|---|---|"]
    for i, (name, rgb) in enumerate(zip(meta.dataset.class_names, meta.dataset.palette)):
        lines.append(f"| {i} | {name} | {tuple(rgb)} |")
    lines += ["", f"Ignore label: {meta.dataset.ignore_label}; input mean (BGR): {list(meta.dataset.mean_bgr)}.", ""]
    return lines


def _metrics_section(report: dict) -> list[str]:
    lines = ["## Evaluation", ""]
    scored = report.get("data_list") or report.get("predictions") or "?"
    lines.append(f"Scored by `deeplab evaluate` on `{scored}` ({report.get('images', '?')} images).")
    lines += [
        "",
        f"- mean IoU: **{_pct(report.get('mean_iou'))} %**",
        f"- pixel accuracy: {_pct(report.get('pixel_accuracy'))} %",
        f"- mean accuracy: {_pct(report.get('mean_accuracy'))} %",
        "",
        "Test protocol: " + ", ".join(f"{k} = {json.dumps(report[k])}" for k in PROTOCOL_KEYS if k in report),
        "",
        "| class | IoU % |",
        "|---|---|",
    ]
    for name, row in report["per_class"].items():
        lines.append(f"| {name} | {_pct(row.get('iou') if isinstance(row, dict) else None)} |")
    return [*lines, ""]


def model_card(
    meta: WeightsMeta, *, report: dict | None = None, repo_id: str | None = None, license: str | None = None,
    datasets: Sequence[str] = (), tags: Sequence[str] = (),
) -> str:  # fmt: skip
    """The model card of the weights ``meta`` describes (and of the evaluation ``report``, if given)."""
    name = repo_id or meta.architecture.get("name", "deeplab_v2_resnet101")
    spec = f"hf://{repo_id}" if repo_id else "hf://OWNER/REPO"
    lines = _front_matter(meta, report, license, datasets, tags)
    lines += [
        f"# {name}",
        "",
        f"DeepLab-v2 (DeepLab-ResNet) semantic segmentation, {meta.num_classes} classes ({meta.dataset.name}), "
        "for the `deeplab_resnet` package (`pip install 'deeplab_resnet[hub]'`).",
        "",
        "```",
        f"deeplab segment photo.jpg --weights {spec}",
        "```",
        "",
        "```python",
        "import deeplab_resnet as dl",
        f'model = dl.from_pretrained("{repo_id or "OWNER/REPO"}")',
        "```",
        "",
        f"Convention: `{meta.convention}` (the numerics of the original "
        f"{'Caffe release' if meta.convention == 'caffe' else 'TensorFlow port'}); "
        f"architecture: `{json.dumps(meta.architecture)}`.",
        "",
        *_classes_section(meta),
        "## Source",
        "",
        f"Weights: {meta.source or 'not recorded'}.",
        "",
        f"Please cite: {CITATION}",
        "",
    ]
    if report is not None:
        lines += _metrics_section(report)
    return "\n".join(lines)
