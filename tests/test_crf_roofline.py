"""``benchmarks/crf_roofline.py`` on the CPU: the C implementation on a tiny batch, end to end."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import torch
from conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location("crf_roofline", REPO / "benchmarks" / "crf_roofline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_batch_is_a_valid_crf_input():
    images, probs = _script().synthetic_batch(2, 12, 16, 4)
    assert images.shape == (2, 12, 16, 3) and images.dtype == torch.uint8
    assert probs.shape == (2, 4, 12, 16)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 12, 16))
    assert len(np.unique(probs.argmax(dim=1).numpy())) > 1  # several regions, so the CRF has work


def test_c_implementation_smoke(tmp_path, capsys):
    out = tmp_path / "crf.json"
    argv = ["--impl", "c", "--batch", "2", "--size", "20x14", "--labels", "3", "--iters", "3", "--repeats", "2"]
    assert _script().main([*argv, "--warmup", "1", "--device", "cpu", "--agreement", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["name"] for r in results] == ["c x1", "c x3"]
    assert all(len(r["times_s"]) == 2 and r["items"] == 2 for r in results)
    extra = results[-1]["extra"]
    # the C kernel against itself: the comparison must find perfect agreement
    assert extra["min_label_agreement"] == 1.0 and extra["max_abs_dq"] == 0.0
    assert 0 < extra["bilateral_m_per_p"] and 0 < extra["position_m_per_p"]
    assert "per_iter_ms" in extra and "c x3" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [out]  # no temp file left


def test_triton_refused_on_cpu_without_the_interpreter(monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert _script().main(["--impl", "triton", "--device", "cpu", "--size", "8x8", "--batch", "1"]) == 2
    assert "needs CUDA" in capsys.readouterr().out
