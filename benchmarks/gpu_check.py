"""Verify and measure every GPU path in one command, within a fixed time (one device lease).

    python3 benchmarks/gpu_check.py --out $OUT                  # on the GPU machine
    python3 benchmarks/gpu_check.py --out /tmp/dry --device cpu --model deeplab_v2_resnet_tiny  # dry run

Parts, each a subprocess with a time limit of its own (a part that fails or runs out of time is
reported, and the others still run):

1. ``wheels``: install the wheels carried in ``.whl/`` (``benchmarks/gpu_payload.sh`` fills it)
   into ``/tmp/site`` and put that on every later part's ``PYTHONPATH``;
2. ``suite``: the CUDA test suite, ``pytest -m "cuda and not slow" tests/test_cuda.py``;
3. ``gpu_all``: ``benchmarks/gpu_all.py`` (inference per path, MFU, torchvision, training steps,
   data pipeline);
4. ``crf``: ``benchmarks/gpu_crf.py`` (the dense CRF on a batch of 8 500x375 images, torch ops and,
   when present, the Triton kernels);
5. ``train``: a short real training run, DeepLab-v2 from scratch on CamVid with bf16 autocast, its
   validation mIoU curve.

At the end one table (part, status, seconds, key numbers) is printed and written to
``OUT/summary.md`` and ``OUT/summary.json``. Everything the parts print goes to ``OUT/log.txt``;
their results to ``OUT/junit.xml``, ``gpu_all.json``, ``crf.json`` and ``train.json``: seven files,
inside the device tool's limit of eight. The data comes from ``_gpu_data/`` (``voc_fixture`` and
``camvid``, copied there by ``gpu_payload.sh``) or else ``../shared/data``.

With ``--device cpu`` (and the tiny model) the runner runs as a dry run: what needs CUDA is
reported as skipped, the rest runs at tiny sizes within tiny limits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from deeplab_resnet.atomic import atomic_write_text  # noqa: E402  (numpy only: the runner stays light)

SITE = Path("/tmp/site")  # where carried wheels are installed (the image's own packages stay untouched)

Numbers = Callable[[Path, str], dict]


@dataclass
class Part:
    """One step of the check: a command with a time limit, or the reason it does not run here."""

    name: str
    limit_s: float
    command: list[str] | None = None
    skip: str = ""
    numbers: Numbers | None = None  # key numbers from (OUT, the part's log); may raise


@dataclass
class Outcome:
    name: str
    status: str  # ok, failed, timeout, skipped
    seconds: float
    limit_s: float
    note: str = ""
    numbers: dict = field(default_factory=dict)


def run_part(part: Part, out: Path, env: dict, log: Path) -> Outcome:
    """Run ``part`` (its output appended to ``log``); a non-zero exit, a time-out or a failure to
    read its numbers is reported in the outcome, never raised."""
    if part.command is None:
        return Outcome(part.name, "skipped", 0.0, part.limit_s, part.skip)
    start = time.monotonic()
    part_log = out / f".{part.name}.log"
    with part_log.open("w") as sink:
        try:
            proc = subprocess.Popen(part.command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        except OSError as exc:
            return Outcome(part.name, "failed", time.monotonic() - start, part.limit_s, f"did not start: {exc}")
        status, note = _wait(proc, part.limit_s)
    seconds = time.monotonic() - start
    text = part_log.read_text(errors="replace")
    part_log.unlink()
    with log.open("a") as all_log:
        all_log.write(f"\n===== {part.name}: {' '.join(part.command)}\n{text}\n===== {part.name}: {status} {note}\n")
    if status == "failed":
        note = f"{note}: {_last_line(text)}"
    numbers = {}
    if part.numbers is not None:
        try:
            numbers = part.numbers(out, text)
        except Exception as exc:  # a part's results are unreadable: report it, go on with the others
            status = "failed" if status == "ok" else status
            note = f"{note}; results unreadable: {type(exc).__name__}: {exc}".lstrip("; ")
    return Outcome(part.name, status, seconds, part.limit_s, note, numbers)


def _wait(proc: subprocess.Popen, limit_s: float) -> tuple[str, str]:
    try:
        code = proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return "timeout", f"stopped at its limit of {limit_s:.0f} s"
    except BaseException:  # Ctrl-C or SIGTERM: take the part's processes down too
        _kill_group(proc)
        raise
    return ("ok", "") if code == 0 else ("failed", f"exit {code}")


def _kill_group(proc: subprocess.Popen) -> None:
    """The part's whole process group: torchrun's workers, data loaders, pytest's subprocesses."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


