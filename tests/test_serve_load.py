"""``deeplab serve`` under load: a real server process, concurrent clients, a queue too small for them.

Runs ``benchmarks/serve_load.py``'s procedure for a few seconds with the tiny model and
``--queue-size 1``: every request must be answered (200 or 503, nothing lost), every 200 must be
the label PNG ``deeplab segment`` writes for that image, every 503 must carry Retry-After and come
back quickly, and the server's memory must not grow with the requests it served.
"""

from __future__ import annotations

import io
import signal

import numpy as np
import pytest
from PIL import Image
from serve_support import load_bench, require_server


def test_serve_under_load_answers_every_request_correctly(tmp_path, tiny_weights, voc_fixture):
    require_server()
    bench = load_bench()
    images = sorted((voc_fixture / "JPEGImages").glob("*.jpg"))[:4]
    report = bench.run_benchmark(  # every answer checked against the CLI's PNG of that image
        tiny_weights, images, clients=6, seconds=3.0, workdir=tmp_path, timeout=60.0,
        serve_args=["--queue-size", "1", "--max-batch", "1"],
    )  # fmt: skip
    assert report["lost"] == 0, report["lost_examples"]
    assert report["requests"] == report["ok"] + report["rejected_503"]
    assert report["ok"] >= 1 and report["wrong"] == 0, report["wrong_images"]
    # six clients against a queue of one: some must be turned away, with a Retry-After, at once
    assert report["rejected_503"] >= 1, report
    assert report["rejected_without_retry_after"] == 0
    assert report["rejected_latency_ms"]["p95"] < 1000, report["rejected_latency_ms"]
    # bounded, not flat: a 3 s run is all warm-up for the allocator (the benchmark's long runs show flatness);
    # what it catches is a server that keeps every upload or result
    rss = report["rss_mib"]
    assert rss["end"] - rss["start"] < 256 and rss["peak"] - rss["start"] < 384, rss
    assert report["server_stdout_after_serving_line"] == []  # "serving on URL" is its only line
    assert report["server_exit_code_on_sigterm"] in (0, 128 + signal.SIGTERM, -signal.SIGTERM)


def test_wrong_answers_and_lost_requests_are_counted():
    # The checker itself, on made-up answers: a PNG with one pixel changed is wrong, a refused
    # connection and a 500 are lost, a 503 without Retry-After is counted.
    bench = load_bench()

    def png(values: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        img = Image.fromarray(values.astype(np.uint8), mode="P")
        img.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
        img.save(buffer, format="PNG")
        return buffer.getvalue()

    good = np.zeros((5, 7), np.uint8)
    bad = good.copy()
    bad[2, 3] = 1
    answers = [
        ("a.jpg", bench.Answer(200, 0.1, {}, png(good))),
        ("a.jpg", bench.Answer(200, 0.3, {}, png(bad))),
        ("a.jpg", bench.Answer(503, 0.01, {"Retry-After": "1"}, b"")),
        ("a.jpg", bench.Answer(503, 0.02, {}, b"")),
        ("a.jpg", bench.Answer(None, 5.0, {}, b"", "URLError: refused")),
        ("a.jpg", bench.Answer(500, 0.2, {}, b"oops")),
    ]
    report = bench.check_answers(answers, {"a.jpg": png(good)})
    assert (report["requests"], report["ok"], report["rejected_503"], report["lost"]) == (6, 2, 2, 2)
    assert report["wrong"] == 1 and report["rejected_without_retry_after"] == 1
    assert report["latency_ms"]["p50"] == pytest.approx(200.0)  # median of 100 and 300 ms
    assert report["rejected_latency_ms"]["max"] == pytest.approx(20.0)
