"""``deeplab data``: prepare VOC train_aug and the other official datasets, convert colour masks, check lists,
compute the mean colour or class weights."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from ..errors import DeepLabError
from .common import dataset_from_args

DESCRIPTION = (
    "Dataset tools. prepare-voc: build SegmentationClassAug and train_aug (10,582) / val (1,449) "
    "from the official VOC 2012 and SBD downloads. prepare-cityscapes, prepare-gta5, prepare-synthia, "
    "prepare-cocostuff, prepare-ade20k: training labels, lists and description from those official "
    "downloads. convert-masks: RGB colour masks -> index PNGs. "
    "check: validate a data dir and list(s) before training. "
    "stats: the images' mean colour, or class weights from the labels. "
    "describe: print a built-in dataset description to start your own from."
)


def _subcommand(sub, name: str, handler: Callable[[argparse.Namespace], int], help: str, description: str):
    """The parser of ``deeplab data NAME``, run by ``handler``."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(_data=handler)
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core, at most 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _data_dir_option(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--data-dir", required=required, default=None, help="directory the list paths are relative to")


def _output_options(p: argparse.ArgumentParser, lists_help: str) -> None:
    """--extract-to and --lists-dir, which every prepare-* command takes, then the common options."""
    p.add_argument("--extract-to", default=None, help="where to extract archives (default: beside each archive)")
    p.add_argument("--lists-dir", default=None, help=lists_help)
    _common(p)


def _add_prepare_voc(sub) -> None:
    p = _subcommand(
        sub,
        "prepare-voc",
        _run_prepare_voc,
        help="build SegmentationClassAug/ and the train_aug/val/... lists from VOC 2012 + SBD",
        description="Build VOC2012/SegmentationClassAug (palette PNGs; VOC's own annotation wins, with its "
        "255 borders; SBD's cls/*.mat elsewhere) and the lists train_aug (VOC train + SBD train + SBD val "
        "- VOC val), val, train, trainval, trainval_aug (and test, images only, when VOC's test split is "
        "there). Re-running rewrites nothing that is already correct. Needs scipy: "
        "pip install 'deeplab_resnet[data]'.",
    )
    p.add_argument("--voc", required=True, help="VOCdevkit/VOC2012 (or a parent) or VOCtrainval_11-May-2012.tar")
    p.add_argument("--sbd", required=True, help="SBD's benchmark_RELEASE folder or benchmark.tgz")
    _output_options(p, "where to write the list files (default: VOC2012/lists)")


def _add_classes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", type=int, default=171, choices=(171, 182),
                   help="171: the annotated classes, contiguous (default); 182: the stored IDs unchanged")  # fmt: skip


class PrepareCommand(NamedTuple):
    """One ``deeplab data prepare-NAME``; its layout is ``data/tools/prepare_NAME.py:layout``."""

    summary: str
    source: str  # what SOURCE is
    add_options: Callable[[argparse.ArgumentParser], None] | None = None
    layout_options: tuple[str, ...] = ()  # the options passed on to ``layout``


# The layouts are in each module's docstring and docs/datasets.md.
PREPARE_DATASETS = {
    "cityscapes": PrepareCommand(
        "Cityscapes fine: gtFine labelIds -> the 19 trainIds, lists train (2,975) / val (500) / test",
        "the folder holding leftImg8bit/ and gtFine/, or leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip",
    ),
    "gta5": PrepareCommand(
        "GTA5: its Cityscapes-ID labels -> the 19 Cityscapes trainIds, list train (all 24,966)",
        "the folder holding images/ and labels/, or the NN_images.zip and NN_labels.zip parts",
    ),
    "synthia": PrepareCommand(
        "SYNTHIA-RAND-CITYSCAPES: 16-bit labels -> the Cityscapes trainIds (16 classes occur), list train (9,400)",
        "the extracted RAND_CITYSCAPES folder (holding RGB/ and GT/LABELS/); the .rar must be extracted first",
    ),
    "cocostuff": PrepareCommand(
        "COCO-Stuff-164k: stuff+thing maps -> 171 classes (or --classes 182), lists train (118,287) / val (5,000)",
        "the folder holding images/ and annotations/, or train2017.zip, val2017.zip and stuffthingmaps_trainval2017.zip",
        _add_classes,
        ("classes",),
    ),
    "ade20k": PrepareCommand(
        "ADE20K SceneParsing: 1..150 -> 0..149, 0 (other) -> 255, lists train (20,210) / val (2,000)",
        "the ADEChallengeData2016 folder or ADEChallengeData2016.zip",
    ),
}


