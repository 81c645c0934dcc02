"""``deeplab serve``: the JSON API against the CLI's own outputs, its refusals, its queue and batching,
and the real server in a subprocess (bind address, the 'serving on' line, SIGTERM)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import select
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

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from deeplab_resnet.cli import build_parser, main  # noqa: E402
from deeplab_resnet.commands.serve import build_app  # noqa: E402
from deeplab_resnet.inference.segmenter import Segmenter  # noqa: E402
from deeplab_resnet.serve.app import create_app  # noqa: E402
from deeplab_resnet.serve.batching import BatchQueue, QueueFull  # noqa: E402
from deeplab_resnet.serve.limits import Limits  # noqa: E402
from deeplab_resnet.serve.upload import UploadError, read_bounded  # noqa: E402

PAGE_IDS = ("file", "drop", "crf", "flip", "photo", "overlay", "labels", "download", "legend", "status")


def fixture_jpegs(voc_fixture: Path, n: int) -> list[Path]:
    return sorted((voc_fixture / "JPEGImages").glob("*.jpg"))[:n]


def png_of(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def crop(path: Path, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A small piece of a real photo (the tests' network runs at the image's size: small is fast)."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return np.ascontiguousarray(rgb[: size[1], : size[0]])


def decoded(png: bytes) -> tuple[np.ndarray, list[int] | None, str]:
    img = Image.open(io.BytesIO(png))
    img.load()
    return np.asarray(img), img.getpalette(), img.mode


def assert_one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    message = body["error"]
    assert message and "\n" not in message and "Traceback" not in response.text
    return message


def upload(client, data: bytes, query: str = "", name: str = "photo.png", **kwargs):
    return client.post(f"/v1/segment{query}", files={"image": (name, data, "application/octet-stream")}, **kwargs)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def client(model):
    app = create_app(Segmenter(model), model.spec, Limits(max_upload_bytes=200_000, max_pixels=20_000))
    with TestClient(app) as c:
        yield c


def test_png_equals_what_deeplab_segment_writes(voc_fixture, tiny_weights, tmp_path):
    image = fixture_jpegs(voc_fixture, 1)[0]
    out = tmp_path / "out"
    assert main(["segment", str(image), "--weights", str(tiny_weights), "-o", str(out), "--flip"]) == 0
    cli_pixels, cli_palette, cli_mode = decoded((out / f"{image.stem}.png").read_bytes())
    args = build_parser().parse_args(["serve", "--weights", str(tiny_weights)])
    with TestClient(build_app(args)) as api:
        response = upload(api, image.read_bytes(), "?flip=1", name=image.name)
        plain = upload(api, image.read_bytes(), name=image.name)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    pixels, palette, mode = decoded(response.content)
    assert mode == cli_mode == "P" and palette == cli_palette
    assert pixels.shape == cli_pixels.shape == Image.open(image).size[::-1]
    np.testing.assert_array_equal(pixels, cli_pixels)
    assert not np.array_equal(decoded(plain.content)[0], pixels)  # flip=1 was applied, not ignored


def test_crf_requests_equal_deeplab_segment_crf(voc_fixture, tiny_weights, tmp_path):
    """--crf on the server makes the CRF the default; crf=0 turns it off; both equal the CLI's files."""
    image = tmp_path / "piece.png"
    image.write_bytes(png_of(crop(fixture_jpegs(voc_fixture, 2)[1], (120, 90))))
    common = ["--weights", str(tiny_weights), "--native-size", "--crf-iterations", "3"]
    assert main(["segment", str(image), "-o", str(tmp_path / "crf"), "--crf", *common]) == 0
    assert main(["segment", str(image), "-o", str(tmp_path / "plain"), *common[:3]]) == 0
    with TestClient(build_app(build_parser().parse_args(["serve", "--crf", *common]))) as api:
        refined, plain = upload(api, image.read_bytes()), upload(api, image.read_bytes(), "?crf=0")
    refined_cli = decoded((tmp_path / "crf" / "piece.png").read_bytes())[0]
    np.testing.assert_array_equal(decoded(refined.content)[0], refined_cli)
    np.testing.assert_array_equal(
        decoded(plain.content)[0], decoded((tmp_path / "plain" / "piece.png").read_bytes())[0]
    )
    assert not np.array_equal(decoded(plain.content)[0], refined_cli)


