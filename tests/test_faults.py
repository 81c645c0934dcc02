"""Ordinary faults against the real CLI in subprocesses: a full disk, a read-only folder, SIGTERM and
Ctrl-C at random moments, outputs that would replace inputs or each other, a closed stdout.

Each asserts the exact exit status, one line on stderr naming what failed (no traceback), that no
temporary file is left, and that every file that existed before is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from deeplab_resnet.atomic import atomic_write_text, remove_stale_temporaries
from deeplab_resnet.errors import EXIT_IO, EXIT_PARTIAL, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE
from deeplab_resnet.outputs import output_names, plan_outputs

ENV = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "deeplab_resnet", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, **kwargs)


def checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def assert_one_line(stderr: str, *needles: str) -> None:
    # the "backend: ..." line of --backend auto is information, not part of the error
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("backend: ")]
    assert "Traceback" not in stderr, stderr
    assert lines, "no message"
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def photos(folder: Path, voc_fixture: Path, names: list[str], size: int = 96) -> list[Path]:
    """Small crops of real VOC photos, so each run is quick."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((voc_fixture / "JPEGImages").glob("*.jpg"))
    out = []
    for name, source in zip(names, sources):
        image = Image.open(source).convert("RGB").crop((0, 0, size, size))
        path = folder / name
        image.save(path)
        out.append(path)
    return out


# -- the output-naming rule --------------------------------------------------------------------


def test_output_names_follow_the_documented_rule(tmp_path):
    a, b = tmp_path / "trip" / "day1" / "x.jpg", tmp_path / "trip" / "day2" / "x.jpg"
    y1, y2, z = tmp_path / "trip" / "day1" / "y.jpg", tmp_path / "trip" / "day1" / "y.png", tmp_path / "z.jpg"
    assert output_names([a, b]) == [Path("day1/x"), Path("day2/x")]
    assert output_names([y1, y2]) == [Path("y_jpg"), Path("y_png")]
    assert output_names([a]) == [Path("x")]
    assert output_names([a, z]) == [Path("trip/day1/x"), Path("z")]
    plan = plan_outputs([y1, y2], tmp_path / "out", ["labels", "overlay"])
    assert plan[0] == {"labels": tmp_path / "out" / "y_jpg.png", "overlay": tmp_path / "out" / "y_jpg_overlay.jpg"}


def test_an_output_that_would_replace_an_input_is_refused_before_any_work(tmp_path, tiny_weights, voc_fixture):
    folder = tmp_path / "photos"
    inputs = photos(folder, voc_fixture, ["holiday.png", "beach.jpg"])
    before = checksums(folder)
    result = cli("segment", folder, "--weights", tiny_weights, "-o", folder)
    assert result.returncode == EXIT_USAGE
    assert_one_line(result.stderr, str(inputs[0]), "choose another output path")
    assert checksums(folder) == before  # nothing replaced, nothing added
    # the same for a JSON summary written over an input
    result = cli("segment", inputs[1], "--weights", tiny_weights, "-o", tmp_path / "out", "--json", inputs[1])
    assert result.returncode == EXIT_USAGE
    assert_one_line(result.stderr, str(inputs[1]))
    assert checksums(folder) == before and not (tmp_path / "out").exists()
    # and an output folder that is a file
    result = cli("segment", inputs[1], "--weights", tiny_weights, "-o", inputs[0])
    assert result.returncode == EXIT_USAGE
    assert_one_line(result.stderr, str(inputs[0]), "not a directory")
    assert checksums(folder) == before


def test_same_named_inputs_get_their_own_outputs(tmp_path, tiny_weights, voc_fixture):
    a = photos(tmp_path / "in" / "a", voc_fixture, ["x.jpg"])[0]
    b, c = photos(tmp_path / "in" / "b", voc_fixture, ["x.jpg", "y.png"])
    out = tmp_path / "out"
    result = cli("segment", a, b, c, "--weights", tiny_weights, "-o", out)
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["a/x.png", "b/x.png", "b/y.png"]
    labels = [np.asarray(Image.open(out / name)) for name in written]
    assert all(label.shape == (96, 96) for label in labels)


