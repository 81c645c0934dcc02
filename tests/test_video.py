"""``deeplab segment`` on video files, with real videos encoded here from consecutive CamVid frames.

The expected labels come from the :class:`Segmenter` run frame by frame on the input's frames as
PyAV decodes them in the test (H.264 is lossy: the PNGs are not what the network sees).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import REPO, shared_path, tiny_model
from PIL import Image

from deeplab_resnet import Segmenter, video
from deeplab_resnet.cli import main
from deeplab_resnet.commands import segment_video as segment_video_command
from deeplab_resnet.errors import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, DeepLabError
from deeplab_resnet.inference.video import batches, segment_video

RATE = 15
SAMPLE_RATE, TONE_HZ = 44100, 440
SEQUENCE = "0016E5"  # a CamVid sequence with consecutive frames in val/


def camvid_frames(count: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """``count`` consecutive frames of one CamVid sequence (480x360), resized to ``size`` (w, h) if given."""
    files = sorted(shared_path("data", "camvid", "val").glob(f"{SEQUENCE}_*.png"))[:count]
    assert len(files) == count
    images = [Image.open(f).convert("RGB") for f in files]
    return [np.asarray(im.resize(size, Image.BILINEAR) if size else im) for im in images]


def encode(
    path: Path, frames: list[np.ndarray], *, codec: str = "libx264", pix_fmt: str = "yuv420p", rate: int = RATE,
    rotation: int | None = None, pts: list[int] | None = None, audio: str | None = None,
    sample_rate: int = SAMPLE_RATE, channels: int = 1,
) -> Path:  # fmt: skip
    """``frames`` as a video; ``audio`` names a sound codec for a track of :func:`tone` that lasts
    half a second longer than the frames (on each of ``channels``: 1, 2, 6 or 8)."""
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=rate)
    stream.height, stream.width = frames[0].shape[:2] if frames else (120, 160)
    stream.pix_fmt = pix_fmt
    if pts is not None:
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
    if rotation is not None:
        stream.set_display_rotation(rotation)
    layout = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}[channels]
    sound = container.add_stream(audio, rate=sample_rate) if audio else None
    if sound is not None:
        sound.layout = layout
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        if pts is not None:
            frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    if sound is not None:
        seconds = (pts[-1] / 1000 if pts else len(frames) / rate) + 0.5
        samples = np.tile(tone(seconds, sample_rate), (channels, 1))
        if channels > 6:  # PyAV builds planar frames of at most 6 channels: give them interleaved
            samples = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples.T).reshape(1, -1), format="flt", layout=layout
            )
        else:
            samples = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
        samples.sample_rate = sample_rate
        for packet in [*sound.encode(samples), *sound.encode(None)]:
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    if not frames:
        container.start_encoding()  # write the header anyway: a file with a video stream and no frames
    container.close()
    return path


def tone(seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A sine at :data:`TONE_HZ`, ``seconds`` long."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def decode(path: Path) -> list[np.ndarray]:
    """The frames as stored (no rotation applied), decoded with PyAV here, independently of the package."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(video=0))
        return {
            "frames": len(frames), "size": (stream.width, stream.height), "rate": stream.average_rate,
            "codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
            "times": [float(f.pts * f.time_base) for f in frames],
        }  # fmt: skip


def expected_labels(frames: list[np.ndarray], pad_size=None) -> list[np.ndarray]:
    segmenter = Segmenter(tiny_model(), pad_size=pad_size)
    return [segmenter(frame).labels for frame in frames]


def run(*args) -> int:
    return main(["segment", *map(str, args)])


@pytest.fixture
def small_clip(tmp_path) -> Path:
    """12 consecutive CamVid frames at 160x120, 15 fps H.264."""
    return encode(tmp_path / "clip.mp4", camvid_frames(12, (160, 120)))


