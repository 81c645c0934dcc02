"""Every device path checked against a CPU reference, written once for any device.

Each ``check_*`` function runs one path on ``device`` and compares it with an independent CPU
computation (float64 where rounding matters), asserting the tolerance stated beside it, and
returns the measured numbers. ``tests/test_device_checks.py`` calls them with ``"cpu"`` in the
default suite (CPU float32 against CPU float64: the comparison logic itself is exercised on every
run); ``tests/test_cuda.py`` calls the same functions with ``"cuda"`` under the ``cuda`` marker.

Run as a script (``python tests/device_checks.py ddp-step --device cuda --out r.json`` under
``torchrun``) it is the process of :func:`check_ddp_step`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from deeplab_resnet.inference.agreement import agreement  # noqa: E402
from deeplab_resnet.inference.optimize import FastInference, InferenceOptions, parse_options  # noqa: E402

# ---------------------------------------------------------------- tolerances (one place)

# float32 against float64 with TF32 off: rounding only (agreement.meets_target's float32 bar).
FP32_REL_L2 = 1e-4
# TF32 (cuDNN's default for float32 convs on Ampere and later) keeps 10 mantissa bits: each conv
# is off by ~1e-3 relative; over 101 layers of a calibrated network we expect at most ~5e-3. An
# estimate until measured: the CUDA suite records the value it measures (see benchmarks/gpu_check.py).
TF32_REL_L2 = 5e-3
# bf16 / fp16 autocast (and any path whose labels, not logits, are compared): argmax agreement.
LABEL_AGREEMENT = 0.995
# evaluate on another device: a few pixels near decision boundaries may flip at float32 rounding.
EVAL_MIOU_ABS = 1e-3
EVAL_MATRIX_MASS = 0.999
# one SGD step against float64: the loss and the update direction (cosine) and size (rel-L2).
TRAIN_FP32_LOSS_REL = 1e-5
TRAIN_FP32_UPDATE_REL_L2 = 1e-3
TRAIN_AMP_LOSS_REL = 2e-2
TRAIN_AMP_UPDATE_COSINE = 0.99


def rel_l2(reference: torch.Tensor, other: torch.Tensor) -> float:
    """``||other - reference|| / ||reference||`` in float64 on the CPU."""
    ref, out = reference.detach().double().cpu(), other.detach().double().cpu()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-300))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu().flatten(), b.detach().double().cpu().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def label_agreement(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Fraction of equal labels (two label maps of one shape)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a == b).mean())


def matrix_mass_shared(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the pixels two confusion matrices of the same images put in the same cells:
    ``sum(min(a, b)) / sum(a)`` (1.0 when equal; each flipped pixel moves one count)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    assert a.shape == b.shape and a.sum() == b.sum(), "not the same images"
    return float(np.minimum(a, b).sum() / max(int(a.sum()), 1))


def mean_iou(matrix: np.ndarray) -> float:
    """Mean IoU over the classes present (in ground truth or prediction), from the matrix alone."""
    m = np.asarray(matrix, np.float64)
    tp, union = np.diag(m), m.sum(0) + m.sum(1) - np.diag(m)
    return float((tp[union > 0] / union[union > 0]).mean())


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matmuls and convs on or off inside the block (a no-op off CUDA)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def float64_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference: a float64 copy of ``model`` on the CPU."""
    with torch.no_grad():
        return copy.deepcopy(model).cpu().double().eval()(x.cpu().double())


def fixture_images(voc: Path, count: int, offset: int = 0) -> list[Path]:
    """``count`` VOC fixture JPEGs in list order (real photographs)."""
    names = sorted((voc / "JPEGImages").glob("*.jpg"))
    return [names[(offset + i) % len(names)] for i in range(count)]