# -- a full disk, a read-only folder, a closed stdout ------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs for the disk-full test: {mounted.stderr.decode().strip()}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_stops_segment_with_one_line_and_keeps_complete_outputs(tmp_path, tiny_weights, voc_fixture):
    inputs = photos(tmp_path / "in", voc_fixture, [f"p{i}.jpg" for i in range(6)], size=160)
    with small_tmpfs(tmp_path / "disk", "3m") as disk:
        result = cli("segment", *inputs, "--weights", tiny_weights, "-o", disk, "--save-probs")
        assert result.returncode == EXIT_IO, result.stderr
        assert_one_line(result.stderr, "disk full", str(disk))
        assert "wrote 1 result(s)" in result.stderr  # what is complete is said
        assert temporaries(disk) == []
        for path in disk.iterdir():  # every file there is complete and loadable
            if path.suffix == ".npy":
                assert np.load(path).shape == (160, 160, 21)
            else:
                Image.open(path).load()


def test_a_full_disk_stops_a_video_with_one_line_naming_its_output(tmp_path, tiny_weights):
    from test_video import camvid_frames, encode

    clip = encode(tmp_path / "clip.mp4", camvid_frames(40, (320, 240)), audio="aac")
    args = ["--weights", tiny_weights, "--native-size", "--backend", "torch"]
    assert cli("segment", clip, "-o", tmp_path / "roomy", *args).returncode == 0
    size = (tmp_path / "roomy" / "clip_overlay.mp4").stat().st_size
    # a disk a little smaller than the overlay: full near its end, as its index is written on closing
    with small_tmpfs(tmp_path / "disk", f"{(size - 8192) // 4096 * 4}k") as disk:
        result = cli("segment", clip, "-o", disk, *args)
        assert result.returncode == EXIT_IO, result.stderr
        # the file asked for, not the temporary one it is written to until complete
        assert_one_line(result.stderr, f"{disk / 'clip_overlay.mp4'}: no space left on the device (disk full)")
        assert list(disk.iterdir()) == []


def test_a_read_only_output_folder_fails_before_any_work(tmp_path, tiny_weights, voc_fixture):
    inputs = photos(tmp_path / "in", voc_fixture, ["a.jpg"])
    out = tmp_path / "ro"
    out.mkdir()
    (out / "kept.txt").write_text("old")
    if subprocess.run(["mount", "--bind", str(out), str(out)], capture_output=True).returncode != 0:
        pytest.skip("bind mounts need root")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(out)], check=True)
        result = cli("segment", *inputs, "--weights", tiny_weights, "-o", out)
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)
    assert result.returncode == EXIT_IO, result.stderr
    assert_one_line(result.stderr, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["kept.txt"]


def test_a_full_stdout_is_one_line():
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "deeplab_resnet", "weights", "list"], stdout=full, stderr=subprocess.PIPE, text=True,
            env=ENV,
        )  # fmt: skip
    assert result.returncode == EXIT_IO
    assert_one_line(result.stderr, "disk full")


def test_a_broken_image_among_good_ones_is_skipped_with_status_1(tmp_path, tiny_weights, voc_fixture):
    folder = tmp_path / "in"
    photos(folder, voc_fixture, ["a.jpg", "b.jpg"])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = cli("segment", folder, "--weights", tiny_weights, "-o", tmp_path / "out")
    assert result.returncode == EXIT_PARTIAL
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "b.png"]


