"""The training loop: recipe pieces against independent computations, and whole tiny runs."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model

from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.training import checkpoint as ckpt
from deeplab_resnet.training import recipe
from deeplab_resnet.training.config import TrainConfig
from deeplab_resnet.training.loop import build_model, train
from deeplab_resnet.training.monitor import summary_grid
from deeplab_resnet.training.recipe import build_optimizer, param_groups, poly_lr, seg_loss
from deeplab_resnet.weights import read_weights


def tiny_cfg(tmp_path: Path, data: Path, **kw) -> TrainConfig:
    base = dict(
        data_dir=str(data), data_list=str(data / "list_train.txt"), model="deeplab_v2_resnet_tiny",
        input_size="33,33", batch_size=2, num_steps=3, save_pred_every=1000, snapshot_dir=str(tmp_path / "run"),
        num_workers=0, progress=False, tensorboard=False, check_data=False,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def final_state(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    return read_weights(Path(cfg.snapshot_dir) / "model.safetensors")[0]


# ---------------------------------------------------------------- recipe pieces


def test_poly_lr_hand_computed():
    assert poly_lr(2.5e-4, 0, 20001, 0.9) == 2.5e-4
    assert poly_lr(1.0, 50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_lr(1.0, 99, 100, 1.0) == pytest.approx(0.01)


def reference_loss(logits: np.ndarray, labels: np.ndarray, num_classes: int, ignore: int) -> float:
    """Mean softmax cross-entropy over valid pixels, labels downsampled by TF nearest (exact arithmetic)."""
    n, c, h, w = logits.shape
    H, W = labels.shape[1:]
    rows = [min(int(Fraction(i * H, h)), H - 1) for i in range(h)]
    cols = [min(int(Fraction(j * W, w)), W - 1) for j in range(w)]
    total, count = 0.0, 0
    for b in range(n):
        for i in range(h):
            for j in range(w):
                y = int(labels[b, rows[i], cols[j]])
                if y == ignore or y >= num_classes:
                    continue
                z = logits[b, :, i, j].astype(np.float64)
                total += np.log(np.exp(z - z.max()).sum()) + z.max() - z[y]
                count += 1
    return total / count


def test_loss_matches_an_independent_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 6, generator=g) * 3
    labels = torch.randint(0, 5, (2, 31, 45), generator=g)
    labels[0, :10] = 255
    labels[1, 5:20, 7:30] = 7  # >= num_classes: ignored too
    loss, parts = seg_loss([logits], labels, num_classes=5, ignore_label=255)
    expected = reference_loss(logits.numpy(), labels.numpy(), 5, 255)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Multi-scale: the sum of one mean loss per output, each on its own grid.
    small = torch.randn(2, 5, 3, 4, generator=g)
    total, parts = seg_loss([logits, small, logits], labels, 5, 255)
    expected_small = reference_loss(small.numpy(), labels.numpy(), 5, 255)
    assert float(total) == pytest.approx(2 * expected + expected_small, rel=1e-5)
    assert [float(p) for p in parts] == pytest.approx([expected, expected_small, expected], rel=1e-5)


def reference_bilinear(x: np.ndarray, size: tuple[int, int], convention: str) -> np.ndarray:
    """Pixel by pixel: Caffe Interp (corner-aligned) or TF1 resize_bilinear (``d * in / out``)."""
    n, c, h, w = x.shape
    H, W = size

    def source(d: int, n_in: int, n_out: int) -> tuple[int, int, float]:
        pos = Fraction(d * n_in, n_out) if convention == "tf" else Fraction(d * (n_in - 1), n_out - 1)
        lo = min(int(pos), n_in - 1)
        return lo, min(lo + 1, n_in - 1), float(pos - lo)

    out = np.zeros((n, c, H, W))
    for i in range(H):
        y0, y1, fy = source(i, h, H)
        for j in range(W):
            x0, x1, fx = source(j, w, W)
            top = (1 - fx) * x[:, :, y0, x0] + fx * x[:, :, y0, x1]
            bottom = (1 - fx) * x[:, :, y1, x0] + fx * x[:, :, y1, x1]
            out[:, :, i, j] = (1 - fy) * top + fy * bottom
    return out


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_image_resolution_loss_matches_an_independent_computation(convention):
    from deeplab_resnet.resize import resize_bilinear

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 4, 6, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 5, (2, 25, 41), generator=g)
    labels[0, :9] = 255
    labels[1, 3:20, 7:30] = 6  # >= num_classes: ignored too
    up = lambda t, size: resize_bilinear(t, size, convention)  # noqa: E731
    loss, parts = seg_loss([logits], labels, num_classes=5, ignore_label=255, upsample=up)
    big = reference_bilinear(logits.numpy(), (25, 41), convention)
    expected = reference_loss(big, labels.numpy(), 5, 255)  # same size: every label pixel counts once
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Not the stride-8 loss: the option changes what is optimised.
    assert float(seg_loss([logits], labels, 5, 255)[0]) != pytest.approx(expected, rel=1e-3)
    # Multi-scale: each output is upsampled to the labels' size, one mean loss each.
    small = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    total, parts = seg_loss([logits, small], labels, 5, 255, upsample=up)
    expected_small = reference_loss(reference_bilinear(small.numpy(), (25, 41), convention), labels.numpy(), 5, 255)
    assert [float(p) for p in parts] == pytest.approx([expected, expected_small], rel=1e-5)
    assert float(total) == pytest.approx(expected + expected_small, rel=1e-5)


def test_loss_resolution_is_checked(tmp_path):
    with pytest.raises(DeepLabError, match="--loss-resolution"):
        train(tiny_cfg(tmp_path, tmp_path, loss_resolution="pixels"))


def test_param_groups_multipliers_and_decay():
    model = tiny_model()
    cfg = TrainConfig()
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert set(groups) == {"backbone_convs", "classifier_weights", "classifier_biases"}  # BN frozen: not trained
    assert (groups["classifier_weights"]["lr_mult"], groups["classifier_biases"]["lr_mult"]) == (10.0, 20.0)
    assert groups["backbone_convs"]["lr_mult"] == 1.0
    decayed = [p for g in groups.values() if g["weight_decay"] > 0 for p in g["params"]]
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {id(p) for p in decayed} == {id(p) for p in convs}  # every conv weight and nothing else
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups.values() for p in g["params"]} == trainable
    model.set_bn_frozen(False)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert groups["backbone_bn"]["weight_decay"] == 0.0 and len(groups["backbone_bn"]["params"]) > 0


def test_sgd_weight_decay_equals_half_l2_added_to_the_loss():
    """torch's SGD weight_decay on the conv weights == the original's wd·½‖w‖² term in the loss."""
    wd = 0.05
    cfg = TrainConfig(weight_decay=wd, learning_rate=0.01)
    a, b = tiny_model(num_classes=4), tiny_model(num_classes=4)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 3, 25, 25, generator=g), torch.randint(0, 4, (2, 25, 25), generator=g)
    opt_a = build_optimizer(a, cfg)
    groups_b = [{**grp, "weight_decay": 0.0} for grp in param_groups(b, cfg)]
    decayed_b = [p for grp in param_groups(b, cfg) if grp["weight_decay"] > 0 for p in grp["params"]]
    opt_b = torch.optim.SGD(groups_b, lr=cfg.learning_rate, momentum=0.9)
    for opt in (opt_a, opt_b):
        for grp in opt.param_groups:
            grp["lr"] = cfg.learning_rate * grp["lr_mult"]
    for _ in range(2):  # two steps, so momentum carries the decay term too
        opt_a.zero_grad()
        seg_loss([a(x)], y, 4, 255)[0].backward()
        opt_a.step()
        opt_b.zero_grad()
        l2 = sum((p**2).sum() for p in decayed_b) * 0.5 * wd
        (seg_loss([b(x)], y, 4, 255)[0] + l2).backward()
        opt_b.step()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, rtol=1e-5, atol=1e-7), name


# ---------------------------------------------------------------- whole tiny runs


def test_grad_accumulation_equals_one_big_batch(tmp_path, tiny_weights):
    # Every pixel valid and no padding: each micro-batch has the same valid count, so Caffe's
    # iter_size (the mean of per-micro-batch mean losses) equals one batch of K x batch-size.
    data = make_data(tmp_path / "data", n=8, num_classes=21, size=(40, 44))
    common = dict(
        restore_from=str(tiny_weights), num_steps=2, random_mirror=True, data_list=str(data / "list.txt"),
    )  # fmt: skip
    big = tiny_cfg(tmp_path / "a", data, batch_size=4, grad_update_every=1, **common)
    accum = tiny_cfg(tmp_path / "b", data, batch_size=2, grad_update_every=2, **common)
    train(big)
    train(accum)
    a, b = final_state(big), final_state(accum)
    initial = read_weights(tiny_weights)[0]
    assert not torch.equal(a["classifier.fc1_voc12_c0.weight"], initial["classifier.fc1_voc12_c0.weight"])
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-8), key


def test_resume_from_a_checkpoint_is_bit_exact(tmp_path, voc_fixture):
    # From scratch: BN is trained, so running statistics and momentum buffers must be restored too.
    kw = dict(num_steps=4, checkpoint_every=2, random_scale=True, random_mirror=True, learning_rate=1e-3)
    run = tiny_cfg(tmp_path / "run", voc_fixture, **kw)
    train(run)  # uninterrupted
    uninterrupted = final_state(run)
    # Drop everything after step 3 and continue from there, as after a crash.
    for step, path in ckpt.list_checkpoints(run.snapshot_dir):
        if step > 3:
            path.unlink()
    (Path(run.snapshot_dir) / "model.safetensors").unlink()
    assert ckpt.latest_checkpoint(run.snapshot_dir).name == "ckpt-00000003.pt"
    train(run, resume="latest")
    resumed = final_state(run)
    assert uninterrupted.keys() == resumed.keys()
    for key in resumed:
        assert torch.equal(uninterrupted[key], resumed[key]), key


def test_run_dir_has_config_checkpoint_preview_and_log(tmp_path, voc_fixture):
    cfg = tiny_cfg(tmp_path, voc_fixture, num_steps=2, save_pred_every=1, save_num_images=2)
    train(cfg)
    run = Path(cfg.snapshot_dir)
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert state["config"] == cfg.to_dict() and state["step"] == 2
    from PIL import Image

    grid = np.asarray(Image.open(run / "previews" / "step_00000001.png"))
    assert grid.shape == (2 * 33, 3 * 33, 3)  # two rows of image | ground truth | prediction
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1] and all(np.isfinite(r["loss"]) for r in records)


def test_amp_and_channels_last_follow_fp32_and_tensorboard_is_optional(tmp_path, voc_fixture, monkeypatch, capsys):
    import sys

    plain = tiny_cfg(tmp_path / "fp32", voc_fixture, num_steps=1, log_every=1)
    train(plain)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    fast = tiny_cfg(tmp_path / "bf16", voc_fixture, num_steps=1, log_every=1, amp=True, channels_last=True)
    fast.tensorboard = True
    train(fast)
    err = capsys.readouterr().err
    assert err.count("TensorBoard is not installed") == 1
    loss = [json.loads((Path(c.snapshot_dir) / "metrics.jsonl").read_text())["loss"] for c in (plain, fast)]
    assert loss[1] == pytest.approx(loss[0], rel=0.02) and loss[1] != loss[0]  # bf16: close, not identical


def test_summary_grid_panels(voc_fixture):
    from deeplab_resnet.images import colorize
    from deeplab_resnet.preprocess import from_input

    model = tiny_model()
    x = torch.randn(3, 3, 17, 17) * 50
    labels = torch.randint(0, 21, (3, 17, 17))
    logits = torch.randn(3, 21, 3, 3)
    grid = summary_grid(x, labels, logits, model, 2)
    assert grid.shape == (34, 51, 3)
    assert (grid[17:, :17] == from_input(x[1], model.mean_bgr)).all()
    assert (grid[:17, 17:34] == colorize(labels[0].numpy().astype(np.uint8), model.dataset)).all()
    pred = model.upsample(logits[:1], (17, 17)).argmax(1)[0].numpy().astype(np.uint8)
    assert (grid[:17, 34:] == colorize(pred, model.dataset)).all()


def test_fine_tune_trains_only_the_classifier(tmp_path, voc_fixture, tiny_weights):
    cfg = tiny_cfg(tmp_path, voc_fixture, restore_from=str(tiny_weights), fine_tune=True, num_steps=2)
    train(cfg)
    before, after = read_weights(tiny_weights)[0], final_state(cfg)
    for key in before:
        same = torch.equal(before[key], after[key])
        assert same != key.startswith("classifier."), key


def test_not_restore_last_starts_a_new_class_count(tmp_path, voc_fixture, tiny_weights):
    cfg = tiny_cfg(tmp_path, voc_fixture, restore_from=str(tiny_weights), num_classes=5)
    with pytest.raises(DeepLabError, match="--not-restore-last"):
        build_model(cfg, print)
    cfg.not_restore_last = True
    model, info = build_model(cfg, print)
    assert model.num_classes == 5 and "new classifier" in info["how"]
    weights = read_weights(tiny_weights)[0]
    assert torch.equal(model.state_dict()["backbone.conv1.weight"], weights["backbone.conv1.weight"])


def test_from_scratch_trains_bn_and_says_so(tmp_path, voc_fixture):
    messages = []
    model, info = build_model(tiny_cfg(tmp_path, voc_fixture), messages.append)
    assert info["how"] == "from scratch"
    assert "batch norm is trained" in messages[0]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.weight.requires_grad and not m.frozen for m in bns)
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in bns)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, voc_fixture, monkeypatch):
    calls = []
    real = recipe.seg_loss

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss, parts = real(*args, **kwargs)
        return (loss * float("nan"), parts) if len(calls) > 2 else (loss, parts)

    monkeypatch.setattr(recipe, "seg_loss", poisoned)
    cfg = tiny_cfg(tmp_path, voc_fixture, num_steps=5, checkpoint_every=1)
    with pytest.raises(DeepLabError, match=r"loss became nan at step 2.*ckpt-00000002\.pt"):
        train(cfg)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(cfg.snapshot_dir))
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (Path(cfg.snapshot_dir) / "model.safetensors").exists()


# ---------------------------------------------------------------- configuration and CLI


def parse(argv):
    from deeplab_resnet.cli import build_parser
    from deeplab_resnet.commands.train import resolve_config

    return resolve_config(build_parser().parse_args(["train", *argv]))


def test_cli_defaults_are_the_originals():
    cfg = parse(["--data-dir", "d", "--data-list", "l"])
    assert cfg == TrainConfig(data_dir="d", data_list="l")
    assert (cfg.batch_size, cfg.crop_size, cfg.learning_rate, cfg.num_steps, cfg.power) == (
        10, (321, 321), 2.5e-4, 20001, 0.9,
    )  # fmt: skip
    assert (cfg.momentum, cfg.weight_decay, cfg.random_seed, cfg.save_pred_every) == (0.9, 5e-4, 1234, 1000)
    assert (cfg.save_num_images, cfg.snapshot_dir, cfg.random_mirror, cfg.random_scale) == (
        2,
        "./snapshots/",
        False,
        False,
    )


def test_config_file_and_explicit_flags(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"batch-size": 7, "num_steps": 9, "random-mirror": True, "data-dir": "d", "data-list": "l"})
    )
    cfg = parse(["--config", str(path), "--batch-size", "3"])
    assert (cfg.batch_size, cfg.num_steps, cfg.random_mirror, cfg.data_dir) == (3, 9, True, "d")
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("learning_rate: 0.001\ndata_dir: d\ndata_list: l\n")
    assert parse(["--config", str(yaml_path)]).learning_rate == 0.001
    path.write_text(json.dumps({"batch-sise": 7}))
    with pytest.raises(DeepLabError, match="unknown setting 'batch-sise'"):
        parse(["--config", str(path)])


# ---------------------------------------------------------------- bad lists, before training


def make_data(root: Path, n: int = 3, num_classes: int = 3, size: tuple[int, int] = (16, 20)) -> Path:
    """A small list of random images with palette labels in [0, num_classes)."""
    from PIL import Image

    from deeplab_resnet.dataset_info import voc_palette

    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        lab = Image.fromarray(rng.integers(0, num_classes, size).astype(np.uint8), mode="P")
        lab.putpalette([v for rgb in voc_palette(256) for v in rgb])  # distinct colours: PIL keeps indices
        lab.save(root / "lab" / f"{i}.png")
        lines.append(f"/img/{i}.png /lab/{i}.png")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def run_cli(root: Path, tmp_path: Path, *extra: str) -> int:
    from deeplab_resnet.cli import main

    return main([
        "train", "--data-dir", str(root), "--data-list", str(root / "list.txt"), "--model", "deeplab_v2_resnet_tiny",
        "--num-classes", "3", "--input-size", "17,17", "--batch-size", "1", "--num-steps", "1", "--num-workers", "0",
        "--snapshot-dir", str(tmp_path / "run"), "--no-progress", "--no-tensorboard", *extra,
    ])  # fmt: skip


def test_bad_lists_fail_before_training_naming_the_file(tmp_path, capsys):
    from PIL import Image

    root = make_data(tmp_path / "missing")
    (root / "img" / "1.png").unlink()
    assert run_cli(root, tmp_path) == 2
    err = capsys.readouterr().err
    assert "file not found" in err and "img/1.png" in err and "Traceback" not in err

    root = make_data(tmp_path / "size")
    Image.new("P", (21, 16)).save(root / "lab" / "2.png")
    assert run_cli(root, tmp_path) == 2
    assert "lab/2.png: size 21x16 differs from its image (20x16)" in capsys.readouterr().err

    root = make_data(tmp_path / "rgb")
    Image.new("RGB", (20, 16), (128, 0, 0)).save(root / "lab" / "0.png")
    assert run_cli(root, tmp_path) == 2
    assert "lab/0.png: label is an RGB colour image" in capsys.readouterr().err
    assert not (tmp_path / "run" / "ckpt-00000001.pt").exists()  # nothing was trained


def test_out_of_range_labels_warn_with_counts_or_fail_when_strict(tmp_path, capsys):
    from PIL import Image

    root = make_data(tmp_path / "range")
    lab = np.zeros((16, 20), dtype=np.uint8)
    lab[:2, :3] = 9  # 6 pixels of a class that does not exist
    lab[5, 5] = 255  # the ignore label: fine
    Image.fromarray(lab, mode="L").save(root / "lab" / "1.png")  # greyscale labels are indices too
    assert run_cli(root, tmp_path, "--strict-labels") == 2
    err = capsys.readouterr().err
    assert "lab/1.png: 6 px with values [9]" in err and "--strict-labels" in err
    assert run_cli(root, tmp_path) == 0
    err = capsys.readouterr().err
    assert "warning: 1 label file(s) have 6 pixel(s) outside [0, 3)" in err and "lab/1.png" in err
