"""The demo: an embedded synthetic segmentation, saved, reopened lazily, queried.

The "sample" is generated from a fixed seed, so it needs no data file and is
the same on every machine: a 480 x 640 scene with a sky, a ground, trees made
of a trunk and a crown, scattered leaves (one multi-island segment) and
stones, labelled in two domains and three groups.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import TextIO

import numpy as np

from .iidfile import IIDFile
from .masks import split_regions

__all__ = ["build_sample", "run_demo"]

HEIGHT, WIDTH = 480, 640


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def build_sample(seed: int = 7) -> IIDFile:
    """The demo segmentation as an in-memory :class:`IIDFile`."""
    rng = np.random.default_rng(seed)
    f = IIDFile()
    f.meta.data = {"image": {"height": HEIGHT, "width": WIDTH}, "source": "iidschema demo (synthetic)", "seed": seed}
    sky = np.zeros((200, WIDTH), bool)
    sky[:, :] = True
    f.add(b"sky", b"wordnet", (0, 0, 200, WIDTH), sky, group="background")
    f.add(b"ground", b"wordnet", (300, 0, HEIGHT, WIDTH), np.ones((HEIGHT - 300, WIDTH), bool), group="background")
    leaves = np.zeros((HEIGHT, WIDTH), bool)
    for i in range(5):
        cx = 70 + i * 120
        top = 120 + int(rng.integers(0, 40))
        trunk = np.ones((330 - top - 40, 16), bool)
        f.add(f"trunk-{i}".encode(), b"demo", (top + 40, cx - 8, 330, cx + 8), trunk, group=["objects", "trees"])
        r = int(rng.integers(35, 55))
        crown = _disk(2 * r, 2 * r, r - 0.5, r - 0.5, r)
        f.add(f"crown-{i}".encode(), b"demo", (top + 40 - 2 * r + 10, cx - r, top + 50, cx + r), crown, group=["objects", "trees"])
        for _ in range(12):
            ly, lx = int(rng.integers(max(0, top - 60), top + 60)), int(rng.integers(max(0, cx - 90), min(WIDTH - 4, cx + 90)))
            leaves[ly : ly + 3, lx : lx + 4] = True
    ys, xs = np.nonzero(leaves)
    f.add(b"leaves", b"demo", (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1),
          leaves[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], group="objects")
    for i in range(20):
        r = int(rng.integers(3, 9))
        cy, cx = int(rng.integers(320, HEIGHT - r)), int(rng.integers(r, WIDTH - r))
        f.add(f"stone-{i}".encode(), b"demo", (cy - r, cx - r, cy + r, cx + r), _disk(2 * r, 2 * r, r - 0.5, r - 0.5, r), group="objects")
    f.groups.add("landmark", [2])  # one tiny group
    return f


def _versions(f: IIDFile, path: str) -> str:
    """Save ``f`` as every format version beside ``path``; check that each
    reads back to the same masks; describe their sizes."""
    from .schema import SUPPORTED_VERSIONS

    want = f.masks()
    parts = []
    for version in SUPPORTED_VERSIONS:
        other = f"{path}.v{version}"
        with IIDFile(path) as copy:  # saving re-points a file at its new path: not ``f``
            copy.save(other, version=version)
        with IIDFile(other) as g:
            got = g.masks()
            if not all(np.array_equal(a, b) for a, b in zip(want, got)) or len(got) != len(want):
                raise AssertionError(f"version {version} did not read back the same masks")  # pragma: no cover
        parts.append(f"v{version} {os.path.getsize(other)} bytes")
        os.unlink(other)
    return ", ".join(parts) + " (every mask read back identical)"


def run_demo(path: str | None = None, out: TextIO | None = None) -> int:
    """Build, save, reopen lazily, query, print a summary.  Returns 0."""
    import sys

    out = out or sys.stdout
    tmpdir = None
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="iidschema-demo-")
        path = os.path.join(tmpdir, "demo.iid")
    sample = build_sample()
    t0 = time.perf_counter()
    sample.save(path)
    t_save = time.perf_counter() - t0
    size = os.path.getsize(path)
    print(f"built {len(sample)} entries in {len(sample.groups)} groups; saved {size} bytes to {path} ({t_save * 1e3:.1f} ms)", file=out)

    t0 = time.perf_counter()
    with IIDFile(path) as f:
        t_open = time.perf_counter() - t0
        print(f"reopened lazily in {t_open * 1e3:.2f} ms: {f!r}", file=out)
        print(f"  groups: {f.groups.list()}  meta: {f.meta.data}", file=out)
        landmark = f.fetch(groups=["landmark"])
        print(f"  fetch(groups=['landmark']) -> {[e.iid.address.decode() for e in landmark]}", file=out)
        hits = f.at(70, 200)
        print(f"  at(x=70, y=200) -> {[e.iid.address.decode() for e in hits]}", file=out)
        reg = f.region((0, 0, 100, 200))
        print(f"  region((0, 0, 100, 200)) -> {[e.iid.address.decode() for e in reg]}", file=out)
        found = f.look_for([b"crown-3", b"stone-0", b"missing"])
        print(f"  look_for([crown-3, stone-0, missing]) -> {[(e.key, e.iid.address.decode()) for e in found]}", file=out)
        big = f.filter(groups=["objects"], area=(4000, None))
        print(f"  filter(objects, area >= 4000) -> {[(e.iid.address.decode(), e.seg.area) for e in big]}", file=out)
        nodes, edges = f.overlap_graph()
        print(f"  overlap_graph: {len(nodes)} nodes, {len(edges)} edges, e.g. "
              + ", ".join(f"{a.iid.address.decode()}~{b.iid.address.decode()}:{px}px" for a, b, px in edges[:3]), file=out)
        leaves = f.look_for(b"leaves", segs=True)[0]
        islands = len(split_regions(leaves.seg.mask(), (0, 0)))
        print(f"  'leaves' is one segment of {islands} islands ({len(leaves.seg.regions())} region(s) on disk), "
              f"{leaves.seg.area} px", file=out)
        print("  the same entries in every format version: " + _versions(f, path), file=out)
    if tmpdir is not None:
        os.unlink(path)
        os.rmdir(tmpdir)
    print("demo ok", file=out)
    return 0