def fixture_crops(voc: Path, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``count`` fixture photos cropped to ``size`` (H, W): real content, small enough for CPU runs."""
    from PIL import Image

    h, w = size
    return [np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB"))[:h, :w]) for p in fixture_images(voc, count)]


def fast_option_specs(device: str) -> list[str]:
    """Every fast path (``parse_options`` spelling) that can run on ``device``, and ``default``."""
    common = ["eager", "fold", "cl", "fold+cl", "bf16", "fold+cl+bf16", "default"]
    if device.startswith("cuda"):
        return common + ["fp16", "fold+cl+fp16", "cudnn-bench", "pinned", "graphs", "fold+cl+bf16+graphs"]
    return common


# ---------------------------------------------------------------- inference


def check_fast_path(model: nn.Module, x: torch.Tensor, reference: torch.Tensor, device: str, spec: str) -> dict:
    """A fast path's logits against the float64 reference: rel-L2 <= FP32_REL_L2 for float32
    paths (TF32 off), argmax agreement >= LABEL_AGREEMENT for bf16 / fp16."""
    options = parse_options(spec, device)
    autotune = torch.backends.cudnn.benchmark  # FastInference sets this process-wide flag: restore it
    try:
        with tf32(False):
            out = FastInference(model, options, device).logits(x)
    finally:
        torch.backends.cudnn.benchmark = autotune
    stats = agreement(reference, out)
    if options.dtype == "float32":
        assert stats["rel_l2"] <= FP32_REL_L2, (spec, stats)
    else:
        assert stats["argmax_agreement"] >= LABEL_AGREEMENT, (spec, stats)
    return stats


def check_forward_tf32(model: nn.Module, x: torch.Tensor, reference: torch.Tensor, device: str) -> dict:
    """Plain float32 with TF32 on (what a user gets by default): rel-L2 <= TF32_REL_L2."""
    with tf32(True):
        stats = agreement(reference, FastInference(model, InferenceOptions(), device).logits(x))
    assert stats["rel_l2"] <= TF32_REL_L2, stats
    return stats


def check_graph_replay(model: nn.Module, inputs: Sequence[torch.Tensor], device: str, spec: str = "fold") -> dict:
    """CUDA graphs against the same options without graphs, input after input: each replay sees
    its own input (no stale static input) and earlier results are not overwritten."""
    options = parse_options(spec, device)
    eager = FastInference(model, options, device)
    graphs = FastInference(model, parse_options(spec + "+graphs", device), device)
    with tf32(False):
        outs = [graphs.logits(x) for x in inputs]
        refs = [eager.logits(x) for x in inputs]
    errors = [rel_l2(r, o) for r, o in zip(refs, outs)]
    assert max(errors) <= FP32_REL_L2, errors
    if len(inputs) > 1:
        assert rel_l2(refs[0], refs[1]) > 100 * FP32_REL_L2, "inputs too alike to tell replays apart"
    return {"max_rel_l2": max(errors)}


class Float64Network(nn.Module):
    """A float64 copy of a model taking the float32 batches a :class:`Segmenter` feeds it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(model).cpu().double().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.double())


def check_segmenter(model, images: Sequence[Path], device: str, *, bar: float = LABEL_AGREEMENT, **kw) -> dict:
    """``Segmenter(model, device=device, **kw)`` labels against a float64 CPU Segmenter's
    (``kw``: scales, flip, pad_size, ...): agreement >= ``bar`` on every image."""
    from deeplab_resnet.inference.segmenter import Segmenter

    seg = Segmenter(copy.deepcopy(model), device=device, **kw)  # the Segmenter moves its network
    ref = Segmenter(Float64Network(model), model.spec, device="cpu", **kw)
    agreements = [label_agreement(seg(p).labels, ref(p).labels) for p in images]
    assert min(agreements) >= bar, agreements
    return {"min_label_agreement": min(agreements)}


def run_cli(*args, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "deeplab_resnet", *map(str, args)],
        capture_output=True, text=True, env=full_env, timeout=timeout,
    )  # fmt: skip


