"""``deeplab evaluate``: mIoU and the other metrics of a model (or of prediction PNGs) on a list."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import DeepLabError
from ..progress import Progress
from .common import (
    add_backend_argument,
    add_crf_arguments,
    add_model_arguments,
    add_protocol_arguments,
    add_tile_arguments,
    check_protocol_args,
    crf_params_from_args,
    dataset_from_args,
    int_at_least,
    load_model_from_args,
    pad_size_from_args,
    parse_scales,
    resolve_device,
    with_backend,
)

DESCRIPTION = (
    "Score a model on a labelled list (the original's protocol: full images, padded to 513 for caffe-convention "
    "weights and at their own size for tf-convention ones, logits upsampled to the image, one confusion matrix "
    "over the dataset, ignore label and labels >= num_classes not counted). "
    "Prints the per-class table and writes report.json, confusion.npy and confusion.png into --output-dir. "
    "With --predictions DIR, scores prediction PNGs made by any program instead of running a model. "
    "Multi-GPU: torchrun --nproc-per-node N -m deeplab_resnet evaluate ..."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", required=True, help="directory the list's paths are relative to")
    p.add_argument(
        "--data-list", required=True, help="list file: '/JPEGImages/x.jpg /SegmentationClassAug/x.png' lines"
    )
    add_model_arguments(p)
    p.add_argument("--ignore-label", type=int, default=None, help="ground-truth value not scored (default: dataset's)")
    p.add_argument("-o", "--output-dir", default="evaluation", help="where to write the reports (default: %(default)s)")
    p.add_argument(
        "--predictions", default=None, metavar="DIR",
        help="score DIR/NAME.png (class-index PNGs from any program; NAME = label file's name) instead of a model",
    )  # fmt: skip
    p.add_argument("--msc", action="store_true", help="multi-scale test with the original's scales 1,0.75,0.5")
    p.add_argument("--scales", default=None, help="input scales, e.g. 1,0.75,0.5 (max fusion); default 1")
    p.add_argument("--flip", action="store_true", help="also run the mirrored image and average the logits")
    p.add_argument("--save-predictions", default=None, metavar="DIR", help="write palette PNGs NAME.png into DIR")
    p.add_argument(
        "--save-logits", default=None, metavar="DIR",
        help="write NAME.npy (float32 H x W x C logits at the image size) into DIR",
    )  # fmt: skip
    p.add_argument("--limit", type=int_at_least(1), default=None, help="only the first N list entries")
    p.add_argument(
        "--batch-size", type=int_at_least(1), default=1,
        help="run up to N images of the same size through the network at once (fills a GPU; "
        "the results equal one-at-a-time up to float rounding); default: %(default)s",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument(
        "--classes", default=None, metavar="NAMES|INDICES",
        help="also report the mean IoU over these classes only (comma-separated names or indices, or synthia16 / "
        "synthia13: the 16 and 13 Cityscapes classes of the SYNTHIA->Cityscapes papers); the IoUs come from the "
        "full confusion matrix, so pixels of other classes still count as errors",
    )  # fmt: skip
    p.add_argument(
        "--input-size", type=parse_input_size, default=None, metavar="W,H",
        help="resize every image to W x H for the network and upsample the logits to the label's size: the "
        "Cityscapes test of AdaptSegNet and ADVENT (--input-size 1024,512 on 2048x1024 images; add --native-size "
        "with caffe-convention weights, which are otherwise padded to 513 afterwards)",
    )  # fmt: skip
    add_tile_arguments(p)
    add_protocol_arguments(p)
    add_crf_arguments(p)
    p.add_argument(
        "--crf-workers", type=int_at_least(0), default=None,
        help="processes running the CRF alongside the network (default: half the CPUs, at most 8; "
        "0 = inline, the default below 4 CPUs)",
    )  # fmt: skip
    add_backend_argument(p, reduced_precision_by_default=False)


def parse_input_size(text: str) -> tuple[int, int]:
    """An argparse ``type`` for ``--input-size W,H`` (a bad value is argparse's one-line usage error)."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected two positive sizes W,H such as 1024,512, got {text!r}")
    return int(parts[0]), int(parts[1])


def _scales(args: argparse.Namespace) -> tuple[float, ...]:
    from ..models.msc import DEFAULT_SCALES

    if args.scales is not None:
        return parse_scales(args.scales)
    return DEFAULT_SCALES if args.msc else (1.0,)


def _score_model(args, pairs, dist):
    from ..distributed import init_distributed
    from ..evaluation.evaluate import EvalOutputs, default_crf_workers, evaluate_pairs
    from ..inference import protocol
    from ..inference.runtime import describe_engine

    crf = crf_params_from_args(args)
    scales = _scales(args)
    check_protocol_args(args)
    device = resolve_device(args.device)
    if dist.active and device.startswith("cuda"):
        device = f"cuda:{dist.local_rank}"
    init_distributed(dist, device)
    model = load_model_from_args(args, device)
    _class_subset(args, model.dataset.class_names)  # a bad --classes fails before the long run
    network = with_backend(args, model, device, allow_reduced_precision=False)
    pad_size = pad_size_from_args(args, model.convention)
    protocol.check_input_size(args.input_size, tile=args.tile)
    protocol.check_scales_for_images(
        [p.image for p in pairs], scales, model.convention, pad_size=pad_size, tile=args.tile,
        input_size=args.input_size,
    )  # fmt: skip
    workers = args.crf_workers if args.crf_workers is not None else default_crf_workers()
    if dist.active:
        workers = max(workers // dist.world_size, 0 if args.crf_workers == 0 else 1)
    outputs = EvalOutputs(
        Path(args.save_predictions) if args.save_predictions else None,
        Path(args.save_logits) if args.save_logits else None,
    )
    start = time.perf_counter()
    meter = evaluate_pairs(
        network, dist.shard(pairs), spec=model.spec, device=device, scales=scales, ignore_label=args.ignore_label,
        pad_size=pad_size,
        flip=args.flip, crf=crf, crf_backend=args.crf_backend, crf_workers=workers, outputs=outputs,
        progress=Progress("evaluating", unit="images", enabled=not args.quiet and dist.rank == 0).callback,
        batch_size=args.batch_size, input_size=args.input_size, tile=args.tile, tile_overlap=args.tile_overlap,
    )  # fmt: skip
    loop_seconds = time.perf_counter() - start
    options = {"scales": list(scales), "pad_size": pad_size, "flip": args.flip, "crf": crf.__dict__ if crf else None}
    options["batch_size"] = args.batch_size
    options["input_size"] = list(args.input_size) if args.input_size else None
    options["tile"] = args.tile
    if args.tile is not None:
        options["tile_overlap"] = args.tile_overlap
    if crf:
        options.update(crf_backend=args.crf_backend, crf_workers=workers)
    options["evaluation_seconds"] = loop_seconds  # the loop alone, without loading the model (rank 0's)
    engine = describe_engine(network)  # a score says what computed it: an int8 score is no float32 score
    return (
        meter,
        model.dataset,
        device,
        {"weights": str(args.weights), "convention": model.convention, **engine, **options},
    )


def _class_subset(args: argparse.Namespace, class_names) -> tuple[int, ...] | None:
    from ..evaluation.subsets import parse_class_subset

    return None if args.classes is None else parse_class_subset(args.classes, class_names)


def _check_outputs(args: argparse.Namespace, pairs) -> None:
    """Before any work: no output may replace an image, a label or another output, and every output
    folder must be writable."""
    from ..evaluation.report import REPORT_FILES
    from ..outputs import check_writable_dir, refuse_clashes

    inputs = [p.image for p in pairs] + [p.label for p in pairs if p.label is not None]
    writes = [(None, Path(args.output_dir) / name) for name in REPORT_FILES]
    for folder, ending in ((args.save_predictions, ".png"), (args.save_logits, ".npy")):
        if folder is not None:
            writes += [(p.image, Path(folder) / f"{p.name}{ending}") for p in pairs]
    refuse_clashes(inputs, writes)
    for folder, option in ((args.output_dir, "--output-dir"), (args.save_predictions, "--save-predictions")):
        if folder is not None:
            check_writable_dir(Path(folder), option)
    if args.save_logits is not None:
        check_writable_dir(Path(args.save_logits), "--save-logits")


def run(args: argparse.Namespace) -> int:
    from ..data.lists import read_list
    from ..distributed import dist_from_env
    from ..evaluation.evaluate import all_reduce_matrix, evaluate_prediction_dir
    from ..evaluation.metrics import scores as metric_scores
    from ..evaluation.report import build_report, class_table, write_reports

    pairs = read_list(args.data_dir, args.data_list)
    if args.limit is not None:
        pairs = pairs[: args.limit]
    _check_outputs(args, pairs)
    dist = dist_from_env()
    start = time.perf_counter()
    if args.predictions is not None:
        if dist.active:
            raise DeepLabError("--predictions runs on one process; start it without torchrun")
        dataset = dataset_from_args(args)  # --ignore-label, if given, is already applied
        _class_subset(args, dataset.class_names)
        meter = evaluate_prediction_dir(args.predictions, pairs, dataset.num_classes, dataset.ignore_label)
        device, info = "cpu", {"predictions": str(args.predictions), "evaluation_seconds": time.perf_counter() - start}
    else:
        meter, dataset, device, info = _score_model(args, pairs, dist)
    matrix = all_reduce_matrix(meter.matrix, device)
    if dist.active:
        import torch.distributed

        torch.distributed.destroy_process_group()
    elapsed = time.perf_counter() - start
    loop = info.pop("evaluation_seconds")
    if dist.rank != 0:
        return 0
    scores = metric_scores(matrix)
    names = dataset.class_names
    subset = _class_subset(args, names)
    info.update(
        data_list=str(args.data_list), images=len(pairs), seconds_total=round(elapsed, 3),
        seconds_evaluating=round(loop, 3), images_per_second=round(len(pairs) / loop, 4) if loop > 0 else None,
        processes=dist.world_size,
    )  # fmt: skip
    report = build_report(scores, matrix, names, subset, **info)
    written = write_reports(args.output_dir, report, matrix, names)
    print(class_table(scores, names, subset))
    print(
        f"{len(pairs)} images in {loop:.1f} s ({len(pairs) / loop:.2f} images/s; {elapsed:.1f} s in all); wrote "
        + ", ".join(map(str, written))
    )
    return 0
