"""The model hubs: Hub model folders, ``--weights hf://`` from a stand-in Hub, and torch.hub.

Offline: a local HTTP server plays the Hub's file host (``HF_ENDPOINT``), answering
``/{repo}/resolve/{revision}/{file}`` with the headers ``huggingface_hub`` reads (the commit, the
ETag, and for the weight file the LFS ``X-Linked-Etag``/``X-Linked-Size``), and another plays
the original release's host for ``weights="voc12"`` (``DEEPLAB_RESNET_RELEASE_URL``).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, tiny_model
from fixtures_weights import caffe_layers, random_tf_arrays, tf_variables, write_caffemodel
from PIL import Image

import deeplab_resnet
from deeplab_resnet import DeepLabError, Segmenter, load_model
from deeplab_resnet.cli import main
from deeplab_resnet.evaluation.metrics import scores
from deeplab_resnet.evaluation.report import build_report
from deeplab_resnet.weights import pretrained, registry
from deeplab_resnet.weights.hf_hub import parse_hf_spec
from deeplab_resnet.weights.native import read_native

pytest.importorskip("huggingface_hub")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "deeplab_resnet"


def _equal_states(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- a stand-in Hub


class FakeHub:
    """Serves ``repos[(repo_id, revision)] = (commit, {file: bytes})``; a commit also names its files."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], tuple[str, dict[str, bytes]]] = {}
        self.requests: list[str] = []
        self.lfs_etag: dict[str, str] = {}  # file name -> the ETag to report instead of the content's hash
        self.drop: set[str] = set()  # files whose download breaks off halfway
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def find(self, repo: str, revision: str):
        for (name, rev), (commit, files) in self.repos.items():
            if name == repo and revision in (rev, commit):
                return commit, files
        return None

    def answer(self, request, body: bool) -> None:
        self.requests.append(f"{request.command} {request.path}")
        owner, name, resolve, revision, filename = (request.path.lstrip("/").split("/", 4) + [""] * 5)[:5]
        repo = f"{owner}/{name}"
        found = self.find(repo, revision) if resolve == "resolve" else None
        if found is None or filename not in found[1]:  # the Hub's answers, told apart by X-Error-Code
            if not any(name == repo for name, _ in self.repos):
                status, code = 401, "RepoNotFound"
            else:
                status, code = 404, "RevisionNotFound" if found is None else "EntryNotFound"
            request.send_response(status)
            request.send_header("X-Error-Code", code)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        commit, files = found
        data = files[filename]
        request.send_response(200)
        request.send_header("X-Repo-Commit", commit)
        request.send_header("Content-Length", str(len(data)))
        if filename.endswith(".safetensors"):  # stored with LFS: the ETag is the file's SHA-256
            etag = self.lfs_etag.get(filename, _sha256(data))
            request.send_header("ETag", f'"{etag}"')
            request.send_header("X-Linked-Etag", f'"{etag}"')
            request.send_header("X-Linked-Size", str(len(data)))
        else:
            request.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        request.end_headers()
        if body:  # a dropped connection sends half the file
            request.wfile.write(data[: len(data) // 2] if filename in self.drop else data)
            if filename in self.drop:
                request.close_connection = True

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub(monkeypatch, cache):
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.stop()


def _publish(hub: FakeHub, folder, repo="owner/tiny", revision="main", commit=COMMIT) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    hub.repos[(repo, revision)] = (commit, files)
    return files


def _photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


# ---------------------------------------------------------------- model folders


def _report(num_classes: int, class_names) -> dict:
    rng = np.random.default_rng(3)
    matrix = rng.integers(0, 50, (num_classes, num_classes)) + np.diag(rng.integers(100, 400, num_classes))
    return build_report(scores(matrix), matrix, class_names, data_list="val.txt", images=11, scales=[1.0], flip=False)


def test_save_pretrained_writes_the_native_file_a_checked_config_and_from_pretrained_reads_it(tmp_path):
    model = tiny_model(seed=4)
    files = pretrained.save_pretrained(model, tmp_path / "m", source="unit test")
    assert sorted(p.name for p in files) == ["README.md", "config.json", "model.safetensors"]
    weights = tmp_path / "m" / "model.safetensors"
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["weights_sha256"] == _sha256(weights.read_bytes())
    assert config["num_classes"] == 21 and config["convention"] == "caffe"
    assert config["model"] == "deeplab_v2_resnet_tiny" and config["architecture"]["blocks"] == [1, 1, 1, 1]
    assert config["dataset"]["class_names"][15] == "person" and config["dataset"]["palette"][1] == [128, 0, 0]
    state, meta = read_native(weights)  # the same file format as --weights PATH
    assert meta.source == "unit test" and meta.dataset == model.dataset
    assert _equal_states(pretrained.from_pretrained(tmp_path / "m"), model)
    assert _equal_states(load_model(weights), model)


def test_a_folder_whose_weights_differ_from_its_config_is_refused(tmp_path):
    pretrained.save_pretrained(tiny_model(seed=1), tmp_path / "a")
    pretrained.save_pretrained(tiny_model(seed=2), tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(DeepLabError, match="not the file config.json describes"):
        pretrained.from_pretrained(tmp_path / "a")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    config["convention"] = "tf"
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    with pytest.raises(DeepLabError, match="config.json says convention 'tf' but model.safetensors says 'caffe'"):
        pretrained.from_pretrained(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text("{}")
    with pytest.raises(DeepLabError, match="was not written by deeplab_resnet"):
        pretrained.from_pretrained(tmp_path / "b")


def test_no_output_replaces_an_input_or_an_earlier_save(tmp_path, tiny_weights):
    folder = tmp_path / "m"
    pretrained.save_pretrained(tiny_weights, folder)
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(DeepLabError, match="already holds model.safetensors, config.json, README.md"):
        pretrained.save_pretrained(tiny_model(seed=9), folder)
    assert (folder / "model.safetensors").read_bytes() == before
    with pytest.raises(DeepLabError, match="the weights to save are .* itself"):
        pretrained.save_pretrained(folder / "model.safetensors", folder, overwrite=True)
    assert (folder / "model.safetensors").read_bytes() == before
    pretrained.save_pretrained(tiny_model(seed=9), folder, overwrite=True)
    assert _equal_states(pretrained.from_pretrained(folder), tiny_model(seed=9))


def test_the_model_card_shows_the_report_the_classes_and_the_source(tmp_path, tiny_weights):
    model = load_model(tiny_weights)
    report = _report(21, model.dataset.class_names)
    (tmp_path / "report.json").write_text(json.dumps(report))
    folder = tmp_path / "card"
    assert (
        main(["weights", "save-pretrained", str(folder), "--weights", str(tiny_weights), "--report",
              str(tmp_path / "report.json"), "--license", "mit", "--hub-dataset", "pascal_voc", "--tag", "voc", "--repo-id", "me/voc"])
        == 0
    )  # fmt: skip
    card = (folder / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "deeplab_resnet" and meta["license"] == "mit"
    assert meta["datasets"] == ["pascal_voc"] and "voc" in meta["tags"] and "deeplab-v2" in meta["tags"]
    # The mean IoU, computed here from the confusion matrix on its own.
    m = np.asarray(report["confusion_matrix"], dtype=np.float64)
    iou = np.diag(m) / (m.sum(0) + m.sum(1) - np.diag(m))
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == round(100 * iou.mean(), 2)
    assert f"**{100 * iou.mean():.2f} %**" in body
    assert f"| person | {100 * iou[15]:.2f} |" in body
    assert all(f"| {i} | {name} |" in body for i, name in enumerate(model.dataset.class_names))
    assert "Weights: test." in body and "TPAMI 2017" in body and "val.txt" in body
    assert "--weights hf://me/voc" in body and 'dl.from_pretrained("me/voc")' in body


def test_a_report_of_other_classes_is_refused(tmp_path, tiny_weights):
    report = _report(3, ["a", "b", "c"])
    with pytest.raises(DeepLabError, match="the report scores classes"):
        pretrained.save_pretrained(tiny_weights, tmp_path / "m", report=report)
    assert not (tmp_path / "m").exists()


class FakeApi:
    def __init__(self, token):
        self.token, self.calls, self.uploaded = token, [], {}

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        folder = kwargs["folder_path"]
        self.uploaded = {p.name: p.read_bytes() for p in Path(folder).iterdir()}
        return type("Commit", (), {"commit_url": f"https://hub.test/{kwargs['repo_id']}/commit/abc"})()


def test_push_to_hub_uploads_the_saved_folder_as_one_commit(tmp_path, tiny_weights, monkeypatch, capsys):
    apis = []
    monkeypatch.setattr(pretrained, "_hf_api", lambda token: apis.append(FakeApi(token)) or apis[-1])
    url = pretrained.push_to_hub(tiny_weights, "me/tiny", private=True, token="secret")
    assert url == "https://hub.test/me/tiny/commit/abc"
    api = apis[0]
    assert api.token == "secret"
    assert api.calls[0] == (
        "create_repo",
        {"repo_id": "me/tiny", "repo_type": "model", "private": True, "exist_ok": True},
    )
    name, upload = api.calls[1]
    assert name == "upload_folder" and upload["repo_id"] == "me/tiny" and upload["repo_type"] == "model"
    assert sorted(api.uploaded) == ["README.md", "config.json", "model.safetensors"]
    (tmp_path / "uploaded.safetensors").write_bytes(api.uploaded["model.safetensors"])
    state, meta = read_native(tmp_path / "uploaded.safetensors")  # the native file, metadata and all
    original_state, original_meta = read_native(tiny_weights)
    assert meta == original_meta and state.keys() == original_state.keys()
    assert all(torch.equal(state[k], original_state[k]) for k in state)
    assert "hf://me/tiny" in api.uploaded["README.md"].decode()
    assert not Path(upload["folder_path"]).exists()  # the temporary folder is gone
    assert main(["weights", "push-to-hub", "me/tiny", "--weights", str(tiny_weights)]) == 0
    assert capsys.readouterr().out.strip() == url and apis[1].calls[0][1]["private"] is None
    with pytest.raises(DeepLabError, match="OWNER/REPO"):
        pretrained.push_to_hub(tiny_weights, "no-owner")


def test_without_huggingface_hub_the_error_says_what_to_install(monkeypatch, cache):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    with pytest.raises(DeepLabError, match=r"pip install 'deeplab_resnet\[hub\]'"):
        load_model("hf://owner/tiny")


def test_hub_names_are_checked():
    assert parse_hf_spec("hf://owner/repo") == ("owner/repo", None)
    assert parse_hf_spec("hf://owner/repo.v2@v1.0") == ("owner/repo.v2", "v1.0")
    for bad in ("hf://owner", "hf://owner/repo/extra", "hf://../x", "hf://owner/repo@", "hf://a/b@-x"):
        with pytest.raises(DeepLabError, match="expected hf://OWNER/REPO"):
            parse_hf_spec(bad)


# ---------------------------------------------------------------- hf:// weights


def test_hf_weights_download_verify_cache_and_work_offline(tmp_path, hub, cache, monkeypatch):
    model = tiny_model(seed=5)
    pretrained.save_pretrained(model, tmp_path / "m", source="pushed")
    _publish(hub, tmp_path / "m", revision="v1.0")
    loaded = load_model("hf://owner/tiny@v1.0")
    assert _equal_states(loaded, model)
    assert "GET /owner/tiny/resolve/v1.0/config.json" in hub.requests  # the revision reaches the server
    assert f"GET /owner/tiny/resolve/{COMMIT}/model.safetensors" in hub.requests  # the weights of that commit
    cached = [p for p in (cache / "hub").rglob("model.safetensors")]
    assert len(cached) == 1 and _sha256(cached[0].read_bytes()) == _sha256(
        (tmp_path / "m" / "model.safetensors").read_bytes()
    )
    hub.stop()  # from now on the cache alone
    assert (
        main(["segment", str(_photo(tmp_path)), "--weights", "hf://owner/tiny@v1.0", "-o", str(tmp_path / "out")]) == 0
    )
    assert (tmp_path / "out" / "photo.png").is_file()
    assert _equal_states(deeplab_resnet.from_pretrained("owner/tiny", revision="v1.0"), model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline by choice: the cache serves the pinned revision
    assert _equal_states(load_model("hf://owner/tiny@v1.0"), model)


def test_not_cached_and_offline_says_what_to_do(tmp_path, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["segment", str(_photo(tmp_path)), "--weights", "hf://owner/absent"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "HF_HUB_OFFLINE" in err and "--weights DIR/model.safetensors" in err and "huggingface-cli download" in err
    assert hub.requests == []


@pytest.mark.parametrize("who_lies", ["config", "hub"])
def test_a_tampered_download_is_refused_and_not_cached(tmp_path, hub, cache, who_lies):
    model = tiny_model(seed=6)
    files = _publish(hub, pretrained.save_pretrained(model, tmp_path / "m")[0].parent)
    good = files["model.safetensors"]
    tampered = bytearray(good)
    tampered[-5] ^= 0x01  # a tensor's last bytes: still a readable safetensors file
    files["model.safetensors"] = bytes(tampered)
    if who_lies == "hub":  # the config matches the Hub's hash, the bytes do not (damaged in transit)
        hub.lfs_etag["model.safetensors"] = _sha256(good)
    else:  # the file was replaced on the Hub without its config.json
        pass
    with pytest.raises(
        DeepLabError, match="model.safetensors downloaded with SHA-256 .* removed from the cache"
    ) as exc:
        load_model("hf://owner/tiny")
    assert "\n" not in str(exc.value)
    assert not [p for p in (cache / "hub").rglob("*") if p.is_file() and p.read_bytes() == bytes(tampered)]
    files["model.safetensors"] = good
    hub.lfs_etag.clear()
    assert _equal_states(load_model("hf://owner/tiny"), model)  # downloaded anew, now accepted


def test_unknown_repository_revision_and_file_are_one_line_errors(tmp_path, hub):
    pretrained.save_pretrained(tiny_model(), tmp_path / "m")
    files = _publish(hub, tmp_path / "m")
    del files["model.safetensors"]
    for spec, message in (
        ("hf://owner/other", "no such repository on the Hub"),
        ("hf://owner/tiny@v9", "the repository has no revision 'v9'"),
        ("hf://owner/tiny", "the repository has no model.safetensors"),
    ):
        with pytest.raises(DeepLabError, match=message) as exc:
            load_model(spec)
        assert "\n" not in str(exc.value)


def test_a_download_that_breaks_off_leaves_nothing_half_written(tmp_path, hub, cache):
    model = tiny_model(seed=7)
    _publish(hub, pretrained.save_pretrained(model, tmp_path / "m")[0].parent)
    hub.drop.add("model.safetensors")
    with pytest.raises(DeepLabError, match="downloading model.safetensors failed"):
        load_model("hf://owner/tiny")
    assert [p.name for p in (cache / "hub").rglob("*.incomplete")] == []
    assert not [p for p in (cache / "hub").rglob("model.safetensors")]
    hub.drop.clear()
    assert _equal_states(load_model("hf://owner/tiny"), model)


def test_ctrl_c_during_a_download_removes_its_partial_file_only(cache, monkeypatch):
    import huggingface_hub

    blobs = cache / "hub" / "models--owner--tiny" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "other.incomplete").write_bytes(b"another download's")

    def interrupted(*args, **kwargs):  # what huggingface_hub leaves when Ctrl-C hits mid-file
        (blobs / "abc.incomplete").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_model("hf://owner/tiny")
    assert sorted(p.name for p in blobs.iterdir()) == ["other.incomplete"]


# ---------------------------------------------------------------- torch.hub


def test_torch_hub_local_gives_the_models_and_segmenter_of_load_model(tmp_path, tiny_weights):
    model = torch.hub.load(
        str(REPO), "deeplab_v2_resnet101", source="local", weights=str(tiny_weights), trust_repo=True
    )
    reference = load_model(tiny_weights)
    assert not model.training and model.spec == reference.spec
    x = torch.randn(1, 3, 41, 49, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    seg = torch.hub.load(str(REPO), "segmenter", source="local", weights=str(tiny_weights), trust_repo=True, flip=True)
    assert isinstance(seg, Segmenter) and seg.flip
    photo = _photo(tmp_path)
    assert np.array_equal(seg(photo).labels, Segmenter(reference, flip=True)(photo).labels)
    with pytest.raises(DeepLabError, match="'caffe' convention, not 'tf'"):
        torch.hub.load(str(REPO), "deeplab_v2_resnet101", source="local", weights=str(tiny_weights), convention="tf")


@pytest.fixture
def release_host(tmp_path):
    """The release zip (a tiny-variant caffemodel in it) on a local server that records requests."""
    arrays = random_tf_arrays(tf_variables((1, 1, 1, 1), width=8), seed=11)
    caffemodel = tmp_path / "train_iter_20000.caffemodel"
    write_caffemodel(caffemodel, caffe_layers(arrays, 4.0))
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "prototxt_and_model.zip", "w") as z:
        z.write(caffemodel, "prototxt_and_model/train_iter_20000.caffemodel")
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            seen.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def test_torch_hub_voc12_downloads_from_the_release_mirror(tmp_path, release_host, cache, monkeypatch):
    url, seen = release_host
    # The real entry, shrunk to the tiny variant that the served zip holds; its URL is the release's.
    entry = registry.WeightsEntry("voc12", "test", registry.RELEASE_URL, "train_iter_20000.caffemodel", 21,
                                  blocks=(1, 1, 1, 1), width=8)  # fmt: skip
    monkeypatch.setitem(registry.REGISTRY, "voc12", entry)
    monkeypatch.setenv(registry.RELEASE_URL_ENV, f"{url}/prototxt_and_model.zip")
    model = torch.hub.load(str(REPO), "deeplab_v2_resnet101", source="local", weights="voc12", trust_repo=True)
    assert any("/prototxt_and_model.zip" in line for line in seen)
    assert (cache / "voc12.safetensors").is_file()
    reference = load_model(cache / "voc12.safetensors")
    x = torch.randn(1, 3, 33, 33, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert "prototxt_and_model.zip" in read_native(cache / "voc12.safetensors")[1].source