def run_all(parts: list[Part], out: Path, env: dict, total_s: float) -> list[Outcome]:
    """Every part in order, each within its own limit and what is left of ``total_s``."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    deadline = time.monotonic() + total_s
    outcomes = []
    for part in parts:
        left = deadline - time.monotonic()
        if part.command is not None and left < 5:
            outcomes.append(Outcome(part.name, "skipped", 0.0, part.limit_s, "skipped: no time left"))
            continue
        part.limit_s = min(part.limit_s, left)
        outcome = run_part(part, out, env, log)
        print(f"{outcome.name}: {outcome.status} in {outcome.seconds:.0f} s {outcome.note}", flush=True)
        outcomes.append(outcome)
        if part.name == "wheels" and outcome.status == "ok":
            env["PYTHONPATH"] = f"{SITE}{os.pathsep}{env['PYTHONPATH']}"
    return outcomes


def summary_table(outcomes: list[Outcome], header: str) -> str:
    """A Markdown table: part, status, seconds (of its limit), key numbers or the note."""
    lines = [header, "", "| part | status | seconds (limit) | key numbers |", "| --- | --- | --- | --- |"]
    details = []
    for o in outcomes:
        numbers = ", ".join(f"{k} {_fmt(v)}" for k, v in o.numbers.items() if not isinstance(v, dict))
        detail = "; ".join(x for x in (numbers, o.note) if x).replace("|", "/")
        lines.append(f"| {o.name} | {o.status} | {o.seconds:.0f} ({o.limit_s:.0f}) | {detail} |")
        for key, table in ((k, v) for k, v in o.numbers.items() if isinstance(v, dict)):
            details += ["", f"{o.name}, {key}:"] + [f"- {name}: {_fmt(value)}" for name, value in table.items()]
    return "\n".join(lines + details) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def write_summary(outcomes: list[Outcome], out: Path, header: str, info: dict) -> str:
    table = summary_table(outcomes, header)
    atomic_write_text(out / "summary.md", table)
    payload = {"machine": info, "parts": [asdict(o) for o in outcomes]}
    atomic_write_text(out / "summary.json", json.dumps(payload, indent=2) + "\n")
    return table


# ---------------------------------------------------------------- the parts' key numbers


def suite_numbers(out: Path, _log: str) -> dict:
    """Test counts from the JUnit XML, the first failing tests, and what each test measured (its
    ``record_property`` values: errors, agreements)."""
    root = ET.parse(out / "junit.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    cases = list(suite.iter("testcase"))
    failed = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
    measured = {
        c.get("name"): ", ".join(f"{p.get('name')} {p.get('value')}" for p in c.iter("property"))
        for c in cases
        if c.find(".//property") is not None
    }
    return {**counts, **({"first failing": ", ".join(failed[:4])} if failed else {}), "measured": measured}


def gpu_all_numbers(out: Path, _log: str) -> dict:
    data = json.loads((out / "gpu_all.json").read_text())
    return {"bf16 peak TFLOP/s": data["peak_tflops"], **data.get("derived", {})}


def crf_numbers(out: Path, _log: str) -> dict:
    data = json.loads((out / "crf.json").read_text())
    shape = data["shape"]
    numbers = {"shape": f"{shape['batch']}x{shape['height']}x{shape['width']}x{shape['labels']}"}
    for name, row in data["impl"].items():
        numbers[f"{name} ms/image"] = row["ms_per_image"] if row["status"] == "ok" else row["status"]
    return numbers


def train_numbers(out: Path, log: str) -> dict:
    """The validation curve from the training log (also after a time-out), written to train.json."""
    curve = []
    for line in log.splitlines():
        if ": val mIoU " in line and line.startswith("step "):
            step, rest = line[5:].split(": val mIoU ", 1)
            curve.append({"step": int(step), "val_miou": float(rest.split()[0])})
    losses, speeds = [], []
    for line in log.splitlines():  # "step 10/1500  loss 2.1234  lr 0.005  41.20 samples/s  ETA 3 min"
        words = line.split()
        if len(words) > 7 and words[0] == "step" and "/" in words[1] and words[2] == "loss" and words[7] == "samples/s":
            losses.append({"step": int(words[1].split("/")[0]), "loss": float(words[3])})
            speeds.append(float(words[6]))
    results = {"val_miou_curve": curve, "loss_curve": losses, "samples_per_s": speeds}
    atomic_write_text(out / "train.json", json.dumps(results, indent=2) + "\n")
    if not curve:
        raise ValueError("no validation result in the log")
    best = max(c["val_miou"] for c in curve)
    return {"val points": len(curve), "last step": curve[-1]["step"], "last mIoU": curve[-1]["val_miou"],
            "best mIoU": best, **({"samples/s": speeds[-1]} if speeds else {})}  # fmt: skip


# ---------------------------------------------------------------- the plan


def find_data(given: str | None) -> Path:
    if given:
        return Path(given).resolve()
    carried = REPO / "_gpu_data"
    return carried if (carried / "voc_fixture").is_dir() else REPO.parent / "shared" / "data"


def val_list(camvid: Path, limit: int | None, work: Path) -> Path:
    """CamVid's validation list, or its first ``limit`` lines (dry runs)."""
    full = camvid / "list_val_jpg.txt"
    if limit is None or not full.exists():
        return full
    short = work / "list_val_short.txt"
    atomic_write_text(short, "".join(full.read_text().splitlines(keepends=True)[:limit]))
    return short


