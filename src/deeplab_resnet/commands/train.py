"""``deeplab train``: train or fine-tune with the original recipe (flags as the original's train.py)."""

from __future__ import annotations

import argparse

from ..errors import DeepLabError

DESCRIPTION = """\
Train DeepLab-v2 with the original recipe: SGD momentum 0.9, poly learning rate, classifier
10x/20x, weight decay on conv weights, random scale/mirror/crop. The original's flags keep their
names and defaults; --config FILE (JSON/YAML) supplies any of them, explicit flags win. Without
--restore-from the network is trained from scratch (Kaiming init, batch norm trained).
Multi-GPU / multi-node: torchrun --nproc_per_node N -m deeplab_resnet train ... (--batch-size
is the global batch)."""

BOOL = argparse.BooleanOptionalAction
# Defaults are written out here (not imported from ..train) so that 'deeplab --help' does not
# import torch; tests/test_train_cli.py checks they equal TrainConfig's.


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the original's flags")
    g.add_argument("--data-dir", default=None, help="directory the list's paths are relative to")
    g.add_argument("--data-list", default=None, help="list file: '/JPEGImages/x.jpg /SegmentationClassAug/x.png' lines")
    g.add_argument("--batch-size", type=int, default=10, help="global batch (default: %(default)s)")
    g.add_argument("--input-size", default="321,321", help="crop HEIGHT,WIDTH (default: %(default)s)")
    g.add_argument("--learning-rate", type=float, default=2.5e-4, help="base LR (default: %(default)s)")
    g.add_argument("--momentum", type=float, default=0.9, help="(default: %(default)s)")
    g.add_argument("--num-steps", type=int, default=20001, help="(default: %(default)s)")
    g.add_argument("--power", type=float, default=0.9, help="poly LR power (default: %(default)s)")
    g.add_argument("--random-mirror", action=BOOL, default=False, help="random horizontal flip")
    g.add_argument("--random-scale", action=BOOL, default=False, help="random rescaling, U(0.5, 1.5)")
    g.add_argument("--random-seed", type=int, default=1234, help="(default: %(default)s)")
    g.add_argument(
        "--restore-from",
        default=None,
        help="initial weights (.safetensors, or an original .caffemodel/.ckpt); none: from scratch",
    )
    g.add_argument("--save-num-images", type=int, default=2, help="images in the summary (default: %(default)s)")
    g.add_argument(
        "--save-pred-every",
        type=int,
        default=1000,
        help="image summary, checkpoint and validation interval in steps (default: %(default)s)",
    )
    g.add_argument("--snapshot-dir", default="./snapshots/", help="run directory (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="(default: %(default)s)")
    g.add_argument("--num-classes", type=int, default=None, help="classes (default: 21, or the --dataset's)")
    g.add_argument(
        "--ignore-label", type=int, default=None, help="label not trained on (default: 255, or the --dataset's)"
    )
    g.add_argument(
        "--not-restore-last", action=BOOL, default=False, help="do not restore the classifier (new class count)"
    )
    g.add_argument("--is-training", action=BOOL, default=False, help="train batch norm (default: frozen)")
    g.add_argument(
        "--grad-update-every",
        type=int,
        default=1,
        help="micro-batches per update (Caffe iter_size; default: %(default)s)",
    )
    o = p.add_argument_group("more")
    o.add_argument("--config", default=None, help="JSON/YAML file of settings (flag names as keys)")
    o.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue exactly from CHECKPOINT (default: the newest in --snapshot-dir)",
    )
    o.add_argument(
        "--msc", action=BOOL, default=False, help="multi-scale training: 4 summed losses (1x, 0.75x, 0.5x, max-fused)"
    )
    o.add_argument(
        "--loss-resolution",
        choices=("logits", "image"),
        default="logits",
        help="cross-entropy on the stride-8 logit grid (the original; default) or on logits upsampled "
        "to the crop size like at test time",
    )
    o.add_argument(
        "--scale-mode",
        choices=("continuous", "discrete"),
        default="continuous",
        help="random scale: TF U(0.5,1.5) or Caffe's {0.5,...,1.5}",
    )
    o.add_argument(
        "--fine-tune", action=BOOL, default=False, help="train only the classifier (the original's fine_tune.py)"
    )
    o.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default="sgd",
        help="(default: %(default)s; fine_tune.py used adam, lr 1e-4, batch 4)",
    )
    o.add_argument(
        "--model",
        default="deeplab_v2_resnet101",
        help="architecture when training from scratch (default: %(default)s; deeplab_v2_resnet_tiny for quick tests)",
    )
    o.add_argument(
        "--convention", choices=("caffe", "tf"), default=None, help="numerics (default: the weights', or caffe)"
    )
    o.add_argument(
        "--dataset",
        default=None,
        help="voc12, camvid or a JSON/YAML description (classes, palette, mean, ignore label)",
    )
    o.add_argument("--keep-checkpoints", type=int, default=3, help="checkpoints kept (default: %(default)s)")
    o.add_argument(
        "--checkpoint-every", type=int, default=None, help="checkpoint interval (default: --save-pred-every)"
    )
    o.add_argument("--num-workers", type=int, default=2, help="data loading processes (default: %(default)s)")
    o.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 (default: cuda if available)")
    o.add_argument("--amp", action=BOOL, default=False, help="bfloat16 autocast")
    o.add_argument("--channels-last", action=BOOL, default=False, help="channels_last memory format")
    o.add_argument("--val-list", default=None, help="list to score (mIoU) every --val-every steps")
    o.add_argument("--val-data-dir", default=None, help="data directory of --val-list (default: --data-dir)")
    o.add_argument("--val-every", type=int, default=None, help="validation interval (default: --save-pred-every)")
    o.add_argument(
        "--strict-labels",
        action=BOOL,
        default=False,
        help="label values outside the classes are an error, not a warning",
    )
    o.add_argument("--check-data", action=BOOL, default=True, help="check every pair before training (default: on)")
    o.add_argument("--progress", action=BOOL, default=True, help="progress bar (default: on)")
    o.add_argument("--tensorboard", action=BOOL, default=True, help="TensorBoard events, if installed (default: on)")
    o.add_argument("--log-every", type=int, default=10, help="steps between logged scalars (default: %(default)s)")
    p.set_defaults(_train_defaults={a.dest: a.default for a in p._actions})


def resolve_config(args: argparse.Namespace):
    """Defaults < ``--config`` file < flags given on the command line."""
    from ..training.loop import TrainConfig, load_config_file

    values = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    if args.config:
        defaults = args._train_defaults
        for key, value in load_config_file(args.config).items():
            if values.get(key) == defaults.get(key):  # not set on the command line
                values[key] = value
    cfg = TrainConfig(**{k: v for k, v in values.items() if v is not None})
    if not args.resume and (not cfg.data_dir or not cfg.data_list):
        raise DeepLabError("--data-dir and --data-list are required (on the command line or in --config)")
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..training.loop import train

    cfg = resolve_config(args)
    train(cfg, resume=args.resume)
    return 0
