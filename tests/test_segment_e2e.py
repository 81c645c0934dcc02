"""``deeplab segment`` end to end: background decoding and writing give the same files, failures of
the writer reach the user, the faster weight load and upsampling give the same values, and the
end-to-end benchmark script runs."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_model
from PIL import Image

from deeplab_resnet import save_weights
from deeplab_resnet.background import InOrderWorker, read_ahead
from deeplab_resnet.cli import main
from deeplab_resnet.commands import segment
from deeplab_resnet.errors import EXIT_IO, EXIT_PARTIAL, EXIT_SIGINT, DeepLabError
from deeplab_resnet.images import read_image
from deeplab_resnet.inference import protocol
from deeplab_resnet.inference.segmenter import Segmenter, _upsample_rows, labels_of
from deeplab_resnet.weights import load_model
from deeplab_resnet.weights.native import read_native
from deeplab_resnet.weights.validate import check_state


def photos(folder: Path, voc_fixture: Path, count: int, size: tuple[int, int] = (120, 90)) -> list[Path]:
    """Crops of real VOC photos, of two sizes (so the network sees different shapes)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, source in enumerate(sorted((voc_fixture / "JPEGImages").glob("*.jpg"))[:count]):
        w, h = size if i % 2 == 0 else (size[1], size[0])
        path = folder / f"p{i}.jpg"
        Image.open(source).convert("RGB").crop((0, 0, w, h)).save(path)
        out.append(path)
    return out


def files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def run_segment(monkeypatch, capsys, background: bool, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(segment, "BACKGROUND_IO", background)
    status = main(["segment", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# -- the same results -------------------------------------------------------------------------


def test_background_io_writes_the_same_files_and_lines_as_in_order(
    tmp_path, tiny_weights, voc_fixture, monkeypatch, capsys
):
    inputs = photos(tmp_path / "in", voc_fixture, 5)
    extra = ["--save-mask", "--save-probs", "--save-logits", "--json", "-"]
    runs = {
        background: run_segment(
            monkeypatch,
            capsys,
            background,
            *inputs,
            "--weights",
            tiny_weights,
            "-o",
            tmp_path / f"out{background}",
            *extra,
        )  # fmt: skip
        for background in (True, False)
    }
    assert runs[True][0] == runs[False][0] == 0
    assert files(tmp_path / "outTrue") == files(tmp_path / "outFalse")
    assert len(files(tmp_path / "outTrue")) == 5 * 5
    lines = [json.loads(line) for line in runs[True][1].splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in inputs]  # in input order
    assert runs[True][1].replace("outTrue", "outFalse") == runs[False][1]


def reference_labels(model, rgb: np.ndarray) -> np.ndarray:
    """The labels as the code before the faster upsampling computed them: the network's logits,
    the width then the height upsampled by the protocol's matrices (einsum), argmax."""
    segmenter = Segmenter(model, pad_size="auto")
    logits = segmenter.logits(rgb)  # C x h x w, of the padded input
    pad = segmenter.pad_size
    wx = protocol.upsample_matrix(logits.shape[-1], rgb.shape[1], rgb.shape[1], pad, model.convention)
    wy = protocol.upsample_matrix(logits.shape[-2], rgb.shape[0], rgb.shape[0], pad, model.convention)
    upsampled = torch.einsum("yh,chw->cyw", wy, logits @ wx.T)
    return upsampled.argmax(0).numpy().astype(np.uint8)


@pytest.mark.parametrize("folder", [False, True])
def test_one_image_and_folder_runs_give_the_reference_labels(
    tmp_path, tiny_weights, voc_fixture, monkeypatch, capsys, folder
):
    inputs = photos(tmp_path / "in", voc_fixture, 3 if folder else 1)
    args = [tmp_path / "in"] if folder else inputs
    status, _, _ = run_segment(monkeypatch, capsys, True, *args, "--weights", tiny_weights, "-o", tmp_path / "out")
    assert status == 0
    model = load_model(tiny_weights)
    for path in inputs:
        written = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png"))
        assert np.array_equal(written, reference_labels(model, read_image(path)))


def test_row_upsampling_is_bitwise_the_einsum_and_labels_are_argmax():
    g = torch.Generator().manual_seed(0)
    cols = torch.randn(21, 65, 333, generator=g) * 5
    wy = protocol.upsample_matrix(65, 500, 500, 513, "caffe")
    for start, stop in ((0, 256), (256, 500)):
        assert torch.equal(_upsample_rows(cols, wy, start, stop), torch.einsum("yh,chw->cyw", wy[start:stop], cols))
    ties = torch.randint(0, 3, (21, 64, 64), generator=g).float()  # many equal maxima: the first one wins
    assert torch.equal(labels_of(ties), ties.argmax(0))


def test_class_pixels_counts_each_present_class():
    from deeplab_resnet.dataset_info import resolve_dataset_info
    from deeplab_resnet.inference.segmenter import Segmentation

    labels = np.array([[0, 0, 15], [15, 15, 3]], dtype=np.uint8)
    counts = Segmentation(labels, resolve_dataset_info(None)).class_pixels()
    assert counts == {"background": 2, "bird": 1, "person": 3}
    assert list(counts) == ["background", "bird", "person"]  # by class index


# -- the writer's failures ----------------------------------------------------------------------


def failing_writes(fail_on: str, error: OSError):
    real = segment.write_outputs

    def write(args, rgb, result, plan):
        if plan["labels"].stem == fail_on:
            raise error
        return real(args, rgb, result, plan)

    return write


def test_a_write_refused_for_one_file_is_one_line_and_the_run_goes_on(
    tmp_path, tiny_weights, voc_fixture, monkeypatch, capsys
):
    inputs = photos(tmp_path / "in", voc_fixture, 4)
    error = OSError(errno.EACCES, "Permission denied", str(tmp_path / "out" / "p1.png"))
    monkeypatch.setattr(segment, "write_outputs", failing_writes("p1", error))
    status, out, err = run_segment(
        monkeypatch, capsys, True, *inputs, "--weights", tiny_weights, "-o", tmp_path / "out"
    )
    assert status == EXIT_PARTIAL
    assert f"skipped: {tmp_path / 'out' / 'p1.png'}: permission denied" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").glob("p?.png")) == ["p0.png", "p2.png", "p3.png"]
    assert "wrote 3 result(s)" in out and "1 failed" in out


def test_a_full_disk_in_the_writer_stops_the_run_and_says_what_is_complete(
    tmp_path, tiny_weights, voc_fixture, monkeypatch, capsys
):
    inputs = photos(tmp_path / "in", voc_fixture, 5)
    error = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "p2.png"))
    monkeypatch.setattr(segment, "write_outputs", failing_writes("p2", error))
    status, _, err = run_segment(monkeypatch, capsys, True, *inputs, "--weights", tiny_weights, "-o", tmp_path / "out")
    assert status == EXIT_IO
    assert "wrote 2 result(s)" in err and f"stopped after {inputs[1]}" in err
    assert err.strip().splitlines()[-1].endswith("p2.png: no space left on the device (disk full)")
    # nothing after the failed image was written, though the network may have run on it
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "p0.png", "p0_overlay.jpg", "p1.png", "p1_overlay.jpg",
    ]  # fmt: skip


