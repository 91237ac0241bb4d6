"""``save()`` over an existing file survives SIGKILL at any moment.

A forked writer saves a large file (tens of ms) over a small existing one and
is killed with SIGKILL after a random delay, many times.  Afterwards the
target must be byte for byte either the complete old file or the complete
new one (sha256), never a mix or a truncation, and it must open and read.
Killed writers leave their temporary file behind (nothing can remove it
after SIGKILL); it never replaces the target.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import iidschema

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs fork and SIGKILL")

KILLS_PER_VERSION = 15  # x 2 versions = 30 kills
TIME_BUDGET = 30.0  # seconds for the whole module


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _new_file(path: Path, version: int) -> None:
    rng = np.random.default_rng(7)
    f = iidschema.IIDFile()
    for k in range(1500):
        m = rng.random((48, 48)) < 0.5
        f.add(b"new%d" % k, b"d", (k % 200, k % 300, k % 200 + 48, k % 300 + 48), m, group="all")
    f.meta.data = {"which": "new"}
    f.save(path, version=version)
    f.close()


def _old_file(path: Path, version: int) -> None:
    f = iidschema.IIDFile()
    for k in range(3):
        f.add(b"old%d" % k, b"", (k, k, k + 2, k + 2), [[1, 0], [1, 1]])
    f.meta.data = {"which": "old"}
    f.save(path, version=version)
    f.close()


def _save_in_child(src: iidschema.IIDFile, target: Path, version: int) -> int:
    """Fork a writer; return its pid once it is about to call save()."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(r)
            os.write(w, b"go")
            os.close(w)
            src.save(target, version=version)
        except BaseException:
            code = 3
        os._exit(code)
    os.close(w)
    assert os.read(r, 2) == b"go"
    os.close(r)
    return pid


def _check_target(target: Path, old_sha: str, new_sha: str, n_new: int) -> str:
    data = target.read_bytes()
    sha = _sha(data)
    assert sha in (old_sha, new_sha), f"target is neither the old nor the new file ({len(data)} bytes)"
    with iidschema.IIDFile(target) as f:
        which = f.meta.data["which"]
        assert len(f) == (n_new if which == "new" else 3)
        for e in f.fetch([0, len(f) - 1]):
            e.seg.mask()
            e.iid.address
    return "new" if sha == new_sha else "old"


@pytest.mark.parametrize("version", [0, 1, 2])
def test_sigkill_during_save_leaves_old_or_new_file(tmp_path: Path, version: int) -> None:
    start = time.monotonic()
    ref = tmp_path / "ref.iid"
    _new_file(ref, version)
    new_bytes = ref.read_bytes()
    new_sha = _sha(new_bytes)
    old_path = tmp_path / "old-src.iid"
    _old_file(old_path, version)
    old_bytes = old_path.read_bytes()
    old_sha = _sha(old_bytes)
    assert old_sha != new_sha

    work = tmp_path / "work"
    work.mkdir()
    target = work / "target.iid"
    src = iidschema.IIDFile(ref)  # lazy: children save it entry by entry
    n_new = len(src)

    # how long an uninterrupted save takes (fork included)
    target.write_bytes(old_bytes)
    t0 = time.monotonic()
    pid = _save_in_child(src, target, version)
    _, status = os.waitpid(pid, 0)
    duration = time.monotonic() - t0
    assert os.waitstatus_to_exitcode(status) == 0
    assert target.read_bytes() == new_bytes
    assert duration > 0.01, f"save took {duration * 1000:.1f} ms; make the new file larger"

    rnd = random.Random(1234 + version)
    delays = [0.0, duration * 2] + [rnd.uniform(0, duration * 1.2) for _ in range(KILLS_PER_VERSION - 2)]
    outcomes: collections.Counter[str] = collections.Counter()
    killed = 0
    for delay in delays:
        target.write_bytes(old_bytes)
        pid = _save_in_child(src, target, version)
        time.sleep(delay)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - already reaped elsewhere
            pass
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            killed += 1
        else:
            assert os.waitstatus_to_exitcode(status) == 0
        outcomes[_check_target(target, old_sha, new_sha, n_new)] += 1
        assert time.monotonic() - start < TIME_BUDGET, "crash-safety test exceeded its time budget"
    src.close()
    print(f"version {version}: save {duration * 1000:.0f} ms, {killed} killed mid-save, outcomes {dict(outcomes)}")

    assert outcomes["old"] >= 1 and outcomes["new"] >= 1, outcomes
    assert killed >= KILLS_PER_VERSION // 2, f"only {killed} of {len(delays)} writers were killed mid-save"
    # nothing but the target and the temporary files of killed writers
    leftovers = [p.name for p in work.iterdir() if p != target]
    assert all(name.startswith(".target.iid.") and name.endswith(".tmp") for name in leftovers), leftovers