def test_json_shares_match_the_label_png(client, voc_fixture, model):
    rgb = crop(fixture_jpegs(voc_fixture, 1)[0], (96, 72))
    response = upload(client, png_of(rgb), "?format=json&include_png=1&include_overlay=1")
    assert response.status_code == 200
    answer = response.json()
    assert (answer["width"], answer["height"]) == (96, 72)
    labels, palette, _ = decoded(base64.b64decode(answer["label_png_base64"]))
    values, counts = np.unique(labels, return_counts=True)
    expected = {int(v): c / labels.size for v, c in zip(values, counts)}
    got = {c["index"]: c["share"] for c in answer["classes"]}
    assert got.keys() == expected.keys()
    assert all(abs(got[i] - expected[i]) < 1e-12 for i in got)
    assert abs(sum(got.values()) - 1) < 1e-9
    shares = [c["share"] for c in answer["classes"]]
    assert shares == sorted(shares, reverse=True)
    dataset = model.spec.dataset
    for c in answer["classes"]:
        assert c["name"] == dataset.class_names[c["index"]]
        assert c["color"] == list(dataset.palette[c["index"]]) == palette[3 * c["index"] : 3 * c["index"] + 3]
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["overlay_png_base64"]))).convert("RGB"))
    colours = np.asarray(dataset.palette_bytes(), dtype=np.float64).reshape(256, 3)[labels]
    np.testing.assert_allclose(overlay, 0.5 * rgb + 0.5 * colours, atol=0.51)  # the CLI's 50% blend
    assert answer["crf"] is False and answer["backend"] == "torch"
    assert answer["ms"]["total"] >= answer["ms"]["segment"] >= 0


def test_model_description_matches_the_spec(tiny_weights):
    args = build_parser().parse_args(["serve", "--weights", str(tiny_weights)])
    with TestClient(build_app(args)) as api:
        info = api.get("/v1/model").json()
        assert api.get("/healthz").json() == {"status": "ok"}
    spec = tiny_model().spec
    assert info["classes"] == list(spec.dataset.class_names) and info["num_classes"] == 21
    assert info["palette"] == [list(c) for c in spec.dataset.palette[:21]]
    assert (info["dataset"], info["convention"]) == (spec.dataset.name, "caffe")
    assert info["source"] == "tiny.safetensors"  # the file's name, not the server's directories


