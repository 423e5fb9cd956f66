"""bench/gpu_throughput.py is run on a lent GPU with minutes to spare: its dry run on the CPU keeps it working."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_throughput.py"


@pytest.mark.slow
def test_gpu_bench_dry_run_measures_both_sides_and_the_fit(capsys):
    spec = importlib.util.spec_from_file_location("gpu_throughput", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    line = bench.main(["--dry-run", "--steps", "2", "--fit-steps", "1"])
    fields = dict(kv.split("=", 1) for kv in line.split())
    assert fields["gpu"] == "cpu_(dry_run)"
    assert float(fields["smoke_128_ours_tps"]) > 0 and 0 < float(fields["smoke_128_mfu"]) < 1
    # both sides trained (a ratio exists); its size is a timing, which a loaded machine skews either way
    assert math.isfinite(float(fields["smoke_128_ratio"])) and float(fields["smoke_128_ratio"]) > 0
    assert float(fields["t4_fit_planned_gib"]) > 0 and math.isnan(float(fields["t4_fit_error"]))  # no GPU memory here
    assert capsys.readouterr().out.strip().endswith(line)
