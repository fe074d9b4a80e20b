"""The side-by-side benchmark script runs, and what it reports is consistent (not how fast anything is)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vs_authors", ROOT / "benchmarks" / "bench_vs_authors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_count_flops_counts_a_convolution_forward_and_backward(bench):
    x = torch.rand(2, 3, 10, 10, requires_grad=True)
    w = torch.rand(8, 3, 3, 3, requires_grad=True)

    def step() -> None:
        F.conv2d(x, w).sum().backward()

    forward = 2 * 2 * 8 * 8 * 8 * 3 * 3 * 3  # 2 FLOPs per multiply-add: batch, out-channels, 8x8 outputs, 3x3x3 taps
    assert bench.count_flops(step) == 3 * forward  # backward: the input's and the weight's gradient


def test_the_benchmark_reports_throughput_and_flops_per_contestant(bench, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--batch-size", "4", "--sizes", "32", "--precision", "fp32", "--rounds", "2", "--warmup", "1"]
    assert bench.main([*argv, "--threads", "1", "--json", str(out)]) == 0
    size = json.loads(out.read_text())["sizes"]["32"]
    assert size["reference"] is None and size["ratios_to_authors"] == {}  # no --authors-code: ours alone
    assert set(size["summary"]) == {"ours:paper:fp32", "ours:authors_code:fp32"}
    for name, s in size["summary"].items():
        assert s["steps"] == 2 and len(size["step_times_s"][name]) == 2
        assert s["median_img_s"] == pytest.approx(4 / s["median_step_s"])
        assert s["best_img_s"] >= s["median_img_s"]
        assert s["gflop_per_step"] > 0
        assert s["median_gflop_s"] == pytest.approx(s["gflop_per_step"] / s["median_step_s"])
    # the paper preset's ResNet18 and the authors_code preset's ResNet50 are different networks: different work
    flops = {n: s["gflop_per_step"] for n, s in size["summary"].items()}
    assert flops["ours:paper:fp32"] != flops["ours:authors_code:fp32"]


def test_the_benchmark_refuses_a_folder_that_is_not_the_authors_code(bench, tmp_path):
    with pytest.raises(SystemExit, match="not a checkout of the authors' repository"):
        bench.main(["--authors-code", str(tmp_path), "--batch-size", "2", "--rounds", "1", "--warmup", "1"])
