"""Load test of ``deeplab serve``: concurrent clients against a real server process.

Starts ``deeplab serve --port 0`` on 127.0.0.1, segments the fixture images once up front with
``deeplab segment`` (same weights and model options: the reference every answer must equal), then
runs ``--clients`` threads for ``--seconds``, each posting the images round robin to
``POST /v1/segment``. Reports requests/s, the p50/p95/p99 latency of accepted requests, the 503s
(queue full: they must carry Retry-After and come back quickly), lost requests (anything but a 200
or a 503, including timeouts and refused connections: there must be none), wrong answers (a 200
whose label PNG differs from the CLI's), the server's resident memory sampled from /proc
(at the start, the middle, the peak and the end of the run: after the first batches it should stay
flat), and the CPU model and load average before and after.

    PYTHONPATH=src python benchmarks/serve_load.py --clients 4 --seconds 30 --json serve_load.json
    PYTHONPATH=src python benchmarks/serve_load.py --weights W.safetensors --serve-args "--max-batch 4"

Without ``--weights`` it serves a tiny model (the real network at one block per stage, width 8),
which measures the server's own overhead rather than the network's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
VOC_FIXTURE = REPO.parent / "shared" / "data" / "voc_fixture" / "JPEGImages"
SERVING_LINE = re.compile(r"^serving on (http://\S+:\d+)$")
BOUNDARY = "deeplab-serve-load-boundary"


class ServeProcess:
    """``deeplab serve ARGS --port 0`` as a subprocess; ``url`` once it has printed its one line.

    The environment (PYTHONPATH included) is inherited, so the server runs the code the caller
    imports. Its stderr goes to ``log_path`` (a pipe nobody reads would block a chatty server).
    """

    def __init__(self, args: Sequence[str], log_path: Path, startup_timeout: float = 180.0):
        cmd = [sys.executable, "-m", "deeplab_resnet", "serve", *args, "--port", "0"]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")  # closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.stdout_lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        try:
            self.url = self._wait_for_serving_line(startup_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.stdout_lines.put(line.rstrip("\n"))

    def _wait_for_serving_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.stdout_lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            match = SERVING_LINE.match(line)
            if not match:
                raise RuntimeError(f"the server's first stdout line is {line!r}, not 'serving on http://HOST:PORT'")
            return match.group(1)
        raise RuntimeError(f"deeplab serve did not print 'serving on ...' (exit {self.proc.poll()}): {self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait; kill it if it has not stopped within ``timeout`` (returns -9 then)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        self._log.close()
        return self.proc.returncode

    def later_stdout(self) -> list[str]:
        """What the server printed on stdout after its ``serving on`` line (read it after :meth:`stop`)."""
        lines = []
        while not self.stdout_lines.empty():
            lines.append(self.stdout_lines.get())
        return lines

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Answer:
    status: int | None  # None: no answer at all (connection refused, reset, timed out)
    seconds: float
    headers: dict[str, str]
    body: bytes
    error: str = ""


def multipart_body(filename: str, data: bytes, field: str = "image") -> bytes:
    """A multipart/form-data body with one file field (``Content-Type`` must name :data:`BOUNDARY`)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def post_image(url: str, body: bytes, query: str = "", timeout: float = 120.0) -> Answer:
    """POST a :func:`multipart_body` to ``url/v1/segment?query``; any failure becomes an Answer."""
    request = urllib.request.Request(
        f"{url}/v1/segment" + (f"?{query}" if query else ""), data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )  # fmt: skip
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, time.perf_counter() - start, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, time.perf_counter() - start, dict(exc.headers), exc.read())
    except (OSError, urllib.error.URLError) as exc:
        return Answer(None, time.perf_counter() - start, {}, b"", f"{type(exc).__name__}: {exc}")


def png_content(data: bytes) -> tuple[str, np.ndarray, list[int] | None]:
    """A PNG's mode, pixel values and palette: what "the same label PNG" means."""
    img = Image.open(io.BytesIO(data))
    return img.mode, np.asarray(img), img.getpalette()


