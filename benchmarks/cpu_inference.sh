#!/usr/bin/env bash
# CPU inference speed: 513x513 batch-1 inference, eager fp32 NCHW against the fast paths
# and onnxruntime, interleaved repeats, on ResNet-101 with random weights and realistic BN
# statistics (calibrated on the VOC fixture images). Run from the repository root.
#   benchmarks/cpu_inference.sh [extra deeplab benchmark arguments]
set -euo pipefail
PY=${PYTHON:-python}
PYTHONPATH=src "$PY" -m deeplab_resnet benchmark --size 513 --batch-sizes 1 --sections forward \
    --paths eager,fold+cl,onnxruntime --repeats 5 --threads 2 --fp64-reference \
    --json cpu_inference.json "$@"
# torch.compile (inductor) on CPU: the first run compiles for minutes; the cache makes later ones fast.
PYTHONPATH=src "$PY" -m deeplab_resnet benchmark --size 513 --batch-sizes 1 --sections forward \
    --paths eager,fold+cl+compile --repeats 5 --threads 2 --json cpu_inference_compile.json "$@"
