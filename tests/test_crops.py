"""crops.crop_runs: tight bboxes, cropped runs and the one-component test of
many packed masks at once, against the one-mask functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iidschema import crops
from iidschema.codecs.packbits import pack, pack_masks
from iidschema.codecs.rle import rle_encode, runs_of, runs_of_packed
from iidschema.masks import single_component_of_runs, tight_bbox
from iidschema.strategies import masks


def _check(ms: list[np.ndarray], single: bool = True) -> None:
    pm = pack_masks(ms)
    got = crops.crop_runs(pm, single=single)
    assert len(got) == len(ms)
    for i, m in enumerate(ms):
        box = tight_bbox(m, (0, 0))
        if box is None:
            assert got.tight[i].tolist() == [-1, -1, -1, -1]
            assert got.offsets[i + 1] == got.offsets[i]
            continue
        assert tuple(got.tight[i].tolist()) == box
        crop = m[box[0] : box[2], box[1] : box[3]]
        assert got.runs[got.offsets[i] : got.offsets[i + 1]].tolist() == runs_of(crop).tolist()
    if single:
        runs, offsets = runs_of_packed(pm)
        assert got.single.tolist() == single_component_of_runs(runs, offsets, pm.widths).tolist()
    nonempty = np.flatnonzero(got.nonempty)
    if nonempty.size:
        rebuilt = got.packed(nonempty)
        rle = got.rle_payloads(nonempty)
        for j, i in enumerate(nonempty.tolist()):
            r0, c0, r1, c1 = got.tight[i].tolist()
            crop = np.ascontiguousarray(ms[i][r0:r1, c0:c1])
            assert rebuilt.payload(j) == pack(crop)
            assert rle[j] == rle_encode(crop)
            assert got.rle_sizes()[i] == len(rle[j])
    assert (got.rle_sizes()[~got.nonempty] == 0).all()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(ms=st.lists(masks(max_side=14), max_size=12))
def test_crop_runs_agrees_with_the_one_mask_functions(ms: list[np.ndarray]) -> None:
    _check(ms)


@pytest.mark.parametrize("chunk", [1, 8, 1 << 16])
def test_crop_runs_across_chunks(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(crops, "CHUNK_BYTES", chunk)
    rng = np.random.default_rng(11)
    ms = []
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(0, 40, 2))
        kind = int(rng.integers(0, 5))
        m = np.zeros((h, w), bool)
        if kind == 0:
            m = rng.random((h, w)) < 0.1
        elif kind == 1 and h and w:
            m[h // 3 : max(h // 3 + 1, 2 * h // 3), w // 4 : max(w // 4 + 1, w // 2)] = True
        elif kind == 2:
            m[:] = True
        elif kind == 3 and h and w:
            m[-1, -1] = True
            m[0, 0] = True
        ms.append(m)
    ms += [np.ones((3, 200), bool), np.ones((200, 1), bool), np.zeros((5, 0), bool), np.eye(130, dtype=bool)]
    long_rows = np.zeros((300, 300), bool)
    long_rows[0, 0] = long_rows[299, 299] = True  # runs longer than 16383
    ms.append(long_rows)
    _check(ms)

