"""Deterministic synthetic segmentation workloads for the benchmarks.

``make_workload(n)`` places ``n`` segments on a square image of side
``max(256, ceil(sqrt(n) * 60))`` pixels (1 000 000 segments: 60 000 px, which
version 0 can still address), with a fixed seed:

* 60 % blobs: filled ellipses, 6..48 px;
* 20 % scattered multi-island masks: 2..5 small ellipses in a 20..64 px box
  (several 8-connected components, so several regions);
* 15 % thin shapes: 1-2 px wide lines, 16..96 px long, horizontal, vertical
  or diagonal;
* 5 % speckle: 8..24 px boxes of random dots (many tiny components).

Addresses are unique (``obj-<i>``); domains are four names, one of them empty;
groups are ``train`` / ``val`` / ``test`` (70 / 20 / 10 %), and one tiny group
``tiny`` of 10 entries spread over the file.

Workloads are cached as ``.npz`` (bboxes, kinds, domain and group codes, the
masks as concatenated packbits) so that every benchmark subprocess loads the
same data quickly; :func:`load_workload` gives back ``Workload`` objects.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

SEED = 20240611
DOMAINS = [b"coco", b"wordnet", b"openimages", b""]
GROUPS = ["train", "val", "test", "tiny"]
KINDS = ["blob", "islands", "thin", "speckle"]
TINY = 10


def image_side(n: int) -> int:
    return max(256, int(math.ceil(math.sqrt(n) * 60)))


def _ellipse(h: int, w: int) -> np.ndarray:
    r = (np.arange(h) + 0.5 - h / 2) / (h / 2)
    c = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    return (r[:, None] ** 2 + c[None, :] ** 2) <= 1.0


def _shape(kind: int, rng: np.random.Generator) -> np.ndarray:
    if kind == 0:  # blob
        h, w = (int(v) for v in rng.integers(6, 49, 2))
        return _ellipse(h, w)
    if kind == 1:  # islands
        h, w = (int(v) for v in rng.integers(20, 65, 2))
        m = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(2, 6))):
            eh, ew = (int(v) for v in rng.integers(3, 12, 2))
            r0, c0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            m[r0 : r0 + eh, c0 : c0 + ew] |= _ellipse(eh, ew)
        return m
    if kind == 2:  # thin line
        length = int(rng.integers(16, 97))
        width = int(rng.integers(1, 3))
        orient = int(rng.integers(0, 3))
        if orient == 0:
            return np.ones((width, length), bool)
        if orient == 1:
            return np.ones((length, width), bool)
        m = np.zeros((length, length + width - 1), bool)
        idx = np.arange(length)
        for k in range(width):
            m[idx, idx + k] = True
        return m
    h, w = (int(v) for v in rng.integers(8, 25, 2))  # speckle
    m = rng.random((h, w)) < 0.15
    m[h // 2, w // 2] = True
    return m


@dataclass
class Workload:
    n: int
    side: int
    bboxes: np.ndarray  # (n, 4) int64: minr, minc, maxr, maxc
    kinds: np.ndarray  # (n,) uint8
    domains: np.ndarray  # (n,) uint8 index into DOMAINS
    groups: np.ndarray  # (n,) uint8 index into GROUPS
    packed: np.ndarray  # concatenated np.packbits of each mask (row-major)
    offsets: np.ndarray  # (n + 1,) int64 into packed

    def address(self, i: int) -> bytes:
        return b"obj-%d" % i

    def domain(self, i: int) -> bytes:
        return DOMAINS[int(self.domains[i])]

    def group(self, i: int) -> str:
        return GROUPS[int(self.groups[i])]

    def mask(self, i: int) -> np.ndarray:
        minr, minc, maxr, maxc = (int(v) for v in self.bboxes[i])
        h, w = maxr - minr, maxc - minc
        bits = np.unpackbits(self.packed[self.offsets[i] : self.offsets[i + 1]], count=h * w)
        return bits.reshape(h, w).view(bool)

    def masks(self) -> list[np.ndarray]:
        return [self.mask(i) for i in range(self.n)]

    def entries(self):
        """``(address, domain, bbox, mask, group)`` of every entry."""
        for i in range(self.n):
            yield self.address(i), self.domain(i), tuple(int(v) for v in self.bboxes[i]), self.mask(i), self.group(i)

    @property
    def mask_pixels(self) -> int:
        b = self.bboxes
        return int(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum())


def make_workload(n: int, seed: int = SEED) -> Workload:
    rng = np.random.default_rng(seed + n)
    side = image_side(n)
    kinds = rng.choice(4, size=n, p=[0.60, 0.20, 0.15, 0.05]).astype(np.uint8)
    domains = rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1]).astype(np.uint8)
    groups = rng.choice(3, size=n, p=[0.7, 0.2, 0.1]).astype(np.uint8)
    groups[np.linspace(0, n - 1, min(TINY, n)).astype(np.int64)] = 3
    bboxes = np.zeros((n, 4), np.int64)
    chunks = []
    offsets = np.zeros(n + 1, np.int64)
    pos = 0
    for i in range(n):
        m = _shape(int(kinds[i]), rng)
        h, w = m.shape
        r = int(rng.integers(0, side - h + 1))
        c = int(rng.integers(0, side - w + 1))
        bboxes[i] = (r, c, r + h, c + w)
        p = np.packbits(m.reshape(-1))
        chunks.append(p)
        pos += p.size
        offsets[i + 1] = pos
    packed = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return Workload(n, side, bboxes, kinds, domains, groups, packed, offsets)


def save_workload(w: Workload, path: str) -> None:
    np.savez(path, n=w.n, side=w.side, bboxes=w.bboxes, kinds=w.kinds, domains=w.domains, groups=w.groups,
             packed=w.packed, offsets=w.offsets)


def load_workload(path: str) -> Workload:
    with np.load(path) as z:
        return Workload(int(z["n"]), int(z["side"]), z["bboxes"], z["kinds"], z["domains"], z["groups"],
                        z["packed"], z["offsets"])


def cached_workload(n: int, folder: str) -> tuple[Workload, str]:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"workload-{n}.npz")
    if os.path.exists(path):
        return load_workload(path), path
    w = make_workload(n)
    save_workload(w, path)
    return w, path


def query_params(w: Workload, seed: int = SEED) -> dict:
    """Deterministic query arguments for a workload: 50 keys, 20 addresses
    (18 present, 2 absent), 100 points (90 on mask pixels, 10 random),
    20 boxes of 100 x 100 px, and an area range holding ~10 % of entries."""
    rng = np.random.default_rng(seed)
    n = w.n
    keys = sorted(int(k) for k in rng.choice(n, size=min(50, n), replace=False))
    present = rng.choice(n, size=min(18, n), replace=False)
    addresses = [w.address(int(i)).decode() for i in present] + ["absent-1", "absent-2"]
    points = []
    for i in rng.choice(n, size=min(90, n), replace=True):
        m = w.mask(int(i))
        rr, cc = np.nonzero(m)
        j = int(rng.integers(0, rr.size))
        points.append((int(w.bboxes[i, 1] + cc[j]), int(w.bboxes[i, 0] + rr[j])))  # (x, y)
    for _ in range(100 - len(points)):
        points.append((int(rng.integers(0, w.side)), int(rng.integers(0, w.side))))
    boxes = []
    for _ in range(20):
        r, c = (int(v) for v in rng.integers(0, max(1, w.side - 100), 2))
        boxes.append((r, c, r + 100, c + 100))
    # Areas: popcount of each mask.
    table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)
    per_byte = table[w.packed]
    areas = np.add.reduceat(per_byte, w.offsets[:-1]) if n else np.zeros(0)
    lo, hi = (int(v) for v in np.quantile(areas, [0.45, 0.55]))
    return {"keys": keys, "addresses": addresses, "points": points, "boxes": boxes, "area": [lo, hi]}


def save_params(params: dict, path: str) -> None:
    with open(path, "w") as fh:
        json.dump(params, fh)
