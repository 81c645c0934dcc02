"""Why int8 misses the agreement bar on the benchmark model: the engine, or the model?

On the realistic ResNet-101 of ``benchmarks/cpu_engines.py`` (random weights, BN calibrated on real
images), int8 calibrated on --calibration-list images and scored on --score-list images:

1. int8 kernels against the same QDQ graph run unfused in float (quantize, dequantize, float conv):
   if they agree, the error is the int8 grid itself, not the kernels (AVX2's u8s8 saturation).
2. the error of the int8 model at the output of residual blocks along the network (one image).
3. the model's own fragility (``bench.sensitivity``): how much 1% noise added to the input or a
   block's output grows by the logits, the top-2 logit margins, and the argmax agreement left by
   logit noise of a given relative L2 (which rel-L2 the 99.5% bar allows).

    PYTHONPATH=src python benchmarks/int8_diagnosis.py --score-images 4 --json int8_diagnosis.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from deeplab_resnet.bench import engines as eng
from deeplab_resnet.bench.realistic import add_benchmark_model_arguments, benchmark_model, calibration_and_scored
from deeplab_resnet.bench.sensitivity import noise_agreement, perturbation_gain, top2_margins
from deeplab_resnet.bench.timing import report_main
from deeplab_resnet.inference.agreement import agreement, image_part
from deeplab_resnet.inference.export import export_onnx
from deeplab_resnet.inference.quantize import network_inputs, quantize_model
from deeplab_resnet.inference.runtime import OnnxRuntimeBackend, make_backend

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voc_fixture"
NOISE_LEVELS = (0.001, 0.003, 0.01, 0.03, 0.1)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_benchmark_model_arguments(ap, data_dir=DATA, score_images=4)
    ap.add_argument(
        "--cache-dir", type=Path, default=None, help="keep the int8 model here (default: a temporary folder)"
    )
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def residual_blocks(model, at_most: int = 10) -> list[str]:
    """About ``at_most`` residual blocks evenly along the backbone, the last one included."""
    names = [n for n, _ in model.backbone.named_children() if n.startswith("res")]
    step = max(1, -(-len(names) // at_most))
    return sorted(set(names[step - 1 :: step]) | {names[-1]}, key=names.index)


def block_errors(fp32_path: Path, int8_path: Path, x: np.ndarray, work: Path, blocks: list[str]) -> dict[str, float]:
    """Relative L2 error of the int8 model's residual-block outputs (and logits) against float32's."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )  # fmt: skip

    class One(CalibrationDataReader):
        def __init__(self, name: str):
            self.items = iter([{name: x}])

        def get_next(self):
            return next(self.items, None)

    import onnx

    name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    activations = {}
    for key, path in (("float", fp32_path), ("qdq", int8_path)):
        augmented = work / f"{key}_all_outputs.onnx"
        modify_model_output_intermediate_tensors(str(path), str(augmented))
        activations[key] = collect_activations(str(augmented), One(name))
    errors = compute_activation_error(create_activation_matching(activations["qdq"], activations["float"]))
    tensors = {b: f"/backbone/{b}/Relu_2_output_0" for b in blocks} | {"logits": "logits"}
    return {  # in network order; ORT reports 20 log10(|x| / |x - y|)
        name: 10 ** (-errors[tensor]["xmodel_err"] / 20)
        for name, tensor in tensors.items() if "xmodel_err" in errors.get(tensor, {})
    }  # fmt: skip