def plan(args: argparse.Namespace, out: Path, data: Path, work: Path) -> list[Part]:
    py, cuda = sys.executable, args.device.startswith("cuda")
    dry = not cuda
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    install = [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
               "--upgrade", "--target", str(SITE), *map(str, wheels)]  # fmt: skip
    suite = [py, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda" if args.with_slow else "cuda and not slow",
             "-v", "-rs", "-p", "no:cacheprovider", f"--junitxml={out / 'junit.xml'}", "-o", "junit_family=xunit1"]  # fmt: skip
    sizes = (["--size", "65", "--batch-sizes", "1,2", "--train-batch", "2", "--train-crop", "41", "--repeats", "2"]
             if dry else [])  # fmt: skip
    gpu_all = [py, "benchmarks/gpu_all.py", "--device", args.device, "--model", args.model, "--data",
               str(data / "voc_fixture"), "--json", str(out / "gpu_all.json"), *sizes]  # fmt: skip
    crf_shape = ["--batch", "2", "--height", "60", "--width", "80", "--repeats", "2"] if dry else []
    crf = [py, "benchmarks/gpu_crf.py", "--device", args.device, "--impl", "torch,triton", "--voc",
           str(data / "voc_fixture"), "--json", str(out / "crf.json"), *crf_shape]  # fmt: skip
    camvid = data / "camvid"
    steps, every, crop, batch, workers = (4, 2, "41,41", 2, 0) if dry else (args.train_steps, args.val_every,
                                                                             "321,321", 10, 8)  # fmt: skip
    train = [py, "-m", "deeplab_resnet", "train", "--data-dir", str(camvid), "--data-list",
             str(camvid / "list_train_jpg.txt"), "--val-list", str(val_list(camvid, 3 if dry else None, work)),
             "--num-classes", "11", "--ignore-label", "11", "--model", args.model, "--amp", "--device", args.device,
             "--input-size", crop, "--batch-size", str(batch), "--num-steps", str(steps), "--val-every", str(every),
             "--save-pred-every", str(every), "--learning-rate", "5e-3", "--random-scale", "--random-mirror",
             "--num-workers", str(workers), "--snapshot-dir", str(work / "train"), "--no-progress",
             "--no-tensorboard", "--no-check-data", "--log-every", "10"]  # fmt: skip
    limits = {**(DRY_LIMITS if dry else LIMITS), **args.limits}
    no_camvid = "" if (camvid / "list_train_jpg.txt").exists() else f"skipped: no CamVid at {camvid}"
    return [
        Part("wheels", limits["wheels"], install if wheels and not dry else None,
             "skipped: dry run" if dry else "skipped: no wheels in .whl/"),
        Part("suite", limits["suite"], suite if cuda else None, "skipped: no CUDA", suite_numbers),
        Part("gpu_all", limits["gpu_all"], gpu_all, numbers=gpu_all_numbers),
        Part("crf", limits["crf"], crf, numbers=crf_numbers),
        Part("train", limits["train"], None if no_camvid else train, no_camvid, train_numbers),
    ]  # fmt: skip