# -- signals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_a_random_moment_leaves_no_temporary_and_intact_outputs(
    tmp_path, tiny_weights, voc_fixture, signum
):
    inputs = photos(tmp_path / "in", voc_fixture, [f"p{i}.jpg" for i in range(8)], size=200)
    before = checksums(tmp_path / "in")
    rng = random.Random(int(signum))
    expected_status = {signal.SIGTERM: EXIT_SIGTERM, signal.SIGINT: EXIT_SIGINT}[signum]
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        command = [sys.executable, "-m", "deeplab_resnet", "segment", *map(str, inputs), "--weights", str(tiny_weights)]
        proc = subprocess.Popen([*command, "-o", str(out), "--save-logits"], env=ENV, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (out.exists() and any(out.iterdir())) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode in (expected_status, 0), stderr
        if proc.returncode == expected_status:
            assert_one_line(stderr, "SIGTERM" if signum == signal.SIGTERM else "interrupted")
        assert temporaries(out) == []
        for label in out.glob("*[0-9].png"):
            assert np.asarray(Image.open(label)).shape == (200, 200)
        for logits in out.glob("*.npy"):
            assert np.load(logits).shape == (200, 200, 21)
    assert checksums(tmp_path / "in") == before


def test_a_temporary_left_by_a_killed_process_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".report.json.deeplab-{int(dead.stdout)}-abc123.tmp"
    stale.write_text("half")
    alive = tmp_path / f".other.deeplab-{os.getppid()}-def456.tmp"  # its writer still runs: kept
    alive.write_text("x")
    foreign = tmp_path / ".notes.txt.tmp"  # not ours: kept
    foreign.write_text("y")
    atomic_write_text(tmp_path / "report.json", "{}")
    assert not stale.exists() and alive.exists() and foreign.exists()
    assert (tmp_path / "report.json").read_text() == "{}"
    assert remove_stale_temporaries(tmp_path) == []  # once per folder and process


def test_kill_9_debris_is_cleaned_by_the_next_run(tmp_path, tiny_weights, voc_fixture):
    inputs = photos(tmp_path / "in", voc_fixture, ["a.jpg"])
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a.png.deeplab-999999999-xyz.tmp"  # no such process can exist
    stale.write_bytes(b"partial")
    result = cli("segment", *inputs, "--weights", tiny_weights, "-o", out)
    assert result.returncode == 0, result.stderr
    assert temporaries(out) == []
    assert np.asarray(Image.open(out / "a.png")).shape == (96, 96)


# -- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, option",
    [
        (["segment", "x.jpg", "--alpha", "nan"], "--alpha"),
        (["segment", "x.jpg", "--alpha", "1.5"], "--alpha"),
        (["segment", "x.jpg", "--max-size", "-5"], "--max-size"),
        (["segment", "x.jpg", "--tile", "8"], "--tile"),
        (["segment", "x.jpg", "--crf", "--crf-iterations", "0"], "--crf-iterations"),
        (["evaluate", "--data-dir", ".", "--data-list", "l.txt", "--limit", "-1"], "--limit"),
        (["evaluate", "--data-dir", ".", "--data-list", "l.txt", "--batch-size", "0"], "--batch-size"),
        (["evaluate", "--data-dir", ".", "--data-list", "l.txt", "--crf-workers", "-2"], "--crf-workers"),
    ],
)
def test_out_of_range_arguments_are_one_usage_line(args, option, capsys):
    from deeplab_resnet.cli import main

    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and option in err and "--help" in err


def test_ctrl_c_during_evaluate_with_crf_workers_is_one_line(tmp_path, tiny_weights, voc_fixture):
    command = [
        sys.executable, "-m", "deeplab_resnet", "evaluate", "--data-dir", str(voc_fixture),
        "--data-list", str(voc_fixture / "list_all.txt"), "--weights", str(tiny_weights), "--crf",
        "--crf-workers", "2", "-o", str(tmp_path / "eval"), "--save-predictions", str(tmp_path / "pred"),
    ]  # fmt: skip
    # a session of its own: Ctrl-C in a terminal reaches every process of the foreground group
    proc = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "pred").glob("*.png")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_SIGINT, stderr
    assert_one_line(stderr, "interrupted")
    assert temporaries(tmp_path) == []
    for png in (tmp_path / "pred").glob("*.png"):
        Image.open(png).load()


def _blocked_signals() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_a_worker_started_while_interrupts_are_held_starts_with_ctrl_c_blocked():
    # what keeps a Ctrl-C to the process group from ending a CRF worker mid-import with a traceback
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from deeplab_resnet.errors import interrupts_held

    assert signal.SIGINT not in _blocked_signals()
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        with interrupts_held():
            assert signal.SIGINT in _blocked_signals()
            future = pool.submit(_blocked_signals)
        assert signal.SIGINT not in _blocked_signals()  # the block ends with the block
        assert signal.SIGINT in future.result(timeout=120)


