"""Crash-safe writes: a writer killed (SIGKILL) at any moment during save()
over an existing file leaves either the complete old file or the complete
new one, never a mix."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import iidschema

CHILD = r"""
import sys
import numpy as np
import iidschema

rng = np.random.default_rng(0)
f = iidschema.IIDFile()
for i in range(int(sys.argv[2])):
    m = rng.random((24, 24)) < 0.5
    r, c = (i % 500) * 30, (i // 500) * 30
    f.add(b"a%d" % i, b"d", (r, c, r + 24, c + 24), m, group="g%d" % (i % 3))
f.meta.data = {"run": "new"}
print("ready", flush=True)
f.save(sys.argv[1], version=int(sys.argv[3]))
print("done", flush=True)
"""

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _child(target, n: int, version: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(n), str(version)],
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("version", [1, 0])
def test_killed_writer_leaves_old_or_new_file(tmp_path, version):
    n = 3000
    # The new content, written once to completion (the writer is deterministic).
    reference = tmp_path / "reference.iid"
    child = _child(reference, n, version)
    assert child.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    assert child.stdout.readline().strip() == "done"
    save_seconds = time.perf_counter() - t0
    assert child.wait(timeout=60) == 0
    new_sha = _sha(reference)

    target = tmp_path / "target.iid"
    old = iidschema.IIDFile()
    old.add(b"old", b"", (0, 0, 1, 1), [[1]])
    old.meta.data = {"run": "old"}
    rng = random.Random(7)
    outcomes = {"old": 0, "new": 0}
    deadline = time.monotonic() + 40
    kills = 0
    while kills < 25 and time.monotonic() < deadline:
        old.save(target, version=version)
        old_sha = _sha(target)
        child = _child(target, n, version)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0, save_seconds * 1.2))
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=60)
            child.stdout.close()
        kills += 1
        sha = _sha(target)
        assert sha in (old_sha, new_sha), "the target is neither the old nor the new file"
        outcomes["old" if sha == old_sha else "new"] += 1
        with iidschema.open(target) as f:  # and it opens and reads completely
            f.fetch(everything=True)
            assert f.meta.data["run"] == ("old" if sha == old_sha else "new")
    assert kills >= 10
    # Leftover temporary files are allowed (a killed process cannot clean up),
    # but they are never the target and never named like it.
    assert all(p.name.startswith(".target.iid.") for p in tmp_path.iterdir() if p.name not in ("target.iid", "reference.iid"))
    print(outcomes)
