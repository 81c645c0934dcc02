"""Time ``deeplab segment`` end to end: the real CLI in fresh processes, one image and a folder.

Everything a user waits for is in the time: process start, imports, weight load, decode, the
network, upsampling and argmax, PNG/overlay encoding and writes. Two or more argument sets
("arms") are compared with interleaved repeats (repeat r runs every arm once, the order rotating,
so a busy phase of a shared machine slows all arms alike); each run writes into a fresh output
folder. The table gives the median, the spread (min..max) and each arm's speed-up over the first.

    PYTHONPATH=src python benchmarks/segment_e2e.py --weights r101.safetensors \\
        --arm today="--backend torch" --arm new="--backend auto" --repeats 3 --json e2e.json

An arm may start with environment assignments, as in a shell: ``--arm main="PYTHONPATH=../main/src
--backend torch"`` times another checkout's code. An arm the CLI refuses (e.g. a ``--backend`` value this version does not have) is reported as
unavailable and left out; the others still run. Without ``--weights`` a real-size DeepLab-v2
ResNet-101 weight file (random weights, calibrated batch norms: ``bench.realistic``) is made in a
temporary folder first.

``--profile`` instead runs the command's stages once in this process and times each (import,
weight load, decode, preprocess, network, upsample+argmax, encode+write), to show where the time
outside the network goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "voc_fixture" / "JPEGImages"


def parse_arm(text: str) -> tuple[str, list[str]]:
    """``NAME=ARGS`` (ARGS split like a shell would) → ``(NAME, [ARGS...])``."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f'expected NAME="ARGS", got {text!r}')
    return name, shlex.split(rest)


