"""Training options for datasets with rare classes and large unlabelled areas: class-weighted
cross-entropy (and the weights from ``deeplab data stats``), online hard-example mining, and the
crop that avoids all-ignore windows. Losses are checked against numpy computations written here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model
from PIL import Image

from deeplab_resnet.cli import main
from deeplab_resnet.data.tools.class_weights import read_class_weights
from deeplab_resnet.data.transforms import TrainTransform
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.training.config import TrainConfig
from deeplab_resnet.training.loop import step_options
from deeplab_resnet.training.recipe import ohem_kept_count, seg_loss

IGNORE = 255


def pixel_losses(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per valid pixel ``w_y · (logsumexp(z) − z_y)`` in float64, in (batch, row, column) order;
    logits and labels on the same grid, labels ≥ C or 255 are not valid."""
    n, c, h, w = logits.shape
    out = []
    for b in range(n):
        for i in range(h):
            for j in range(w):
                y = int(labels[b, i, j])
                if y >= c:
                    continue
                z = logits[b, :, i, j].astype(np.float64)
                ce = z.max() + math.log(np.exp(z - z.max()).sum()) - z[y]
                out.append(ce * (1.0 if weights is None else weights[y]))
    return np.array(out)


def sample(seed: int = 0, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, c, 3, 5, generator=g) * 2
    labels = torch.randint(0, c, (2, 3, 5), generator=g)
    labels[0, 0, :3] = IGNORE
    labels[1, 2, 4] = c + 1  # out of range: ignored
    return logits, labels


# ---------------------------------------------------------------- class-weighted cross-entropy


def test_weighted_loss_is_weighted_sum_over_valid_pixel_count():
    logits, labels = sample()
    weights = np.array([0.5, 2.0, 1.0, 3.0])
    loss, parts = seg_loss([logits], labels, 4, IGNORE, class_weights=torch.tensor(weights))
    per_pixel = pixel_losses(logits.numpy(), labels.numpy(), weights)
    assert len(per_pixel) == 2 * 15 - 4
    assert float(loss) == pytest.approx(per_pixel.sum() / len(per_pixel), rel=1e-6)
    # All-one weights are the original loss.
    ones = seg_loss([logits], labels, 4, IGNORE, class_weights=torch.ones(4))[0]
    assert float(ones) == pytest.approx(pixel_losses(logits.numpy(), labels.numpy()).mean(), rel=1e-6)


# ---------------------------------------------------------------- hard-example mining


def test_ohem_kept_count():
    assert ohem_kept_count(10, 0.3, 0) == 3  # 0.3 · 10 is 3.0000000000000004 in floats
    assert ohem_kept_count(10, 0.25, 0) == 3  # ceil(2.5)
    assert ohem_kept_count(10, 0.25, 6) == 6
    assert ohem_kept_count(10, 0.25, 50) == 10
    assert ohem_kept_count(10, 1.0, 0) == 10 and ohem_kept_count(0, 0.5, 4) == 0


def test_ohem_keeps_the_hardest_pixels_of_each_output():
    logits, labels = sample(1)
    other = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(7)) * 3
    loss, parts = seg_loss([logits, other], labels, 4, IGNORE, ohem_keep=0.25)
    expected = []
    for z in (logits, other):
        per_pixel = np.sort(pixel_losses(z.numpy(), labels.numpy()))[::-1]
        k = math.ceil(0.25 * len(per_pixel))  # 26 valid pixels -> 7, chosen per output
        expected.append(per_pixel[:k].mean())
    assert [float(p) for p in parts] == pytest.approx(expected, rel=1e-6)
    assert float(loss) == pytest.approx(sum(expected), rel=1e-6)
    min_kept = seg_loss([logits], labels, 4, IGNORE, ohem_keep=0.25, ohem_min_kept=12)[0]
    assert float(min_kept) == pytest.approx(np.sort(pixel_losses(logits.numpy(), labels.numpy()))[::-1][:12].mean())


def test_ohem_ranks_by_weighted_loss_and_only_kept_pixels_get_gradient():
    logits, labels = sample(2)
    weights = np.array([4.0, 0.25, 1.0, 2.0])
    z = logits.clone().requires_grad_(True)
    loss = seg_loss([z], labels, 4, IGNORE, class_weights=torch.tensor(weights), ohem_keep=0.5)[0]
    per_pixel = np.sort(pixel_losses(logits.numpy(), labels.numpy(), weights))[::-1]
    assert float(loss.detach()) == pytest.approx(per_pixel[:13].mean(), rel=1e-6)
    loss.backward()
    touched = (z.grad.abs().sum(dim=1) > 0).sum()
    assert int(touched) == 13


# ---------------------------------------------------------------- weights from the label statistics


def write_label_set(root: Path) -> Path:
    """Two labels, 3 classes + 1 absent class, ignore 255, an out-of-range 9."""
    labels = {"a": np.array([[0, 0], [1, 255]]), "b": np.array([[0, 2, 2], [2, 2, 9]])}
    lines = []
    for name, label in labels.items():
        Image.fromarray(label.astype(np.uint8), mode="L").save(root / f"{name}.png")
        Image.fromarray(np.zeros((*label.shape, 3), np.uint8)).save(root / f"{name}.jpg")
        lines.append(f"/{name}.jpg /{name}.png")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root / "list.txt"