def check_segment_cli(weights: Path, images: Sequence[Path], device: str, out: Path) -> dict:
    """``deeplab segment --device DEVICE`` label PNGs against a float64 CPU Segmenter's labels
    (the CLI's defaults: caffe weights padded to 513)."""
    from PIL import Image

    from deeplab_resnet.inference.segmenter import Segmenter
    from deeplab_resnet.weights import load_model

    result = run_cli("segment", *images, "--weights", weights, "-o", out, "--device", device)
    assert result.returncode == 0, result.stderr
    model = load_model(weights)
    ref = Segmenter(Float64Network(model), model.spec, device="cpu", pad_size="auto")
    agreements = [label_agreement(np.asarray(Image.open(out / f"{p.stem}.png")), ref(p).labels) for p in images]
    assert min(agreements) >= LABEL_AGREEMENT, agreements
    return {"min_label_agreement": min(agreements)}


def check_evaluate_cli(
    weights: Path, voc: Path, device: str, out: Path, batch_size: int = 8, limit: int | None = None
) -> dict:
    """``deeplab evaluate --device DEVICE --batch-size N`` (on the first ``limit`` val images)
    against the CPU's one image at a time: mIoU within EVAL_MIOU_ABS and >= EVAL_MATRIX_MASS of
    the matrix mass in the same cells."""
    from deeplab_resnet.data.lists import read_list
    from deeplab_resnet.evaluation.evaluate import evaluate_pairs
    from deeplab_resnet.weights import load_model

    result = run_cli(
        "evaluate", "--data-dir", voc, "--data-list", voc / "list_val.txt", "--weights", weights,
        "--device", device, "--batch-size", batch_size, "-o", out, "--quiet", "--crf-workers", 0,
        *(["--limit", limit] if limit else []),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    matrix = np.asarray(json.loads((out / "report.json").read_text())["confusion_matrix"])
    pairs = read_list(voc, voc / "list_val.txt")[:limit]
    reference = evaluate_pairs(load_model(weights), pairs, device="cpu", pad_size="auto").matrix
    shared, miou_diff = matrix_mass_shared(reference, matrix), abs(mean_iou(reference) - mean_iou(matrix))
    assert shared >= EVAL_MATRIX_MASS and miou_diff <= EVAL_MIOU_ABS, (shared, miou_diff)
    return {"matrix_mass_shared": shared, "miou_abs_diff": miou_diff}


# ---------------------------------------------------------------- training


def one_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool) -> tuple[float, torch.Tensor]:
    """One ``train_step`` (SGD, momentum) of ``model`` where it is; returns the loss and the update
    of all parameters, flattened, on the CPU in float64."""
    from deeplab_resnet.training.config import TrainConfig
    from deeplab_resnet.training.recipe import build_optimizer, train_step

    before = torch.cat([p.detach().double().cpu().flatten() for p in model.parameters()])
    optimizer = build_optimizer(model, TrainConfig(learning_rate=1e-2, weight_decay=5e-4))
    result = train_step(
        model.train(), optimizer, iter([(x, y)]), lr=1e-2, num_classes=model.num_classes, ignore_label=255,
        amp_dtype=torch.bfloat16 if amp else None,
    )  # fmt: skip
    after = torch.cat([p.detach().double().cpu().flatten() for p in model.parameters()])
    return result.loss, after - before