def split_env(arm_args: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading ``VAR=VALUE`` words of an arm, as in a shell (``PYTHONPATH=../main/src --backend torch``
    times another checkout's code): (the environment to add, the CLI arguments)."""
    env = {}
    while arm_args and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", arm_args[0]):
        key, _, value = arm_args[0].partition("=")
        env[key] = value
        arm_args = arm_args[1:]
    return env, arm_args


def cpu_model() -> str:
    import platform

    from deeplab_resnet.inference.cpu_features import cpu_model as read_cpu_model

    return read_cpu_model() or platform.processor() or platform.machine()


def segment_command(inputs: list[str], weights: str, out: Path, arm_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "deeplab_resnet", "segment", *inputs, "--weights", weights, "-o", str(out), *arm_args]


def children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(inputs: list[str], weights: str, arm_args: list[str], scratch: Path) -> tuple[float, float, str | None]:
    """Wall seconds and CPU seconds of one CLI run (fresh output folder), and the error line if it failed.

    CPU seconds tell more on a busy machine, where wall time mostly measures the other processes;
    overlapping work (background threads) shows in wall time only."""
    out = Path(tempfile.mkdtemp(prefix="out-", dir=scratch))
    env, cli_args = split_env(arm_args)
    command = segment_command(inputs, weights, out, cli_args)
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    seconds, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
        return seconds, cpu, lines[-1]
    return seconds, cpu, None


def time_case(
    inputs: list[str], weights: str, arms: dict[str, list[str]], repeats: int, scratch: Path, warmup: int = 1
) -> dict[str, dict]:
    """Warm up each arm (page cache, caches of exported models), then interleave the timed repeats.
    An arm with a failed run (e.g. an option the CLI refuses) is reported with its error, not timed."""
    rows = {name: {"args": arm_args, "times_s": [], "cpu_s": [], "error": None} for name, arm_args in arms.items()}
    for name, arm_args in arms.items():
        for _ in range(warmup):
            rows[name]["error"] = rows[name]["error"] or run_once(inputs, weights, arm_args, scratch)[2]
    for r in range(repeats):
        live = [name for name in arms if rows[name]["error"] is None]
        for name in live[r % len(live) :] + live[: r % len(live)] if live else []:
            seconds, cpu, error = run_once(inputs, weights, arms[name], scratch)
            rows[name]["times_s"].append(seconds)
            rows[name]["cpu_s"].append(cpu)
            rows[name]["error"] = error
    for row in rows.values():
        times = row["times_s"] if row["error"] is None else []
        row["median_s"] = statistics.median(times) if times else None
        row["spread_s"] = [min(times), max(times)] if times else None
        row["median_cpu_s"] = statistics.median(row["cpu_s"]) if times else None
    return rows


def format_rows(case: str, rows: dict[str, dict]) -> list[str]:
    base = next((row["median_s"] for row in rows.values() if row["median_s"]), None)
    lines = []
    for name, row in rows.items():
        if row["median_s"] is None:
            lines.append(f"{case:<8} {name:<12} unavailable: {row['error']}")
            continue
        low, high = row["spread_s"]
        ratio = base / row["median_s"] if base else float("nan")
        lines.append(
            f"{case:<8} {name:<12} {row['median_s']:8.2f} s  ({low:.2f}..{high:.2f})  x{ratio:.2f}  "
            f"cpu {row['median_cpu_s']:.2f} s  " + " ".join(row["args"])
        )
    return lines


@contextlib.contextmanager
def weights_file(path: str | None) -> Iterator[str]:
    """``path``, or a real-size ResNet-101 weight file made in a temporary folder."""
    if path:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="segment-e2e-weights-") as folder:
        yield make_weights(Path(folder) / "resnet101.safetensors")


def make_weights(path: Path) -> str:
    """A ResNet-101 DeepLab-v2 with realistic batch norms, saved in the native format."""
    from deeplab_resnet import save_weights
    from deeplab_resnet.bench.realistic import realistic_model

    save_weights(realistic_model("deeplab_v2_resnet101", convention="caffe"), path, source="segment_e2e benchmark")
    return str(path)


def timed(stages: dict[str, float], stage: str, fn: Callable) -> Callable:
    """``fn``, adding the seconds each call takes to ``stages[stage]``."""

    def call(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - t0

    return call


def profile(images: list[Path], weights: str, scratch: Path) -> dict[str, float]:
    """One in-process run of the command's stages over ``images``: seconds per stage, summed."""
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    from deeplab_resnet.commands import segment
    from deeplab_resnet.images import read_image
    from deeplab_resnet.inference.segmenter import Segmenter
    from deeplab_resnet.weights import load_model

    stages["import"] = time.perf_counter() - t0
    model = timed(stages, "weight load", load_model)(weights)
    segmenter = Segmenter(model, model.spec, pad_size="auto")
    # Wrap the segmenter's own steps: the network, the width upsampling around it, the row upsampling + argmax.
    segmenter.net = timed(stages, "network", segmenter.net)
    segmenter._columns = timed(stages, "_columns", segmenter._columns)
    segmenter._upsample_rows = timed(stages, "_rows", segmenter._upsample_rows)
    args = argparse.Namespace(alpha=0.5)
    for i, path in enumerate(images):
        rgb = timed(stages, "decode", read_image)(path)
        result = timed(stages, "_call", segmenter)(rgb)
        plan = {"labels": scratch / f"{i}.png", "overlay": scratch / f"{i}_overlay.jpg"}
        timed(stages, "encode+write", segment.write_outputs)(args, rgb, result, plan)
    columns, rows, call = stages.pop("_columns"), stages.pop("_rows"), stages.pop("_call")
    stages["upsample+argmax"] = columns - stages["network"] + rows
    stages["preprocess+other"] = call - columns - rows
    return stages


def report_profile(stages: dict[str, float], n_images: int) -> list[str]:
    total = sum(stages.values())
    order = ["import", "weight load", "decode", "preprocess+other", "network", "upsample+argmax", "encode+write"]
    lines = [f"profile over {n_images} image(s), one process (seconds, share of the total {total:.2f} s):"]
    lines += [f"  {name:<18} {stages[name]:8.3f}  {100 * stages[name] / total:5.1f}%" for name in order]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="weight file (default: a ResNet-101 one made in a temp folder)")
    p.add_argument(
        "--arm", type=parse_arm, action="append", default=None, metavar='NAME="ARGS"',
        help='an argument set to time, e.g. today="--backend torch" (repeatable; the first is the baseline)',
    )  # fmt: skip
    p.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="folder of JPEGs (default: voc_fixture's)")
    p.add_argument("--cases", default="one,folder", help="one (the first JPEG), folder (every JPEG), or both")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per arm and case (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per arm and case first (default: %(default)s)")
    p.add_argument("--profile", action="store_true", help="time the stages of one in-process run instead")
    p.add_argument("--limit", type=int, default=None, help="use only the first N JPEGs of --folder")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON")
    args = p.parse_args(argv)
    arms = dict(args.arm or [("today", ["--backend", "torch"])])
    images = sorted(args.folder.glob("*.jpg"))[: args.limit]
    if not images:
        p.error(f"no .jpg files in {args.folder}")
    cases = {
        "one": [str(images[0])],
        "folder": [str(i) for i in images] if args.limit else [str(args.folder / "*.jpg")],
    }
    load_before = os.getloadavg()
    result: dict = {"cpu": cpu_model(), "cpus": os.cpu_count(), "load_before": load_before, "images": len(images)}
    lines = [f"CPU: {result['cpu']} ({result['cpus']} logical); load average before: {load_before}"]
    with weights_file(args.weights) as weights, tempfile.TemporaryDirectory(prefix="segment-e2e-") as scratch:
        result["weights"] = weights
        if args.profile:
            stages = profile(images, weights, Path(scratch))
            result["profile_s"] = stages
            lines += report_profile(stages, len(images))
        else:
            result["cases"] = {}
            for case in args.cases.split(","):
                rows = time_case(cases[case], weights, arms, args.repeats, Path(scratch), args.warmup)
                result["cases"][case] = rows
                lines += format_rows(case, rows)
    result["load_after"] = os.getloadavg()
    lines.append(f"load average after: {result['load_after']}")
    print("\n".join(lines))
    if args.json:
        from deeplab_resnet.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