def _add_prepare_datasets(sub) -> None:
    for name, command in PREPARE_DATASETS.items():
        p = _subcommand(
            sub,
            f"prepare-{name}",
            _run_prepare_dataset,
            help=command.summary,
            description=f"{command.summary}. Writes palette PNGs of training labels (255 = ignore), the list files "
            f"and the dataset description (also built in: --dataset {name}). Re-running rewrites nothing "
            "that is already correct; archive members that would land outside the destination are refused; "
            "a warning says when an image count is not the official one. "
            "The expected layout and the label tables: docs/datasets.md.",
        )
        p.add_argument("sources", nargs="+", metavar="SOURCE", help=command.source)
        if command.add_options:
            command.add_options(p)
        _output_options(p, "where to write the lists and description (default: ROOT/lists)")
        p.set_defaults(_prepare=name)


def _add_convert_masks(sub) -> None:
    p = _subcommand(
        sub,
        "convert-masks",
        _run_convert_masks,
        help="RGB colour masks -> palette PNGs of class indices",
        description="Convert colour masks (one colour per class) to palette PNGs of class indices, keeping "
        "names and sub-folders. Colours that are in no table are reported with pixel counts and the mask "
        "is not written (exit 1) unless --unknown-to-ignore. Greyscale masks, and palette masks whose "
        "indices already are the labels (VOC-style), are kept as they are; other palette masks are "
        "converted through their colours.",
    )
    p.add_argument("source", help="a mask file or a folder of masks (searched recursively)")
    p.add_argument("output_dir", help="where to write the index PNGs")
    p.add_argument(
        "--colours", "--dataset", dest="colours", default=None, metavar="SPEC",
        help="colour table: a dataset description (voc12, camvid or a JSON/YAML file), a JSON "
        '{"r,g,b": label} or a CSV with columns r,g,b[,label] (default: the VOC colours)',
    )  # fmt: skip
    p.add_argument("--unknown-to-ignore", action="store_true", help="map unknown colours to the ignore label")
    p.add_argument("--ignore-label", type=int, default=255, help="ignore label for JSON/CSV tables (default: 255)")
    _common(p)


def _add_check(sub) -> None:
    p = _subcommand(
        sub,
        "check",
        _run_check,
        help="validate a data dir and list(s): files, sizes, label values, duplicates",
        description="Decode every image and label of the list(s), compare sizes, histogram the label "
        "values per class, count ignore and out-of-range pixels, find duplicate entries and images "
        "shared between lists. Prints a summary table; exit 1 when anything is wrong.",
    )
    _data_dir_option(p, required=True)
    p.add_argument("--data-list", required=True, action="append", help="list file (repeat for several lists)")
    p.add_argument("--dataset", default=None, help="voc12, camvid or a description file (default: voc12)")
    p.add_argument(
        "--num-classes", type=int, default=None,
        help="another class count: generic class names, the description's ignore label and mean",
    )  # fmt: skip
    p.add_argument("--ignore-label", type=int, default=None, help="override the description's ignore label")
    p.add_argument("--max-errors", type=int, default=50, help="errors to print (default: %(default)s)")
    p.add_argument("--report", default=None, help="also write the full result as JSON here")
    _common(p)


def _add_stats(sub) -> None:
    p = _subcommand(
        sub,
        "stats",
        _run_stats,
        help="the mean colour (B, G, R) of a dataset's images, for its description; or class weights",
        description="Compute the exact per-channel mean (and standard deviation) over all pixels of the "
        "images of a list, or of a folder of images. Prints it in the description's B, G, R order; "
        "--update FILE writes it into a description file as mean_bgr. With --class-weights METHOD it counts "
        "the list's label pixels per class instead and writes class weights (--output) for 'deeplab train'.",
    )
    _data_dir_option(p, required=False)
    p.add_argument("--data-list", default=None, help="list file (its images; with --class-weights, its labels)")
    p.add_argument("--images", default=None, help="a folder of images instead of a list")
    p.add_argument("--update", default=None, metavar="FILE", help="write the mean into this description file")
    p.add_argument(
        "--class-weights", default=None, choices=("median-frequency", "inverse-log-frequency"),
        help="instead of the mean colour, count the list's label pixels per class and write class weights "
        "for 'deeplab train --class-weights' (median frequency: median(f)/f_c; ENet: 1/ln(1.02 + p_c))",
    )  # fmt: skip
    p.add_argument("--output", default="class_weights.json", help="weights file (default: %(default)s)")
    p.add_argument("--dataset", default=None, help="voc12, camvid or a description file (default: voc12)")
    p.add_argument("--num-classes", type=int, default=None, help="another class count than the description's")
    p.add_argument("--ignore-label", type=int, default=None, help="override the description's ignore label")
    _common(p)


