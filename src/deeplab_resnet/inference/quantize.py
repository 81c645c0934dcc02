"""Int8 static quantization of DeepLab-v2, calibrated on real images, cached per weights and calibration set.

:func:`quantize_model` exports the model (BN folded into the convs) to ONNX and runs onnxruntime's
``quantize_static`` on it: QDQ format (QuantizeLinear/DequantizeLinear pairs around each conv,
which both onnxruntime and OpenVINO run as int8 kernels), int8 weights per output channel, uint8
activations whose ranges come from the calibration images. On CPUs without VNNI the weights use
7 bits (``reduce_range``): AVX2's u8 x s8 dot product adds pairs of products in 16 bits, which
saturate with full-range weights (on the benchmark model that doubled int8's logit error). The ASPP classifier's four convs stay
float: they are a small share of the time, and their rounding would land straight on the logits.

The result is cached as ``deeplab_<weights>_int8_<calibration>.onnx`` (hashes of the state dict and
of the calibration images), written atomically; :func:`find_int8` finds one for a model's weights,
which is how ``--backend auto`` knows whether ``deeplab quantize`` was run. Calibrate on images
that are not the ones scored.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_path, work_folder
from ..cache import cache_dir as user_cache_dir
from ..errors import DeepLabError, missing_extra
from ..images import read_image
from ..models.deeplab import DeepLabV2
from ..preprocess import to_input
from . import protocol
from .cpu_features import has_vnni
from .export import export_onnx, onnx_file_parses

# The network sees calibration images as the segmenter would: the weights' test protocol, with a
# longer side above this shrunk to it (a few such images bound the calibration's memory).
CALIBRATION_MAX_SIZE = 1024
DEFAULT_CALIBRATION_IMAGES = 20
# Bump when the recipe below changes, so that older cached int8 files are not taken for new ones.
RECIPE_VERSION = "qdq-u8s8-perchannel-minmax-2"
INSTALL = "pip install 'deeplab_resnet[onnx]'"


def weights_digest(model: DeepLabV2) -> str:
    """A hash of the state dict and the convention: the cache key of every export of these weights."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(model.convention.encode())
    return digest.hexdigest()[:16]


def reduce_range() -> bool:
    """7-bit weights where int8 dot products are not native (see the module's description)."""
    return not has_vnni()


def calibration_digest(paths: Sequence[Path]) -> str:
    """A hash of the calibration images' contents (in order) and of the quantization recipe."""
    digest = hashlib.sha256(f"{RECIPE_VERSION}-reduce_range={reduce_range()}".encode())
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


def shared_image(calibration: Sequence[str | Path], scored: Sequence[str | Path]) -> tuple[Path, Path] | None:
    """The first scored image that is also a calibration image, by any path, link or copy (the
    same content), with that calibration image; ``None`` when they are apart, as they must be."""
    calibrated = {hashlib.sha256(Path(p).read_bytes()).hexdigest(): Path(p) for p in calibration}
    for path in scored:
        same = calibrated.get(hashlib.sha256(Path(path).read_bytes()).hexdigest())
        if same is not None:
            return Path(path), same
    return None


def int8_cache_dir(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir) if cache_dir else user_cache_dir("onnx")


def any_int8(cache_dir: str | Path | None = None) -> bool:
    """Whether ``deeplab quantize`` has cached an int8 model of any weights (cheap: no hashing)."""
    return next(int8_cache_dir(cache_dir).glob("deeplab_*_int8_*.onnx"), None) is not None


def find_int8(model: DeepLabV2, cache_dir: str | Path | None = None, *, digest: str | None = None) -> Path | None:
    """The newest cached int8 model for these weights (made by ``deeplab quantize``), or ``None``."""
    directory = int8_cache_dir(cache_dir)
    found = sorted(
        directory.glob(f"deeplab_{digest or weights_digest(model)}_int8_*.onnx"), key=lambda p: p.stat().st_mtime
    )
    return found[-1] if found else None


def calibration_batches(model: DeepLabV2, paths: Sequence[Path]) -> list[np.ndarray]:
    """The calibration images as the network sees them (``1 x 3 x H x W`` float32, protocol padding)."""
    return [x for x, _ in network_inputs(model, paths)]


def network_inputs(model: DeepLabV2, paths: Sequence[Path]) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Each image as the network sees it (``1 x 3 x H x W`` float32, padded by the weights' test
    protocol) with the ``(h, w)`` the image itself covers in it (top left; the rest is padding)."""
    pad_size = protocol.default_pad_size(model.convention)
    inputs = []
    for path in paths:
        rgb = read_image(path)
        h, w = protocol.network_image_size(rgb.shape[0], rgb.shape[1], CALIBRATION_MAX_SIZE, None)
        if (h, w) != rgb.shape[:2]:
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        x = protocol.pad_input(to_input(rgb, model.mean_bgr).unsqueeze(0), pad_size)
        inputs.append((np.ascontiguousarray(x.numpy(), dtype=np.float32), (h, w)))
    return inputs


def _reader(batches: list[np.ndarray], input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(batches)

        def get_next(self):
            x = next(self.remaining, None)
            return None if x is None else {input_name: x}

    return Reader()


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Drop what onnxruntime's quantizer logs through the root logger (advice to pre-process the
    model for other tools, with a link) without leaving a handler on the root logger behind."""
    placeholder = logging.NullHandler()
    logging.root.addHandler(placeholder)  # so that logging.warning() does not call basicConfig()
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        logging.root.removeHandler(placeholder)


def quantize_onnx(fp32_path: Path, int8_path: Path, batches: list[np.ndarray]) -> None:
    """Write the int8 QDQ model of ``fp32_path`` to ``int8_path``, activation ranges from ``batches``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    classifier = [n.name for n in graph.node if n.op_type == "Conv" and n.name.startswith("/classifier/")]
    with _quiet_root_logger():
        quantize_static(
        str(fp32_path), str(int8_path), _reader(batches, graph.input[0].name), quant_format=QuantFormat.QDQ,
        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=classifier, reduce_range=reduce_range(),
        )  # fmt: skip


def quantize_model(
    model: DeepLabV2, calibration: Sequence[str | Path], *, images: int = DEFAULT_CALIBRATION_IMAGES,
    cache_dir: str | Path | None = None,
) -> Path:  # fmt: skip
    """The cached int8 ONNX model of ``model``, calibrated on the first ``images`` of ``calibration``
    (made now if not cached yet). Keep the calibration images apart from the images you score."""
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise missing_extra(exc, f"int8 quantization needs: {INSTALL}") from exc
    paths = [Path(p) for p in calibration][:images]
    if not paths:
        raise DeepLabError("no calibration images: give a list file or a directory of images")
    target = int8_cache_dir(cache_dir) / f"deeplab_{weights_digest(model)}_int8_{calibration_digest(paths)}.onnx"
    if target.exists() and onnx_file_parses(target):
        return target
    batches = calibration_batches(model, paths)
    with work_folder("quantize") as tmp:
        fp32 = export_onnx(model, tmp / "folded.onnx", fold_bn=True)
        with atomic_path(target) as out:
            quantize_onnx(fp32, out, batches)
    return target