def test_overlay_and_labels_match_the_input_frame_by_frame(tmp_path, tiny_weights, capsys):
    clip = encode(tmp_path / "clip.mp4", camvid_frames(12))
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--save-labels", "--batch-size", "4") == EXIT_OK
    assert "12 frames (12 segmented)" in capsys.readouterr().out
    source, overlay = probe(clip), probe(out / "clip_overlay.mp4")
    assert (overlay["frames"], overlay["size"], overlay["rate"]) == (12, (480, 360), RATE)
    assert overlay["times"] == source["times"]
    assert (overlay["codec"], overlay["pix_fmt"]) == ("h264", "yuv420p")
    frames = decode(clip)
    labels = list(video.read_labels(out / "clip_labels.mkv"))
    expected = expected_labels(frames, pad_size="auto")  # the CLI's default: the authors' 513 padding
    assert len(labels) == 12 and labels[0].shape == (360, 480) and labels[0].dtype == np.uint8
    # batches of 4 against single frames: equal up to float rounding at argmax ties
    agreement = np.mean([np.mean(a == b) for a, b in zip(labels, expected)])
    assert agreement > 0.999
    # the overlay shows each frame blended half and half with its labels' colours (H.264 is lossy)
    palette = np.asarray(Segmenter(tiny_model()).dataset.palette_bytes(), np.float64).reshape(256, 3)
    for frame, label, shown in zip(frames, labels, decode(out / "clip_overlay.mp4")):
        blend = 0.5 * frame + 0.5 * palette[label]
        assert np.abs(shown - blend).mean() < 4
        assert np.abs(shown - frame).mean() > 4 * np.abs(shown - blend).mean()


def test_labels_equal_the_segmenter_on_every_frame(small_clip, tmp_path, tiny_weights):
    out = tmp_path / "out"
    # --backend torch (here and below): the PyTorch model itself, so that labels compare bit for bit
    # on any CPU (another engine's rounding can flip a tie of the random tiny model)
    args = ["--weights", tiny_weights, "-o", out, "--save-labels", "--native-size", "--backend", "torch"]
    assert run(small_clip, *args) == EXIT_OK
    labels = list(video.read_labels(out / "clip_labels.mkv"))
    expected = expected_labels(decode(small_clip))
    assert len(labels) == 12
    for got, want in zip(labels, expected):
        np.testing.assert_array_equal(got, want)
    assert len({g.tobytes() for g in labels}) > 1  # the frames differ: a held or shifted frame would show


def test_every_and_max_frames(small_clip, tmp_path, tiny_weights, capsys):
    out = tmp_path / "out"
    args = ["--weights", tiny_weights, "-o", out, "--save-labels", "--native-size", "--backend", "torch"]
    assert run(small_clip, *args, "--every", "3", "--max-frames", "10", "--batch-size", "2") == EXIT_OK
    assert "10 frames (4 segmented)" in capsys.readouterr().out
    overlay = probe(out / "clip_overlay.mp4")
    assert overlay["frames"] == 10 and overlay["times"] == probe(small_clip)["times"][:10]
    labels = list(video.read_labels(out / "clip_labels.mkv"))
    expected = expected_labels(decode(small_clip)[:10])
    assert len(labels) == 10
    for i, got in enumerate(labels):
        np.testing.assert_array_equal(got, labels[i - i % 3])  # frames between keep the last labels
        if i % 3 == 0:  # a batch of 2 against one frame at a time: equal up to rounding at argmax ties
            assert np.mean(got == expected[i]) > 0.999
            assert np.mean(got == expected[i]) > np.mean(got == expected[i + 1 if i < 9 else i - 1])


def test_batches_group_held_frames_with_their_segmented_frame():
    groups = [[[f for f in group] for group in batch] for batch in batches(range(10), every=3, batch_size=2)]
    assert groups == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9]]]
    assert list(batches(range(3), every=1, batch_size=5)) == [[[0], [1], [2]]]
    assert list(batches([], every=2, batch_size=2)) == []