def test_evaluate_refuses_to_write_predictions_over_the_ground_truth(tmp_path, tiny_weights, voc_fixture):
    data = tmp_path / "voc"
    shutil.copytree(voc_fixture / "JPEGImages", data / "JPEGImages")
    shutil.copytree(voc_fixture / "SegmentationClassAug", data / "SegmentationClassAug")
    before = checksums(data)
    result = cli(
        "evaluate", "--data-dir", data, "--data-list", voc_fixture / "list_val.txt", "--weights", tiny_weights,
        "--save-predictions", data / "SegmentationClassAug", "-o", tmp_path / "eval",
    )  # fmt: skip
    assert result.returncode == EXIT_USAGE, result.stderr
    assert_one_line(result.stderr, "would replace the input", "SegmentationClassAug")
    assert checksums(data) == before
    assert not (tmp_path / "eval").exists()  # refused before any work


# -- training and export on faults -------------------------------------------------------------


def _train_args(voc_fixture: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "train", "--data-dir", str(voc_fixture), "--data-list", str(voc_fixture / "list_train.txt"),
        "--model", "deeplab_v2_resnet_tiny", "--input-size", "33,33", "--batch-size", "1",
        "--num-workers", "0", "--snapshot-dir", str(run_dir), "--no-progress", "--no-tensorboard",
        "--no-check-data", "--log-every", "1", "--save-num-images", "0", *extra,
    ]  # fmt: skip


