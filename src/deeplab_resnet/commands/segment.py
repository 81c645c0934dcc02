"""``deeplab segment``: label PNGs, overlays, masks, probabilities and class summaries for images."""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DeepLabError

if TYPE_CHECKING:
    from concurrent.futures import Future
from .common import (
    add_backend_argument,
    add_crf_arguments,
    add_model_arguments,
    add_network_size_arguments,
    add_protocol_arguments,
    add_tile_arguments,
    expand_inputs,
    float_between,
    int_at_least,
    prepare_segment_run,
    segmenter_from_args,
)
from .segment_video import add_video_arguments, run_videos, wants_video_run

DESCRIPTION = (
    "Segment images (files, directories, globs such as 'photos/*.jpg', or list files *.txt): for each "
    "input writes NAME.png (palette PNG of class indices, VOC colours) and NAME_overlay.jpg (the image "
    "blended with the colour mask) into --output-dir, and prints the classes found. Videos "
    "(.mp4 .mov .avi .mkv .webm .m4v) give NAME_overlay.mp4 (see the video options)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, directories, globs or list files (.txt)")
    add_model_arguments(p)
    p.add_argument("-o", "--output-dir", default="segmentation", help="where to write results (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="base directory of the paths in list files (default: the list's)")
    add_network_size_arguments(p, max_size_note="; outputs stay full size")
    p.add_argument("--flip", action="store_true", help="also run the mirrored image and average the logits")
    add_tile_arguments(p, instead_of=" (instead of --max-size)")
    p.add_argument(
        "--max-pixels", type=int_at_least(0), default=80_000_000,
        help="refuse images with more pixels than this before decoding them (0 = no limit; default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--alpha", type=float_between(0, 1), default=0.5, help="overlay opacity of the mask (default: %(default)s)"
    )
    p.add_argument("--save-mask", action="store_true", help="also write NAME_mask.png, the colour mask alone")
    p.add_argument(
        "--save-probs", action="store_true",
        help="also write NAME_probs.npy: float32 H x W x C class probabilities at the image size (after any CRF)",
    )  # fmt: skip
    p.add_argument(
        "--save-logits", action="store_true",
        help="also write NAME_logits.npy: float32 H x W x C logits at the image size, after the model's upsampling",
    )  # fmt: skip
    p.add_argument(
        "--json", nargs="?", const="-", default=None, metavar="FILE",
        help="write the per-image class summaries as JSON to FILE (or one JSON line per image on stdout)",
    )  # fmt: skip
    add_video_arguments(p)
    add_protocol_arguments(p)
    add_crf_arguments(p)
    add_backend_argument(p)


def write_outputs(args, rgb, result, plan: dict[str, Path]) -> list[str]:
    """Write one image's results to the paths of ``plan`` (each atomically); the paths written."""
    from PIL import Image

    from ..atomic import save_npy
    from ..images import colorize, label_image, overlay, save_image

    save_image(label_image(result.labels, result.dataset), plan["labels"])
    save_image(Image.fromarray(overlay(rgb, result.labels, result.dataset, alpha=args.alpha)), plan["overlay"])
    if "mask" in plan:
        save_image(Image.fromarray(colorize(result.labels, result.dataset)), plan["mask"])
    if "probs" in plan:
        save_npy(plan["probs"], result.probs)
    if "logits" in plan:
        save_npy(plan["logits"], result.logits)
    return [str(p) for p in plan.values()]


def _output_kinds(args: argparse.Namespace) -> list[str]:
    extra = [("mask", args.save_mask), ("probs", args.save_probs), ("logits", args.save_logits)]
    return ["labels", "overlay"] + [kind for kind, wanted in extra if wanted]


def _write_and_summarise(args, path: Path, rgb, result, plan: dict[str, Path]) -> dict:
    """The writer thread's job for one image: its outputs, then its summary."""
    written = write_outputs(args, rgb, result, plan)
    classes = dict(sorted(result.class_pixels().items(), key=lambda kv: -kv[1]))
    summary = {"image": str(path), "height": rgb.shape[0], "width": rgb.shape[1], "classes": classes}
    summary["outputs"] = written
    return summary


def _print_summary(args, summary: dict) -> None:
    if args.json == "-":
        print(json.dumps(summary), flush=True)
    else:
        classes = summary["classes"]
        print(f"{summary['image']}: " + ", ".join(f"{k} {v}" for k, v in classes.items()), flush=True)


# Decode the next image and write the last one's results in background threads while the network
# runs (the results are the same either way; False runs everything in order in this thread).
BACKGROUND_IO = True


def _segment_all(args, segmenter, paths: list[Path], plans: list[dict[str, Path]], out_dir: Path) -> tuple[list, int]:
    """Segment every image, in order: (the summaries of those done, how many failed).

    A failure is one line per file and the run goes on; with one input, or when the disk is full
    (every later write would fail too), it is raised after saying what is complete. Messages and
    summaries come in input order, each once its image's outputs are written.
    """
    from ..background import InOrderWorker, read_ahead
    from ..errors import is_disk_full
    from ..images import read_image

    failures, summaries, pending = 0, [], deque()

    def finish_oldest() -> None:
        nonlocal failures
        try:
            summaries.append(pending.popleft().result())
        except (DeepLabError, OSError) as exc:
            if len(paths) == 1:
                raise
            if is_disk_full(exc):  # every later write would fail too: stop, saying what is complete
                _report(args, summaries, failures, out_dir, stopped=True)
                raise
            _print_skipped(exc)
            failures += 1
            return
        _print_summary(args, summaries[-1])

    inline = not BACKGROUND_IO
    reader = InOrderWorker("deeplab-read", inline=inline)
    with reader, InOrderWorker("deeplab-write", halt_on=is_disk_full, inline=inline) as writer:
        images = read_ahead(reader, paths, lambda path: read_image(path, max_pixels=args.max_pixels))
        for path, plan, image in zip(paths, plans, images):
            pending.append(_segment_and_queue(args, segmenter, writer, path, image, plan))
            while pending and (len(pending) > 2 or pending[0].done()):
                finish_oldest()
        while pending:
            finish_oldest()
    return summaries, failures


def _segment_and_queue(args, segmenter, writer, path: Path, image: Future, plan: dict[str, Path]) -> Future:
    """Run the network on a decoded image and queue its writes; a failure so far becomes a failed job."""
    from ..background import failed_job

    try:
        rgb = image.result()
        result = segmenter(rgb, return_probs=args.save_probs, return_logits=args.save_logits)
    except (DeepLabError, OSError) as exc:
        return failed_job(exc)
    return writer.submit(_write_and_summarise, args, path, rgb, result, plan)


def _print_skipped(exc: BaseException) -> None:
    from ..errors import describe_os_error

    reason = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
    print(f"skipped: {reason}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write_text
    from ..errors import EXIT_PARTIAL
    from ..inference import protocol
    from ..outputs import unique_inputs

    paths = unique_inputs(expand_inputs(args.inputs, args.data_dir))
    if wants_video_run(args, paths):
        return run_videos(args, paths)
    out_dir = Path(args.output_dir)
    plans, crf, scales, device, model, pad_size = prepare_segment_run(args, paths, _output_kinds(args))
    protocol.check_scales_for_images(
        paths, scales, model.convention, max_size=args.max_size or None, pad_size=pad_size, tile=args.tile
    )
    segmenter = segmenter_from_args(args, model, device, scales=scales, crf=crf, pad_size=pad_size)
    summaries, failures = _segment_all(args, segmenter, paths, plans, out_dir)
    if args.json not in (None, "-"):
        atomic_write_text(args.json, json.dumps(summaries, indent=2) + "\n")
    _report(args, summaries, failures, out_dir)
    return EXIT_PARTIAL if failures else 0


def _report(args, summaries: list[dict], failures: int, out_dir: Path, stopped: bool = False) -> None:
    message = f"wrote {len(summaries)} result(s) to {out_dir}" + (f"; {failures} failed" if failures else "")
    if stopped and summaries:
        message += f"; stopped after {summaries[-1]['image']}"
    if stopped:
        print(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr if args.json == "-" else sys.stdout)