def test_odd_size_is_kept_exactly(tmp_path, tiny_weights):
    frames = [f[:119, :159] for f in camvid_frames(4, (160, 120))]
    clip = encode(tmp_path / "odd.mkv", frames, codec="ffv1", pix_fmt="yuv444p")
    out = tmp_path / "out"
    assert (
        run(clip, "--weights", tiny_weights, "-o", out, "--save-labels", "--native-size", "--backend", "torch")
        == EXIT_OK
    )
    overlay = probe(out / "odd_overlay.mp4")
    assert (overlay["frames"], overlay["size"]) == (4, (159, 119))
    assert overlay["pix_fmt"] == "yuv444p"  # 4:2:0 holds even sizes only; 4:4:4 keeps the size without padding
    labels = list(video.read_labels(out / "odd_labels.mkv"))
    for got, want in zip(labels, expected_labels(decode(clip))):  # FFV1 input: lossless, so the frames are exact
        np.testing.assert_array_equal(got, want)


def test_rotation_is_applied_to_the_frames(tmp_path, tiny_weights):
    clip = encode(tmp_path / "phone.mp4", camvid_frames(3, (160, 120)), rotation=90)
    out = tmp_path / "out"
    assert (
        run(clip, "--weights", tiny_weights, "-o", out, "--save-labels", "--native-size", "--backend", "torch")
        == EXIT_OK
    )
    assert probe(out / "phone_overlay.mp4")["size"] == (120, 160)
    upright = [np.rot90(f) for f in decode(clip)]  # a display rotation of 90 degrees counterclockwise
    for got, want in zip(video.read_labels(out / "phone_labels.mkv"), expected_labels(upright)):
        np.testing.assert_array_equal(got, want)


def test_variable_frame_rate_and_audio_keep_the_frame_times(tmp_path, tiny_weights):
    pts = [0, 40, 120, 130, 300, 310]  # milliseconds, irregular
    clip = encode(tmp_path / "vfr.mp4", camvid_frames(6, (160, 120)), pts=pts, audio="aac")
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--native-size") == EXIT_OK
    assert probe(out / "vfr_overlay.mp4")["times"] == pytest.approx([p / 1000 for p in pts])


def sound_packets(path: Path) -> list[tuple[float, bytes]]:
    """``(start in seconds, payload)`` of each packet of the first audio stream, demuxed here."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [(float(p.pts * p.time_base), bytes(p)) for p in container.demux(stream) if p.size]


def sound(path: Path) -> tuple[str, np.ndarray]:
    """The codec and the decoded samples of the first channel of the first audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
        assert frames[0].format.is_planar  # one row per channel
        samples = np.concatenate([f.to_ndarray()[0] for f in frames])
        return stream.codec_context.name, samples


def test_the_overlay_carries_the_inputs_sound_over_its_frames(tmp_path, tiny_weights):
    clip = encode(tmp_path / "clip.mp4", camvid_frames(12, (160, 120)), audio="aac")
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--native-size", "--max-frames", "6") == EXIT_OK
    source = sound_packets(clip)
    want = [payload for start, payload in source if start < 6 / RATE]
    assert 0 < len(want) < len(source)
    assert [payload for _, payload in sound_packets(out / "clip_overlay.mp4")] == want  # copied, up to the frames' end
    assert probe(out / "clip_overlay.mp4")["frames"] == 6


def test_sound_players_do_not_take_in_mp4_is_reencoded_as_aac(tmp_path, tiny_weights):
    clip = encode(tmp_path / "clip.mkv", camvid_frames(12, (160, 120)), audio="pcm_s16le")
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--native-size") == EXIT_OK
    codec, samples = sound(out / "clip_overlay.mp4")
    assert codec == "aac"
    assert 12 / RATE - 0.03 <= len(samples) / SAMPLE_RATE <= 12 / RATE + 0.07  # the frames' time, in AAC frames
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(samples) == pytest.approx(TONE_HZ, abs=3)
    middle = samples[len(samples) // 4 : 3 * len(samples) // 4]  # away from the encoder's start and end
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)


