"""Evaluation reports: the per-class table, the JSON report and the confusion-matrix files."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_write, atomic_write_text, save_npy
from .metrics import Scores, subset_mean_iou


def _pct(value: float) -> str:
    return "     -" if math.isnan(value) else f"{100 * value:6.2f}"


def class_table(s: Scores, class_names: Sequence[str], subset: Sequence[int] | None = None) -> str:
    """Per-class IoU and accuracy (in %), then the summary metrics, as fixed-width text.

    A class absent from both ground truth and predictions has no IoU: shown as ``-`` and
    marked, and left out of the means. With ``subset`` (``--classes``), its classes are marked
    ``*`` and their mean IoU follows the full one.
    """
    width = max([len("class")] + [len(n) for n in class_names])
    lines = [f"{'#':>3}  {'class':<{width}}  {'IoU %':>6}  {'acc %':>6}", "-" * (width + 23)]
    for i, name in enumerate(class_names):
        note = "" if s.present[i] else "  (absent: not in ground truth or predictions)"
        mark = "*" if subset is not None and i in subset else " "
        lines.append(f"{i:>3}{mark} {name:<{width}}  {_pct(s.iou[i])}  {_pct(s.accuracy[i])}{note}")
    lines.append("-" * (width + 23))
    present = int(np.sum(s.present))
    lines += [
        f"mean IoU            {_pct(s.mean_iou)}  (over {present} of {len(class_names)} classes)",
    ]
    if subset is not None:
        lines.append(
            f"mean IoU *          {_pct(subset_mean_iou(s.iou, subset))}  (over the {len(subset)} classes marked *)"
        )
    lines += [
        f"pixel accuracy      {_pct(s.pixel_accuracy)}",
        f"mean accuracy       {_pct(s.mean_accuracy)}",
        f"frequency-weighted  {_pct(s.frequency_weighted_iou)}  (IoU)",
    ]
    return "\n".join(lines)


def build_report(
    s: Scores, matrix: np.ndarray, class_names: Sequence[str], subset: Sequence[int] | None = None, **info
) -> dict:
    """The JSON report: every metric (``null`` where undefined), the matrix, and ``info`` (run details).

    With ``subset`` (``--classes``): ``class_subset`` (its class names), ``class_subset_indices`` and
    ``subset_mean_iou``.
    """
    report = s.as_dict(class_names)
    if subset is not None:
        subset_miou = subset_mean_iou(s.iou, subset)
        report["class_subset"] = [class_names[i] for i in subset]
        report["class_subset_indices"] = [int(i) for i in subset]
        report["subset_mean_iou"] = None if math.isnan(subset_miou) else subset_miou
    report["class_names"] = list(class_names)
    report["confusion_matrix"] = np.asarray(matrix, dtype=np.int64).tolist()
    report["confusion_matrix_axes"] = "rows: ground truth, columns: prediction"
    report["pixels_scored"] = int(np.asarray(matrix).sum())
    report.update(info)
    return report


def confusion_image(matrix: np.ndarray, class_names: Sequence[str], cell: int = 24) -> Image.Image:
    """A row-normalised confusion-matrix heat map (rows ground truth, columns prediction).

    Each cell's darkness is the fraction of that class's ground-truth pixels predicted as the
    column's class; rows without ground truth are left white.
    """
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(rows > 0, m / rows, 0.0)
    n = len(class_names)
    font = ImageFont.load_default()
    label_w = 8 + 7 * max([len(c) for c in class_names] + [len("ground truth")])
    top = label_w  # column names are written rotated, so they need the same room
    size = (label_w + n * cell + 1, top + n * cell + 1)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for r in range(n):
        for c in range(n):
            shade = int(round(255 * (1.0 - frac[r, c])))
            x0, y0 = label_w + c * cell, top + r * cell
            colour = (shade, shade, 255) if r == c else (255, shade, shade)
            draw.rectangle([x0, y0, x0 + cell, y0 + cell], fill=colour, outline=(200, 200, 200))
        draw.text((4, top + r * cell + cell // 2 - 5), class_names[r], fill="black", font=font)
    header = Image.new("RGB", (top, n * cell), "white")
    hdraw = ImageDraw.Draw(header)
    for c in range(n):
        hdraw.text((4, c * cell + cell // 2 - 5), class_names[c], fill="black", font=font)
    img.paste(header.rotate(90, expand=True), (label_w, 0))
    draw.text((4, 4), "rows:", fill="black", font=font)
    draw.text((4, 16), "ground truth", fill="black", font=font)
    draw.text((4, 32), "columns:", fill="black", font=font)
    draw.text((4, 44), "prediction", fill="black", font=font)
    return img


REPORT_FILES = ("report.json", "confusion.npy", "confusion.png")


def write_reports(out_dir: str | Path, report: dict, matrix: np.ndarray, class_names: Sequence[str]) -> list[Path]:
    """Write ``report.json``, ``confusion.npy`` and ``confusion.png`` into ``out_dir`` (each atomically)."""
    paths = [Path(out_dir) / name for name in REPORT_FILES]
    atomic_write_text(paths[0], json.dumps(report, indent=2) + "\n")
    save_npy(paths[1], np.asarray(matrix, dtype=np.int64))
    image = confusion_image(matrix, class_names)
    atomic_write(paths[2], lambda tmp: image.save(tmp, format="PNG"))
    return paths
