"""Smoke run of the benchmark suite (``benchmarks/run.py --quick``).

Checks that the suite runs end to end and writes its reports; timings are
never asserted (they depend on the machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quick_benchmark_run(tmp_path):
    pytest.importorskip("iidfile")
    pytest.importorskip("pycocotools")
    pytest.importorskip("PIL")
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--quick", "--out", str(out), "--work", str(work)],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["sizes"]) == {"1000", "10000"}
    for res in results["sizes"].values():
        ops = res["ops"]
        for lib in ("iidschema-v0", "iidschema-v1", "iidschema-v2", "iidfile"):
            assert "median" in ops[lib]["add_save"], ops[lib]["add_save"]
            assert "median" in ops[lib]["fetch_all"], ops[lib]["fetch_all"]
        for lib in ("iidschema-v0", "iidschema-v1", "iidschema-v2"):
            assert ops[lib]["add_many_save"]["same_bytes_as_add_loop"] is True
            assert ops[lib]["masks_all"]["answer"] == res["n"]
            assert res["memory"][lib]["masks_all-rss"]["answer"] == res["n"]
        # The libraries (and the format versions) agree on what they found.
        assert ops["iidschema-v0"]["fetch_all"]["answer"] == ops["iidfile"]["fetch_all"]["answer"] == res["n"]
        assert ops["iidschema-v2"]["fetch_all"]["answer"] == res["n"]
        assert ops["iidschema-v0"]["look_for20"]["answer"] == ops["iidschema-v1"]["look_for20"]["answer"] == ops["iidfile"]["look_for20"]["answer"]
        for op in ("fetch_tiny", "fetch_keys50", "look_for20", "filter_area", "at100", "region20", "overlap_graph"):
            assert ops["iidschema-v2"][op]["answer"] == ops["iidschema-v1"][op]["answer"], op
        for lib in ("iidschema-v1", "iidschema-v2"):
            assert ops[lib]["fetch_tiny"]["bytes"]["query"] > 0
        assert res["sizes"]["iidschema-v1"] > 0 and res["sizes"]["png_per_entry"] > 0
        assert 0 < res["sizes"]["iidschema-v2"] < res["sizes"]["iidschema-v1"]
    md = (out / "results.md").read_text()
    assert "## N = 1 000 segments" in md and "## Targets" in md
    assert "| iidschema v2 |" in md and "v2 auto size ≤ 0.6x one PNG per entry" in md


def test_v2_size_study_runs_and_proves_random_access():
    # The layout study behind the format-version note in docs/PERFORMANCE.md:
    # it decodes sampled entries from their blocks alone (asserting they equal
    # the version-1 file's) before it prints.
    pytest.importorskip("PIL")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "v2_size_study.py"), "--n", "1500", "--samples", "60",
         "--block", "4096", "--lut-block", "256"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "60 sampled entries decoded from their blocks alone and equal to version 1's" in proc.stdout
    assert "candidate layout:" in proc.stdout
    assert "version 2 as written by IIDFile.save(version=2):" in proc.stdout