def test_damaged_sound_ends_the_overlays_sound_and_not_the_video(tmp_path, tiny_weights, monkeypatch, capsys):
    clip = encode(tmp_path / "clip.mp4", camvid_frames(12, (160, 120)), audio="aac")
    opened = video.AudioTrack.__init__

    def damaged_after_five_packets(self, *args, **kwargs):
        opened(self, *args, **kwargs)
        packets = self._packets

        def five_then_damage():
            for _ in range(5):
                yield next(packets)
            raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")

        self._packets = five_then_damage()

    monkeypatch.setattr(video.AudioTrack, "__init__", damaged_after_five_packets)
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--native-size") == EXIT_OK
    source = [payload for start, payload in sound_packets(clip)]
    assert [payload for _, payload in sound_packets(out / "clip_overlay.mp4")] == source[:5]
    assert probe(out / "clip_overlay.mp4")["frames"] == 12
    assert re.search(r"warning: .*clip\.mp4: its sound is damaged after \d\.\d\d s", capsys.readouterr().err)


def test_a_matroska_video_with_longer_sound_is_not_called_truncated(tmp_path, tiny_weights, capsys):
    # 2 s of frames and 2.5 s of 5.1 sound at 192 kHz, in one packet bigger than FFmpeg's probe:
    # FFmpeg then gives the video stream the whole file's duration.
    clip = encode(
        tmp_path / "clip.mkv", camvid_frames(30, (160, 120)), audio="pcm_s16le", sample_rate=192000, channels=6
    )  # fmt: skip
    with video.open_video(clip) as reader:
        assert reader.duration == pytest.approx(30 / RATE)
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--native-size", "--every", "10") == EXIT_OK
    err = capsys.readouterr().err
    assert "truncated" not in err and "warning" not in err
    codec, samples = sound(out / "clip_overlay.mp4")
    assert codec == "aac" and len(samples) / 48000 == pytest.approx(
        30 / RATE, abs=0.05
    )  # 192 kHz: AAC has no such rate


def test_eight_channel_sound_is_mixed_down_to_stereo_aac(tmp_path, tiny_weights):
    clip = encode(tmp_path / "clip.mkv", camvid_frames(12, (160, 120)), audio="wavpack", channels=8)
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--native-size", "--backend", "torch") == EXIT_OK
    with av.open(str(out / "clip_overlay.mp4")) as container:
        assert container.streams.audio[0].layout.name == "stereo"
    codec, samples = sound(out / "clip_overlay.mp4")
    assert codec == "aac" and 12 / RATE - 0.03 <= len(samples) / SAMPLE_RATE <= 12 / RATE + 0.07
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(samples) == pytest.approx(TONE_HZ, abs=3)


def test_sound_ffmpeg_cannot_decode_leaves_a_silent_overlay_and_a_warning(tmp_path, tiny_weights, capsys):
    clip = encode(tmp_path / "clip.mkv", camvid_frames(6, (160, 120)), audio="pcm_s16le")
    data = clip.read_bytes()
    assert data.count(b"A_PCM/INT/LIT") == 1
    clip.write_bytes(data.replace(b"A_PCM/INT/LIT", b"A_XYZ/INT/LIT"))  # a codec FFmpeg does not know
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--native-size", "--backend", "torch") == EXIT_OK
    assert "its sound cannot be copied into MP4 or decoded here; the overlay is silent" in capsys.readouterr().err
    with av.open(str(out / "clip_overlay.mp4")) as container:
        assert not container.streams.audio and container.streams.video[0].frames == 6


