"""``deeplab segment`` on video files: ``NAME_overlay.mp4`` and, with ``--save-labels``, ``NAME_labels.mkv``.

``commands/segment.py`` hands its inputs here when they are videos (by suffix: ``.mp4 .mov .avi
.mkv .webm .m4v``); the work is done by :func:`deeplab_resnet.inference.video.segment_video`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DeepLabError
from .common import int_at_least, prepare_segment_run, segmenter_from_args

# A copy of video.VIDEO_SUFFIXES (a test checks they agree), so that building the parser and
# telling videos from images imports nothing heavy.
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
# Image-only options, and what a video run writes instead.
IMAGE_ONLY = ("save_mask", "save_probs", "save_logits")
# Video-only options and their defaults (--batch-size is left alone: it does nothing for images).
VIDEO_ONLY = {"save_labels": False, "every": 1, "max_frames": None}


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "video inputs (" + " ".join(VIDEO_SUFFIXES) + ")",
        "Each video gives NAME_overlay.mp4: every frame blended with its colour mask, at the input's size, "
        "frame count and frame times, with the input's sound (H.264; MPEG-4 Part 2 where PyAV lacks libx264). Needs "
        "pip install 'deeplab_resnet[video]'. Videos and images go in separate runs.",
    )
    g.add_argument(
        "--save-labels", action="store_true",
        help="also write NAME_labels.mkv: the class index of every pixel of every frame, lossless (FFV1, 8-bit "
        "grey; read it back with deeplab_resnet.video.read_labels)",
    )  # fmt: skip
    g.add_argument(
        "--every", type=int_at_least(1), default=1, metavar="N",
        help="segment frames 0, N, 2N, ... only; the frames between keep the labels of the last segmented frame, "
        "so the outputs still have every frame (default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--max-frames", type=int_at_least(1), default=None, metavar="K",
        help="stop after the first K frames of each video (default: all)",
    )  # fmt: skip
    g.add_argument(
        "--batch-size", type=int_at_least(1), default=1, metavar="N",
        help="frames through the network at once (more uses more memory; helps on a GPU; default: %(default)s)",
    )  # fmt: skip


def is_video_path(path: Path) -> bool:
    """Whether ``path`` is a video, by its suffix."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def wants_video_run(args: argparse.Namespace, paths: list[Path]) -> bool:
    """Whether ``paths`` are videos (then :func:`run_videos` segments them); refuses a mix of videos
    and images, and video options given for images."""
    videos = [p for p in paths if is_video_path(p)]
    if videos and len(videos) < len(paths):
        image = next(p for p in paths if not is_video_path(p))
        raise DeepLabError(f"{image} is not a video but {videos[0]} is: segment videos and images in separate runs")
    if not videos:
        given = [name for name, default in VIDEO_ONLY.items() if getattr(args, name) != default]
        if given:
            raise DeepLabError(f"--{given[0].replace('_', '-')} is for video inputs ({' '.join(VIDEO_SUFFIXES)})")
    return bool(videos)


def _check_options(args: argparse.Namespace) -> None:
    for name in IMAGE_ONLY:
        if getattr(args, name):
            raise DeepLabError(
                f"--{name.replace('_', '-')} is for images; a video gives NAME_overlay.mp4 and, with --save-labels, "
                "NAME_labels.mkv"
            )


def _readable_videos(paths: list[Path], plans: list[dict]) -> tuple[list[tuple[Path, dict, tuple[int, int]]], int]:
    """The videos whose first frame decodes, with their plans and frame sizes, found before the
    network's engine is built (which may take a while); the others are skipped as when they are
    segmented, or, as the only input, are the error. Also returns how many were skipped."""
    from ..video import frame_size

    readable, failures = [], 0
    for path, plan in zip(paths, plans):
        try:
            readable.append((path, plan, frame_size(path)))
        except (DeepLabError, OSError) as exc:
            failures += _skip_or_raise(exc, len(paths))
    return readable, failures


