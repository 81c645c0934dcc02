"""``deeplab data stats``: the exact mean colour of the images, in the description's B, G, R order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deeplab_resnet.cli import main
from deeplab_resnet.data.tools.stats import colour_stats
from deeplab_resnet.images import read_image


def test_mean_and_std_match_numpy_over_all_pixels(voc_fixture: Path) -> None:
    lines = (voc_fixture / "list_val.txt").read_text().splitlines()
    paths = [Path(str(voc_fixture) + line.split()[0]) for line in lines]
    pixels = np.concatenate([read_image(p).reshape(-1, 3) for p in paths]).astype(np.int64)  # images differ in size
    stats = colour_stats(paths, workers=1, progress=False)
    assert stats.images == len(paths) and stats.pixels == pixels.shape[0]
    exact_rgb = pixels.sum(axis=0) / pixels.shape[0]  # int64 sums: exact, then one division
    assert stats.mean_bgr == tuple(exact_rgb[::-1].tolist())
    np.testing.assert_allclose(stats.mean_bgr, pixels.astype(np.float64).mean(axis=0)[::-1], rtol=1e-12)
    np.testing.assert_allclose(stats.std_bgr, pixels.astype(np.float64).std(axis=0)[::-1], rtol=1e-9)
    assert colour_stats(paths, workers=2, progress=False) == stats  # independent of the grouping


def test_cli_prints_and_updates_a_description(voc_fixture: Path, tmp_path: Path, capsys) -> None:
    desc = tmp_path / "mine.json"
    assert main(["data", "describe", "camvid", "-o", str(desc)]) == 0
    args = ["data", "stats", "--data-dir", str(voc_fixture), "--data-list", str(voc_fixture / "list_val.txt")]
    assert main(args + ["--workers", "1", "--quiet", "--update", str(desc)]) == 0
    out = capsys.readouterr().out
    stats = colour_stats(
        [Path(str(voc_fixture) + line.split()[0]) for line in (voc_fixture / "list_val.txt").read_text().splitlines()],
        workers=1,
        progress=False,
    )
    expected = [round(v, 8) for v in stats.mean_bgr]
    assert f'"mean_bgr": [{expected[0]}, {expected[1]}, {expected[2]}]' in out
    saved = json.loads(desc.read_text())
    assert saved["mean_bgr"] == expected and saved["name"] == "camvid" and saved["ignore_label"] == 11


def test_stats_needs_a_source(capsys) -> None:
    assert main(["data", "stats"]) == 2
    assert "give --data-dir and --data-list, or --images FOLDER" in capsys.readouterr().err