def test_sound_that_changes_rate_on_the_way_is_reencoded_whole(tmp_path, tiny_weights):
    # MP2 in Matroska: a second at 48 kHz, then a second at 32 kHz (as joined recordings can be)
    clip = tmp_path / "clip.mkv"
    container = av.open(str(clip), "w")
    picture = container.add_stream("libx264", rate=RATE)
    picture.width, picture.height, picture.pix_fmt = 160, 120, "yuv420p"
    track = container.add_stream("mp2", rate=48000)
    track.layout = "mono"
    for image in camvid_frames(2 * RATE, (160, 120)):
        for packet in picture.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in picture.encode(None):
        container.mux(packet)
    for start, rate in ((0, 48000), (1, 32000)):
        encoder = av.CodecContext.create("mp2", "w")
        encoder.sample_rate, encoder.layout, encoder.format, encoder.time_base = rate, "mono", "s16", Fraction(1, rate)
        frame = av.AudioFrame.from_ndarray(tone(1.0, rate)[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in [*encoder.encode(frame), *encoder.encode(None)]:
            seconds, length = start + packet.pts / rate, packet.duration / rate
            packet.time_base = track.time_base
            packet.pts = packet.dts = round(seconds / track.time_base)
            packet.duration = round(length / track.time_base)
            packet.stream = track
            container.mux(packet)
    container.close()
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--native-size", "--backend", "torch") == EXIT_OK
    codec, samples = sound(out / "clip_overlay.mp4")
    assert codec == "aac" and len(samples) / 48000 == pytest.approx(2.0, abs=0.05)  # both seconds, at 48 kHz
    for half in (samples[4800:43200], samples[52800:91200]):  # each second's tone survives the change
        spectrum = np.abs(np.fft.rfft(half))
        assert np.argmax(spectrum) * 48000 / len(half) == pytest.approx(TONE_HZ, abs=3)


def test_matroska_durations_from_ffmpeg_and_mkvmerge_tags():
    from types import SimpleNamespace

    def reader(metadata: dict, start_time=None, streams: int = 2, duration=None) -> video.VideoReader:
        stream = SimpleNamespace(metadata=metadata, start_time=start_time, time_base=Fraction(1, 1000), duration=None)
        container = SimpleNamespace(format=SimpleNamespace(name="matroska,webm"), duration=duration)
        container.streams = type("Streams", (list,), {"video": [stream]})([stream] * streams)  # as PyAV's
        return video.VideoReader(Path("x.mkv"), container)

    assert reader({"DURATION": "00:00:02.500000000"}).duration == pytest.approx(2.5)
    assert reader({"DURATION-eng": "00:01:02.000000000"}).duration == pytest.approx(62.0)  # mkvmerge's name
    assert reader({"DURATION": "00:00:02.500000000"}, start_time=1000).duration == pytest.approx(1.5)  # an end time
    assert reader({"DURATION": "garbage"}).duration is None
    assert reader({}).duration is None  # FFmpeg's own figure for one of several streams is not used
    assert reader({}, streams=1, duration=3_000_000).duration == pytest.approx(3.0)  # the only stream: the file's


def test_a_matroska_video_starting_late_is_not_called_truncated(tmp_path, tiny_weights, capsys):
    pts = [1000 + round(1000 * i / RATE) for i in range(12)]  # the frames start at 1 s, the sound at 0
    clip = encode(tmp_path / "clip.mkv", camvid_frames(12, (160, 120)), pts=pts, audio="aac")
    with video.open_video(clip) as reader:
        assert reader.duration == pytest.approx(12 / RATE, abs=0.01)
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--native-size", "--backend", "torch") == EXIT_OK
    assert "truncated" not in capsys.readouterr().err
    assert probe(out / "clip_overlay.mp4")["times"] == pytest.approx([p / 1000 for p in pts])


def test_a_video_is_never_written_over_an_input_and_a_rerun_replaces_its_results(small_clip, tmp_path, tiny_weights):
    (tmp_path / "clip_overlay.mp4").write_bytes(small_clip.read_bytes())
    before = (tmp_path / "clip_overlay.mp4").read_bytes()
    args = ["--weights", tiny_weights, "-o", tmp_path, "--native-size", "--max-frames", "2"]
    assert run(small_clip, tmp_path / "clip_overlay.mp4", *args) == EXIT_USAGE
    assert (tmp_path / "clip_overlay.mp4").read_bytes() == before
    out = tmp_path / "out"
    for _ in range(2):
        assert run(small_clip, *args[:2], "-o", out, *args[4:]) == EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == ["clip_overlay.mp4"]


def bad_videos(tmp_path: Path, small_clip: Path) -> dict[str, Path]:
    data = small_clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    empty = encode(tmp_path / "empty.avi", [], codec="mpeg4")  # AVI keeps a video stream without frames
    sound = tmp_path / "sound.mkv"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        samples.sample_rate = 8000
        for packet in [*stream.encode(samples), *stream.encode(None)]:
            container.mux(packet)
    return {"truncated": truncated, "text": text, "empty": empty, "sound": sound}


@pytest.mark.parametrize(
    "case, message",
    [("truncated", "not a video file"), ("text", "not a video file"), ("empty", "no frames"), ("sound", "no video")],
)
def test_a_broken_video_is_one_line_and_exit_2(case, message, small_clip, tmp_path, tiny_weights, capsys):
    path = bad_videos(tmp_path, small_clip)[case]
    out = tmp_path / "out"
    assert run(path, "--weights", tiny_weights, "-o", out) == EXIT_USAGE
    # found before --backend auto chose (and exported for) an engine: no "backend: ..." line either
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and str(path) in err[0] and message in err[0], err
    assert not out.exists() or list(out.iterdir()) == []


def test_several_videos_skip_a_broken_one(small_clip, tmp_path, tiny_weights, capsys):
    broken = bad_videos(tmp_path, small_clip)["text"]
    out = tmp_path / "out"
    assert run(small_clip, broken, "--weights", tiny_weights, "-o", out, "--native-size", "--max-frames", "2") == 1
    assert f"skipped: {broken}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["clip_overlay.mp4"]
    # none of them readable: each skipped, no engine built, nothing written
    bad = bad_videos(tmp_path, small_clip)
    assert run(bad["text"], bad["empty"], "--weights", tiny_weights, "-o", tmp_path / "none") == 1
    err = capsys.readouterr().err
    assert f"skipped: {bad['text']}" in err and f"skipped: {bad['empty']}: the video has no frames" in err
    assert "backend: " not in err
    assert not (tmp_path / "none").exists() or not list((tmp_path / "none").iterdir())


def test_options_that_do_not_fit_the_inputs_are_refused(small_clip, tmp_path, tiny_weights, voc_fixture, capsys):
    photo = sorted((voc_fixture / "JPEGImages").glob("*.jpg"))[0]
    cases = [
        ([small_clip, photo], "separate runs"),
        ([photo, "--every", "2"], "--every is for video inputs"),
        ([small_clip, "--save-probs"], "--save-probs is for images"),
    ]
    for args, message in cases:
        assert run(*args, "--weights", tiny_weights, "-o", tmp_path / "out") == EXIT_USAGE
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_pyav_the_error_says_how_to_install_it(small_clip, tmp_path, tiny_weights, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)
    assert run(small_clip, "--weights", tiny_weights, "-o", tmp_path / "out") == EXIT_USAGE
    assert "pip install 'deeplab_resnet[video]'" in capsys.readouterr().err


def test_without_libx264_the_overlay_is_mpeg4(small_clip, tmp_path, monkeypatch):
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    segmenter = Segmenter(tiny_model())
    result = segment_video(segmenter, small_clip, tmp_path / "o.mp4", max_frames=5)
    overlay = probe(tmp_path / "o.mp4")
    assert (overlay["codec"], overlay["frames"], overlay["size"], overlay["rate"]) == ("mpeg4", 5, (160, 120), RATE)
    assert result.frames == 5 and result.segmented == 5


def test_the_command_knows_the_same_video_suffixes():
    assert segment_video_command.VIDEO_SUFFIXES == video.VIDEO_SUFFIXES


def test_upright_turns_by_the_display_rotation():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert video.upright(image, 0) is image
    np.testing.assert_array_equal(video.upright(image, 90), [[2, 5], [1, 4], [0, 3]])  # counterclockwise
    np.testing.assert_array_equal(video.upright(image, -90), [[3, 0], [4, 1], [5, 2]])
    np.testing.assert_array_equal(video.upright(image, 180), image[::-1, ::-1])


# -- interrupted in a real process -------------------------------------------------------------

ENV = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}


def _read_until(fd: int, text: str, pattern: str | None, deadline: float) -> str:
    """Read the process's terminal until ``pattern`` shows (``None``: until it closes)."""
    while time.monotonic() < deadline and not (pattern and re.search(pattern, text)):
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the process has exited and closed the terminal
                break
            if not chunk:
                break
            text += chunk.decode(errors="replace")
    return text


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_leaves_playable_videos_of_the_frames_done(signum, tmp_path, tiny_weights):
    frames = camvid_frames(12, (160, 120))
    clip = encode(tmp_path / "long.mp4", frames * 25)  # 300 frames
    out = tmp_path / "out"
    command = [sys.executable, "-m", "deeplab_resnet", "segment", str(clip), "--weights", str(tiny_weights)]
    # --backend torch: the last frame's labels are compared exactly with PyTorch's below (which frame
    # is last varies from run to run, and another engine's rounding may flip a pixel at an argmax tie)
    command += ["-o", str(out), "--save-labels", "--native-size", "--backend", "torch"]
    # stderr is a terminal, so the progress line shows: the signal comes once some frames are done
    main_fd, terminal = pty.openpty()
    proc = subprocess.Popen(command, env=ENV, stderr=terminal, stdout=subprocess.DEVNULL)
    os.close(terminal)
    try:
        shown = _read_until(main_fd, "", r"long\.mp4: ([5-9]|\d\d+)/300 frames", time.monotonic() + 120)
        assert proc.poll() is None, shown
        proc.send_signal(signum)
        stderr = _read_until(main_fd, shown, None, time.monotonic() + 120)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main_fd)
    assert proc.returncode == {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}[signum], stderr
    assert "Traceback" not in stderr
    assert re.search(r"\d+(\.\d+)? frames/s", stderr)
    done = int(re.search(r"wrote the first (\d+) frames", stderr).group(1))
    assert 5 <= done < 300
    assert sorted(p.name for p in out.iterdir()) == ["long_labels.mkv", "long_overlay.mp4"]  # no temporary file
    overlay = probe(out / "long_overlay.mp4")
    assert overlay["frames"] == done and overlay["size"] == (160, 120)
    labels = list(video.read_labels(out / "long_labels.mkv"))
    assert len(labels) == done
    np.testing.assert_array_equal(labels[-1], expected_labels(decode(clip)[done - 1 : done])[0])


