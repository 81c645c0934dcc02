"""``deeplab evaluate``: metric numbers against an independent computation, the CLI end to end,
scoring prediction folders, flip, saved logits, CRF workers and the reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_model
from PIL import Image

from deeplab_resnet.data.lists import read_list
from deeplab_resnet.dataset_info import VOC
from deeplab_resnet.evaluation.evaluate import EvalOutputs, evaluate_pairs, evaluate_prediction_dir
from deeplab_resnet.evaluation.metrics import ConfusionMeter, scores
from deeplab_resnet.evaluation.report import build_report, class_table, confusion_image, write_reports
from deeplab_resnet.inference.segmenter import Segmenter
from deeplab_resnet.resize import resize_bilinear


def run_cli(*args, env_extra=None):
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "deeplab_resnet", *map(str, args)], capture_output=True, text=True, env=env
    )


def reference_metrics(preds, gts, n, ignore=255):
    """Plain numpy, written independently of metrics.py: per-class pixel sets, no confusion matrix."""
    tp, gt_count, pred_count, total, correct = np.zeros(n), np.zeros(n), np.zeros(n), 0, 0
    for p, g in zip(preds, gts):
        p, g = np.asarray(p).ravel().astype(np.int64), np.asarray(g).ravel().astype(np.int64)
        keep = (g != ignore) & (g < n) & (g >= 0)
        p, g = p[keep], g[keep]
        total += g.size
        correct += int((p == g).sum())
        for c in range(n):
            tp[c] += np.sum((p == c) & (g == c))
            gt_count[c] += np.sum(g == c)
            pred_count[c] += np.sum(p == c)
    union = gt_count + pred_count - tp
    iou = [tp[c] / union[c] if union[c] else None for c in range(n)]
    acc = [tp[c] / gt_count[c] if gt_count[c] else None for c in range(n)]
    present_iou = [v for v in iou if v is not None]
    present_acc = [v for v in acc if v is not None]
    fw = sum(gt_count[c] / total * iou[c] for c in range(n) if iou[c] is not None)
    return {
        "iou": iou,
        "accuracy": acc,
        "mean_iou": sum(present_iou) / len(present_iou),
        "pixel_accuracy": correct / total,
        "mean_accuracy": sum(present_acc) / len(present_acc),
        "frequency_weighted_iou": fw,
    }


def assert_report_matches(report, ref, names):
    for key in ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou"):
        assert report[key] == pytest.approx(ref[key], rel=1e-12, abs=1e-15), key
    for c, name in enumerate(names):
        entry = report["per_class"][name]
        for key in ("iou", "accuracy"):
            if ref[key][c] is None:
                assert entry[key] is None, (name, key)
            else:
                assert entry[key] == pytest.approx(ref[key][c], rel=1e-12, abs=1e-15), (name, key)


def test_scores_match_numpy_reference_on_random_data():
    rng = np.random.default_rng(11)
    n = 7
    preds, gts = [], []
    meter = ConfusionMeter(n, 255)
    for _ in range(12):
        shape = tuple(rng.integers(5, 40, 2))
        g = rng.integers(0, n + 2, shape)  # n, n+1: out of range, not scored
        g[rng.random(shape) < 0.15] = 255
        g[g == 3] = 4  # class 3 never in the ground truth...
        p = rng.integers(0, n, shape)
        p[p == 3] = 2  # ...nor predicted: absent, excluded from the means
        p[p == 5] = 0  # class 5 in ground truth but never predicted: IoU 0
        preds.append(p)
        gts.append(g)
        meter.update(p, g)
    ref = reference_metrics(preds, gts, n)
    names = [f"c{i}" for i in range(n)]
    report = build_report(meter.scores(), meter.matrix, names)
    assert_report_matches(report, ref, names)
    assert report["per_class"]["c3"]["present"] is False and report["per_class"]["c5"]["iou"] == 0.0
    assert report["pixels_scored"] == sum(int(((g != 255) & (g < n)).sum()) for g in gts)


def test_torchmetrics_agrees_when_installed():
    tm = pytest.importorskip("torchmetrics")  # not a dependency: checked only where it is installed
    rng = np.random.default_rng(5)
    p, g = rng.integers(0, 5, (40, 50)), rng.integers(0, 5, (40, 50))
    meter = ConfusionMeter(5, None)
    meter.update(p, g)
    jac = tm.classification.MulticlassJaccardIndex(num_classes=5, average="none")
    np.testing.assert_allclose(meter.scores().iou, jac(torch.from_numpy(p), torch.from_numpy(g)).numpy(), rtol=1e-6)


def write_random_predictions(voc: Path, out: Path, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Prediction PNGs for list_val: the ground truth with a third of the pixels replaced at random."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for line in (voc / "list_val.txt").read_text().splitlines():
        label_path = voc / line.split()[1].lstrip("/")
        gt = np.asarray(Image.open(label_path))
        pred = np.where(gt == 255, 0, gt).astype(np.uint8)
        noise = rng.random(gt.shape) < 0.33
        pred[noise] = rng.integers(0, 21, int(noise.sum()))
        Image.fromarray(pred, mode="L").save(out / label_path.name)
        pairs.append((pred, gt))
    return pairs


def test_predictions_dir_cli_equals_independent_computation(tmp_path, voc_fixture):
    preds_gts = write_random_predictions(voc_fixture, tmp_path / "preds")
    result = run_cli(
        "evaluate", "--data-dir", voc_fixture, "--data-list", voc_fixture / "list_val.txt",
        "--predictions", tmp_path / "preds", "-o", tmp_path / "report",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    ref = reference_metrics([p for p, _ in preds_gts], [g for _, g in preds_gts], 21)
    assert_report_matches(report, ref, VOC.class_names)
    matrix = np.load(tmp_path / "report" / "confusion.npy")
    assert matrix.dtype == np.int64 and matrix.sum() == sum(int((g != 255).sum()) for _, g in preds_gts)
    assert report["confusion_matrix"] == matrix.tolist()
    # the printed table carries the class names and the mean IoU
    assert "diningtable" in result.stdout and f"{100 * ref['mean_iou']:6.2f}" in result.stdout
    assert Image.open(tmp_path / "report" / "confusion.png").size[0] > 21 * 20


def test_predictions_dir_errors(tmp_path, voc_fixture):
    from deeplab_resnet.errors import DeepLabError

    pairs = read_list(voc_fixture, voc_fixture / "list_val.txt")
    gt = np.asarray(Image.open(pairs[0].label))
    pred_dir = tmp_path / "p"
    pred_dir.mkdir()
    first = pred_dir / pairs[0].label.name
    Image.fromarray(np.full(gt.shape, 21, np.uint8), mode="L").save(first)
    with pytest.raises(DeepLabError, match="predicted class 21"):
        evaluate_prediction_dir(pred_dir, pairs[:1], 21)
    Image.fromarray(np.full((5, 5), 3, np.uint8), mode="L").save(first)
    with pytest.raises(DeepLabError, match="differs from the ground truth"):
        evaluate_prediction_dir(pred_dir, pairs[:1], 21)
    # through the CLI: one line, exit status 2, no report written
    args = ["evaluate", "--data-dir", voc_fixture, "--data-list", voc_fixture / "list_val.txt", "-o", tmp_path / "r"]
    result = run_cli(*args, "--predictions", pred_dir)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "10 of 11 predictions missing" in lines[0], result.stderr
    assert not (tmp_path / "r").exists()


def test_evaluate_cli_end_to_end_on_voc_fixture(tmp_path, tiny_weights, voc_fixture):
    """The model run: table printed, reports written, predictions saved; its numbers equal an
    independent computation on its own saved predictions, which equal the Segmenter's."""
    result = run_cli(
        "evaluate", "--data-dir", voc_fixture, "--data-list", voc_fixture / "list_val.txt",
        "--weights", tiny_weights, "--device", "cpu", "-o", tmp_path / "ev", "--save-predictions", tmp_path / "pred",
        "--backend", "torch",  # the PyTorch model itself, so that its labels equal the Segmenter's bit for bit
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mean IoU" in result.stdout and "tvmonitor" in result.stdout and "images/s" in result.stdout
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["images"] == 11 and report["images_per_second"] > 0
    assert (report["backend"], report["precision"]) == ("torch", "fp32")  # what computed the score
    pairs = read_list(voc_fixture, voc_fixture / "list_val.txt")
    preds = [np.asarray(Image.open(tmp_path / "pred" / f"{p.name}.png")) for p in pairs]
    gts = [np.asarray(Image.open(p.label)) for p in pairs]
    assert_report_matches(report, reference_metrics(preds, gts, 21), VOC.class_names)
    seg = Segmenter(tiny_model(), pad_size="auto")  # caffe weights: the authors' 513 padding by default
    assert np.array_equal(preds[0], seg(pairs[0].image).labels)
    assert Image.open(tmp_path / "pred" / f"{pairs[0].name}.png").mode == "P"


def test_flip_averages_with_the_mirrored_image():
    model = tiny_model("tf")
    rgb = np.random.default_rng(2).integers(0, 255, (41, 58, 3), dtype=np.uint8)
    labels, up = Segmenter(model, flip=True).predict(rgb, full=True)
    x = torch.from_numpy(rgb[:, :, ::-1].astype(np.float32).copy()) - torch.tensor(model.mean_bgr)
    x = x.permute(2, 0, 1)[None]
    with torch.no_grad():
        a = resize_bilinear(model(x), (41, 58), "tf")[0]
        b = resize_bilinear(model(x.flip(-1)), (41, 58), "tf")[0].flip(-1)
    torch.testing.assert_close(up, (a + b) / 2, rtol=1e-4, atol=1e-4)
    assert (labels == ((a + b) / 2).argmax(0)).float().mean() > 0.999


def test_saved_logits_and_crf_workers_match_inline(tmp_path, voc_fixture):
    pytest.importorskip("pydensecrf")
    from deeplab_resnet.crf import PRESETS

    model = tiny_model()
    # corners of two fixture pairs, small so that the CRF is quick
    (tmp_path / "d").mkdir()
    lines = []
    for pair in read_list(voc_fixture, voc_fixture / "list_val.txt")[:2]:
        Image.open(pair.image).crop((0, 0, 160, 120)).save(tmp_path / "d" / f"{pair.name}.png")
        Image.open(pair.label).crop((0, 0, 160, 120)).save(tmp_path / "d" / f"{pair.name}_gt.png")
        lines.append(f"/{pair.name}.png /{pair.name}_gt.png\n")
    (tmp_path / "list.txt").write_text("".join(lines))
    pairs = read_list(tmp_path / "d", tmp_path / "list.txt")
    crf = PRESETS["deeplab-resnet"]
    inline = evaluate_pairs(
        model, pairs, crf=crf, crf_backend="pydensecrf", outputs=EvalOutputs(tmp_path / "p0", tmp_path / "logits")
    )
    pooled = evaluate_pairs(model, pairs, crf=crf, crf_backend="pydensecrf", crf_workers=1)
    plain = evaluate_pairs(model, pairs)
    assert np.array_equal(inline.matrix, pooled.matrix)
    assert not np.array_equal(inline.matrix, plain.matrix)  # the CRF did change the predictions
    logits = np.load(tmp_path / "logits" / f"{pairs[0].name}.npy")
    image = np.asarray(Image.open(pairs[0].image).convert("RGB"))
    assert logits.dtype == np.float32 and logits.shape == (*image.shape[:2], 21)
    assert np.array_equal(logits.argmax(-1), Segmenter(model)(image).labels)


def test_report_table_marks_absent_classes_and_plot_shape():
    matrix = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    meter_scores = scores(matrix)
    table = class_table(meter_scores, ["a", "bb", "ccc"])
    lines = table.splitlines()
    assert "absent" in lines[4] and "ccc" in lines[4] and "absent" not in lines[2]
    assert "over 2 of 3 classes" in table and f"{100 * (5 / 8 + 3 / 6) / 2:6.2f}" in table
    img = confusion_image(matrix, ["a", "bb", "ccc"], cell=10)
    arr = np.asarray(img)
    # a row without ground truth stays white; a cell with most of its row is dark
    assert img.mode == "RGB" and arr[-5, -5].tolist() == [255, 255, 255]
    assert arr[-25, -25].sum() < arr[-25, -15].sum()  # row "a": 5/6 on the diagonal, 1/6 beside it


def test_reports_are_written_atomically_and_completely(tmp_path):
    matrix = np.eye(3, dtype=np.int64) * 4
    s = scores(matrix)
    paths = write_reports(tmp_path / "r", build_report(s, matrix, ["a", "b", "c"]), matrix, ["a", "b", "c"])
    assert [p.name for p in paths] == ["report.json", "confusion.npy", "confusion.png"]
    assert json.loads(paths[0].read_text())["mean_iou"] == 1.0
    assert np.array_equal(np.load(paths[1]), matrix)
    assert not [p for p in (tmp_path / "r").iterdir() if p.suffix == ".tmp"]


@pytest.mark.slow
def test_torchrun_two_processes_reduce_the_matrix(tmp_path, tiny_weights, voc_fixture):
    common = ["--data-dir", voc_fixture, "--data-list", voc_fixture / "list_val.txt", "--limit", "5",
              "--weights", tiny_weights, "--device", "cpu"]  # fmt: skip
    single = run_cli("evaluate", *common, "-o", tmp_path / "one")
    assert single.returncode == 0, single.stderr
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
         "-m", "deeplab_resnet", "evaluate", *map(str, common), "-o", str(tmp_path / "two")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert multi.returncode == 0, multi.stderr
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["confusion_matrix"] == one["confusion_matrix"]
    assert multi.stdout.count("mean IoU") == 1  # only rank 0 prints


def test_multi_scale_is_the_max_fusion_of_the_scales():
    from deeplab_resnet.models.msc import DEFAULT_SCALES
    from deeplab_resnet.resize import scaled_size

    model = tiny_model("tf")
    rgb = np.random.default_rng(8).integers(0, 255, (49, 65, 3), dtype=np.uint8)
    _, up = Segmenter(model, scales=DEFAULT_SCALES).predict(rgb, full=True)
    x = torch.from_numpy(rgb[:, :, ::-1].astype(np.float32).copy()) - torch.tensor(model.mean_bgr)
    x = x.permute(2, 0, 1)[None]
    with torch.no_grad():
        outs = [model(resize_bilinear(x, scaled_size(49, 65, s, "tf"), "tf") if s != 1 else x) for s in DEFAULT_SCALES]
        fused = torch.stack([resize_bilinear(o, outs[0].shape[-2:], "tf") for o in outs]).amax(0)
    torch.testing.assert_close(up, resize_bilinear(fused, (49, 65), "tf")[0], rtol=1e-4, atol=1e-4)


def _same_and_mixed_size_pairs(tmp_path: Path, voc_fixture: Path):
    """Crops of the fixture: five of one size and three of another, interleaved in the list."""
    (tmp_path / "d").mkdir()
    lines = []
    for i, pair in enumerate(read_list(voc_fixture, voc_fixture / "list_val.txt")[:8]):
        box = (0, 0, 96, 72) if i % 3 else (10, 20, 74, 100)
        Image.open(pair.image).crop(box).save(tmp_path / "d" / f"{pair.name}.png")
        Image.open(pair.label).crop(box).save(tmp_path / "d" / f"{pair.name}_gt.png")
        lines.append(f"/{pair.name}.png /{pair.name}_gt.png\n")
    (tmp_path / "list.txt").write_text("".join(lines))
    return read_list(tmp_path / "d", tmp_path / "list.txt")


def test_size_groups_batch_each_size_and_keep_every_pair(tmp_path, voc_fixture):
    from deeplab_resnet.evaluation.evaluate import size_groups

    pairs = _same_and_mixed_size_pairs(tmp_path, voc_fixture)
    for batch in (1, 2, 3, 8):
        groups = list(size_groups(pairs, batch))
        assert sorted(p.name for g in groups for p, _, _ in g) == sorted(p.name for p in pairs)
        assert all(0 < len(g) <= batch and len({im.shape for _, im, _ in g}) == 1 for g in groups)
        if batch == 1:  # one at a time keeps the list order
            assert [g[0][0].name for g in groups] == [p.name for p in pairs]
    assert max(len(g) for g in size_groups(pairs, 3)) == 3  # batching happened


@pytest.mark.parametrize("scales, flip", [((1.0,), False), ((1.0, 0.75, 0.5), True)])
def test_batched_evaluation_equals_one_image_at_a_time(tmp_path, voc_fixture, scales, flip):
    model = tiny_model()
    pairs = _same_and_mixed_size_pairs(tmp_path, voc_fixture)
    one = evaluate_pairs(model, pairs, scales=scales, flip=flip, outputs=EvalOutputs(None, tmp_path / "l1"))
    batched = evaluate_pairs(
        model, pairs, scales=scales, flip=flip, batch_size=3, outputs=EvalOutputs(None, tmp_path / "l3")
    )
    assert np.array_equal(one.matrix, batched.matrix) and one.matrix.sum() > 0
    for pair in pairs:  # the logits too, up to float rounding of a batched convolution
        a, b = np.load(tmp_path / "l1" / f"{pair.name}.npy"), np.load(tmp_path / "l3" / f"{pair.name}.npy")
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_predict_batch_rejects_mixed_sizes():
    from deeplab_resnet.errors import DeepLabError

    seg = Segmenter(tiny_model())
    with pytest.raises(DeepLabError, match="one size"):
        seg.predict_batch([np.zeros((20, 30, 3), np.uint8), np.zeros((30, 20, 3), np.uint8)])
    assert seg.predict_batch([]) == []


def test_evaluate_cli_bad_batch_size_is_one_line(tmp_path, tiny_weights, voc_fixture):
    result = run_cli(
        "evaluate", "--data-dir", voc_fixture, "--data-list", voc_fixture / "list_val.txt",
        "--weights", tiny_weights, "--device", "cpu", "-o", tmp_path / "ev", "--batch-size", "0",
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "--batch-size" in lines[0], result.stderr
    assert not (tmp_path / "ev").exists()
