""".iid -> format -> .iid for every built-in format, property-based with the
public strategies (iidschema.strategies.iid_files): identical IIDs, bboxes,
masks, groups and metadata wherever the format holds them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iidschema
from iidschema import strategies as iids
from iidschema.formats import config as fconfig
from iidschema.formats import read, write

pytest.importorskip("pycocotools")
pytest.importorskip("PIL")
pytest.importorskip("medmask")

IMAGE = (24, 30)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch):
    monkeypatch.setenv(fconfig.ENV_VAR, "")


def files(**kw):
    return iids.iid_files(version=1, max_entries=6, max_side=12, image_shape=IMAGE, **kw)


def without_overlaps(f: iidschema.IIDFile) -> iidschema.IIDFile:
    """The entries of ``f`` that overlap no earlier kept entry (groups remapped)."""
    g = iidschema.IIDFile()
    taken = np.zeros(IMAGE, bool)
    new_key = {}
    for e in f:
        minr, minc, maxr, maxc = e.seg.bbox
        m = e.seg.mask()
        if (taken[minr:maxr, minc:maxc] & m).any():
            continue
        taken[minr:maxr, minc:maxc] |= m
        new_key[e.key] = len(g)
        g.add(e.iid.address, e.iid.domain, e.seg.bbox, m)
    for name in f.groups:
        g.groups.add(name, [new_key[k] for k in f.groups.keys(name).tolist() if k in new_key])
    g.meta.data = f.meta.data
    return g


def assert_same(f: iidschema.IIDFile, g: iidschema.IIDFile, groups: bool = True, meta: bool = True) -> None:
    assert len(g) == len(f)
    for a, b in zip(f, g):
        assert (b.iid.address, b.iid.domain) == (a.iid.address, a.iid.domain)
        assert tuple(b.seg.bbox) == a.seg.bbox
        assert np.array_equal(b.seg.mask(), a.seg.mask()), (a.key, a.seg.mask(), b.seg.mask())
    if groups:
        assert {n: f.groups.keys(n).tolist() for n in f.groups} == {n: g.groups.keys(n).tolist() for n in g.groups}
    if meta:
        assert g.meta.data == f.meta.data


def roundtrip(f, scratch, name, **options):
    path = scratch.path(name)
    write(f, path, **options)
    out = read(path)
    return out


@SETTINGS
@given(files())
def test_iid(scratch, f):
    assert_same(f, roundtrip(f, scratch, "f.iid"))


@SETTINGS
@given(st.lists(files(), min_size=1, max_size=3))
def test_coco(scratch, fs):
    path = scratch.path("d.json")
    write(fs, path)
    back = read(path)
    assert len(back) == len(fs)
    for f, g in zip(fs, back):
        assert_same(f, g)


@SETTINGS
@given(files())
def test_png_labels(scratch, f):
    f = without_overlaps(f)
    assert_same(f, roundtrip(f, scratch, "l.png"))


@SETTINGS
@given(files())
def test_png_masks_keeps_overlaps(scratch, f):
    assert_same(f, roundtrip(f, scratch, "m.masks"))


@SETTINGS
@given(files())
def test_medmask_file(scratch, f):
    f = without_overlaps(f)
    assert_same(f, roundtrip(f, scratch, "f.msk"))


@SETTINGS
@given(files(), st.sampled_from(["layers", "entry"]))
def test_medmask_archive_keeps_overlaps(scratch, f, layout):
    assert_same(f, roundtrip(f, scratch, "f.mska", layout=layout))


@SETTINGS
@given(files())
def test_label_formats_without_sidecar_keep_masks_and_names(scratch, f):
    """Without the sidecar a label map holds what it holds: the non-empty
    masks (at their tight bbox), and for medmask the IIDs as names."""
    f = without_overlaps(f)
    for name, fmt in (("l.png", "png-labels"), ("f.msk", "medmask")):
        path = scratch.path(name)
        write(f, path, sidecar=False)
        g = read(path)
        want = [e for e in f if e.seg.mask().any()]
        got = [e for e in g if e.seg.mask().any()]
        assert len(got) == len(want)
        for a, b in zip(sorted(want, key=lambda e: e.key), got):
            minr, minc, maxr, maxc = b.seg.bbox
            full_a = np.zeros(IMAGE, bool)
            full_b = np.zeros(IMAGE, bool)
            full_a[a.seg.bbox[0] : a.seg.bbox[2], a.seg.bbox[1] : a.seg.bbox[3]] = a.seg.mask()
            full_b[minr:maxr, minc:maxc] = b.seg.mask()
            assert np.array_equal(full_a, full_b)
            if fmt == "medmask":
                assert (b.iid.address, b.iid.domain) == (a.iid.address, a.iid.domain)
            else:
                assert b.iid.address == str(a.key + 1).encode()