def test_segment_video_refuses_bad_input_before_writing(tmp_path):
    with pytest.raises(DeepLabError, match="file not found"):
        segment_video(Segmenter(tiny_model()), tmp_path / "missing.mp4", tmp_path / "o.mp4")
    assert list(tmp_path.iterdir()) == []


def test_segment_batch_equals_one_image_at_a_time_with_the_crf():
    from deeplab_resnet.crf import PRESETS

    frames = [np.array(f) for f in camvid_frames(2, (48, 40))]  # writable, as decoded frames are
    segmenter = Segmenter(tiny_model(), crf=PRESETS["deeplab-resnet"])
    batched = segmenter.segment_batch(frames)
    for frame, result in zip(frames, batched):
        single = segmenter(frame)
        assert np.mean(result.labels == single.labels) > 0.999
    plain = Segmenter(tiny_model()).segment_batch(frames)
    assert any((a.labels != b.labels).any() for a, b in zip(plain, batched))  # the CRF did run


def test_json_summary_with_multi_scale(small_clip, tmp_path, tiny_weights):
    out = tmp_path / "out"
    args = ["--weights", tiny_weights, "-o", out, "--native-size", "--max-frames", "3", "--every", "2"]
    assert run(small_clip, *args, "--scales", "1,0.5", "--json", tmp_path / "summary.json") == EXIT_OK
    (summary,) = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["frames"], summary["segmented"], summary["width"], summary["height"]) == (3, 2, 160, 120)
    assert summary["outputs"] == [str(out / "clip_overlay.mp4")]
    assert all(0 < n <= 2 for n in summary["classes"].values())


def test_a_truncated_file_that_still_opens_gives_its_frames_and_exit_1(tmp_path, tiny_weights, capsys):
    clip = encode(tmp_path / "cut.mkv", camvid_frames(12, (160, 120)), codec="ffv1", pix_fmt="yuv420p")
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])  # Matroska states its duration up front: the file still opens
    held = len(decode(clip))
    assert 0 < held < 12
    out = tmp_path / "out"
    assert run(clip, "--weights", tiny_weights, "-o", out, "--native-size") == 1
    captured = capsys.readouterr()
    assert f"wrote the {held} frames it holds" in captured.err and "truncated" in captured.out
    assert probe(out / "cut_overlay.mp4")["frames"] == held
