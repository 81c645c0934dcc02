"""Segmenting a video file: the colour overlay of every frame as a video, and the label maps losslessly.

The output videos have the input's size, frame count (up to ``max_frames``) and frame times, so
they play in step with it; the overlay also carries the input's sound over the time its frames cover. With ``every=N`` the network sees frames 0, N, 2N, ...; each frame in
between is shown, and labelled, with the labels of the last segmented frame before it (so the
overlay keeps the input's full frame rate and duration, and frame ``i`` of the label video always
labels frame ``i`` of the input).

Frames are segmented ``batch_size`` at a time (:meth:`Segmenter.segment_batch`); frames between
segmented ones wait in memory with their batch (``batch_size * every`` frames at most).

Interrupted (Ctrl-C, SIGTERM), the frames done so far are flushed and the files closed and moved
to their final names, so they are complete, playable videos; the exception then goes on, with a
note saying what was written. Any other failure leaves nothing: outputs are written to temporary
names (:mod:`deeplab_resnet.atomic`) and renamed only when complete.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import DeepLabError, add_note, deferred_interrupts
from ..images import overlay
from ..video import LABELS_ENCODING, DecodedFrame, VideoWriter, no_frames_error, open_video, overlay_encoding
from .segmenter import Segmenter

# A group: a frame to segment, followed by the frames that take its labels (with every > 1).
Group = list[DecodedFrame]


@dataclass
class VideoResult:
    """What :func:`segment_video` wrote: ``frames`` output frames, of which ``segmented`` went
    through the network; ``class_frames`` counts, per class name, the segmented frames showing it;
    :attr:`missing_seconds` says whether the file ended before the time it states (truncated)."""

    path: Path
    width: int
    height: int
    frames: int
    segmented: int
    outputs: list[Path]
    class_frames: dict[str, int]
    start_time: float | None = None  # seconds: the presentation time of the first frame
    end_time: float | None = None  # seconds: the presentation time of the last frame written
    stated_duration: float | None = None  # seconds the file says it lasts (None: it does not say, or max_frames)
    rate: float | None = None
    sound_note: str | None = None  # why the overlay's sound is missing or ends early

    @property
    def missing_seconds(self) -> float:
        """Seconds the file states beyond the frames it held: a truncated file (0 when none is missing).

        Frames last ``1/rate``; a shortfall of up to three frames (or 0.1 s) is the slack of
        containers that state durations loosely and is not counted."""
        if self.stated_duration is None or self.end_time is None or self.start_time is None or not self.rate:
            return 0.0
        missing = self.stated_duration - (self.end_time - self.start_time) - 1 / self.rate
        return missing if missing > max(2 / self.rate, 0.1) else 0.0


def batches(frames: Iterable[DecodedFrame], every: int, batch_size: int) -> Iterator[list[Group]]:
    """Groups of frames (each: a frame to segment, then the ``every - 1`` frames holding its labels),
    ``batch_size`` groups at a time; a group is complete before it is yielded."""
    batch: list[Group] = []
    group: Group = []
    for i, frame in enumerate(frames):
        if i % every == 0 and group:
            batch.append(group)
            group = []
            if len(batch) == batch_size:
                yield batch
                batch = []
        group.append(frame)
    if group:
        batch.append(group)
    if batch:
        yield batch


def _one_size(path: Path, frames: Iterable[DecodedFrame]) -> Iterator[DecodedFrame]:
    """``frames``, refusing a frame whose size differs from the first (the outputs have one size)."""
    size = None
    for i, frame in enumerate(frames):
        if size is None:
            size = frame.image.shape
        elif frame.image.shape != size:
            h, w = frame.image.shape[:2]
            raise DeepLabError(
                f"{path}: frame {i} is {w}x{h}, the first frame {size[1]}x{size[0]}; videos that change size are not "
                "supported (split the video where its size changes)"
            )
        yield frame


class _Outputs:
    """The output videos, written to temporary names beside their final ones."""

    def __init__(self, overlay_path: Path, labels_path: Path | None, first: DecodedFrame, reader) -> None:
        self._stack = contextlib.ExitStack()
        self.writers: dict[str, VideoWriter] = {}
        h, w = first.image.shape[:2]
        encodings = {"overlay": (overlay_path, overlay_encoding(w, h))}
        if labels_path is not None:
            encodings["labels"] = (labels_path, LABELS_ENCODING)
        self.paths = [path for path, _ in encodings.values()]
        try:
            for kind, (path, encoding) in encodings.items():
                tmp = self._stack.enter_context(atomic_path(path))
                audio = reader.path if kind == "overlay" and reader.has_audio else None
                self.writers[kind] = VideoWriter(
                    tmp, encoding, w, h, reader.rate, reader.time_base, name=path, audio_from=audio
                )
        except BaseException:
            self.discard()
            raise

    @property
    def frames(self) -> int:
        return self.writers["overlay"].frames

    @property
    def sound_note(self) -> str | None:
        return self.writers["overlay"].sound_note

    def write(self, frame: DecodedFrame, colour: np.ndarray, labels: np.ndarray) -> None:
        self.writers["overlay"].write(colour, frame.pts, frame.time_base)
        if "labels" in self.writers:
            self.writers["labels"].write(labels, frame.pts, frame.time_base)

    def finish(self) -> None:
        """Flush and close every video and move each to its final name."""
        for writer in self.writers.values():
            writer.finish()
        self._stack.close()

    def discard(self) -> None:
        """Close every video and remove the temporary files."""
        for writer in self.writers.values():
            writer.abandon()
        self._stack.__exit__(_Discarded, _Discarded(), None)  # atomic_path removes a file its block fails in


class _Discarded(Exception):
    """Ends the temporary files' blocks as failed, so each is removed rather than renamed."""