def test_worker_runs_in_order_halts_after_a_full_disk_and_cancels_on_close():
    ran: list[int] = []

    def job(i: int) -> int:
        ran.append(i)
        if i == 2:
            raise OSError(errno.ENOSPC, "full")
        return i * 10

    worker = InOrderWorker("test", max_waiting=8, halt_on=lambda exc: getattr(exc, "errno", None) == errno.ENOSPC)
    futures = [worker.submit(job, i) for i in range(5)]
    worker.close()
    assert ran == [0, 1, 2] and [f.result() for f in futures[:2]] == [0, 10]
    assert isinstance(futures[2].exception(), OSError) and futures[3].cancelled() and futures[4].cancelled()

    started, gate = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return gate.wait(5)

    blocked = InOrderWorker("test", max_waiting=4)
    first = blocked.submit(hold)
    assert started.wait(5)
    waiting = [blocked.submit(job, i) for i in (7, 8)]
    threading.Timer(0.2, gate.set).start()
    blocked.close(cancel=True)  # the running job completes, the waiting ones never start
    assert first.result() is True and all(f.cancelled() for f in waiting) and 7 not in ran


def test_read_ahead_yields_in_order_and_inline_is_the_same():
    for inline in (False, True):
        with InOrderWorker("test", inline=inline) as worker:
            assert [f.result() for f in read_ahead(worker, range(6), lambda i: i * i)] == [0, 1, 4, 9, 16, 25]


