"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..devices import resolve_device as resolve_device  # one rule for every command
from ..errors import DeepLabError

if TYPE_CHECKING:  # the real import waits for the command to run: 'deeplab --help' stays instant
    from ..dataset_info import DatasetInfo


def add_model_arguments(p: argparse.ArgumentParser, *, weights_required: bool = False) -> None:
    p.add_argument(
        "--weights", required=weights_required, default=None if weights_required else "voc12",
        help="weight file (.safetensors, or an original .caffemodel/.ckpt), a registered name, or "
        "hf://OWNER/REPO[@REVISION] on the Hugging Face Hub (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--num-classes", type=int, default=None, help="expected class count (checked against the weights)")
    p.add_argument("--dataset", default=None, help="dataset description (voc12, camvid or a JSON/YAML file)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


# Larger input scales than this are a typo, not a test-time augmentation: a scale of s costs s^2
# times the memory and time (--scales 20 on a 500x375 photo needs about 70 GB).
MAX_SCALE = 4.0


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise DeepLabError(f"--scales must be numbers separated by commas, got {text!r}") from exc
    if not scales or not all(0 < s <= MAX_SCALE for s in scales):  # also refuses nan
        raise DeepLabError(f"--scales must be numbers above 0 and at most {MAX_SCALE:g}, got {text!r}")
    return scales


# The authors' Caffe test pads to 513 (crop_size of their data layer); protocol.AUTHORS_PAD_SIZE,
# copied so that building the parser imports nothing heavy.
AUTHORS_PAD_SIZE = 513


def add_protocol_arguments(p: argparse.ArgumentParser) -> None:
    """``--pad-size`` / ``--native-size``: the test protocol (shared by segment and evaluate)."""
    g = p.add_argument_group(
        "test protocol",
        "Caffe-convention weights run by default as the authors tested them: the image padded "
        f"bottom/right with the mean colour to {AUTHORS_PAD_SIZE}x{AUTHORS_PAD_SIZE} (a longer side to the "
        "next 8k+1), the network (and --scales) on that, the logits upsampled by Interp zoom 8 "
        "(corner-aligned) and cropped to the image. TF-convention weights run by default as the "
        "TF code did: at the image's own size, logits resized straight to it. --flip mirrors the "
        "image before padding; --tile windows always run at their own size (docs/original.md §5).",
    )
    g.add_argument(
        "--pad-size", type=int, default=None, metavar="N",
        help=f"pad to N x N (N = 8k+1) as the authors' Caffe test did (default: {AUTHORS_PAD_SIZE} for "
        "caffe-convention weights)",
    )  # fmt: skip
    g.add_argument(
        "--native-size", action="store_true",
        help="run the network at the image's own size, no padding (default for tf-convention weights)",
    )  # fmt: skip


def check_protocol_args(args: argparse.Namespace) -> None:
    """Reject a bad ``--pad-size`` (or both options) before anything is loaded or written."""
    if args.native_size and args.pad_size is not None:
        raise DeepLabError("--pad-size and --native-size exclude each other")
    if args.pad_size is not None:
        from ..inference.protocol import check_pad_size

        check_pad_size(args.pad_size)


def pad_size_from_args(args: argparse.Namespace, convention: str) -> int | None:
    """The pad size asked for: ``None`` runs at the native size; the weights' convention decides by default."""
    from ..inference.protocol import check_pad_size, default_pad_size

    check_protocol_args(args)
    if args.native_size:
        return None
    if args.pad_size is not None:
        return check_pad_size(args.pad_size)
    return default_pad_size(convention)


def load_model_from_args(args: argparse.Namespace, device: str):
    from ..weights import load_model

    return load_model(
        args.weights, num_classes=args.num_classes, dataset=args.dataset,
        ignore_label=getattr(args, "ignore_label", None), device=device,
    )  # fmt: skip


def dataset_from_args(args: argparse.Namespace) -> DatasetInfo:
    """The dataset that ``--dataset``, ``--num-classes`` and ``--ignore-label`` describe, for commands
    that read no weights (``evaluate --predictions``, ``data check``): the rule of
    :func:`~deeplab_resnet.dataset_info.resolve_dataset_info`, as every command applies it."""
    from ..dataset_info import resolve_dataset_info

    return resolve_dataset_info(args.dataset, num_classes=args.num_classes, ignore_label=args.ignore_label)


def int_at_least(minimum: int):
    """An argparse ``type``: an integer >= ``minimum`` (a bad value is argparse's one-line usage error)."""
    return int_between(minimum, None)


def int_between(minimum: int, maximum: int | None):
    """An argparse ``type``: an integer from ``minimum`` to ``maximum`` (``None``: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def add_network_size_arguments(p: argparse.ArgumentParser, *, max_size_note: str = "") -> None:
    """``--scales`` and ``--max-size``, as ``segment`` and ``serve`` both take them: the sizes the
    network sees an image at."""
    p.add_argument("--scales", default="1", help="input scales, e.g. 1,0.75,0.5 for multi-scale (default: 1)")
    p.add_argument(
        "--max-size", type=int_at_least(0), default=2000,
        help=f"the network sees images whose longer side exceeds this shrunk to it{max_size_note} "
        "(0 = full resolution; default: %(default)s)",
    )  # fmt: skip


def add_tile_arguments(p: argparse.ArgumentParser, instead_of: str = "") -> None:
    """``--tile`` and ``--tile-overlap``, as ``segment`` and ``evaluate`` both take them (the
    :class:`~deeplab_resnet.inference.segmenter.Segmenter`'s ``tile``/``tile_overlap``)."""
    p.add_argument(
        "--tile", type=int_at_least(64), default=None, metavar="SIZE",
        help=f"run the network on overlapping SIZE x SIZE windows at full resolution{instead_of}; "
        "each window keeps only its centre, so memory is bounded by one window whatever the image size "
        "(windows run at their own size, without the test protocol's padding)",
    )  # fmt: skip
    p.add_argument(
        "--tile-overlap", type=int_at_least(0), default=192,
        help="margin of each window in pixels; windows overlap by twice this and each owns the pixels up to "
        "the middle of its overlaps (the full model sees ~200 px of context; default: %(default)s)",
    )  # fmt: skip


def float_between(low: float, high: float):
    """An argparse ``type``: a finite number in ``[low, high]`` (so ``nan`` and ``inf`` are refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:  # also false for nan
            raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, got {text}")
        return value

    return parse


LIST_SUFFIXES = (".txt", ".lst")
# Copies of crf.PRESETS' names and crf.BACKENDS (a test checks them), so that building the
# parser imports nothing heavy. The backend is checked by crf.check_backend (one-line errors; it
# also takes the old name torch), so argparse gets no choices for it.
CRF_PRESETS = ("deeplab-resnet", "deeplab-vgg", "tf-branch")
CRF_BACKENDS = ("auto", "builtin", "pydensecrf")


def add_crf_arguments(p: argparse.ArgumentParser) -> None:
    """``--crf`` and its parameters (shared with ``deeplab evaluate``)."""
    g = p.add_argument_group("dense CRF post-processing")
    g.add_argument("--crf", action="store_true", help="refine the result with a fully connected CRF")
    g.add_argument(
        "--crf-preset", choices=CRF_PRESETS, default=CRF_PRESETS[0],
        help="parameter set (docs/original.md §6; default: %(default)s)",
    )  # fmt: skip
    g.add_argument("--crf-iterations", type=int_at_least(1), default=None, help="mean-field iterations (preset: 10)")
    g.add_argument("--crf-pos-w", type=float, default=None, help="Gaussian (position) kernel weight")
    g.add_argument("--crf-pos-xy", type=float, default=None, help="Gaussian kernel std in pixels")
    g.add_argument("--crf-bi-w", type=float, default=None, help="bilateral kernel weight")
    g.add_argument("--crf-bi-xy", type=float, default=None, help="bilateral kernel std in pixels")
    g.add_argument("--crf-bi-rgb", type=float, default=None, help="bilateral kernel std in colour levels")
    g.add_argument(
        "--crf-backend", default="auto", metavar="{" + ",".join(CRF_BACKENDS) + "}",
        help="builtin (ours: a C kernel on CPU, compiled on first use; torch ops on CUDA or without a "
        'C compiler), pydensecrf (pip install "deeplab_resnet[crf]") or auto (ours, unless on CPU '
        "without a C compiler and pydensecrf is installed); torch is the old name of builtin; "
        "default: %(default)s",
    )  # fmt: skip


def crf_params_from_args(args: argparse.Namespace):
    """The CRF parameters asked for (``None`` without ``--crf``). Checks ``--crf-backend`` (known,
    installed) and puts its current name in ``args.crf_backend`` (``torch`` becomes ``builtin``)."""
    import dataclasses

    from ..crf import PRESETS, check_backend

    args.crf_backend = check_backend(args.crf_backend)
    overrides = {
        "iterations": args.crf_iterations, "pos_w": args.crf_pos_w, "pos_xy": args.crf_pos_xy,
        "bi_w": args.crf_bi_w, "bi_xy": args.crf_bi_xy, "bi_rgb": args.crf_bi_rgb,
    }  # fmt: skip
    given = {k: v for k, v in overrides.items() if v is not None}
    if not args.crf:
        if given:
            raise DeepLabError(f"--crf-{next(iter(given)).replace('_', '-')} given without --crf")
        return None
    if given.get("iterations", 1) < 1 or any(v <= 0 for k, v in given.items() if k != "iterations"):
        raise DeepLabError("CRF iterations, weights and standard deviations must be positive")
    return dataclasses.replace(PRESETS[args.crf_preset], **given)


# A copy of inference.runtime.BACKENDS and REDUCED_PRECISION (a test checks them), so that building the
# parser imports nothing heavy.
BACKENDS = (
    "auto", "torch", "onnxruntime", "openvino", "onnxruntime-int8", "openvino-int8", "openvino-bf16", "torch-bf16",
)  # fmt: skip
REDUCED_PRECISION = ("onnxruntime-int8", "openvino-int8", "openvino-bf16", "torch-bf16")


def add_backend_argument(p: argparse.ArgumentParser, *, reduced_precision_by_default: bool = True) -> None:
    """``--backend`` and ``--fast`` (shared by ``deeplab segment`` and ``deeplab evaluate``)."""
    auto = (
        "the fastest installed engine for this device and CPU: onnxruntime, else OpenVINO, else PyTorch "
        "with BN folded and channels_last; int8 where 'deeplab quantize --check' measured it within 99.5%% "
        "pixel agreement for these weights, bf16 on CUDA"
        if reduced_precision_by_default
        else "the fastest installed float32 engine for this device and CPU (onnxruntime, else OpenVINO, "
        "else PyTorch with BN folded and channels_last); int8 and bf16 only when named"
    )
    p.add_argument(
        "--backend", default="auto", choices=BACKENDS, metavar="{" + ",".join(BACKENDS) + "}",
        help=f"the engine that runs the network. auto: {auto}. torch: PyTorch (eager unless --fast). "
        "onnxruntime, openvino: float32 (exported once per weights and cached; pip install "
        "'deeplab_resnet[onnx]' or '[openvino]'). *-int8: the calibrated int8 model of 'deeplab quantize'. "
        "*-bf16: bf16, fast only with AMX/AVX512-BF16 or on CUDA (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--fast", default=None, metavar="OPTIONS",
        help="with --backend torch: PyTorch fast paths, a '+' list of fold, cl, bf16, fp16, compile, graphs, "
        "cudnn-bench, pinned, or 'default' (compile takes minutes on its first run)",
    )  # fmt: skip


def prepare_segment_run(args: argparse.Namespace, paths: list[Path], kinds: list[str]):
    """What ``deeplab segment`` needs before its first input, for images and videos alike: the output
    plan (refusing clashes and unwritable folders before any work), the CRF parameters, the scales,
    the device, the model and the padding. Returns ``(plans, crf, scales, device, model, pad_size)``."""
    from ..outputs import check_writable_dir, plan_outputs

    out_dir = Path(args.output_dir)
    json_file = [Path(args.json)] if args.json not in (None, "-") else []
    plans = plan_outputs(paths, out_dir, kinds, extra=json_file)
    check_writable_dir(out_dir, "--output-dir")
    for path in json_file:
        check_writable_dir(path.parent, "--json")
    crf = crf_params_from_args(args)
    scales = parse_scales(args.scales)
    check_protocol_args(args)
    device = resolve_device(args.device)
    model = load_model_from_args(args, device)
    return plans, crf, scales, device, model, pad_size_from_args(args, model.convention)


def segmenter_from_args(args: argparse.Namespace, model, device: str, *, scales, crf, pad_size: int | None):
    """The :class:`~deeplab_resnet.inference.segmenter.Segmenter` that ``deeplab segment``'s options
    describe (the same for images and videos)."""
    from ..inference.segmenter import Segmenter

    return Segmenter(
        with_backend(args, model, device), model.spec, device=device, scales=scales,
        max_size=args.max_size or None, flip=args.flip, crf=crf, crf_backend=args.crf_backend,
        tile=args.tile, tile_overlap=args.tile_overlap, pad_size=pad_size,
    )  # fmt: skip


def with_backend(args: argparse.Namespace, model, device: str, *, allow_reduced_precision: bool = True):
    """The network to run: ``model`` itself (``--backend torch``), or ``--backend``'s engine running
    it (a callable from a preprocessed batch to logits; ``model.spec`` still says what they mean).
    ``auto`` picks one (:func:`~deeplab_resnet.inference.choice.choose_backend`; reduced precision
    only when ``allow_reduced_precision``) and says which in one line on stderr."""
    fast = getattr(args, "fast", None)
    if fast is not None and args.backend != "torch":
        raise DeepLabError(f"--fast applies to --backend torch, not --backend {args.backend}")
    if args.backend == "torch" and fast is None:
        return model
    if args.backend == "auto":
        from ..inference.choice import choose_backend

        backend = choose_backend(model, device=device, allow_reduced_precision=allow_reduced_precision)
        print(backend.choice.line(), file=sys.stderr, flush=True)
        return backend
    from ..inference.optimize import REFERENCE, parse_options
    from ..inference.runtime import make_backend

    options = parse_options(fast, device) if fast is not None else REFERENCE
    return make_backend(args.backend, model, device=device, options=options)


def _from_list(list_file: Path, data_dir: str | None) -> list[Path]:
    from ..data.lists import join, list_entries

    base = data_dir if data_dir is not None else list_file.parent
    paths = []
    for _, (first, *_labels) in list_entries(list_file):
        path = Path(first)
        paths.append(path if path.is_absolute() and path.exists() else join(base, first))
    if not paths:
        raise DeepLabError(f"{list_file}: the list is empty")
    return paths


def expand_inputs(inputs: list[str], data_dir: str | None = None) -> list[Path]:
    """Files as given; every (non-hidden) file of a directory; glob matches; the images of list files.

    Directory entries are not filtered by suffix: a file that is not an image is reported and
    skipped when it is read.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not found:
                raise DeepLabError(f"{path}: no files in this directory")
            paths.extend(found)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            paths.extend(_from_list(path, data_dir))
        elif path.exists():
            paths.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise DeepLabError(f"no files match {item!r}")
            paths.extend(matches)
        else:
            raise DeepLabError(f"file not found: {path}")
    return paths