def run_stats(root: Path, method: str) -> list[float]:
    out = root / f"{method}.json"
    args = ["data", "stats", "--data-dir", str(root), "--data-list", str(root / "list.txt"), "--num-classes", "4"]
    assert main(args + ["--class-weights", method, "--output", str(out), "--workers", "1", "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert data["pixels"] == [3, 1, 4, 0] and data["image_pixels"] == [8, 3, 5, 0]
    assert read_class_weights(out, 4) == data["weights"]
    return data["weights"]


def test_median_frequency_weights_by_hand(tmp_path: Path):
    write_label_set(tmp_path)
    # Valid pixels: a has 3 (0, 0, 1), b has 5 (0, 2, 2, 2, 2). f = 3/8, 1/3, 4/5; median 3/8.
    assert run_stats(tmp_path, "median-frequency") == pytest.approx([1.0, 9 / 8, 15 / 32, 1.0])


def test_inverse_log_frequency_weights_by_hand(tmp_path: Path):
    write_label_set(tmp_path)
    expected = [1 / math.log(1.02 + p) for p in (3 / 8, 1 / 8, 4 / 8, 0.0)]
    assert run_stats(tmp_path, "inverse-log-frequency") == pytest.approx(expected)


@pytest.mark.parametrize(
    "content, message",
    [
        ([1.0, 2.0], "2 weights for 3 classes"),
        ([1.0, -2.0, 1.0], "the weight of class 1 must be a finite positive number"),
        ([1.0, float("nan"), 1.0], "the weight of class 1 must be a finite positive number"),
        ({"w": [1, 1, 1]}, "expected a JSON list of weights"),
    ],
)
def test_bad_weights_files_are_one_line_errors(tmp_path: Path, content, message: str):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DeepLabError, match=message):
        read_class_weights(path, 3)


def test_training_reads_the_weights_and_checks_the_options(tmp_path: Path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"weights": [0.5 + c for c in range(5)]}))
    options = step_options(TrainConfig(class_weights=str(path), ohem_keep=0.5), tiny_model(num_classes=5), world=1)
    assert options["class_weights"].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5] and options["ohem_keep"] == 0.5
    with pytest.raises(DeepLabError, match="5 weights for 21 classes"):
        step_options(TrainConfig(class_weights=str(path)), tiny_model(num_classes=21), world=1)
    for bad in (0.0, 1.5):
        with pytest.raises(DeepLabError, match="--ohem-keep"):
            TrainConfig(ohem_keep=bad)


# ---------------------------------------------------------------- crop away from all-ignore windows


def patch_sample() -> tuple[np.ndarray, np.ndarray]:
    """A 20 x 30 label that is ignore except columns 0-10; the red channel is 8 · column."""
    label = np.full((20, 30), IGNORE, np.uint8)
    label[:, :11] = 1
    image = np.zeros((20, 30, 3), np.uint8)
    image[..., 0] = np.arange(30, dtype=np.uint8) * 8
    return image, label


def test_crop_retries_until_the_window_has_labelled_pixels():
    image, label = patch_sample()
    retry = TrainTransform((20, 10), (0.0, 0.0, 0.0), IGNORE)
    once = TrainTransform((20, 10), (0.0, 0.0, 0.0), IGNORE, crop_tries=1)
    missed_once = 0
    for seed in range(30):
        x, y = retry(image, label, np.random.default_rng(seed))
        left = int(x[2, 0, 0]) // 8  # the crop's first column, read off the red channel (BGR order)
        assert torch.equal(y, torch.from_numpy(label[:, left : left + 10].astype(np.int64)))
        assert (y != IGNORE).any()
        # The same seed gives the same crop.
        x2, y2 = retry(image, label, np.random.default_rng(seed))
        assert torch.equal(x, x2) and torch.equal(y, y2)
        x1, y1 = once(image, label, np.random.default_rng(seed))
        if (y1 != IGNORE).any():
            assert torch.equal(y1, y) and torch.equal(x1, x)  # a first window with labels is kept as is
        else:
            missed_once += 1
    assert missed_once > 5  # one draw misses the labelled columns about half the time


def test_train_cli_refuses_a_bad_weights_file_before_claiming_the_run_dir(tmp_path: Path, voc_fixture: Path, capsys):
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps([1.0] * 20))  # 21 classes
    run = tmp_path / "run"
    args = ["train", "--data-dir", str(voc_fixture), "--data-list", str(voc_fixture / "list_train.txt")]
    args += [
        "--model",
        "deeplab_v2_resnet_tiny",
        "--snapshot-dir",
        str(run),
        "--num-steps",
        "1",
        "--input-size",
        "33,33",
    ]
    assert (
        main(args + ["--class-weights", str(weights), "--no-progress", "--no-tensorboard", "--num-workers", "0"]) == 2
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the "training from scratch" note
    assert (
        last == f"deeplab train: error: --class-weights {weights}: 20 weights for 21 classes (one per class is needed)"
    )
    assert not run.exists()