def check_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, amp: bool) -> dict:
    """One training step on ``device`` (float32 with TF32 off, or bf16 autocast) against the
    same step in float64 on the CPU: loss and parameter update within the tolerances above."""
    ref_loss, ref_update = one_step(copy.deepcopy(model).double(), x.double(), y, amp=False)
    with tf32(False):
        loss, update = one_step(copy.deepcopy(model).to(device), x, y, amp=amp)
    stats = {
        "loss_rel": abs(loss - ref_loss) / abs(ref_loss),
        "update_rel_l2": rel_l2(ref_update, update),
        "update_cosine": cosine(ref_update, update),
    }
    assert ref_update.abs().max() > 0, "the step changed nothing"
    if amp:
        assert stats["loss_rel"] <= TRAIN_AMP_LOSS_REL and stats["update_cosine"] >= TRAIN_AMP_UPDATE_COSINE, stats
    else:
        assert stats["loss_rel"] <= TRAIN_FP32_LOSS_REL and stats["update_rel_l2"] <= TRAIN_FP32_UPDATE_REL_L2, stats
    return stats


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic algorithms inside the block. ``warn_only``: an op without a deterministic
    CUDA kernel warns instead of stopping the run, and the bit-exact comparison then says whether
    it mattered. cuBLAS needs CUBLAS_WORKSPACE_CONFIG before its first use (set by the caller)."""
    old = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    old_bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])
        torch.backends.cudnn.benchmark = old_bench


def check_resume_bit_exact(voc: Path, run_dir: Path, device: str, amp: bool = False) -> dict:
    """Four steps in one go against three, a crash, and the fourth resumed from the step-3
    checkpoint: every tensor of the final weights identical."""
    from deeplab_resnet.training import checkpoint as ckpt
    from deeplab_resnet.training.config import TrainConfig
    from deeplab_resnet.training.loop import train
    from deeplab_resnet.weights import read_weights

    cfg = TrainConfig(
        data_dir=str(voc), data_list=str(voc / "list_train.txt"), model="deeplab_v2_resnet_tiny",
        input_size="33,33", batch_size=2, num_steps=4, checkpoint_every=1, save_pred_every=1000,
        snapshot_dir=str(run_dir), num_workers=0, progress=False, tensorboard=False, check_data=False,
        random_scale=True, random_mirror=True, learning_rate=1e-3, device=device, amp=amp,
    )  # fmt: skip
    with deterministic(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
        uninterrupted = read_weights(run_dir / "model.safetensors")[0]
        for step, path in ckpt.list_checkpoints(run_dir):
            if step > 3:
                path.unlink()
        (run_dir / "model.safetensors").unlink()
        train(cfg, resume="latest")
        resumed = read_weights(run_dir / "model.safetensors")[0]
    # ops without a deterministic kernel (they warn): named in the failure, as the likely cause
    nondeterministic = sorted({str(w.message)[:120] for w in caught if "deterministic" in str(w.message)})
    different = [k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])]
    assert uninterrupted.keys() == resumed.keys() and not different, (different[:5], nondeterministic)
    return {"tensors": len(resumed), "nondeterministic_ops": len(nondeterministic)}


# ---------------------------------------------------------------- DDP (torchrun, world size 1)


def ddp_step(device: str, out: Path) -> None:
    """Inside ``torchrun``: one training step of the tiny model wrapped in DDP (NCCL on CUDA,
    gloo on CPU) and the same step without DDP; writes both updates' difference to ``out``."""
    import torch.distributed as dist

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import tiny_model

    local = int(os.environ["LOCAL_RANK"])
    dev = f"cuda:{local}" if device.startswith("cuda") else "cpu"
    dist.init_process_group("nccl" if dev.startswith("cuda") else "gloo")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 41, 41, generator=g) * 50, torch.randint(0, 21, (2, 41, 41), generator=g)
    with tf32(False):
        plain_loss, plain = one_step(tiny_model().to(dev), x, y, amp=False)
        model = tiny_model().to(dev)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local] if dev != "cpu" else None)
        ddp_loss, update = one_step_ddp(ddp, model, x, y)
    stats = {"world": dist.get_world_size(), "backend": dist.get_backend(), "loss_diff": abs(ddp_loss - plain_loss),
             "update_rel_l2": rel_l2(plain, update), "moved": float(plain.abs().max())}  # fmt: skip
    dist.destroy_process_group()
    out.write_text(json.dumps(stats))


