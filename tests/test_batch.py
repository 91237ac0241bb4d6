"""Batch work on Dask (iidschema.batch): every scheduler gives the results
of a plain sequential loop, and a failing file is recorded, never fatal."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest

import iidschema
from iidschema import IIDFile
from iidschema.batch import BatchError, add_batch_arguments, batch_options, file_summary, map_files, run_batch

N_FILES = 300


def _masks_total(path: str) -> int:
    """Decode every mask of a file (version 1 checks every CRC on the way)."""
    with iidschema.open(path) as f:
        return sum(int(e.seg.mask().sum()) for e in f.fetch(everything=True))


def _corrupt(path: str, how: int, rng: np.random.Generator) -> None:
    data = bytearray(open(path, "rb").read())
    if how == 0:
        data = data[: len(data) // 2]  # truncated
    elif how == 1:
        data = bytearray(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())  # not an .iid file
    elif how == 2:
        data = bytearray()  # empty
    else:
        data[-3] ^= 0xFF  # a flipped bit in the last segment (v1: checksum error; v0: silent)
    with open(path, "wb") as fh:
        fh.write(data)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(11)
    paths, bad = [], set()
    for i in range(N_FILES):
        f = IIDFile()
        for k in range(int(rng.integers(1, 6))):
            h, w = (int(v) for v in rng.integers(2, 12, 2))
            r, c = (int(v) for v in rng.integers(0, 200, 2))
            f.add(b"a%d" % k, b"d", (r, c, r + h, c + w), rng.random((h, w)) < 0.6, group="g" if k % 2 else None)
        path = str(root / f"f{i:04d}.iid")
        f.save(path, version=i % 2)
        if i % 23 == 5:
            _corrupt(path, len(bad) % 4, rng)
            bad.add(path)
    paths.append(str(root / "missing.iid"))  # does not exist
    bad.add(paths[-1])
    return [str(root / f"f{i:04d}.iid") for i in range(N_FILES)] + paths, bad


def _check_same(a, b):
    assert [r.item for r in a] == [r.item for r in b]
    assert [r.ok for r in a] == [r.ok for r in b]
    assert a.values == b.values
    assert a.errors == b.errors


def test_sync_collects_per_file_errors(files):
    paths, bad = files
    result = map_files(file_summary, paths, progress=False)
    assert len(result) == len(paths)
    failed = {r.item for r in result.failures}
    assert failed <= bad and len(failed) >= len(bad) - 4  # silent v0 bit flips may read fine
    assert paths[-1] in failed and "FileNotFoundError" in result.errors[paths[-1]]
    good = result.values[paths[0]]
    assert good["entries"] >= 1 and good["version"] == 0
    for r in result.failures:
        assert r.error_type and r.traceback
    assert "failed" in result.summary()
    with pytest.raises(BatchError, match="items failed"):
        result.raise_if_failed()
    assert result.to_dict()["failed"] == len(failed)


def test_local_cluster_matches_sequential(files):
    """3 worker processes (1 thread each) give exactly the sequential results."""
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    paths, bad = files
    expected = map_files(_masks_total, paths, progress=False)
    expected_summary = map_files(file_summary, paths, progress=False)
    assert {r.item for r in expected.failures} <= bad
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        got = map_files(_masks_total, paths, scheduler=client, progress=False, partition_size=16)
        got_summary = map_files(file_summary, paths, scheduler=cluster.scheduler_address, progress=False)
        # A lambda travels too (cloudpickle), and non-path items work through run_batch.
        pairs = run_batch(lambda t: t[0] * t[1], [(i, i + 1) for i in range(50)] + [("x", "y")], scheduler=client, progress=False)
    _check_same(got, expected)
    _check_same(got_summary, expected_summary)
    assert got.workers == 3
    assert pairs.values == {(i, i + 1): i * (i + 1) for i in range(50)}
    assert "TypeError" in pairs.errors[("x", "y")]


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_local_dask_schedulers_match_sequential(files, scheduler):
    pytest.importorskip("dask.bag")
    paths, _ = files
    subset = paths[:60] + paths[-1:]
    expected = map_files(file_summary, subset, progress=False)
    got = map_files(file_summary, subset, scheduler=scheduler, workers=2, progress=False)
    _check_same(got, expected)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_progress_bar_counts_every_file(files, monkeypatch, scheduler):
    pytest.importorskip("dask.bag")
    import iidschema.batch as batch

    bars = []
    real = batch._bar

    def spy(total, progress, desc):
        bar = real(total, progress, desc)
        bars.append(bar)
        return bar

    monkeypatch.setattr(batch, "_bar", spy)
    paths, _ = files
    result = map_files(os.path.getsize, paths[:40], scheduler=scheduler, workers=2, progress=True, partition_size=7)
    assert result.ok
    assert [(b.total, b.n) for b in bars] == [(40, 40)]


def test_empty_and_bad_arguments():
    assert len(map_files(file_summary, [], progress=False)) == 0
    assert len(map_files(file_summary, [], scheduler="threads", progress=False)) == 0
    with pytest.raises(ValueError, match="workers"):
        map_files(file_summary, ["x"], workers=0)


def test_add_batch_arguments():
    parser = argparse.ArgumentParser()
    add_batch_arguments(parser)
    args = parser.parse_args(["--scheduler", "processes", "--workers", "3"])
    assert batch_options(args) == {"scheduler": "processes", "workers": 3}
    assert batch_options(parser.parse_args([])) == {"scheduler": "sync", "workers": None}
    with pytest.raises(SystemExit):
        parser.parse_args(["--workers", "0"])


@pytest.mark.slow
def test_distributed_scheduler_by_name_and_killed_worker(files):
    """``scheduler="distributed"`` starts its own cluster; a task that kills
    its worker process marks the items of its partition failed."""
    pytest.importorskip("distributed")
    paths, _ = files
    got = map_files(file_summary, paths, scheduler="distributed", workers=2, progress=False)
    _check_same(got, map_files(file_summary, paths, progress=False))

    def die_on_7(i):
        if i == 7:
            os._exit(1)
        return i

    result = run_batch(die_on_7, range(20), scheduler="distributed", workers=2, progress=False, partition_size=5)
    # Items 5..9 share the killing task.  A task queued on the same worker
    # when it died may be blamed too (distributed counts it as a suspect):
    # such items fail with KilledWorker, never with a wrong value.
    assert set(range(5, 10)) <= set(result.errors)
    assert all(v == i for i, v in result.values.items())
    assert all("KilledWorker" in e for e in result.errors.values())
    assert len(result) == 20
