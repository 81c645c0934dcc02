#!/usr/bin/env bash
# Fill what the GPU check carries to a device machine (which reaches no package registry):
#   .whl/       wheels of the Python packages its image lacks (Python 3.12, x86-64 manylinux);
#   _gpu_data/  the VOC fixture and CamVid (JPEGs, annotations, lists) from ../shared/data.
# Both folders are git-ignored; the device call names them in `carry`. Run from anywhere:
#   bash benchmarks/gpu_payload.sh            # then: python3 benchmarks/gpu_check.py --out $OUT
# The GPU image already has torch, triton, numpy, pillow, safetensors, scipy, pyyaml, pytest,
# onnxruntime and torchvision (/work/.library/device/KINDS.md); only pydensecrf2 (the optional
# [crf] extra, for comparisons with the reference CRF) is tried. Add names to WHEELS as needed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
shared="${SHARED_DATA:-$repo/../shared/data}"
python="${PYTHON:-python3}"
limit_mib="${PAYLOAD_LIMIT_MIB:-60}"  # the device tool carries at most 64 MiB with the repository
WHEELS=(pydensecrf2)

mkdir -p "$repo/.whl"
for platform_tag in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$platform_tag")
done
for name in "${WHEELS[@]}"; do
  # A package with no binary wheel for the image (pydensecrf2 publishes none for 3.12 at the time of
  # writing) is left out with a warning: the tests that need it skip there, the rest runs.
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$repo/.whl" "$name" || echo "warning: no manylinux wheel of $name for Python 3.12" >&2
done

data="$repo/_gpu_data"
mkdir -p "$data/camvid"
cp -r "$shared/voc_fixture" "$data/"
cp -r "$shared/camvid/jpg" "$shared/camvid/trainannot" "$shared/camvid/valannot" "$data/camvid/"
cp "$shared/camvid/list_train_jpg.txt" "$shared/camvid/list_val_jpg.txt" "$data/camvid/"

total_kib=$(du -sk "$repo/.whl" "$data" | awk '{s += $1} END {print s}')
echo "payload: .whl $(du -sh "$repo/.whl" | cut -f1), _gpu_data $(du -sh "$data" | cut -f1), $((total_kib / 1024)) MiB in all"
if (( total_kib > limit_mib * 1024 )); then
  echo "payload is over ${limit_mib} MiB: the device call would refuse it; carry less" >&2
  exit 1
fi