def one_step_ddp(ddp: nn.Module, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    from deeplab_resnet.training.config import TrainConfig
    from deeplab_resnet.training.recipe import build_optimizer, train_step

    before = torch.cat([p.detach().double().cpu().flatten() for p in model.parameters()])
    optimizer = build_optimizer(model, TrainConfig(learning_rate=1e-2, weight_decay=5e-4))
    result = train_step(ddp.train(), optimizer, iter([(x, y)]), lr=1e-2, num_classes=21, ignore_label=255)
    after = torch.cat([p.detach().double().cpu().flatten() for p in model.parameters()])
    return result.loss, after - before


def check_ddp_step(device: str, tmp: Path) -> dict:
    """``torchrun --nproc_per_node 1`` running :func:`ddp_step`: DDP (NCCL on CUDA) at world size 1
    gives the plain step's update to FP32_REL_L2."""
    out = tmp / "ddp.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
         str(Path(__file__)), "ddp-step", "--device", device, "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads(out.read_text())
    assert stats["moved"] > 0 and stats["update_rel_l2"] <= FP32_REL_L2 and stats["loss_diff"] <= 1e-5, stats
    return stats


# ---------------------------------------------------------------- dense CRF


def crf_inputs(voc: Path, count: int, size: tuple[int, int], classes: int = 21) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` fixture photos cropped to ``size`` (H, W) and noisy probabilities built from their
    ground truth (the kind of unary a network gives: right mostly, unsure near edges)."""
    from PIL import Image

    images, probs = [], []
    g = torch.Generator().manual_seed(0)
    h, w = size
    for path in fixture_images(voc, count):
        rgb = np.asarray(Image.open(path).convert("RGB"))[:h, :w]
        gt = np.asarray(Image.open(voc / "SegmentationClassAug" / f"{path.stem}.png"))[:h, :w].astype(np.int64)
        gt[gt >= classes] = 0
        logits = torch.nn.functional.one_hot(torch.from_numpy(gt), classes).permute(2, 0, 1).float() * 2.0
        logits += torch.randn(logits.shape, generator=g) * 1.5
        images.append(torch.from_numpy(np.ascontiguousarray(rgb)))
        probs.append(torch.softmax(logits, 0))
    return torch.stack(images), torch.stack(probs)


def check_crf(voc: Path, device: str, count: int = 2, size: tuple[int, int] = (200, 240)) -> dict:
    """The torch-ops CRF on ``device`` (a batch) against the C kernel on the CPU, image by image
    (torch ops on the CPU where no C compiler is found): label agreement >= LABEL_AGREEMENT; the
    largest probability difference is reported."""
    from deeplab_resnet.crf import DEFAULT_PRESET, PRESETS, c_meanfield, kernel_c, torch_meanfield

    params = PRESETS[DEFAULT_PRESET]
    images, probs = crf_inputs(voc, count, size)
    q = torch_meanfield.refine_batch(images.to(device), probs.to(device), params).cpu()
    if kernel_c.available():
        refs = [torch.from_numpy(c_meanfield.refine(i.numpy(), p.numpy(), params)) for i, p in zip(images, probs)]
    else:
        refs = [torch_meanfield.refine_batch(i[None], p[None], params)[0] for i, p in zip(images, probs)]
    ref = torch.stack(refs)
    agreements = [label_agreement(a.argmax(0), b.argmax(0)) for a, b in zip(q, ref)]
    assert min(agreements) >= LABEL_AGREEMENT, agreements
    assert label_agreement(q.argmax(1), probs.argmax(1)) < 0.999, "the CRF changed nothing"
    return {
        "reference": "C kernel" if kernel_c.available() else "torch ops on the CPU",
        "min_label_agreement": min(agreements),
        "max_abs_dq": float((q - ref).abs().max()),
    }


# ---------------------------------------------------------------- memory


# What a first command may leave behind for good: per-stream cuBLAS workspaces, the CRF's cached
# position lattices (crf/torch_meanfield.py keeps up to 4 image sizes). Leaks grow with every run.
ONE_TIME_CACHE_MB = 256


def check_memory_released(device: str, work: Callable[[], object]) -> dict:
    """``work`` twice: the second run leaves the CUDA allocator holding no more than the first did
    (nothing grows from command to command), and the first leaves at most ONE_TIME_CACHE_MB."""

    def allocated() -> int:
        gc.collect()
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device)

    baseline = allocated()
    work()
    first = allocated()
    work()
    second = allocated()
    stats = {"baseline_mb": baseline / 2**20, "after_first_mb": first / 2**20, "after_second_mb": second / 2**20}
    assert second <= first and first - baseline <= ONE_TIME_CACHE_MB * 2**20, stats
    return stats


def main() -> int:
    p = argparse.ArgumentParser(description="the process of check_ddp_step (run under torchrun)")
    p.add_argument("what", choices=["ddp-step"])
    p.add_argument("--device", required=True)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    ddp_step(args.device, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