def test_page_has_the_elements_and_no_outside_resources(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for element in PAGE_IDS:
        assert f'id="{element}"' in page
    assert 'type="file"' in page and 'accept="image/*"' in page and '<a id="download" download' in page
    assert "http://" not in page and "https://" not in page and "//cdn" not in page


def test_refusals_are_one_line_json_errors(client, voc_fixture):
    buffer = io.BytesIO()
    Image.fromarray(crop(fixture_jpegs(voc_fixture, 1)[0], (80, 60))).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    small = png_of(np.zeros((40, 50, 3), np.uint8))
    assert "not an image" in assert_one_line_error(upload(client, b"hello, not an image"), 415)
    assert "truncated" in assert_one_line_error(upload(client, jpeg[: len(jpeg) // 2]), 400)
    assert "limit" in assert_one_line_error(upload(client, b"\0" * 300_000), 413)
    big = png_of(np.zeros((150, 150, 3), np.uint8))  # 22500 pixels, over the limit of 20000
    assert "megapixels" in assert_one_line_error(upload(client, big), 413)
    assert "crf" in assert_one_line_error(upload(client, small, "?crf=2"), 422)
    assert "format" in assert_one_line_error(upload(client, small, "?format=gif"), 422)
    assert "image" in assert_one_line_error(client.post("/v1/segment", files={"photo": ("a.png", small)}), 400)
    assert "multipart" in assert_one_line_error(client.post("/v1/segment", content=small), 415)
    assert_one_line_error(client.get("/v1/nothing"), 404)
    assert "megapixels" in assert_one_line_error(upload(client, png_announcing(30000, 30000)), 413)
    many = b"".join(b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n' for _ in range(300))
    answer = client.post(
        "/v1/segment", content=many + b"--b--\r\n", headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert "more than 16 form fields" in assert_one_line_error(answer, 400)
    assert client.head("/healthz").status_code == client.head("/").status_code == 200  # curl -I health checks
    assert upload(client, small).status_code == 200  # after all that, the server still works


def png_announcing(width: int, height: int) -> bytes:
    """A tiny PNG whose header announces ``width x height`` pixels (a decompression bomb's shape)."""
    import struct
    import zlib

    png = png_of(np.zeros((1, 1, 3), np.uint8))
    header = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + header + struct.pack(">I", zlib.crc32(header)) + png[33:]


def test_pils_own_pixel_limit_reads_as_ours():
    from deeplab_resnet.images import TooManyPixelsError, decode_image_bytes

    with pytest.raises(TooManyPixelsError, match=r"^upload: the image announces more than 179 megapixels"):
        decode_image_bytes(png_announcing(30000, 30000), "upload", max_pixels=None)


def test_an_unexpected_fault_is_a_500_without_traceback(model):
    def broken(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("secret\ninternals")

    app = create_app(Segmenter(broken, model.spec), model.spec)
    with TestClient(app, raise_server_exceptions=False) as api:
        response = upload(api, png_of(np.zeros((16, 16, 3), np.uint8)))
    assert response.status_code == 500 and response.json() == {"error": "internal error"}
    assert "secret" not in response.text


def test_the_body_limit_holds_while_reading_without_a_length():
    received = []

    async def endless():
        while True:
            received.append(1)
            yield b"x" * 1000

    with pytest.raises(UploadError) as refused:
        asyncio.run(read_bounded(endless(), None, limit=10_000))
    assert refused.value.status == 413 and len(received) == 11  # stopped at the first chunk past the limit
    with pytest.raises(UploadError):  # a declared length over the limit is refused before any read
        asyncio.run(read_bounded(endless(), "10001", limit=10_000))
    assert len(received) == 11


def test_a_stalled_upload_is_refused_with_408():
    async def stalled():
        yield b"--b\r\n"
        await asyncio.sleep(30)
        yield b"never"

    start = time.perf_counter()
    with pytest.raises(UploadError) as refused:
        asyncio.run(read_bounded(stalled(), None, limit=10_000, idle_s=0.2))
    assert refused.value.status == 408 and "sent nothing for 0.2 s" in refused.value.message
    assert time.perf_counter() - start < 5


class CountingNetwork:
    """The tiny model, counting its calls and batch sizes; optionally held until released."""

    def __init__(self, model, hold: threading.Event | None = None):
        self.model, self.hold = model, hold
        self.batch_sizes: list[int] = []
        self.entered = threading.Event()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(60)
        self.batch_sizes.append(x.shape[0])
        return self.model(x)


async def post_all(app, bodies: list[bytes], query: str = "") -> list:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
        requests = [http.post(f"/v1/segment{query}", files={"image": ("a.png", b)}) for b in bodies]
        return await asyncio.gather(*requests)


def test_concurrent_same_size_requests_share_a_forward_pass(model, voc_fixture):
    rgbs = [crop(p, (80, 56)) for p in fixture_jpegs(voc_fixture, 4)]
    network = CountingNetwork(model)
    limits = Limits(max_batch=4, batch_wait_ms=3000)  # long enough for all four to arrive on a busy machine
    app = create_app(Segmenter(network, model.spec), model.spec, limits)
    responses = asyncio.run(post_all(app, [png_of(r) for r in rgbs]))
    assert [r.status_code for r in responses] == [200] * 4
    assert len(network.batch_sizes) < 4 and sum(network.batch_sizes) == 4
    alone = Segmenter(model)
    for rgb, response in zip(rgbs, responses):
        np.testing.assert_array_equal(decoded(response.content)[0], alone(rgb).labels)
    app.state.queue.close()


def test_a_full_queue_answers_503_at_once(model):
    release = threading.Event()
    network = CountingNetwork(model, hold=release)
    app = create_app(Segmenter(network, model.spec), model.spec, Limits(queue_size=2, max_batch=1, batch_wait_ms=0))
    body = png_of(np.full((24, 32, 3), 90, np.uint8))

    async def scenario():
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
            waiting = [asyncio.create_task(http.post("/v1/segment", files={"image": ("a.png", body)}))]
            while not network.entered.is_set():  # the first request holds the network...
                await asyncio.sleep(0.01)
            waiting += [asyncio.create_task(http.post("/v1/segment", files={"image": ("a.png", body)})) for _ in "ab"]
            while app.state.queue.pending < 2:  # ...and two more fill the queue
                await asyncio.sleep(0.01)
            start = time.perf_counter()
            refused = await http.post("/v1/segment", files={"image": ("a.png", body)})
            seconds = time.perf_counter() - start
            release.set()
            return refused, seconds, await asyncio.gather(*waiting)

    try:
        refused, seconds, served = asyncio.run(scenario())
    finally:
        release.set()
        app.state.queue.close()
    assert_one_line_error(refused, 503)
    assert int(refused.headers["retry-after"]) >= 1 and seconds < 5
    assert [r.status_code for r in served] == [200] * 3 and network.batch_sizes == [1, 1, 1]


def test_a_client_leaving_while_its_request_waits_frees_its_place(model):
    release = threading.Event()
    network = CountingNetwork(model, hold=release)
    app = create_app(Segmenter(network, model.spec), model.spec, Limits(queue_size=1, max_batch=1, batch_wait_ms=0))
    png = png_of(np.full((24, 32, 3), 90, np.uint8))
    form = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + png + b"\r\n--b--\r\n"
    scope = {
        "type": "http", "method": "POST", "path": "/v1/segment", "raw_path": b"/v1/segment", "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"content-length", str(len(form)).encode())],
        "http_version": "1.1", "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": "",
    }  # fmt: skip

    async def request(leave: asyncio.Event) -> int:
        sent_body, statuses = False, []

        async def receive():
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": form, "more_body": False}
            await leave.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        return statuses[0]

    async def scenario():
        stays, leaves = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(request(stays))
        while not network.entered.is_set():  # the first request holds the network...
            await asyncio.sleep(0.01)
        second = asyncio.create_task(request(leaves))
        while app.state.queue.pending < 1:  # ...the second waits for it, filling the queue
            await asyncio.sleep(0.01)
        leaves.set()  # its client goes away
        await second
        free = app.state.queue.pending == 0
        release.set()
        return await first, free

    try:
        status, free = asyncio.run(scenario())
    finally:
        release.set()
        app.state.queue.close()
    assert status == 200 and free  # the place was given back at once
    assert network.batch_sizes == [1]  # and the request of the client who left never ran


def test_the_queue_batches_only_equal_keys():
    runs = []
    gate = threading.Event()

    def run_batch(key, payloads):
        gate.wait(10)
        runs.append((key, list(payloads)))
        return [p * 10 for p in payloads]

    queue = BatchQueue(run_batch, max_queue=10, max_batch=3, wait_s=0.5)
    jobs = [queue.submit(key, i) for i, key in enumerate("aabaaa")]
    gate.set()
    assert [job.future.result(10) for job in jobs] == [0, 10, 20, 30, 40, 50]
    batches = [(key, payloads) for key, payloads in runs]
    assert batches[0] == ("a", [0, 1, 3]) and ("b", [2]) in batches and ("a", [4, 5]) in batches
    with pytest.raises(QueueFull):
        full = BatchQueue(run_batch, max_queue=0, max_batch=1, wait_s=0)
        full.submit("a", 1)
    queue.close()


def test_requests_whose_clients_left_give_their_queue_places_back():
    release = threading.Event()
    queue = BatchQueue(lambda key, payloads: [release.wait(30)] * len(payloads), max_queue=2, max_batch=1, wait_s=0)
    running = queue.submit("a", 0)
    while not running.future.running():  # the worker holds the first job...
        time.sleep(0.01)
    left = [queue.submit("a", i) for i in (1, 2)]  # ...two more fill the queue
    with pytest.raises(QueueFull):
        queue.submit("a", 3)
    for job in left:
        assert job.future.cancel()  # their clients went away
    later = queue.submit("a", 4)  # the places are free at once, not when the worker reaches them
    assert queue.close(wait_s=0.2) is False  # the first job is still in the network
    with pytest.raises(QueueFull, match="shutting down"):
        later.future.result(1)
    release.set()
    assert queue.close(wait_s=10) is True and running.future.result(10) is True


def test_a_client_leaving_mid_upload_is_no_internal_error(client, caplog):
    app = client.app
    scope = {
        "type": "http", "method": "POST", "path": "/v1/segment", "raw_path": b"/v1/segment", "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"content-length", b"100000")],
        "http_version": "1.1", "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": "",
    }  # fmt: skip
    arriving = iter([{"type": "http.request", "body": b"--b\r\n", "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(arriving)

    async def send(message):
        sent.append(message)

    with caplog.at_level("DEBUG", logger="deeplab_resnet.serve"):
        asyncio.run(app(scope, receive, send))
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")], caplog.text
    assert any("left during its upload" in r.getMessage() for r in caplog.records)


def test_the_servers_log_lines_are_one_line_each():
    import logging

    from deeplab_resnet.serve.errors import OneLineFormatter

    formatter = OneLineFormatter("%(levelname)s: %(message)s")
    try:
        raise RuntimeError("deep\ninside")
    except RuntimeError:
        failed = logging.makeLogRecord({"levelname": "ERROR", "msg": "failed: %s", "args": ("x",)})
        failed.exc_info = sys.exc_info()
    assert formatter.format(failed) == "ERROR: failed: x (RuntimeError: deep inside)"
    text = "Traceback (most recent call last):\n  File 'x.py', line 1, in <module>\nasyncio.CancelledError\n"
    as_text = logging.makeLogRecord({"levelname": "ERROR", "msg": text})  # a traceback logged as a message
    assert formatter.format(as_text) == "ERROR: asyncio.CancelledError"


def test_the_port_is_checked_before_the_model_loads(capsys):
    from deeplab_resnet.serve.server import bind

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--weights", "w.safetensors", "--port", "70000"])
    taken = bind("127.0.0.1", 0)
    try:
        port = str(taken.getsockname()[1])
        assert main(["serve", "--weights", "no/such/weights.safetensors", "--port", port]) == 2
    finally:
        taken.close()
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_missing_serve_extra_is_one_line(monkeypatch):
    from deeplab_resnet.commands import serve
    from deeplab_resnet.errors import DeepLabError

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # an import of it now fails as if not installed
    with pytest.raises(DeepLabError, match=r"pip install 'deeplab_resnet\[serve\]'"):
        serve.run(build_parser().parse_args(["serve", "--weights", "x.safetensors"]))


def _read_line(stream, seconds: float) -> str:
    ready, _, _ = select.select([stream], [], [], seconds)
    return stream.readline() if ready else ""


def test_the_server_binds_localhost_and_stops_cleanly_on_sigterm(tiny_weights, voc_fixture):
    import httpx

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "deeplab_resnet", "serve", "--weights", str(tiny_weights), "--port", "0"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _read_line(server.stdout, 180)
        assert line.startswith("serving on http://127.0.0.1:"), (line, server.poll())
        url = line.split()[-1]
        assert httpx.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
        image = fixture_jpegs(voc_fixture, 1)[0]
        answer = httpx.post(f"{url}/v1/segment?format=json", files={"image": image.read_bytes()}, timeout=120).json()
        assert (answer["width"], answer["height"]) == Image.open(image).size
        server.send_signal(signal.SIGTERM)
        rc = server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    stderr = server.stderr.read()
    assert rc in (0, 143) and "Traceback" not in stderr, stderr
    assert server.stdout.read() == ""  # the one line, nothing else


# The real command with a network pass that takes a minute in native code (as a big image with the
# CRF does): what a signal does to the requests in flight and to the process.
SLOW_SERVE = """
import sys, time, torch
from deeplab_resnet.inference import segmenter

def slow(self, images):
    x = torch.randn(400, 400)
    end = time.time() + 60
    while time.time() < end:
        x = torch.tanh(x @ x)
    raise RuntimeError("never answered")

segmenter.Segmenter.segment_batch = slow
from deeplab_resnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _start_slow_server(tiny_weights):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-c", SLOW_SERVE, "serve", "--weights", str(tiny_weights), "--port", "0",
               "--backend", "torch", "--max-batch", "1"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = _read_line(server.stdout, 180)
    assert line.startswith("serving on http://"), (line, server.poll())
    return server, line.split()[-1]


def _post_in_background(url: str, answers: list) -> threading.Thread:
    import httpx

    def post() -> None:
        body = png_of(np.full((24, 32, 3), 90, np.uint8))
        try:
            answers.append(httpx.post(f"{url}/v1/segment", files={"image": ("a.png", body)}, timeout=60))
        except httpx.HTTPError as exc:
            answers.append(exc)

    thread = threading.Thread(target=post)
    thread.start()
    return thread


@pytest.mark.parametrize("signals", [["SIGINT"], ["SIGINT", "SIGINT"]], ids=["once", "twice"])
def test_a_signal_with_requests_in_flight_answers_503_and_exits_130(signals, tiny_weights):
    server, url = _start_slow_server(tiny_weights)
    answers: list = []
    try:
        running = _post_in_background(url, answers)
        time.sleep(1.5)  # the first request is in the network...
        waiting = _post_in_background(url, answers)
        time.sleep(1.0)  # ...the second waits for it
        start = time.perf_counter()
        for name in signals:
            server.send_signal(getattr(signal, name))
            time.sleep(0.3)
        rc = server.wait(30)
        seconds = time.perf_counter() - start
        running.join(30)
        waiting.join(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    stderr = server.stderr.read()
    assert rc == 130, stderr
    assert "Traceback" not in stderr and "terminate called" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "deeplab serve: interrupted"
    assert seconds < (9 if len(signals) == 1 else 4)  # uvicorn's grace of 5 s, or at once when asked twice
    if len(signals) == 1:  # the waiting request at once, the running one when the grace is over
        assert sorted(a.status_code for a in answers) == [503, 503], answers
        assert all(a.json()["error"].startswith("the server is") for a in answers)


def test_the_defaults_bind_localhost_and_a_taken_port_is_one_line():
    from deeplab_resnet.errors import DeepLabError
    from deeplab_resnet.serve.server import bind, url_of

    args = build_parser().parse_args(["serve", "--weights", "w.safetensors"])
    assert (args.host, args.port, args.max_upload_mb, args.queue_size, args.max_batch) == ("127.0.0.1", 8000, 20, 16, 4)
    taken = bind("127.0.0.1", 0)
    try:
        assert taken.getsockname()[0] == "127.0.0.1" and url_of("127.0.0.1", taken).endswith(
            f":{taken.getsockname()[1]}"
        )
        with pytest.raises(DeepLabError, match="--port"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
