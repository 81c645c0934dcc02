"""Training configuration: flags generated from TrainConfig, one check for flags and config files,
the command line winning over --config, and every fault one line with exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.training.config import TrainConfig, load_config_file


def train_parser() -> argparse.ArgumentParser:
    from deeplab_resnet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def parse(argv: list[str]) -> TrainConfig:
    from deeplab_resnet.cli import build_parser
    from deeplab_resnet.commands.train import resolve_config

    return resolve_config(build_parser().parse_args(["train", *argv]))


def one_line_error(argv: list[str], capsys) -> str:
    """Run ``deeplab train ARGV``; it must fail with exit code 2 and one line, no traceback."""
    from deeplab_resnet.cli import main

    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("deeplab train: error: "), err
    return err.removeprefix("deeplab train: error: ")


def test_every_field_has_a_flag_and_every_flag_a_field():
    flags = {s for a in train_parser()._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    flags -= {f"--no-{f.name.replace('_', '-')}" for f in dataclasses.fields(TrainConfig)}  # --no-X of booleans
    fields = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)}
    assert flags - fields == {"--config", "--resume", "--overwrite"}
    assert fields - flags == set()


def test_help_shows_the_fields_defaults_and_choices():
    text = " ".join(train_parser().format_help().split())
    for snippet in ("(default: 20001)", "else 321,321)", "{logits,image}", "(default: 1.0,0.75,0.5)"):
        assert snippet in text, snippet


def test_flags_are_converted_by_the_fields_types():
    cfg = parse(["--data-dir", "d", "--data-list", "l", "--model-blocks", "1,2,1,1", "--model-width", "16",
                 "--msc-scales", "1,0.5", "--learning-rate", "1e-3", "--no-check-data"])  # fmt: skip
    assert (cfg.model_blocks, cfg.model_width, cfg.msc_scales) == ([1, 2, 1, 1], 16, [1.0, 0.5])
    assert cfg.learning_rate == 1e-3 and cfg.check_data is False


def test_a_flag_given_wins_over_the_config_file_even_at_its_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batch-size: 7\nrandom_mirror: true\nnum-steps: 9\ndata-dir: d\ndata-list: l\n")
    cfg = parse(["--config", str(path), "--batch-size", "10", "--no-random-mirror"])  # 10 is the default
    assert (cfg.batch_size, cfg.random_mirror, cfg.num_steps) == (10, False, 9)
    assert parse(["--config", str(path)]).batch_size == 7


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("random-mirror", "no", "random-mirror must be true or false, got 'no'"),
        ("batch-size", "7", "batch-size must be an integer, got '7'"),
        ("batch-size", 7.0, "batch-size must be an integer, got 7.0"),
        ("num-steps", True, "num-steps must be an integer, got True"),
        ("learning-rate", "1e-3", "learning-rate must be a number, got '1e-3' (YAML reads 1e-3 as text"),
        ("model-width", 0, "model-width must be at least 1, got 0"),
        ("save-pred-every", 0, "save-pred-every must be at least 1, got 0"),
        ("log-every", 0, "log-every must be at least 1, got 0"),
        ("random-seed", -1, "random-seed must be at least 0, got -1"),
        ("num-workers", -2, "num-workers must be at least 0, got -2"),
        ("optimizer", "rmsprop", "optimizer must be one of sgd, adam, got 'rmsprop'"),
        ("msc-scales", [1.0, 0], "msc-scales must be greater than 0, got 0"),
        ("model-blocks", 3, "model-blocks must be a non-empty list of integers, got 3"),
        ("input-size", "321", "input-size must be 'HEIGHT,WIDTH', got '321'"),
        ("batch-size", None, "batch-size must be set"),
    ],
)
def test_bad_config_values_are_one_line_naming_the_key(tmp_path, capsys, key, value, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data-dir": "d", "data-list": "l", key: value}))
    err = one_line_error(["--config", str(path)], capsys)
    assert err.startswith(f"{path}: {message}"), err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--batch-size", "x", "--batch-size must be an integer, got 'x'"),
        ("--model-width", "0", "--model-width must be at least 1, got 0"),
        ("--save-pred-every", "0", "--save-pred-every must be at least 1, got 0"),
        ("--log-every", "0", "--log-every must be at least 1, got 0"),
        ("--random-seed", "-5", "--random-seed must be at least 0, got -5"),
        ("--num-workers", "-1", "--num-workers must be at least 0, got -1"),
        ("--loss-resolution", "pixels", "--loss-resolution must be one of logits, image, got 'pixels'"),
        ("--msc-scales", "1,a", "--msc-scales must be a number, got '1,a'"),
        ("--device", "tpu", "--device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ],
)
def test_bad_flags_are_one_line_naming_the_flag(capsys, flag, value, message):
    assert one_line_error(["--data-dir", "d", "--data-list", "l", flag, value], capsys) == message


def test_unknown_and_unreadable_config_files(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"batch-sise": 7}))
    assert "unknown setting 'batch-sise'" in one_line_error(["--config", str(path)], capsys)
    path.write_text("[1, 2]")
    assert "must be a mapping" in one_line_error(["--config", str(path)], capsys)
    assert "--config: file not found" in one_line_error(["--config", str(tmp_path / "none.yaml")], capsys)


def test_config_file_values_are_checked_like_flags(tmp_path):
    path = Path(tmp_path / "c.yaml")
    path.write_text("random-mirror: no\nlearning-rate: 1.0e-3\nmsc-scales: [1, 0.5]\nconvention: null\n")
    values = load_config_file(path)  # YAML's bare no is a boolean; integers are numbers
    assert values == {"random_mirror": False, "learning_rate": 1e-3, "msc_scales": [1.0, 0.5], "convention": None}
    with pytest.raises(DeepLabError, match=r"^--save-pred-every must be at least 1, got 0$"):
        TrainConfig(save_pred_every=0)  # and so are values set in Python
