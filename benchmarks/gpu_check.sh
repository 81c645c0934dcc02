#!/usr/bin/env bash
# The device run: python3 benchmarks/gpu_check.py with the output folder the device tool gives
# ($OUT), run from the repository root; extra arguments go to gpu_check.py.
# Prepare the carried payload first with benchmarks/gpu_payload.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
exec python3 benchmarks/gpu_check.py --out "${OUT:?set OUT to the output folder}" "$@"
