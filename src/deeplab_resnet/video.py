"""Reading and writing video files through PyAV (FFmpeg's libraries in a wheel; no system ffmpeg).

``pip install 'deeplab_resnet[video]'`` installs it; without it, every function here is a one-line
:class:`DeepLabError` saying so. ``av`` is imported inside the functions that use it, so that the
package and ``deeplab --help`` work without it.

What the rest of the package sees:

- :func:`open_video` gives a :class:`VideoReader`: the frames of the first video stream as upright
  ``H x W x 3`` uint8 RGB arrays (a rotation in the file's display matrix is applied, as EXIF
  orientation is for photos), each with its presentation time.
  A file FFmpeg cannot read, damaged data or a file without a video stream is a :class:`DeepLabError`
  naming the file.
- :class:`VideoWriter` encodes frames into a container at a path the caller chose (a temporary
  one: see ``inference/video.py``), keeping each frame's presentation time, so frame rate, variable
  frame rate and duration are those of the input; given the input's path, it also carries the
  input's first audio stream over the time the frames written cover (:class:`AudioTrack`).
- :func:`read_labels` reads back the label videos ``deeplab segment --save-labels`` writes: FFV1
  (lossless) in Matroska, 8-bit grey, one frame per video frame, the pixel value the class index.
"""

from __future__ import annotations

import contextlib
import errno
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import DeepLabError, missing_extra

# The suffixes ``deeplab segment`` takes for videos (commands/segment_video.py tells them apart).
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
INSTALL_HINT = "pip install 'deeplab_resnet[video]'"