def _add_describe(sub) -> None:
    p = _subcommand(
        sub,
        "describe",
        _run_describe,
        help="print (or write) a dataset description, e.g. to start your own from",
        description="Print a dataset description as JSON: a built-in one (voc12, camvid, cityscapes, gta5, "
        "synthia, cocostuff, cocostuff182, ade20k) or a file, "
        "validated. With -o, write it to a file (.json or .yaml) to edit.",
    )
    p.add_argument("name", help="a built-in name (e.g. voc12, cityscapes) or a description file")
    p.add_argument("-o", "--output", default=None, help="write to this file instead of printing")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    for add in (_add_prepare_voc, _add_prepare_datasets, _add_convert_masks, _add_check, _add_stats, _add_describe):
        add(sub)
    p.set_defaults(_data_parser=p)


def run(args: argparse.Namespace) -> int:
    handler = getattr(args, "_data", None)
    if handler is None:
        args._data_parser.print_help()
        return 2
    return handler(args)


# ---------------------------------------------------------------- handlers


def _run_prepare_voc(args: argparse.Namespace) -> int:
    from ..data.tools.prepare_voc import prepare_voc

    result = prepare_voc(
        args.voc, args.sbd, extract_to=args.extract_to, lists_dir=args.lists_dir,
        workers=args.workers, progress=not args.quiet,
    )  # fmt: skip
    print(
        f"labels: {result.written} written, {result.unchanged} already up to date in {result.data_dir / 'SegmentationClassAug'}"
    )
    if result.images_copied:
        print(f"images: {result.images_copied} copied from SBD into {result.data_dir / 'JPEGImages'}")
    _print_lists(result)
    print(f"train with: --data-dir {result.data_dir} --data-list {result.lists_dir / 'train_aug.txt'}")
    return 0


def _run_prepare_dataset(args: argparse.Namespace) -> int:
    from ..data.tools.prepare_common import prepare_dataset

    command = PREPARE_DATASETS[args._prepare]
    # Imported here, and only the one asked for, to keep `deeplab --help` fast.
    layout_of = importlib.import_module(f"..data.tools.prepare_{args._prepare}", __package__).layout
    layout = layout_of(**{option: getattr(args, option) for option in command.layout_options})
    result = prepare_dataset(
        layout, args.sources, extract_to=args.extract_to, lists_dir=args.lists_dir,
        workers=args.workers, progress=not args.quiet,
    )  # fmt: skip
    print(f"labels: {result.written} written, {result.unchanged} already up to date under {result.data_dir}")
    _print_lists(result)
    print(
        f"train with: --data-dir {result.data_dir} --data-list {result.lists_dir / 'train.txt'} "
        f"--dataset {result.description}"
    )
    return 0


def _print_lists(result) -> None:
    """Each list with its entry count and whether it was rewritten, then the warnings on stderr."""
    for name, count in result.counts.items():
        state = "written" if name in result.lists_written else "unchanged"
        print(f"{result.lists_dir / (name + '.txt')}: {count} entries ({state})")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _run_convert_masks(args: argparse.Namespace) -> int:
    from ..data.tools.convert_masks import convert_masks, load_colour_table

    table = load_colour_table(args.colours, ignore_label=args.ignore_label)
    result = convert_masks(
        args.source, args.output_dir, table, unknown_to_ignore=args.unknown_to_ignore,
        workers=args.workers, progress=not args.quiet,
    )  # fmt: skip
    print(f"{result.written} written, {result.unchanged} unchanged in {args.output_dir}")
    if result.unknown:
        action = f"mapped to {table.dataset.ignore_label}" if args.unknown_to_ignore else "not in the colour table"
        print(f"unknown colours ({action}):", file=sys.stderr)
        for (r, g, b), pixels in result.unknown.most_common(20):
            print(f"  ({r}, {g}, {b}): {pixels} px", file=sys.stderr)
        if len(result.unknown) > 20:
            print(f"  ... and {len(result.unknown) - 20} more colours", file=sys.stderr)
    if result.refused:
        print(
            f"{len(result.refused)} mask(s) not written because of unknown colours (e.g. {result.refused[0]}); "
            "add the colours to the table, or pass --unknown-to-ignore",
            file=sys.stderr,
        )
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if result.refused or result.errors else 0


