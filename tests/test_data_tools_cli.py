"""``deeplab data``: every subcommand has its own help; no subcommand prints the overview."""

from __future__ import annotations

import pytest

from deeplab_resnet.cli import main


@pytest.mark.parametrize(
    "sub, flag",
    [
        ("prepare-voc", "--sbd"),
        ("convert-masks", "--unknown-to-ignore"),
        ("check", "--data-list"),
        ("stats", "--update"),
        ("describe", "--output"),
    ],
)
def test_each_subcommand_has_help(sub: str, flag: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", sub, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: deeplab data {sub}") and flag in out


def test_bare_data_command_lists_subcommands(capsys) -> None:
    assert main(["data"]) == 2
    out = capsys.readouterr().out
    assert all(s in out for s in ("prepare-voc", "convert-masks", "check", "stats", "describe"))


def test_bad_input_is_one_line_error(tmp_path, capsys) -> None:
    assert main(["data", "check", "--data-dir", str(tmp_path), "--data-list", str(tmp_path / "no.txt")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"deeplab data: error: list file not found: {tmp_path / 'no.txt'}"
