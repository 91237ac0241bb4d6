"""components.components: the 8-connected components of many masks from their
runs, against split_regions (scipy.ndimage.label) mask by mask."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iidschema.codecs.packbits import pack, pack_masks
from iidschema.components import components
from iidschema.crops import crop_runs
from iidschema.masks import split_regions
from iidschema.strategies import masks


def _check(ms: list[np.ndarray]) -> None:
    pm = pack_masks(ms)
    first, last, offsets = crop_runs(pm, true_runs=True).true
    got = components(first, last, offsets, pm.heights, pm.widths)
    assert got.counts.tolist() == [len(split_regions(m, (0, 0))) for m in ms]
    at = 0
    for m in ms:
        for box, comp in split_regions(m, (0, 0)):
            assert tuple(got.boxes[at].tolist()) == box
            assert got.packed.payload(at) == pack(comp)
            at += 1
    assert at == got.boxes.shape[0]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(ms=st.lists(masks(max_side=14), max_size=10))
def test_components_agree_with_split_regions(ms: list[np.ndarray]) -> None:
    _check(ms)


def test_components_of_awkward_masks() -> None:
    rng = np.random.default_rng(8)
    ms = [rng.random((int(h), int(w))) < p for (h, w), p in zip(rng.integers(1, 40, (200, 2)), rng.choice([0.05, 0.3, 0.5, 0.7], 200))]
    u = np.zeros((9, 9), bool)
    u[:, 0] = u[:, 8] = u[8, :] = True  # one component reached through its bottom row
    spiral = np.zeros((15, 15), bool)
    spiral[0, :] = spiral[:, 14] = spiral[14, :] = spiral[2:, 0] = spiral[2, :13] = spiral[2:13, 12] = True
    diagonal = np.eye(12, dtype=bool) | np.eye(12, k=3, dtype=bool)  # touching only at corners
    checker = (np.indices((10, 11)).sum(axis=0) % 2).astype(bool)
    ms += [u, spiral, diagonal, checker, np.ones((1, 300), bool), np.ones((300, 1), bool), np.zeros((0, 4), bool),
           np.zeros((3, 3), bool), np.ones((40, 40), bool)]
    _check(ms)


@pytest.mark.parametrize("max_runs", [1, 7, 50])
def test_components_in_groups_of_masks(max_runs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Masks taken a group at a time (as for large batches of noisy masks):
    the same components, boxes and payloads."""
    import iidschema.components as comps

    monkeypatch.setattr(comps, "MAX_RUNS", max_runs)
    rng = np.random.default_rng(9)
    ms = [rng.random((int(h), int(w))) < 0.4 for h, w in rng.integers(1, 25, (60, 2))]
    ms += [np.zeros((3, 3), bool), np.zeros((0, 5), bool), np.ones((4, 4), bool)]
    _check(ms)