# The overlay video: H.264 in MP4, as every player and browser plays it. FFmpeg builds without
# libx264 (it is GPL) fall back to FFmpeg's own MPEG-4 Part 2 encoder, which every FFmpeg has.
OVERLAY_CODECS = ("libx264", "mpeg4")
# Quality of the overlay: x264's constant rate factor 18 is close to visually lossless; the
# MPEG-4 fallback gets a bit rate of 0.5 bits per pixel per frame instead.
X264_OPTIONS = {"crf": "18"}
MPEG4_BITS_PER_PIXEL = 0.5
# Sound the overlay MP4 carries as it is: codecs that browsers and common players play in MP4.
# Anything else (PCM, Vorbis, MP2, ...) is re-encoded as AAC, which every player plays.
MP4_SOUND_CODECS = ("aac", "mp3", "opus", "flac", "alac", "ac3", "eac3")
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
# The system refusing a read is the system's fault, not the file's: those stay OSErrors (exit 3).
_SYSTEM_ERRNOS = (errno.EACCES, errno.EPERM, errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def import_av():
    """The ``av`` module, or a one-line :class:`DeepLabError` saying how to install it."""
    try:
        import av
    except ImportError as exc:
        raise missing_extra(exc, f"reading and writing videos needs PyAV: {INSTALL_HINT}") from exc
    return av


def _as_deeplab_error(path: Path, exc: Exception, doing: str) -> Exception:
    """A PyAV error while reading ``path`` as what the user sees: the system's refusals stay
    ``OSError`` (exit 3), anything about the file's content is a :class:`DeepLabError` (exit 2)."""
    if isinstance(exc, OSError) and exc.errno in _SYSTEM_ERRNOS:
        return OSError(exc.errno, exc.strerror, str(path))
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return DeepLabError(f"{path}: {doing} ({reason})")


def upright(rgb: np.ndarray, rotation: float) -> np.ndarray:
    """A decoded frame as it is meant to be shown: ``rotation`` is the display matrix's
    counterclockwise angle in degrees (PyAV's ``VideoFrame.rotation``), applied here in
    quarter turns (phones write 0, 90, 180 or -90)."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame: upright RGB ``image``, its presentation time ``pts`` in units of ``time_base``."""

    image: np.ndarray
    pts: int | None
    time_base: Fraction | None


class VideoReader:
    """The first video stream of a file; use :func:`open_video`."""

    def __init__(self, path: Path, container) -> None:
        self.path = path
        self._container = container
        self._stream = container.streams.video[0]

    @property
    def rate(self) -> Fraction | None:
        """The average frame rate the file states (``None`` if it states none)."""
        rate = self._stream.average_rate or self._stream.guessed_rate
        return Fraction(rate) if rate else None

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the coded frames (a rotation by a quarter turn swaps them when shown)."""
        return self._stream.height, self._stream.width

    @property
    def frame_count(self) -> int | None:
        """Frames the container says it holds (``None`` where it does not say)."""
        return self._stream.frames or None

    @property
    def duration(self) -> float | None:
        """Seconds the file says the video stream lasts (``None`` where it does not say).

        Matroska states the track's end in its ``DURATION`` tag (the video's start is taken off);
        FFmpeg's own figure for a Matroska stream can be the whole file's (audio included), so
        that one is not used. The container's
        duration stands in only when the video is its one stream: it covers audio too."""
        av = import_av()
        tags = {k.upper().split("-")[0]: v for k, v in self._stream.metadata.items()}  # mkvmerge: DURATION-eng
        if "DURATION" in tags:  # FFmpeg writes the track's end: its last time plus a frame
            end = _clock_seconds(tags["DURATION"])
            start = self._stream.start_time * self._stream.time_base if self._stream.start_time else 0
            return None if end is None else end - float(start)
        if "matroska" in self._container.format.name and len(self._container.streams) > 1:
            return None
        if self._stream.duration and self._stream.time_base:
            return float(self._stream.duration * self._stream.time_base)
        if self._container.duration and len(self._container.streams) == 1:
            return self._container.duration / av.time_base
        return None

    @property
    def time_base(self) -> Fraction | None:
        return Fraction(self._stream.time_base) if self._stream.time_base else None

    @property
    def has_audio(self) -> bool:
        return bool(self._container.streams.audio)

    def frames(self, pixel_format: str = "rgb24") -> Iterator[DecodedFrame]:
        """The frames in presentation order, upright, as ``H x W x 3`` RGB (``H x W`` for
        ``pixel_format="gray"``); damaged data is a :class:`DeepLabError`."""
        av = import_av()
        decoded = self._container.decode(self._stream)
        while True:
            try:
                frame = next(decoded)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                raise _as_deeplab_error(self.path, exc, "damaged video data") from exc
            image = upright(frame.to_ndarray(format=pixel_format), frame.rotation)
            time_base = Fraction(frame.time_base) if frame.time_base else None
            yield DecodedFrame(image, frame.pts, time_base)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clock_seconds(text: str) -> float | None:
    """``HH:MM:SS.fraction`` (Matroska's ``DURATION`` tag) in seconds; ``None`` for anything else."""
    match = re.fullmatch(r"(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)", text.strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def open_video(path: str | Path) -> VideoReader:
    """Open ``path`` for reading its first video stream (audio is read by :class:`AudioTrack`)."""
    av = import_av()
    path = Path(path)
    if not path.is_file():
        raise DeepLabError(f"{path}: not a file" if path.exists() else f"file not found: {path}")
    try:
        container = av.open(str(path), "r")
    except av.error.FFmpegError as exc:
        raise _as_deeplab_error(path, exc, "not a video file FFmpeg can read") from exc
    if not container.streams.video:
        container.close()
        raise DeepLabError(f"{path}: the file holds no video stream")
    container.streams.video[0].thread_type = "AUTO"  # decode with frame threads: decoding is not the bottleneck
    return VideoReader(path, container)


def no_frames_error(path: str | Path) -> DeepLabError:
    return DeepLabError(f"{path}: the video has no frames")


def frame_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of the first frame as shown (upright); the errors of reading it, or of a
    video without frames. Decodes one frame: a quick check that a file can be segmented at all."""
    with open_video(path) as reader:
        first = next(reader.frames(), None)
    if first is None:
        raise no_frames_error(path)
    return first.image.shape[0], first.image.shape[1]


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of a video file as upright ``H x W x 3`` uint8 RGB arrays."""
    with open_video(path) as reader:
        for frame in reader.frames():
            yield frame.image


def read_labels(path: str | Path) -> Iterator[np.ndarray]:
    """The label maps of a ``NAME_labels.mkv`` that ``deeplab segment --save-labels`` wrote: one
    ``H x W`` uint8 array of class indices per frame of the video it labels, in order."""
    with open_video(path) as reader:
        for frame in reader.frames("gray"):
            yield frame.image


@dataclass(frozen=True)
class Encoding:
    """How :class:`VideoWriter` encodes: FFmpeg's container format, codec and pixel format."""

    container: str
    codec: str
    pix_fmt: str
    options: dict[str, str]


def overlay_encoding(width: int, height: int) -> Encoding:
    """H.264 (``libx264``) in MP4, or MPEG-4 Part 2 where the PyAV build lacks libx264.

    H.264's usual ``yuv420p`` holds only even sizes; an odd-sized video is encoded as ``yuv444p``
    instead, which keeps its size exactly (some players, such as browsers, play only ``yuv420p``).
    The MPEG-4 encoder takes odd sizes in ``yuv420p``.
    """
    av = import_av()
    if "libx264" in av.codecs_available:
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        return Encoding("mp4", "libx264", pix_fmt, dict(X264_OPTIONS))
    return Encoding("mp4", "mpeg4", "yuv420p", {})


LABELS_ENCODING = Encoding("matroska", "ffv1", "gray", {})


class VideoWriter:
    """Encodes frames into ``path`` (written as ``encoding.container`` whatever its suffix).

    Each frame keeps its presentation time from the input (``pts`` in ``time_base``), so frame
    rate, variable rates and duration carry over; frames without one are spaced by ``1/rate``.
    :meth:`finish` flushes the encoder and closes the container: the file is then complete and
    playable with every frame written so far. Encoder failures raise :class:`DeepLabError` naming
    ``name`` (the final path, where ``path`` is a temporary one), or ``OSError`` for a refused write.
    With ``audio_from`` (the input's path), the input's sound goes along (:class:`AudioTrack`).
    """

    def __init__(
        self, path: Path, encoding: Encoding, width: int, height: int, rate: Fraction | None,
        time_base: Fraction | None, name: Path | None = None, audio_from: Path | None = None,
    ) -> None:  # fmt: skip
        av = import_av()
        self.path = path
        self.name = name or path  # the file the user asked for, in messages (``path`` may be a temporary one)
        self.rate = rate or Fraction(25)  # a container stating no rate: FFmpeg's own default
        self.time_base = time_base or 1 / self.rate
        with self._errors_name_the_output("cannot create the file"):
            self._container = av.open(str(path), "w", format=encoding.container)
        try:
            self._stream = self._container.add_stream(encoding.codec, rate=self.rate)
            self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, encoding.pix_fmt
            self._stream.time_base = self.time_base
            self._stream.codec_context.time_base = self.time_base
            if encoding.codec == "mpeg4":
                self._stream.bit_rate = int(width * height * float(self.rate) * MPEG4_BITS_PER_PIXEL)
            self._stream.options = encoding.options
            self.audio, self._sound_note = AudioTrack.open(audio_from, self._container) if audio_from else (None, None)
        except BaseException:
            self._container.close()
            raise
        self._format = "gray" if encoding.pix_fmt == "gray" else "rgb24"
        self._last_pts: int | None = None
        self.frames = 0

    def _next_pts(self, pts: int | None, time_base: Fraction | None) -> int:
        """``pts`` in this stream's time base; one that does not advance (or is missing) follows the last by one frame."""
        step = max(1, round(1 / (self.rate * self.time_base)))
        if pts is not None and time_base is not None:
            pts = round(pts * time_base / self.time_base)
        if self._last_pts is not None and (pts is None or pts <= self._last_pts):
            pts = self._last_pts + step
        return 0 if pts is None else pts

    def write(self, image: np.ndarray, pts: int | None = None, time_base: Fraction | None = None) -> None:
        """Encode one frame (``H x W x 3`` RGB, or ``H x W`` class indices for a grey encoding)."""
        av = import_av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=self._format)
        frame.pts = self._last_pts = self._next_pts(pts, time_base)
        frame.time_base = self.time_base
        self._encode(frame)
        self.frames += 1
        if self.audio is not None:
            with self._errors_name_the_output("cannot write the sound"):
                self.audio.copy_until(self.end_time)

    @property
    def sound_note(self) -> str | None:
        """Why the sound is missing or ends early (``None`` when it is all there, or there is none)."""
        return self._sound_note or (self.audio.note if self.audio is not None else None)

    @property
    def end_time(self) -> float:
        """Seconds at which the frames written so far end (the last one's time plus a frame)."""
        return float(((self._last_pts or 0) * self.time_base) + 1 / self.rate)

    def _encode(self, frame) -> None:
        with self._errors_name_the_output(f"cannot encode {self._stream.codec_context.name}"):
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    @contextlib.contextmanager
    def _errors_name_the_output(self, doing: str) -> Iterator[None]:
        """FFmpeg's errors as the user sees them, naming the file asked for (not a temporary one)."""
        av = import_av()
        try:
            yield
        except av.error.FFmpegError as exc:
            raise _as_deeplab_error(self.name, exc, doing) from exc

    def finish(self) -> None:
        """Flush the encoder and close the file (complete and playable)."""
        self._encode(None)
        with self._errors_name_the_output("cannot finish the file"):
            if self.audio is not None:
                self.audio.finish(self.end_time)
            self._container.close()

    def abandon(self) -> None:
        """Close the file without flushing (its content is to be thrown away)."""
        try:
            if self.audio is not None:
                self.audio.close()
            self._container.close()
        except Exception:  # the file is being deleted: what went wrong was reported already
            pass


class AudioTrack:
    """The first audio stream of the video at ``source``, carried into ``container`` (an MP4 being
    written) along with the frames: :meth:`copy_until` the time they have reached.

    Packets are copied as they are when their codec is one players take in MP4 (``MP4_SOUND_CODECS``)
    and this FFmpeg's muxer stores it; other sound (PCM, Vorbis, MP2, ...) is re-encoded as AAC
    (mono or stereo). Sound beyond the end of the last frame written is left out, so the overlay
    lasts as long as its frames; sound before the first frame stays, as in the input. Sound that
    cannot be read or decoded ends the overlay's sound there rather than the video; :attr:`note`
    then says so. (Copied packets are not decoded: damage inside them is copied as it is.) Use
    :meth:`open`, which gives ``None`` and why for sound that cannot be carried at all.
    """

    def __init__(self, source_file, source, container, copy: bool) -> None:
        self._input, self._source, self._container, self._copy = source_file, source, container, copy
        self._stream = container.add_stream_from_template(source) if copy else _add_aac(container, source)
        self._packets = source_file.demux(source)
        self._units = self._read_units()
        self._converter, self._converter_for = None, None  # re-encoding: the source's sound to AAC's format
        self._waiting = None  # a packet or frame read that belongs after the time copied so far
        self._reached = 0.0  # seconds: where the last packet or frame copied starts
        self.note: str | None = None

    @classmethod
    def open(cls, source: Path, container) -> tuple[AudioTrack | None, str | None]:
        """The track, or ``None`` and why when this FFmpeg can neither copy nor re-encode the sound."""
        av = import_av()
        source_file = av.open(str(source), "r")
        try:
            stream = source_file.streams.audio[0]
            if stream.codec_context is not None:  # None: FFmpeg does not know the codec
                fmt = container.format.name
                codec = stream.codec_context.codec.canonical_name
                copy = codec in MP4_SOUND_CODECS and _header_writes(fmt, stream, copy=True)
                if copy or _header_writes(fmt, stream, copy=False):
                    return cls(source_file, stream, container, copy), None
        except BaseException:
            source_file.close()
            raise
        source_file.close()
        return None, "its sound cannot be copied into MP4 or decoded here; the overlay is silent"

    def copy_until(self, seconds: float) -> None:
        """Write the sound that starts before ``seconds``: re-encoded sound is cut at ``seconds``
        exactly, copied packets are written whole."""
        while self.note is None:
            unit, self._waiting = self._waiting, None
            if unit is None:
                with self._damage_ends_the_sound():
                    unit = next(self._units, None)
                if unit is None:
                    return
            start = _start_seconds(unit)
            if start is not None and start >= seconds:
                self._waiting = unit
                return
            if not self._copy and start is not None:
                unit, self._waiting = _split_frame(unit, seconds - start)
                if unit is None:
                    return
            self._reached = self._reached if start is None else start
            with self._damage_ends_the_sound():
                self._write(unit)

    def _read_units(self) -> Iterator:
        """The source's packets (to copy), or its sound decoded and converted to the AAC stream's
        format, rate and channels (to re-encode; times in samples)."""
        for packet in self._packets:
            if not packet.size:  # the empty packet that marks the end
                continue
            if self._copy:
                yield packet
                continue
            for frame in packet.decode():
                yield from self._converted(frame)
        if not self._copy:
            yield from self._converted(None)

    def _converted(self, frame) -> Iterator:
        """``frame`` in the AAC stream's sample format, channels and rate (``None``: what is left).
        Sound whose format, channels or rate change on the way gets a new converter at the change."""
        av = import_av()
        kind = None if frame is None else (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._converter is not None and kind != self._converter_for:
            yield from self._converter.resample(None)
            self._converter = None
        if frame is None:
            return
        if self._converter is None:
            self._converter = av.AudioResampler(format="fltp", layout=self._stream.layout.name, rate=self._stream.rate)
            self._converter_for = kind
        yield from self._converter.resample(frame)

    @contextlib.contextmanager
    def _damage_ends_the_sound(self) -> Iterator[None]:
        """FFmpeg failing on the sound's data ends the sound (:attr:`note`); the system refusing a write does not."""
        av = import_av()
        try:
            yield
        except (av.error.FFmpegError, ValueError) as exc:  # ValueError: PyAV refusing what FFmpeg decoded
            if isinstance(exc, OSError) and exc.errno in _SYSTEM_ERRNOS:
                raise
            self.note = f"its sound is damaged after {self._reached:.2f} s; the overlay's sound ends there"

    def _write(self, unit) -> None:
        if self._copy:
            unit.stream = self._stream
            self._container.mux(unit)
            return
        for encoded in self._stream.encode(unit):
            self._container.mux(encoded)

    def finish(self, seconds: float) -> None:
        """Write the sound up to ``seconds`` (the end of the frames), flush, and close the source."""
        self.copy_until(seconds)
        if not self._copy:
            for encoded in self._stream.encode(None):
                self._container.mux(encoded)
        self.close()

    def close(self) -> None:
        self._input.close()


def _add_aac(container, source):
    """An AAC stream for re-encoding ``source``: its rate where AAC has it (else 48 kHz), mono or
    stereo (more channels are mixed down)."""
    stream = container.add_stream("aac", rate=source.rate if source.rate in AAC_RATES else 48000)
    stream.layout = "mono" if source.layout.nb_channels == 1 else "stereo"
    return stream


def _start_seconds(unit) -> float | None:
    """When a packet or frame starts, in seconds (``None`` where it does not say)."""
    time = unit.pts if unit.pts is not None else getattr(unit, "dts", None)
    return float(time * unit.time_base) if time is not None and unit.time_base else None


def _split_frame(frame, seconds: float) -> tuple:
    """``frame`` (planar, times in samples) cut after ``seconds``: the part before and the rest
    (``None`` for a part without samples)."""
    av = import_av()
    cut = round(seconds * frame.sample_rate)
    if cut <= 0:
        return None, frame
    if cut >= frame.samples:
        return frame, None
    samples = frame.to_ndarray()  # planar (one row per channel): frames come from AudioTrack._converted
    parts = []
    for part, offset in ((samples[:, :cut], 0), (samples[:, cut:], cut)):
        piece = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(part), format=frame.format.name, layout=frame.layout.name
        )
        piece.sample_rate, piece.time_base = frame.sample_rate, frame.time_base
        piece.pts = None if frame.pts is None else frame.pts + offset
        parts.append(piece)
    return parts[0], parts[1]


def _header_writes(format_name: str, stream, *, copy: bool) -> bool:
    """Whether FFmpeg's ``format_name`` muxer takes ``stream`` copied as it is (``copy``) or
    re-encoded as AAC: tried on a header written to memory (FFmpeg versions differ in what they take)."""
    av = import_av()
    try:
        with av.open(io.BytesIO(), "w", format=format_name.split(",")[0]) as probe:
            probe.add_stream_from_template(stream) if copy else _add_aac(probe, stream)
            probe.start_encoding()
    except (av.error.FFmpegError, ValueError):
        return False
    return True
