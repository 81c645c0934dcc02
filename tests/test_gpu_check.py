"""``benchmarks/gpu_check.py``, the one-command GPU check: its orchestration (limits, failures,
the summary) with stand-in parts, and the whole runner as a CPU dry run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_parts_run_in_turn_and_a_failure_or_timeout_stops_only_that_part(tmp_path):
    def numbers(out, log):
        return {"printed": log.strip()}

    def unreadable(out, log):
        raise ValueError("no result file")

    parts = [
        gpu_check.Part("fails", 30, python("import sys; print('boom'); sys.exit(3)")),
        gpu_check.Part("slow", 1, python("import time; time.sleep(60)")),
        gpu_check.Part("ok", 30, python("print(42)"), numbers=numbers),
        gpu_check.Part("bad_results", 30, python("pass"), numbers=unreadable),
        gpu_check.Part("absent", 30, None, "skipped: no CUDA"),
    ]
    start = time.monotonic()
    outcomes = gpu_check.run_all(parts, tmp_path, {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}, total_s=60)
    assert time.monotonic() - start < 20  # the sleeper was stopped at its 1 s limit
    status = {o.name: o for o in outcomes}
    assert [o.name for o in outcomes] == ["fails", "slow", "ok", "bad_results", "absent"]
    assert status["fails"].status == "failed" and "exit 3" in status["fails"].note and "boom" in status["fails"].note
    assert status["slow"].status == "timeout" and status["slow"].seconds < 10
    assert status["ok"].status == "ok" and status["ok"].numbers == {"printed": "42"}
    assert status["bad_results"].status == "failed" and "no result file" in status["bad_results"].note
    assert status["absent"].status == "skipped" and status["absent"].note == "skipped: no CUDA"
    table = gpu_check.write_summary(outcomes, tmp_path, "# test", {})
    assert (tmp_path / "summary.md").read_text() == table
    assert [p["status"] for p in json.loads((tmp_path / "summary.json").read_text())["parts"]] == [
        "failed", "timeout", "ok", "failed", "skipped"
    ]  # fmt: skip
    assert "| ok | ok |" in table and "printed 42" in table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "summary.json", "summary.md"]


def test_no_part_starts_once_the_total_time_is_spent(tmp_path):
    parts = [gpu_check.Part("a", 30, python("import time; time.sleep(60)")), gpu_check.Part("b", 30, python("pass"))]
    outcomes = gpu_check.run_all(parts, tmp_path, {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}, total_s=6)
    assert outcomes[0].status == "timeout" and outcomes[0].seconds < 10
    assert outcomes[1].status == "skipped" and "no time left" in outcomes[1].note


def test_training_log_gives_the_validation_and_loss_curves(tmp_path):
    log = "\n".join([
        "step 0/4  loss 2.5000  lr 0.005  3.10 samples/s  ETA 0 min",
        "step 2: val mIoU 0.0412 (7 s)",
        "step 3/4  loss 2.1000  lr 0.001  3.30 samples/s  ETA 0 min",
        "step 4: val mIoU 0.0533 (12 s)",
    ])  # fmt: skip
    numbers = gpu_check.train_numbers(tmp_path, log)
    assert numbers["best mIoU"] == 0.0533 and numbers["last step"] == 4 and numbers["samples/s"] == 3.3
    saved = json.loads((tmp_path / "train.json").read_text())
    assert saved["val_miou_curve"] == [{"step": 2, "val_miou": 0.0412}, {"step": 4, "val_miou": 0.0533}]
    assert [p["loss"] for p in saved["loss_curve"]] == [2.5, 2.1]
    with pytest.raises(ValueError):
        gpu_check.train_numbers(tmp_path, "step 0/4  loss 2.5000  lr 0.005  3.10 samples/s  ETA 0 min")


def test_limits_option():
    assert gpu_check.parse_limits("gpu_all=200,train=5") == {"gpu_all": 200.0, "train": 5.0}
    for bad in ("gpu_all", "nope=3", "crf=x"):
        with pytest.raises(Exception, match="PART=SECONDS|unknown part"):
            gpu_check.parse_limits(bad)


def test_cpu_dry_run_reports_every_part_within_its_limit(tmp_path, voc_fixture):
    """The whole runner on the CPU with the tiny model: every part reported, the CUDA suite
    skipped, no part over its limit, the summary written, at most 8 files back."""
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--out", str(out), "--device", "cpu", "--model",
         "deeplab_v2_resnet_tiny", "--data", str(voc_fixture.parent), "--total-s", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=180, env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    assert not any(scratch.iterdir()), "the runner left its work folder behind"
    assert time.monotonic() - start < 120, "the runner overran its total limit"
    assert result.returncode in (0, 1), result.stderr[-2000:]
    parts = json.loads((out / "summary.json").read_text())["parts"]
    assert [p["name"] for p in parts] == ["wheels", "suite", "gpu_all", "crf", "train"]
    by = {p["name"]: p for p in parts}
    assert by["suite"]["status"] == "skipped" and "no CUDA" in by["suite"]["note"]
    for p in parts:
        assert p["status"] in ("ok", "failed", "timeout", "skipped"), p
        assert p["seconds"] <= p["limit_s"] + 5, p
        assert p["status"] != "failed", p  # a timeout on a loaded machine is allowed, an error is not
    assert "| gpu_all |" in (out / "summary.md").read_text()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(p.relative_to(out).parts) <= 3 for p in files), files
    assert result.returncode == (0 if all(p["status"] in ("ok", "skipped") for p in parts) else 1)
