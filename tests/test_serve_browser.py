"""The page of ``deeplab serve`` in a real browser: headless Debian Chromium driven by Playwright.

A real ``deeplab serve --port 0`` process serves the tiny model (or the weights named by
``DEEPLAB_SERVE_WEIGHTS``); the browser chooses (or drops) a fixture photo the way a user does,
waits for ``#status`` to say ``done``, and the page's result is checked against the JSON and PNG
answers of the HTTP API for the same image and options. The browser is Debian's
``/usr/bin/chromium`` (never a downloaded one), with the flags that keep it off the network.
Under CI=true a missing browser or Playwright fails the tests; elsewhere they are skipped.

A screenshot of the result page is written into the test's tmp dir, and also to
``DEEPLAB_SCREENSHOT`` if set (how the README's docs/images/serve_page.png is made).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path, tiny_model
from PIL import Image
from serve_support import load_bench, require_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 120_000  # a shared CPU can take seconds per image
STATUS_SETTLED = "() => { const s = document.querySelector('#status').textContent.trim(); \
return s === 'done' || s.startsWith('error'); }"


def require_browser() -> None:
    missing = None
    if importlib.util.find_spec("playwright") is None:
        missing = "the playwright package (pip install playwright; no browser download needed)"
    elif not CHROMIUM.exists():
        missing = f"{CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test in CI without {missing}")
        pytest.skip(f"needs {missing}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    require_server()
    from deeplab_resnet import save_weights

    tmp = tmp_path_factory.mktemp("serve")
    weights = os.environ.get("DEEPLAB_SERVE_WEIGHTS")
    if not weights:
        weights = tmp / "tiny.safetensors"
        save_weights(tiny_model(), weights, source="test")
    with load_bench().ServeProcess(["--weights", str(weights), "--device", "cpu"], tmp / "serve.log") as process:
        yield process


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    require_browser()
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # fresh and empty: no state from elsewhere
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 900}, accept_downloads=True,
        )  # fmt: skip
        yield context
        context.close()


@pytest.fixture
def page(server, browser_context):
    page = browser_context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url + "/")
    assert page.text_content("#status").strip() == "ready"
    yield page
    page.close()


def photo(name: str) -> Path:
    return shared_path("data", "voc_fixture", "JPEGImages", name)


def api(server, image: Path, **options: int) -> tuple[dict, bytes]:
    """The API's JSON and PNG answers for ``image`` with ``options`` (crf=, flip=)."""
    bench = load_bench()
    body = bench.multipart_body(image.name, image.read_bytes())
    query = "&".join(f"{k}={v}" for k, v in options.items())
    as_json = bench.post_image(server.url, body, f"format=json&{query}")
    as_png = bench.post_image(server.url, body, f"format=png&{query}")
    assert as_json.status == 200 and as_png.status == 200, (as_json, as_png)
    assert as_png.headers.get("content-type", as_png.headers.get("Content-Type", "")).startswith("image/png")
    return json.loads(as_json.body), as_png.body


def page_options(page) -> dict[str, int]:
    return {"crf": int(page.is_checked("#crf")), "flip": int(page.is_checked("#flip"))}


def wait_until_done(page) -> None:
    page.wait_for_function(STATUS_SETTLED, timeout=TIMEOUT_MS)
    assert page.text_content("#status").strip() == "done"


def image_bytes(page, selector: str) -> bytes:
    """The bytes behind an ``img``'s ``src`` (a data:, blob: or http: URL), fetched by the page itself."""
    encoded = page.eval_on_selector(
        selector,
        """async (img) => {
            const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
            let text = ''; for (let i = 0; i < bytes.length; i += 8192)
                text += String.fromCharCode(...bytes.subarray(i, i + 8192));
            return btoa(text); }""",
    )
    return base64.b64decode(encoded)


def png(data: bytes) -> tuple[str, np.ndarray, list[int] | None]:
    img = Image.open(io.BytesIO(data))
    return img.mode, np.asarray(img), img.getpalette()


def assert_same_png(got: bytes, want: bytes) -> None:
    (mode, pixels, palette), (want_mode, want_pixels, want_palette) = png(got), png(want)
    assert mode == want_mode == "P" and palette == want_palette
    assert pixels.shape == want_pixels.shape and np.array_equal(pixels, want_pixels)