def _check_scales(args: argparse.Namespace, videos, scales, convention: str, pad_size) -> None:
    """``--scales`` against each video's frame size, before anything runs (as for images)."""
    from ..inference import protocol

    if tuple(scales) == (1.0,):
        return
    for path, _, (height, width) in videos:
        net = protocol.network_size(height, width, max_size=args.max_size or None, pad_size=pad_size, tile=args.tile)
        protocol.check_scales(*net, scales, convention, what=f"the network input for {path.name}")


def run_videos(args: argparse.Namespace, paths: list[Path]) -> int:
    """Segment every video of ``paths``; the exit status (as for images: 1 if some were skipped)."""
    from ..atomic import atomic_write_text
    from ..errors import EXIT_PARTIAL
    from ..video import import_av

    _check_options(args)
    import_av()  # say so now if PyAV is missing, before the model is loaded
    out_dir = Path(args.output_dir)
    json_file = [Path(args.json)] if args.json not in (None, "-") else []
    kinds = ["video_overlay"] + (["video_labels"] if args.save_labels else [])
    plans, crf, scales, device, model, pad_size = prepare_segment_run(args, paths, kinds)
    videos, failures = _readable_videos(paths, plans)
    _check_scales(args, videos, scales, model.convention, pad_size)
    segmenter = segmenter_from_args(args, model, device, scales=scales, crf=crf, pad_size=pad_size) if videos else None
    summaries = []
    for path, plan, _ in videos:
        try:
            summaries.append(_segment_one(args, segmenter, path, plan))
        except (DeepLabError, OSError) as exc:
            failures += _skip_or_raise(exc, len(paths))
    if json_file:
        atomic_write_text(json_file[0], json.dumps(summaries, indent=2) + "\n")
    incomplete = sum(not s["complete"] for s in summaries)
    message = f"wrote {len(summaries)} result(s) to {out_dir}" + (f"; {failures} failed" if failures else "")
    print(
        message + (f"; {incomplete} truncated" if incomplete else ""),
        file=sys.stderr if args.json == "-" else sys.stdout,
    )
    return EXIT_PARTIAL if failures or incomplete else 0


def _skip_or_raise(exc: Exception, inputs: int) -> int:
    """As for images: with several inputs a bad one is skipped (1 is returned), else it is the error."""
    from ..errors import describe_os_error, is_disk_full

    if inputs == 1 or is_disk_full(exc):
        raise exc
    print(f"skipped: {describe_os_error(exc) if isinstance(exc, OSError) else exc}", file=sys.stderr)
    return 1


def _segment_one(args: argparse.Namespace, segmenter, path: Path, plan: dict[str, Path]) -> dict:
    from ..inference.video import segment_video
    from ..progress import Progress

    with Progress(path.name, unit="frames") as progress:

        def on_frames(done: int, total: int | None) -> None:
            progress.total = total
            progress.set(done)

        try:
            result = segment_video(
                segmenter, path, plan["video_overlay"], plan.get("video_labels"), every=args.every,
                max_frames=args.max_frames, batch_size=args.batch_size, alpha=args.alpha, on_frames=on_frames,
            )  # fmt: skip
        except KeyboardInterrupt as exc:
            for note in getattr(exc, "__notes__", []):
                progress.write(note)  # what is complete; the CLI then says "interrupted"
            raise
    if result.missing_seconds:
        print(
            f"warning: {path}: the frames end {result.missing_seconds:.2f} s before the {result.stated_duration:.2f} s "
            f"the file states (truncated?); wrote the {result.frames} frames it holds",
            file=sys.stderr,
        )  # fmt: skip
    if result.sound_note:
        print(f"warning: {path}: {result.sound_note}", file=sys.stderr)
    classes = dict(sorted(result.class_frames.items(), key=lambda kv: -kv[1]))
    summary = {
        "video": str(path), "height": result.height, "width": result.width, "frames": result.frames,
        "segmented": result.segmented, "classes": classes, "outputs": [str(p) for p in result.outputs],
        "complete": not result.missing_seconds,
    }  # fmt: skip
    if args.json == "-":
        print(json.dumps(summary), flush=True)
    else:
        counts = ", ".join(f"{name} {n}" for name, n in classes.items())
        print(f"{path}: {result.frames} frames ({result.segmented} segmented), frames per class: {counts}", flush=True)
    return summary