def fragility(model, x: torch.Tensor) -> dict:
    """Perturbation gains (input and block outputs), margins and the agreement left by logit noise."""
    with torch.inference_mode():
        logits = model(x)
    gains = {"input": perturbation_gain(model, x, rel=0.01)}
    for block in [b for b in ("res2c", "res3b3", "res4b11", "res5a") if hasattr(model.backbone, b)]:
        gains[block] = perturbation_gain(model, x, rel=0.01, at=getattr(model.backbone, block))
    margins = top2_margins(logits).flatten().numpy()
    return {
        "gain_of_1pct_noise": gains,
        "margin_quantiles": {q: float(np.quantile(margins, q)) for q in (0.05, 0.25, 0.5)},
        "agreement_under_logit_noise": {rel: noise_agreement(logits, rel) for rel in NOISE_LEVELS},
    }


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    before = eng.machine_lines()
    print("\n".join(before), flush=True)
    train, scored = calibration_and_scored(args)
    model = benchmark_model(args, train)
    with tempfile.TemporaryDirectory(prefix="deeplab_int8_diag_") as tmp:
        cache = args.cache_dir or Path(tmp)
        int8_path = quantize_model(model, train, images=args.calibration_images, cache_dir=cache)
        kernels = make_backend("onnxruntime-int8", model, onnx_path=int8_path, threads=args.threads)
        # the QDQ graph with graph optimisations off: quantize/dequantize pairs around float convs
        unfused = OnnxRuntimeBackend(int8_path, threads=args.threads, optimize=False)
        scored_inputs = network_inputs(model, scored)
        inputs = [x for x, _ in scored_inputs]
        per_image = []
        for path, (x, size) in zip(scored, scored_inputs):
            with torch.inference_mode():
                ref = model(torch.from_numpy(x))
            y_kernels = kernels(torch.from_numpy(x))
            y_unfused = unfused(torch.from_numpy(x))
            # rel-L2 over the whole padded input (as onnxruntime's debugging tool measures the blocks);
            # label agreement over the image's own pixels, as deeplab quantize --check counts it
            row = {
                "image": Path(path).name,
                "int8": agreement(ref, y_kernels),
                "unfused_qdq": agreement(ref, y_unfused),
                "kernels_vs_unfused": agreement(y_unfused, y_kernels),
            }
            for key, y in (("int8", y_kernels), ("unfused_qdq", y_unfused)):
                image = agreement(*(image_part(t, tuple(x.shape[-2:]), size) for t in (ref, y)))
                row[key]["argmax_agreement"] = image["argmax_agreement"]
            per_image.append(row)
            print(
                f"{row['image']}: int8 agreement {row['int8']['argmax_agreement']:.2%} rel-L2 "
                f"{row['int8']['rel_l2']:.3f}; unfused QDQ {row['unfused_qdq']['argmax_agreement']:.2%}; "
                f"kernels vs unfused rel-L2 {row['kernels_vs_unfused']['rel_l2']:.3f}",
                flush=True,
            )
        fp32_path = export_onnx(model, Path(tmp) / "folded.onnx", fold_bn=True)  # the graph that was quantized
        blocks = block_errors(fp32_path, int8_path, inputs[0], Path(tmp), residual_blocks(model))
        print("int8 error along the network (rel-L2 vs float32, first image): "
              + ", ".join(f"{k} {v:.3f}" for k, v in blocks.items()), flush=True)  # fmt: skip
    fragile = fragility(model, torch.from_numpy(inputs[0]))
    gains = fragile["gain_of_1pct_noise"]
    print("1% noise grows by the logits to: " + ", ".join(f"{k} {v:.1f}x" for k, v in gains.items()))
    print("top-2 margin / logit std, quantiles 5/25/50%: "
          + " / ".join(f"{v:.3f}" for v in fragile["margin_quantiles"].values()))  # fmt: skip
    print("argmax agreement left by logit noise of rel-L2 "
          + ", ".join(f"{k:g}: {v:.2%}" for k, v in fragile["agreement_under_logit_noise"].items()))  # fmt: skip
    after = eng.machine_lines()[-1]
    print(f"after: {after}")
    return {
        "machine": {"cpu": before[0], "load_before": before[1], "load_after": after},
        "args": {k: str(v) for k, v in vars(args).items()},
        "per_image": per_image, "block_errors": blocks, "fragility": fragile,
    }  # fmt: skip


def main(argv=None) -> int:
    return report_main(parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