def legend(page) -> list[dict]:
    """Each legend entry: class, share, text, and every colour the entry shows (to find the swatch)."""
    return page.eval_on_selector_all(
        "#legend li",
        """(items) => items.map((li) => {
            const colours = [getComputedStyle(li, '::before').backgroundColor];
            for (const el of [li, ...li.querySelectorAll('*')]) colours.push(getComputedStyle(el).backgroundColor);
            return {name: li.dataset.class, share: li.dataset.share, text: li.textContent, colours};
        })""",
    )


def assert_result_matches_api(page, server, image: Path) -> None:
    """The page's sizes, legend, label PNG and download equal the API's answers for the same options."""
    size = list(Image.open(image).size)
    for selector in ("#photo", "#overlay", "#labels"):
        assert page.eval_on_selector(selector, "img => [img.naturalWidth, img.naturalHeight]") == size, selector
    answer, label_png = api(server, image, **page_options(page))
    assert [answer["width"], answer["height"]] == size
    entries = legend(page)
    assert [e["name"] for e in entries] == [c["name"] for c in answer["classes"]]
    for entry, cls in zip(entries, answer["classes"]):
        assert float(entry["share"]) == pytest.approx(cls["share"], abs=1e-4)
        shown = re.fullmatch(rf"\s*{re.escape(cls['name'])}\s+(\d+(?:\.\d+)?)\s*%\s*", entry["text"])
        assert shown and float(shown.group(1)) == pytest.approx(100 * cls["share"], abs=0.051), entry["text"]
        r, g, b = cls["color"]
        assert f"rgb({r}, {g}, {b})" in entry["colours"], (cls, entry["colours"])
    assert_same_png(image_bytes(page, "#labels"), label_png)
    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == f"{image.stem}_labels.png"
    assert_same_png(Path(download.path()).read_bytes(), label_png)


def save_screenshot(page, tmp_path: Path) -> None:
    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] > 0
    if os.environ.get("DEEPLAB_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["DEEPLAB_SCREENSHOT"])


def test_choosing_a_photo_shows_the_apis_result(page, server, tmp_path):
    image = photo("2007_000129.jpg")
    page.set_input_files("#file", str(image))
    wait_until_done(page)
    assert_result_matches_api(page, server, image)
    save_screenshot(page, tmp_path)


def test_with_flip_the_result_still_arrives_and_matches(page, server):
    first = photo("2007_000032.jpg")
    page.set_input_files("#file", str(first))
    wait_until_done(page)
    with page.expect_response(lambda response: "/v1/segment" in response.url and "flip=1" in response.url):
        page.check("#flip")  # switching an option re-runs the photo shown
    wait_until_done(page)
    assert_result_matches_api(page, server, first)
    image = photo("2007_000039.jpg")  # a browser sends no change event for the same file chosen again
    with page.expect_response(lambda response: "/v1/segment" in response.url):
        page.set_input_files("#file", str(image))
    wait_until_done(page)
    assert page_options(page)["flip"] == 1
    assert_result_matches_api(page, server, image)


def test_dropping_a_photo_on_the_drop_zone(page, server):
    image = photo("2007_000063.jpg")
    page.eval_on_selector(
        "#drop",
        """(zone, [encoded, name]) => {
            const text = atob(encoded), bytes = new Uint8Array(text.length);
            for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
            const files = new DataTransfer();
            files.items.add(new File([bytes], name, {type: 'image/jpeg'}));
            for (const type of ['dragenter', 'dragover', 'drop'])
                zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: files}));
        }""",
        [base64.b64encode(image.read_bytes()).decode(), image.name],
    )
    wait_until_done(page)
    assert_result_matches_api(page, server, image)


def test_a_file_that_is_not_an_image_says_so(page, server, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("these are notes, not a photo\n")
    page.set_input_files("#file", str(notes))
    page.wait_for_function(STATUS_SETTLED, timeout=TIMEOUT_MS)
    status = page.text_content("#status").strip()
    assert status.startswith("error: ") and len(status) > len("error: ") and "\n" not in status
    bench = load_bench()
    answer = bench.post_image(server.url, bench.multipart_body(notes.name, notes.read_bytes()))
    assert 400 <= answer.status < 500 and set(json.loads(answer.body)) == {"error"}
