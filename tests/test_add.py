"""add(): the entry owns its mask, regions are split lazily and exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from iidschema import IIDFile
from iidschema.masks import split_regions


def test_entry_does_not_change_when_the_caller_reuses_the_array(tmp_path):
    m = np.zeros((4, 5), bool)
    m[1:3, 1:4] = True
    f = IIDFile()
    e = f.add(b"a", b"", (10, 10, 14, 15), m)
    m[:] = True  # the caller reuses their buffer
    assert e.seg.area == 6
    assert e.seg.mask().sum() == 6
    out = e.seg.mask()
    out[:] = False  # and the returned mask is a copy
    assert e.seg.mask().sum() == 6
    for version in (0, 1):
        f.save(tmp_path / f"a{version}.iid", version=version)
        with IIDFile(tmp_path / f"a{version}.iid") as g:
            assert g[0].seg.area == 6 and g[0].seg.mask().sum() == 6


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(0, 12), st.integers(0, 12))), st.integers(0, 100), st.integers(0, 100))
def test_lazy_regions_are_the_8_connected_components(mask, r, c):
    f = IIDFile()
    e = f.add(b"x", b"", (r, c, r + mask.shape[0], c + mask.shape[1]), mask)
    assert e.seg.area == int(mask.sum())
    expected = split_regions(mask, (r, c))
    got = e.seg.regions()
    assert [reg.bbox for reg in got] == [b for b, _ in expected]
    for reg, (_, m) in zip(got, expected):
        np.testing.assert_array_equal(reg.mask, m)
    np.testing.assert_array_equal(e.seg.mask(), mask)