def test_sigterm_during_training_keeps_the_steps_done_in_a_checkpoint(tmp_path, voc_fixture):
    from deeplab_resnet.training.checkpoint import checkpoint_step, list_checkpoints, load_checkpoint

    run = tmp_path / "run"
    args = _train_args(voc_fixture, run, "--num-steps", "100000", "--checkpoint-every", "100000")
    proc = subprocess.Popen([sys.executable, "-m", "deeplab_resnet", *args], env=ENV, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_SIGTERM, stderr
    assert "Traceback" not in stderr and "continue with --resume" in stderr
    assert temporaries(run) == []
    checkpoints = list_checkpoints(run)
    assert checkpoints, stderr
    step, path = checkpoints[-1]
    assert step >= 2 and checkpoint_step(path) == step  # more than the first checkpoint at step 1
    assert load_checkpoint(path)["step"] == step


def test_a_full_disk_during_training_names_the_last_complete_checkpoint(tmp_path, voc_fixture):
    with small_tmpfs(tmp_path / "disk", "2600k") as disk:  # room for one checkpoint of the tiny model, not two
        run = disk / "run"
        result = cli(*_train_args(voc_fixture, run, "--num-steps", "3", "--checkpoint-every", "1"))
        assert result.returncode == EXIT_IO, result.stderr
        assert_one_line(result.stderr, "disk full", "the last complete checkpoint is", "ckpt-00000001.pt")
        assert temporaries(disk) == []


@pytest.mark.parametrize("fmt, name", [("torchscript", "m.pt"), ("onnx", "m.onnx")])
def test_export_to_a_full_disk_is_one_line(tmp_path, tiny_weights, fmt, name):
    with small_tmpfs(tmp_path / "disk", "20k") as disk:
        result = cli("export", "--weights", tiny_weights, "-o", disk / name, "--format", fmt)
        assert result.returncode == EXIT_IO, result.stderr  # torch's own writer used to abort the process
        assert_one_line(result.stderr, "disk full", str(disk / name))
        assert list(disk.iterdir()) == []


def test_weights_to_a_full_disk_are_an_oserror_naming_the_file(tmp_path):
    from conftest import tiny_model

    from deeplab_resnet import save_weights

    with small_tmpfs(tmp_path / "disk", "20k") as disk:
        with pytest.raises(OSError) as failure:
            save_weights(tiny_model(), disk / "w.safetensors", source="test")
        assert failure.value.filename == str(disk / "w.safetensors")
        assert list(disk.iterdir()) == []


def test_interrupts_are_held_until_the_block_is_done():
    # In a fresh interpreter: the signals go to the whole process, and the test process may hold
    # native libraries (inference engines, their thread pools) that have no business seeing them.
    code = """
import os, signal, time
from deeplab_resnet.errors import Terminated, deferred_interrupts, install_signal_handlers

install_signal_handlers()
finished = []
try:
    with deferred_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        finished.append("the block ran to its end")
except Terminated:
    print("terminated after the block:", finished == ["the block ran to its end"])
try:
    with deferred_interrupts():  # asked twice: at once
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        finished.append("not reached")
except KeyboardInterrupt as stop:
    print("interrupted at once:", finished == ["the block ran to its end"], not isinstance(stop, Terminated))
print("handlers restored:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "terminated after the block: True",
        "interrupted at once: True True",
        "handlers restored: True",
    ], result.stdout + result.stderr


# -- resources ---------------------------------------------------------------------------------


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, tiny_weights):
    import resource

    bomb = tmp_path / "bomb.png"
    Image.new("L", (12000, 12000)).save(bomb)  # 144 megapixels in a few hundred kB
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(small)

    def cap_memory() -> None:  # a regression fails here instead of swapping
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    command = [sys.executable, "-m", "deeplab_resnet", "segment", str(bomb), str(small), "--weights", str(tiny_weights)]
    result = subprocess.run(
        [*command, "-o", str(tmp_path / "out")], capture_output=True, text=True, env=ENV, preexec_fn=cap_memory
    )
    assert result.returncode == EXIT_PARTIAL, result.stderr
    assert "bomb.png: 12000x12000 is 144 megapixels" in result.stderr and "--max-pixels" in result.stderr
    assert "Traceback" not in result.stderr and "DecompressionBomb" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["small.png"]


def test_an_unreadable_image_is_an_io_error_not_a_damaged_file(tmp_path, monkeypatch):
    # As root nothing is unreadable, so the system's refusal is played by PIL's open.
    from deeplab_resnet import images

    path = tmp_path / "secret.jpg"
    Image.new("RGB", (8, 8)).save(path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images.Image, "open", refuse)
    with pytest.raises(PermissionError):  # the CLI turns it into exit 3 naming the file
        images.read_image(path)


@pytest.mark.parametrize("scales", ["nan", "inf", "-1", "0", "20", "1,abc", ""])
def test_bad_scales_are_one_line_before_any_work(tmp_path, scales):
    from deeplab_resnet.commands.common import parse_scales
    from deeplab_resnet.errors import DeepLabError

    with pytest.raises(DeepLabError, match="--scales"):
        parse_scales(scales)
    assert parse_scales("1,0.75,0.5") == (1.0, 0.75, 0.5) and parse_scales("4") == (4.0,)


def test_ctrl_c_during_a_data_tool_with_workers_is_one_line(tmp_path, voc_fixture):
    # 6,200 distinct entries (links to the fixture's files): several seconds of work for 2 workers
    data, entries = tmp_path / "data", []
    (data / "JPEGImages").mkdir(parents=True)
    (data / "SegmentationClassAug").mkdir()
    for line in (voc_fixture / "list_all.txt").read_text().splitlines():
        image, label = line.split()
        for copy in range(200):
            pair = [f"{image.rsplit('/', 1)[0]}/c{copy}_{image.rsplit('/', 1)[1]}"]
            pair.append(f"{label.rsplit('/', 1)[0]}/c{copy}_{label.rsplit('/', 1)[1]}")
            (data / pair[0].lstrip("/")).symlink_to(voc_fixture / image.lstrip("/"))
            (data / pair[1].lstrip("/")).symlink_to(voc_fixture / label.lstrip("/"))
            entries.append(" ".join(pair))
    (data / "list.txt").write_text("\n".join(entries) + "\n")
    command = [
        sys.executable, "-m", "deeplab_resnet", "data", "check", "--data-dir", str(data),
        "--data-list", str(data / "list.txt"), "--workers", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(3)  # the workers are busy by now
    os.killpg(proc.pid, signal.SIGINT)
    start = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - start < 10, "waited for the queued files instead of stopping"
    assert proc.returncode == EXIT_SIGINT, stderr
    assert_one_line(stderr, "interrupted")
