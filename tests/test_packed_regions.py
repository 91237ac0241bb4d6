"""The version-1 writer's packed path (_SegmentEncoder.packed_regions): the
same regions, codec ids and payloads as the mask-by-mask bulk path."""

from __future__ import annotations

import numpy as np
import pytest


def _segments(seed: int, count: int) -> list:
    from iidschema import IIDFile

    rng = np.random.default_rng(seed)
    f = IIDFile()
    for i in range(count):
        h, w = (int(v) for v in rng.integers(0, 60, 2))
        kind = i % 6
        m = np.zeros((h, w), bool)
        if kind == 0:
            m = rng.random((h, w)) < rng.choice([0.02, 0.2, 0.6])
        elif kind == 1 and h > 2 and w > 2:
            m[1:-1, 2:] = True  # cropped on three sides, one run per crop
        elif kind == 2:
            m[:] = True
        elif kind == 3 and h and w:
            rr, cc = np.ogrid[:h, :w]
            m = (rr - h / 2) ** 2 / max(h / 2, 1) ** 2 + (cc - w / 2) ** 2 / max(w / 2, 1) ** 2 <= 1
        elif kind == 4 and h and w:
            m[:, w // 2] = True
        r, c = (int(v) for v in rng.integers(0, 5000, 2))
        f.add(b"a%d" % i, b"d", (r, c, r + h, c + w), m)
    return [f[k].seg for k in range(len(f))]


@pytest.mark.parametrize("codec", ["auto", "packbits", "rle", "zstd"])
def test_packed_regions_equal_bulk_regions(monkeypatch: pytest.MonkeyPatch, codec: str) -> None:
    from iidschema import codecs, writer

    segs = _segments(21, 700)
    encoder = writer._SegmentEncoder(codec)
    want = encoder.bulk_regions(segs)  # crops cut and packed one by one
    for step, background in ((1 << 20, 10**9), (64, 16), (1, 1)):  # steps; zstd inline or in the background
        monkeypatch.setattr(writer, "_STEP", step)
        monkeypatch.setattr(codecs, "_BACKGROUND_MIN", background)
        boxes, ids, payloads = writer._bulk_regions_parallel(encoder, segs)
        assert ids.tolist() == want[1].tolist()
        assert payloads == want[2]
        has = ids >= 0
        assert boxes[has].tolist() == want[0][has].tolist()