# Seconds per part on an H100/H200 (all together within the device tool's 10-minute command), and
# for the CPU dry run.
LIMITS = {"wheels": 30, "suite": 200, "gpu_all": 140, "crf": 45, "train": 130}
DRY_LIMITS = {"wheels": 10, "suite": 10, "gpu_all": 25, "crf": 15, "train": 25}
TOTAL_S = 560  # the device tool stops a command at 600 s


def parse_limits(text: str) -> dict[str, float]:
    try:
        limits = {name.strip(): float(value) for name, value in (item.split("=") for item in text.split(",") if item)}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected PART=SECONDS,... got {text!r}") from exc
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(LIMITS)}")
    return limits


def _interrupted(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def environment_line(device: str) -> tuple[str, dict]:
    info = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "device": device, "cpus": os.cpu_count()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        info["gpu"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["gpu"] = "none (no nvidia-smi)"
    header = f"# GPU check, {info['date_utc']} UTC, {info['gpu']}, {info['cpus']} CPUs, device {device}"
    return header, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="folder for the (at most 8) result files")
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="deeplab_v2_resnet101")
    p.add_argument("--data", default=None, help="folder holding voc_fixture/ and camvid/ (default: _gpu_data/)")
    p.add_argument("--total-s", type=float, default=None, help=f"all parts together (default: {TOTAL_S} s; dry: 90)")
    p.add_argument("--train-steps", type=int, default=1500, help="training steps (the time limit may stop it first)")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--with-slow", action="store_true", help="also the slow CUDA tests (torch.compile)")
    p.add_argument("--limits", type=parse_limits, default={}, metavar="PART=S,...",
                   help="override parts' time limits in seconds, e.g. gpu_all=200,train=120")  # fmt: skip
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu_check_{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    data = find_data(args.data)
    # The parts' own temporary files (inductor's and the ONNX exporter's caches among them) go into
    # the work folder too, so that nothing outlives the run.
    (work / "tmp").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1", "DEEPLAB_TEST_DATA": str(data),
           "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "TMPDIR": str(work / "tmp")}  # fmt: skip
    header, info = environment_line(args.device)
    print(header, flush=True)
    total = args.total_s if args.total_s is not None else (TOTAL_S if args.device.startswith("cuda") else 90)
    try:
        outcomes = run_all(plan(args, out, data, work), out, env, total)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the training run's checkpoints, the short val list
    print(write_summary(outcomes, out, header, info))
    return 0 if all(o.status in ("ok", "skipped") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