def test_ctrl_c_during_a_folder_run_leaves_no_temporary_and_only_complete_files(tmp_path, voc_fixture):
    weights = tmp_path / "tiny.safetensors"
    save_weights(tiny_model(), weights)
    inputs = photos(tmp_path / "in", voc_fixture, 12, size=(200, 150))
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    for attempt, delay in enumerate((0.0, 0.3)):  # at the first output, and a little later
        out = tmp_path / f"out{attempt}"
        command = [sys.executable, "-m", "deeplab_resnet", "segment", str(tmp_path / "in"), "--weights", str(weights)]
        command += ["-o", str(out), "--save-probs", "--save-logits"]
        proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (out.exists() and any(out.iterdir())) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode in (EXIT_SIGINT, 0), stderr
        if proc.returncode == EXIT_SIGINT:
            assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].endswith("interrupted")
        assert [p for p in out.rglob("*") if p.name.endswith(".tmp")] == []
        for path in out.iterdir():
            if path.suffix == ".npy":
                assert np.load(path).shape[2] == 21
            else:
                Image.open(path).load()
    assert len(inputs) == 12


# -- the weight load ----------------------------------------------------------------------------


def test_load_model_takes_the_files_tensors_and_draws_no_random_values(tmp_path):
    model = tiny_model()
    state = {k: v.double() for k, v in model.state_dict().items()}  # a float64 file: stored as float32
    from deeplab_resnet.weights.native import meta_of, save_state

    save_state(state, meta_of(model), tmp_path / "w.safetensors")
    rng = torch.get_rng_state()
    loaded = load_model(tmp_path / "w.safetensors")
    assert torch.equal(torch.get_rng_state(), rng)  # no initialisation was drawn
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32 and not value.is_meta and value.is_contiguous()
        assert torch.equal(value, model.state_dict()[key])
    grads = {n: p.requires_grad for n, p in loaded.named_parameters()}
    assert grads == {n: p.requires_grad for n, p in model.named_parameters()}
    x = torch.randn(1, 3, 41, 41)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    fresh = load_model(tmp_path / "w.safetensors", not_restore_last=True)  # a new classifier is initialised
    assert not fresh.classifier.fc1_voc12_c0.weight.is_meta
    assert torch.equal(fresh.classifier.fc1_voc12_c0.bias, torch.zeros(21))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_check_state_finds_a_nan_or_an_infinity_in_any_float_type(dtype):
    good = {"a": torch.ones(4, 4, dtype=dtype)}
    check_state(good, "w")
    for bad_value in (float("nan"), float("inf")):
        bad = torch.ones(4, 4, dtype=dtype)
        bad[2, 3] = bad_value
        with pytest.raises(DeepLabError, match="tensor a has 1 NaN or infinite"):
            check_state({"a": bad}, "w")


def test_read_native_gives_tensors_of_their_own(tiny_weights):
    state, _ = read_native(tiny_weights)
    key = next(iter(state))
    state[key].fill_(7.0)  # the model owns these after load_model: writing them must not touch the file
    again, _ = read_native(tiny_weights)
    assert not torch.equal(again[key], state[key])


# -- the benchmark script -----------------------------------------------------------------------


def benchmark_script():
    spec = importlib.util.spec_from_file_location("segment_e2e", REPO / "benchmarks" / "segment_e2e.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_times_the_arms_and_reports_a_refused_one(tmp_path, tiny_weights, voc_fixture, capsys):
    bench = benchmark_script()
    folder = tmp_path / "jpegs"
    photos(folder, voc_fixture, 2)
    out = tmp_path / "e2e.json"
    args = [
        "--weights",
        str(tiny_weights),
        "--folder",
        str(folder),
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--json",
        str(out),
    ]
    arms = ["--arm", "a=--backend torch", "--arm", "bad=--backend no-such-engine"]
    assert bench.main([*args, *arms]) == 0
    result = json.loads(out.read_text())
    for case in ("one", "folder"):
        rows = result["cases"][case]
        assert rows["a"]["median_s"] > 0 and len(rows["a"]["times_s"]) == 1 and rows["a"]["median_cpu_s"] > 0
        assert rows["bad"]["median_s"] is None and "no-such-engine" in rows["bad"]["error"]
    assert "unavailable" in capsys.readouterr().out and result["cpu"] and len(result["load_before"]) == 3


def test_benchmark_profile_names_every_stage(tmp_path, tiny_weights, voc_fixture, capsys):
    bench = benchmark_script()
    folder = tmp_path / "jpegs"
    photos(folder, voc_fixture, 2)
    assert bench.main(["--weights", str(tiny_weights), "--folder", str(folder), "--profile"]) == 0
    text = capsys.readouterr().out
    for stage in ("import", "weight load", "decode", "network", "upsample+argmax", "encode+write"):
        assert stage in text
    assert bench.parse_arm('x=--flip --scales "1,0.5"') == ("x", ["--flip", "--scales", "1,0.5"])
    assert bench.split_env(["PYTHONPATH=../main/src", "--max-size=9"]) == (
        {"PYTHONPATH": "../main/src"},
        ["--max-size=9"],
    )
