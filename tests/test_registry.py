"""The weights registry: download from a local HTTP server, verify, extract, convert, cache."""

from __future__ import annotations

import functools
import http.server
import threading
import zipfile

import numpy as np
import pytest
from fixtures_weights import caffe_layers, random_tf_arrays, tf_variables, write_caffemodel
from PIL import Image

from deeplab_resnet import DeepLabError, load_model
from deeplab_resnet.cli import main
from deeplab_resnet.models.naming import original_to_state_key
from deeplab_resnet.weights import registry
from deeplab_resnet.weights.native import read_native

TINY = (1, 1, 1, 1)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A release-like zip holding a tiny-variant caffemodel in a folder, and its source arrays."""
    tmp = tmp_path_factory.mktemp("release")
    arrays = random_tf_arrays(tf_variables(TINY, width=8), seed=11)
    model = tmp / "train_iter_20000.caffemodel"
    write_caffemodel(model, caffe_layers(arrays, 4.0))
    zpath = tmp / "served" / "prototxt_and_model.zip"
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("prototxt_and_model/test.prototxt", "name: 'deeplab'")
        z.write(model, "prototxt_and_model/train_iter_20000.caffemodel")
    return zpath, arrays


@pytest.fixture
def server(release):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(release[0].parent))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(registry.RELEASE_URL_ENV, raising=False)  # each test names its own URL
    return tmp_path / "xdg" / "deeplab_resnet"


def tiny_entry(monkeypatch, url: str, name: str = "voc12", **kwargs) -> registry.WeightsEntry:
    entry = registry.WeightsEntry(
        name, "test", url, kwargs.pop("member", "train_iter_20000.caffemodel"), 21, blocks=TINY, width=8, **kwargs
    )
    monkeypatch.setitem(registry.REGISTRY, name, entry)
    return entry


def _photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_download_verify_convert_cache_then_offline(tmp_path, release, server, cache, monkeypatch, capsys):
    tiny_entry(monkeypatch, f"{server}/prototxt_and_model.zip")
    assert main(["weights", "download", "voc12"]) == 0
    out, err = capsys.readouterr()
    target = cache / "voc12.safetensors"
    assert str(target) in out and "downloading" not in err  # the progress line is hidden off a terminal
    state, meta = read_native(target)
    assert meta.convention == "caffe" and meta.dataset.name == "voc12" and "train_iter_20000" in meta.source
    for name, a in release[1].items():
        if name.endswith("/weights"):
            assert np.array_equal(state[original_to_state_key(name)].numpy(), a.transpose(3, 2, 0, 1))
    assert sorted(p.name for p in cache.iterdir()) == ["prototxt_and_model.zip", "voc12.safetensors"]
    # Offline afterwards: the entry's URL now points nowhere, and --weights NAME still works.
    tiny_entry(monkeypatch, "http://127.0.0.1:9/gone.zip")
    assert main(["segment", str(_photo(tmp_path)), "-o", str(tmp_path / "out")]) == 0  # default --weights voc12
    assert (tmp_path / "out" / "photo.png").is_file()
    assert main(["weights", "path", "voc12"]) == 0 and capsys.readouterr().out.strip().endswith(str(target))


def test_no_network_gives_the_manual_steps(tmp_path, cache, monkeypatch, capsys):
    tiny_entry(monkeypatch, "http://127.0.0.1:9/prototxt_and_model.zip")  # port 9: nothing listens
    assert main(["segment", str(_photo(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "could not be fetched" in err
    assert "deeplab weights download voc12 --from-zip prototxt_and_model.zip" in err
    assert "deeplab convert train_iter_20000.caffemodel" in err
    assert not cache.exists() or not any(cache.iterdir())


def test_from_zip_and_the_trainval_warning(tmp_path, release, cache, monkeypatch, capsys):
    tiny_entry(monkeypatch, "http://127.0.0.1:9/x.zip", name="voc12-trainval", warning="never score on val")
    assert main(["weights", "download", "voc12-trainval", "--from-zip", str(release[0])]) == 0
    assert "warning: never score on val" in capsys.readouterr().err
    model = load_model("voc12-trainval")
    assert model.convention == "caffe" and model.num_classes == 21
    assert "warning: never score on val" in capsys.readouterr().err


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members:
            z.writestr(name, data)
    return path


def test_unsafe_damaged_and_wrong_archives_write_nothing(tmp_path, release, cache, monkeypatch):
    tiny_entry(monkeypatch, "http://127.0.0.1:9/x.zip")
    good = release[0].read_bytes()
    member = zipfile.ZipFile(release[0]).read("prototxt_and_model/train_iter_20000.caffemodel")
    target = cache / "voc12.safetensors"
    cases = [
        (
            _zip(tmp_path / "evil.zip", [("../evil.txt", "x"), ("train_iter_20000.caffemodel", member)]),
            "unsafe member name '../evil.txt'",
        ),
        (
            _zip(tmp_path / "abs.zip", [("/tmp/abs.txt", "x"), ("train_iter_20000.caffemodel", member)]),
            "unsafe member name",
        ),
        (_zip(tmp_path / "none.zip", [("readme.txt", "x")]), "expected one train_iter_20000.caffemodel"),
        (
            _zip(tmp_path / "small.zip", [("train_iter_20000.caffemodel", member[: len(member) // 2])]),
            "truncated or corrupt",
        ),
    ]
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(good[: len(good) // 3])
    cases.append((damaged, "not a valid zip"))
    crc = bytearray(good)
    crc[len(crc) // 2] ^= 0xFF  # inside the member's data: caught by the zip's CRC-32
    (tmp_path / "crc.zip").write_bytes(bytes(crc))
    cases.append((tmp_path / "crc.zip", "not a valid zip|Bad CRC"))
    for path, pattern in cases:
        with pytest.raises(DeepLabError, match=pattern):
            registry.fetch("voc12", from_zip=path)
        assert not target.exists(), path
        assert not [p for p in cache.rglob("*") if p.is_file()], path  # no temp or extracted file left
    assert not (tmp_path.parent / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_a_bad_download_is_not_kept_and_a_checksum_is_checked(tmp_path, release, server, cache, monkeypatch):
    (release[0].parent / "broken.zip").write_bytes(b"<html>not found</html>")
    tiny_entry(monkeypatch, f"{server}/broken.zip")
    with pytest.raises(DeepLabError, match="not a valid zip"):
        registry.fetch("voc12", progress=False)
    assert not (cache / "broken.zip").exists() and not (cache / "voc12.safetensors").exists()
    tiny_entry(monkeypatch, f"{server}/prototxt_and_model.zip", sha256="0" * 64)
    with pytest.raises(DeepLabError, match="SHA-256 does not match"):
        registry.fetch("voc12", progress=False)
    assert not (cache / "voc12.safetensors").exists()


def test_registry_lists_the_release():
    assert set(registry.REGISTRY) == {"voc12", "voc12-trainval", "coco-init"}
    assert registry.REGISTRY["voc12"].member == "train_iter_20000.caffemodel"
    assert registry.REGISTRY["voc12-trainval"].member == "train2_iter_20000.caffemodel"
    assert "val" in registry.REGISTRY["voc12-trainval"].warning
    assert registry.REGISTRY["coco-init"].not_restore_last
    assert all(e.sha256 is None and e.convention == "caffe" for e in registry.REGISTRY.values())


def test_the_release_mirror_replaces_every_entrys_url(tmp_path, cache, monkeypatch, capsys):
    assert registry.release_url(registry.REGISTRY["coco-init"]) == registry.RELEASE_URL
    mirror = "http://127.0.0.1:9/mirror/prototxt_and_model.zip"  # port 9: nothing listens
    monkeypatch.setenv(registry.RELEASE_URL_ENV, mirror)
    assert all(registry.release_url(e) == mirror for e in registry.REGISTRY.values())
    tiny_entry(monkeypatch, registry.RELEASE_URL)
    assert main(["segment", str(_photo(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert f"{mirror} could not be fetched" in err and f"download {mirror} by hand" in err