def segment_video(
    segmenter: Segmenter, path: str | Path, overlay_path: str | Path, labels_path: str | Path | None = None, *,
    every: int = 1, max_frames: int | None = None, batch_size: int = 1, alpha: float = 0.5,
    on_frames: Callable[[int, int | None], None] | None = None,
) -> VideoResult:  # fmt: skip
    """Segment the video at ``path``: its overlay video to ``overlay_path`` (MP4) and, if given, its
    label maps to ``labels_path`` (FFV1 in Matroska, read back by :func:`deeplab_resnet.video.read_labels`).

    ``every``: segment every Nth frame, the others keep the last labels; ``max_frames``: stop after
    the first so many frames; ``on_frames(done, total)`` is called after each batch is written
    (``total``: the frames expected, ``None`` where the file does not say).
    """
    if labels_path is not None and segmenter.spec.num_classes > 256:
        raise DeepLabError(f"label videos hold 256 classes at most; the model has {segmenter.spec.num_classes}")
    path = Path(path)
    with open_video(path) as reader:
        frames = _one_size(path, itertools.islice(reader.frames(), max_frames))
        first = next(frames, None)
        if first is None:
            raise no_frames_error(path)
        labels_path = None if labels_path is None else Path(labels_path)
        with deferred_interrupts():
            outputs = _Outputs(Path(overlay_path), labels_path, first, reader)
        h, w = first.image.shape[:2]
        result = VideoResult(path, w, h, 0, 0, outputs.paths, {}, rate=float(reader.rate) if reader.rate else None)
        result.start_time = _seconds(first)
        total = min(reader.frame_count, max_frames or reader.frame_count) if reader.frame_count else max_frames
        _run(segmenter, outputs, itertools.chain([first], frames), result, every, batch_size, alpha, on_frames, total)
        if max_frames is None or result.frames < max_frames:
            result.stated_duration = reader.duration
    return result


def _run(
    segmenter: Segmenter, outputs: _Outputs, frames: Iterable[DecodedFrame], result: VideoResult, every: int,
    batch_size: int, alpha: float, on_frames: Callable[[int, int | None], None] | None, total: int | None,
) -> None:  # fmt: skip
    """Segment and write every batch; finish the outputs (also when interrupted) or discard them."""
    stopped: KeyboardInterrupt | None = None
    try:
        try:
            for batch in batches(frames, every, batch_size):
                _write_batch(segmenter, outputs, batch, result, alpha)
                if on_frames is not None:
                    on_frames(result.frames, total)
        except KeyboardInterrupt as exc:
            stopped = exc
        if stopped is not None and outputs.frames == 0:
            raise stopped
        with deferred_interrupts():
            outputs.finish()
    except BaseException:
        with deferred_interrupts():
            outputs.discard()
        raise
    result.sound_note = outputs.sound_note
    if stopped is not None:
        written = ", ".join(map(str, result.outputs))
        add_note(stopped, f"{result.path}: wrote the first {result.frames} frames to {written}")
        if result.sound_note:
            add_note(stopped, f"warning: {result.path}: {result.sound_note}")
        raise stopped


def _seconds(frame: DecodedFrame) -> float | None:
    return float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base is not None else None


def _write_batch(segmenter: Segmenter, outputs: _Outputs, batch: list[Group], result: VideoResult, alpha: float):
    """Segment the first frame of each group; write every frame of the batch with its group's labels."""
    results = segmenter.segment_batch([group[0].image for group in batch])
    # Every output gets a batch's frames or none of them: the videos stay in step when interrupted.
    with deferred_interrupts():
        for group, segmentation in zip(batch, results):
            for frame in group:
                colour = overlay(frame.image, segmentation.labels, segmenter.dataset, alpha)
                outputs.write(frame, colour, segmentation.labels)
            result.end_time = _seconds(frame)
            for name in segmentation.class_pixels():
                result.class_frames[name] = result.class_frames.get(name, 0) + 1
        result.frames = outputs.frames
        result.segmented += len(batch)