def reference_pngs(images: Sequence[Path], model_args: Sequence[str], out_dir: Path) -> dict[str, bytes]:
    """Each image's label PNG as ``deeplab segment`` writes it (one CLI run over all of them)."""
    cmd = [sys.executable, "-m", "deeplab_resnet", "segment", *map(str, images), *model_args, "-o", str(out_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"deeplab segment failed ({done.returncode}): {done.stderr[-2000:]}")
    return {path.name: (out_dir / f"{path.stem}.png").read_bytes() for path in images}


class RssSampler(threading.Thread):
    """The resident memory (VmRSS, MiB) of one process, every ``interval`` seconds, from /proc.

    ``samples`` holds ``(seconds since start, MiB)`` pairs.
    """

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples = pid, interval, []
        self.started = time.perf_counter()
        self._stop_event = threading.Event()

    def read(self) -> float | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) / 1024 if match else None

    def run(self) -> None:
        self.started = time.perf_counter()
        while not self._stop_event.wait(self.interval):
            rss = self.read()
            if rss is not None:
                self.samples.append((time.perf_counter() - self.started, rss))

    def at(self, seconds: float) -> float | None:
        """The last sample taken by ``seconds`` into the run."""
        earlier = [rss for t, rss in self.samples if t <= seconds]
        return earlier[-1] if earlier else None

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_clients(
    url: str, bodies: Sequence[tuple[str, bytes]], clients: int, seconds: float, timeout: float, backoff: float
):
    """``clients`` threads posting ``bodies`` round robin until ``seconds`` have passed.

    A request started before the deadline is waited for: every request must be answered. After a
    503 a client waits ``backoff`` seconds (not the Retry-After: the point is to keep the queue
    full), so that rejected clients do not spin and take the server's CPU.
    Returns the ``(image name, Answer)`` pairs in completion order and the wall time.
    """
    answers, lock, counter = [], threading.Lock(), iter(range(sys.maxsize))
    start = time.perf_counter()
    deadline = start + seconds

    def client() -> None:
        while time.perf_counter() < deadline:
            with lock:
                name, body = bodies[next(counter) % len(bodies)]
            answer = post_image(url, body, timeout=timeout)
            with lock:
                answers.append((name, answer))
            if answer.status == 503:
                time.sleep(backoff)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers, time.perf_counter() - start


def percentiles_ms(seconds: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    if not seconds:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": round(float(np.percentile(np.asarray(seconds) * 1000, q)), 1) for q in qs}


def check_answers(answers, references: dict[str, bytes]) -> dict:
    """Counts of answered, rejected, lost and wrong requests, and the latencies."""
    expected = {name: png_content(data) for name, data in references.items()}
    ok = [(n, a) for n, a in answers if a.status == 200]
    busy = [a for _, a in answers if a.status == 503]
    lost = [a for _, a in answers if a.status not in (200, 503)]
    wrong = []
    for name, answer in ok:
        mode, pixels, palette = png_content(answer.body)
        want_mode, want_pixels, want_palette = expected[name]
        if mode != want_mode or palette != want_palette or not np.array_equal(pixels, want_pixels):
            wrong.append(name)
    return {
        "requests": len(answers), "ok": len(ok), "rejected_503": len(busy), "lost": len(lost),
        "lost_examples": sorted({a.error or f"HTTP {a.status}: {a.body[:200]!r}" for a in lost})[:5],
        "wrong": len(wrong), "wrong_images": sorted(set(wrong))[:10],
        "latency_ms": percentiles_ms([a.seconds for _, a in ok]),
        "rejected_latency_ms": {**percentiles_ms([a.seconds for a in busy], (50, 95)),
                                "max": round(max(a.seconds for a in busy) * 1000, 1) if busy else None},
        "rejected_without_retry_after": sum("retry-after" not in {k.lower() for k in a.headers} for a in busy),
    }  # fmt: skip


def cpu_model() -> str:
    import platform

    from deeplab_resnet.inference.cpu_features import cpu_model as read_cpu_model

    return read_cpu_model() or platform.processor() or platform.machine()


def tiny_weights(path: Path) -> Path:
    """A tiny model's weights (the real network at one block per stage, width 8), seeded."""
    import torch

    from deeplab_resnet import save_weights
    from deeplab_resnet.models import create_model

    torch.manual_seed(0)
    save_weights(create_model("deeplab_v2_resnet_tiny", num_classes=21).eval(), path, source="serve_load tiny")
    return path


def warm_up(url: str, body: bytes, timeout: float) -> None:
    """One answered request before the clock starts (the first one pays for lazy set-up)."""
    for _ in range(100):
        answer = post_image(url, body, timeout=timeout)
        if answer.status == 200:
            return
        if answer.status != 503:
            raise RuntimeError(f"warm-up request failed: {answer.status} {answer.error or answer.body[:300]!r}")
        time.sleep(0.1)
    raise RuntimeError("the server answered 503 to 100 warm-up requests in a row")


def run_benchmark(
    weights: Path, images: Sequence[Path], *, clients: int, seconds: float, workdir: Path,
    model_args: Sequence[str] = ("--device", "cpu"), serve_args: Sequence[str] = (), timeout: float = 120.0,
    backoff: float = 0.05,
) -> dict:  # fmt: skip
    """Serve ``weights``, load it, and return the report (see the module's docstring)."""
    common = ["--weights", str(weights), *model_args]
    references = reference_pngs(images, common, workdir / "reference")
    bodies = [(path.name, multipart_body(path.name, path.read_bytes())) for path in images]
    load_before = os.getloadavg()
    with ServeProcess([*common, "--host", "127.0.0.1", *serve_args], workdir / "serve.log") as server:
        sampler = RssSampler(server.pid)
        rss_ready = sampler.read()
        warm_up(server.url, bodies[0][1], timeout)
        rss_start = sampler.read()
        sampler.start()
        answers, wall = run_clients(server.url, bodies, clients, seconds, timeout, backoff)
        sampler.stop()
        rss_end = sampler.read()
        exit_code = server.stop()
        later_stdout = server.later_stdout()
    report = check_answers(answers, references)
    report["requests_per_s"] = round(report["ok"] / wall, 2)
    report["answers_per_s"] = round(report["requests"] / wall, 2)
    # A leak keeps growing; the allocator's working set does not: "middle" to "end" tells them apart.
    peak = max([rss_start, rss_end, *(rss for _, rss in sampler.samples)])
    rss = dict(ready=rss_ready, start=rss_start, middle=sampler.at(wall / 2) or rss_start, peak=peak, end=rss_end)
    report["rss_mib"] = {k: round(v, 1) for k, v in rss.items()}
    report["server_exit_code_on_sigterm"] = exit_code
    report["server_stdout_after_serving_line"] = later_stdout[:10]
    report["setup"] = {
        "clients": clients, "seconds": seconds, "backoff_s": backoff, "wall_s": round(wall, 2), "images": len(images),
        "weights": str(weights), "model_args": list(model_args), "serve_args": list(serve_args),
    }  # fmt: skip
    report["machine"] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()], "python": sys.version.split()[0],
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }  # fmt: skip
    return report