def _run_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset, format_report

    info = dataset_from_args(args)
    report = check_dataset(args.data_dir, args.data_list, info, workers=args.workers, progress=not args.quiet)
    print(format_report(report, max_errors=args.max_errors))
    if args.report:
        _write_check_report(report, Path(args.report))
    return 0 if report.ok else 1


def _write_check_report(report, path: Path) -> None:
    from ..atomic import atomic_write_text

    data = {
        "ok": report.ok,
        "dataset": report.dataset.to_dict(),
        "lists": [str(p) for p in report.lists],
        "images": report.pairs,
        "labelled": report.labelled,
        "class_pixels": dict(zip(report.dataset.class_names, report.class_pixels.tolist())),
        "class_images": dict(zip(report.dataset.class_names, report.class_images.tolist())),
        "ignore_pixels": report.ignore_pixels,
        "out_of_range": {str(k): v for k, v in sorted(report.out_of_range.items())},
        "label_modes": dict(report.label_modes),
        "errors": report.errors,
        "warnings": report.warnings,
    }
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _stats_paths(args: argparse.Namespace) -> list[Path]:
    if args.images:
        from .common import expand_inputs

        return expand_inputs([args.images])
    if not (args.data_dir and args.data_list):
        raise DeepLabError("give --data-dir and --data-list, or --images FOLDER")
    from ..data.lists import read_list

    return [pair.image for pair in read_list(args.data_dir, args.data_list, require_labels=False)]


def _run_stats(args: argparse.Namespace) -> int:
    from ..data.tools.stats import colour_stats
    from ..dataset_info import load_dataset_info, save_dataset_info

    if args.class_weights:
        return _run_class_weights(args)
    stats = colour_stats(_stats_paths(args), workers=args.workers, progress=not args.quiet)
    mean = [round(v, 8) for v in stats.mean_bgr]
    print(f"images: {stats.images}  pixels: {stats.pixels}")
    print(f'"mean_bgr": [{mean[0]}, {mean[1]}, {mean[2]}]')
    print("std_bgr: [" + ", ".join(f"{v:.4f}" for v in stats.std_bgr) + "]")
    if args.update:
        info = load_dataset_info(args.update)
        save_dataset_info(replace(info, mean_bgr=tuple(mean)), args.update)
        print(f"{args.update}: mean_bgr updated")
    return 0


def _run_class_weights(args: argparse.Namespace) -> int:
    """``stats --class-weights METHOD``: count the list's label pixels per class, write the weights."""
    from ..data.lists import read_list
    from ..data.tools.class_weights import class_pixel_counts, class_weights, write_class_weights

    if not (args.data_dir and args.data_list):
        raise DeepLabError("--class-weights needs --data-dir and --data-list (the labels to count)")
    info = dataset_from_args(args)
    labels = [pair.label for pair in read_list(args.data_dir, args.data_list) if pair.label is not None]
    counts = class_pixel_counts(
        labels, info.num_classes, info.ignore_label, workers=args.workers, progress=not args.quiet
    )  # fmt: skip
    weights = class_weights(counts, args.class_weights)
    write_class_weights(args.output, weights, counts, args.class_weights, info.ignore_label)
    print(f"labels: {len(labels)}  valid pixels: {sum(counts.pixels)}  classes: {info.num_classes}")
    print(f"{args.class_weights} weights: [" + ", ".join(f"{w:.4f}" for w in weights) + "]")
    print(f"wrote {args.output}")
    return 0


def _run_describe(args: argparse.Namespace) -> int:
    from ..dataset_info import load_dataset_info, save_dataset_info

    info = load_dataset_info(args.name)
    if args.output:
        save_dataset_info(info, args.output)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(info.to_json())
    return 0