def format_report(r: dict) -> str:
    lat, rej, rss, m = r["latency_ms"], r["rejected_latency_ms"], r["rss_mib"], r["machine"]
    return "\n".join([
        f"{r['requests']} requests in {r['setup']['wall_s']} s from {r['setup']['clients']} clients: "
        f"{r['ok']} ok ({r['requests_per_s']}/s), {r['rejected_503']} rejected (503), {r['lost']} lost, "
        f"{r['wrong']} wrong",
        f"accepted latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}",
        f"503 latency ms: p50 {rej['p50']}  p95 {rej['p95']}  max {rej['max']}; "
        f"without Retry-After: {r['rejected_without_retry_after']}",
        f"server RSS MiB: ready {rss['ready']}  start {rss['start']}  middle {rss['middle']}  peak {rss['peak']}  "
        f"end {rss['end']}",
        f"{m['cpu']} x{m['cores']}, load average before {m['load_before']} after {m['load_after']}",
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, help="weights to serve (default: a tiny model)")
    p.add_argument("--images", type=Path, default=VOC_FIXTURE, help="directory of JPEGs (default: voc_fixture)")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=120.0, help="per-request client timeout, s")
    p.add_argument("--backoff", type=float, default=0.05, help="a client's pause after a 503, s (default: 0.05)")
    p.add_argument("--model-args", default="--device cpu", help="options for both serve and segment")
    p.add_argument("--serve-args", default="", help="options for serve only, e.g. '--queue-size 8 --max-batch 4'")
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = p.parse_args(argv)
    images = sorted(args.images.glob("*.jpg"))
    if not images:
        p.error(f"no .jpg images in {args.images}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or tiny_weights(Path(tmp) / "tiny.safetensors")
        report = run_benchmark(
            weights, images, clients=args.clients, seconds=args.seconds, workdir=Path(tmp), timeout=args.timeout, backoff=args.backoff,
            model_args=shlex.split(args.model_args), serve_args=shlex.split(args.serve_args),
        )  # fmt: skip
    report["command"] = " ".join(map(shlex.quote, [sys.executable, *sys.argv]))
    print(format_report(report))
    if args.json:
        from deeplab_resnet.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0 if report["lost"] == 0 and report["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
