"""The public API: the reference README's examples run unchanged, queries
agree with brute force over the decoded masks, saving never loses data, and
``add()`` rejects bad input at the call that is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import iidschema
from iidschema import IIDFile, IIDLimitError

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def _disk(r: int) -> np.ndarray:
    yy, xx = np.ogrid[: 2 * r, : 2 * r]
    return (yy - r + 0.5) ** 2 + (xx - r + 0.5) ** 2 <= r * r


# --------------------------------------------------------------------------
# The README, unchanged
# --------------------------------------------------------------------------

@pytest.fixture(params=[None, 0], ids=["default-version", "v0"])
def example(request, tmp_path, monkeypatch):
    """``example.iid`` as the README builds it, plus groups 'sys' and 'rep'
    and enough entries for ``keys=range(50)``; saved in the default version
    (as the README does) and as version 0."""
    monkeypatch.chdir(tmp_path)
    from iidschema import IIDFile

    numpy_buffer_1 = _disk(40)  # 5024 px, covers (row 600, col 400)
    numpy_buffer_2 = np.ones((10, 20), dtype=bool)
    numpy_buffer_3 = np.zeros((30, 5), dtype=bool)
    numpy_buffer_3[::2] = True
    xy_1, xy_2, xy_3 = (370, 570), (395, 595), (0, 0)

    iidfile = IIDFile()  # Creates empty iidfile

    data = [
        (b"tree", numpy_buffer_1, xy_1),
        (b"leaf", numpy_buffer_2, xy_2),
        (b"root", numpy_buffer_3, xy_3),
    ]

    for iid, mask, xy in data:

        # Format bbox to minr, minc, maxr, maxc
        x, y, w, h = *xy, mask.shape[1], mask.shape[0]
        bbox = (y, x, y + h, x + w)

        iidfile.add(address=iid, domain=b"example", bbox=bbox, mask=mask)

    # Not in the README: groups and more entries for its other examples.
    iidfile.groups.add("rep", [0, 1])
    for i in range(60):
        mask = np.ones((2, 3), dtype=bool)
        bbox = (i * 3, 100, i * 3 + 2, 103)
        iidfile.add(address=b"n%d" % i, domain=b"bar", bbox=bbox, mask=mask, group="sys" if i % 10 == 0 else None)
    iidfile.meta.data = {"image": {"height": 1000, "width": 1000}}

    if request.param is None:
        iidfile.save(fpath="example.iid")
    else:
        iidfile.save(fpath="example.iid", version=request.param)
    return tmp_path / "example.iid"


def test_readme_quick_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("path")
    from iidschema import IIDFile

    shape = (4, 5)
    minr, minc, maxr, maxc = 10, 20, 14, 25
    mask = np.ones(shape, dtype=np.bool)
    bbox = (minr, minc, maxr, maxc)

    # Create iidfile
    iidfile = IIDFile()
    iidfile.add(address=b"foo", domain=b"bar", bbox=bbox, mask=mask)
    iidfile.save("path/file.iid")

    # Load iidfile
    iidfile = IIDFile(fpath="path/file.iid")
    entries = iidfile.fetch(everything=True)

    assert len(entries) == 1
    # Get the first entry
    entry = iidfile.fetch(everything=True)[0]

    # Attributes
    key = entry.key
    address = entry.iid.address
    domain = entry.iid.domain
    mask = entry.seg.mask()
    bbox = entry.seg.bbox
    assert (key, address, domain, bbox) == (0, b"foo", b"bar", (10, 20, 14, 25))
    assert mask.shape == shape and mask.all()

    # Groups
    iidfile = IIDFile()
    iidfile.add(address=b"foo", domain=b"bar", bbox=bbox, mask=mask, group="sys")
    iidfile.save("path/file.iid")
    iidfile = IIDFile(fpath="path/file.iid")
    entries = iidfile.fetch(groups=["sys"])
    assert [e.key for e in entries] == [0]

    metadata = iidfile.meta.data
    assert metadata == {}


def test_readme_fetch_examples(example, monkeypatch):
    monkeypatch.chdir(example.parent)

    # Load everything
    iidfile = IIDFile(fpath="example.iid")
    entries = iidfile.fetch(everything=True)
    assert [e.key for e in entries] == list(range(63))
    assert all(e.iid_loaded and e.seg_loaded for e in entries)

    # Only load entries in group 'sys', and only load their iids,
    # this will not load their segments.
    iidfile = IIDFile(fpath="example.iid")
    entries = iidfile.fetch(groups=["sys"], iids=True)
    assert [e.key for e in entries] == [3 + i for i in range(0, 60, 10)]

    # Load all entries and only load their segments,
    # this will not load their iids.
    iidfile = IIDFile(fpath="example.iid")
    entries = iidfile.fetch(all_keys=True, segs=True)
    assert len(entries) == 63 and all(e.seg_loaded for e in entries)

    # Only load the first 50 entries.
    iidfile = IIDFile(fpath="example.iid")
    entries = iidfile.fetch(keys=range(50), iids=True)
    assert [e.key for e in entries] == list(range(50))
    assert entries[0].iid.address == b"tree" and entries[49].iid.address == b"n46"


def test_readme_query_examples(example, monkeypatch):
    monkeypatch.chdir(example.parent)

    # Finds all segments intersecting at x:400, y:600.
    iidfile = IIDFile(fpath="example.iid")
    entries = iidfile.at(400, 600)
    assert [e.iid.address for e in entries] == [b"tree", b"leaf"]

    # Only fetch entries in the group 'sys', do not load their
    # iids and find which intersects with the bounding box.
    # (The README writes ``group=``; iidfile 0.2.0's keyword is ``groups``.)
    bbox = (0, 0, 100, 200)
    iidfile = IIDFile(fpath="example.iid")
    iidfile.fetch(groups=["sys"], iids=False)
    entries = iidfile.region(bbox, only_loaded=True)
    assert [e.key for e in entries] == [3, 13, 23, 33]  # rows 0, 30, 60, 90 (not "root": not loaded)

    # Check if iid addressess exists in file.
    iidfile = IIDFile(fpath="example.iid")
    entries = iidfile.look_for(addresses=[b"tree", b"leaf"])
    assert [(e.key, e.iid.address) for e in entries] == [(0, b"tree"), (1, b"leaf")]

    # Filter entries in file, this return entries in the group
    # 'rep' with a segment area of 4000 and greater.
    iidfile = IIDFile(fpath="example.iid")
    iidfile.fetch(everything=True)
    entries = iidfile.filter(groups=["rep"], area=(4000, None))
    assert [e.key for e in entries] == [0]

    # Computes an overlap graph from loaded segments
    nodes, edges = iidfile.compute_overlap()
    assert len(nodes) == 63
    assert [(a.key, b.key, n) for a, b, n in edges] == [(0, 1, int((_disk(40)[25:35, 25:45]).sum()))]
    assert iidfile.overlap_graph()[1][0][2] == edges[0][2]

    assert iidfile.meta.data == {"image": {"height": 1000, "width": 1000}}
    assert iidfile.groups.list() == ["rep", "sys"]
    e = iidfile.fetch(keys=[0])[0]
    assert e.seg.area == int(_disk(40).sum()) and e.seg.bbox == (570, 370, 650, 450)
    assert [r.bbox for r in e.seg.regions()] == [(570, 370, 650, 450)]
    assert e.seg.regions()[0].mask.shape == (80, 80)


def test_fetch_readme_keyword_group_is_not_silently_ignored(example):
    # The README's ``fetch(group=[...])`` raised TypeError in iidfile 0.2.0.
    # Whatever iidschema does with it, it must not silently ignore it.
    f = IIDFile(example)
    try:
        got = f.fetch(group=["sys"], iids=False)
    except TypeError:
        return
    assert [e.key for e in got] == [3 + i for i in range(0, 60, 10)]


# --------------------------------------------------------------------------
# Queries against brute force
# --------------------------------------------------------------------------

CANVAS = 32


@st.composite
def scenes(draw):
    n = draw(st.integers(0, 8))
    out = []
    for _ in range(n):
        h, w = draw(st.integers(0, 12)), draw(st.integers(0, 12))
        m = draw(hnp.arrays(np.bool_, (h, w))) if draw(st.booleans()) else np.ones((h, w), bool)
        r, c = draw(st.integers(0, CANVAS - h)), draw(st.integers(0, CANVAS - w))
        out.append(((r, c, r + h, c + w), m, draw(st.sampled_from([None, "a", "b", ["a", "b"]]))))
    return out


def _canvas(bbox, mask) -> np.ndarray:
    full = np.zeros((CANVAS + 2, CANVAS + 2), bool)
    r, c, r2, c2 = bbox
    full[r:r2, c:c2] = mask
    return full


ON_DISK = st.sampled_from([None, 0, 1])  # in memory, or saved as that version and reopened


def _scene_file(scene, on_disk, scratch) -> IIDFile:
    f = IIDFile()
    for i, (bbox, m, g) in enumerate(scene):
        f.add(b"e%d" % i, b"" if i % 2 else b"d", bbox, m, group=g)
    if on_disk is not None:
        p = scratch.path()
        f.save(p, version=on_disk)
        f.close()
        f = IIDFile(p)
        assert f.version == on_disk
    return f


@SETTINGS
@given(scene=scenes(), on_disk=ON_DISK, queries=st.lists(st.tuples(st.integers(-2, CANVAS + 1), st.integers(-2, CANVAS + 1)), max_size=25))
def test_at_is_exactly_the_pixel(scene, on_disk, queries, scratch):
    canv = [_canvas(b, m) for b, m, _ in scene]
    # Also query every set pixel of every mask.
    pts = list(queries) + [(int(x), int(y)) for c in canv for y, x in zip(*np.nonzero(c))][:60]
    f = _scene_file(scene, on_disk, scratch)
    for x, y in pts:
        want = [k for k, c in enumerate(canv) if 0 <= y < c.shape[0] and 0 <= x < c.shape[1] and c[y, x]]
        assert [e.key for e in f.at(x, y)] == want, (x, y)
    f.close()


@SETTINGS
@given(
    scene=scenes(),
    on_disk=ON_DISK,
    boxes=st.lists(
        st.tuples(st.integers(-2, CANVAS), st.integers(-2, CANVAS), st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=15
    ),
)
def test_region_is_any_pixel_in_the_box(scene, on_disk, boxes, scratch):
    canv = [_canvas(b, m) for b, m, _ in scene]
    f = _scene_file(scene, on_disk, scratch)
    for r, c, h, w in boxes:
        box = (r, c, r + h, c + w)
        r0, c0 = max(r, 0), max(c, 0)
        want = [k for k, cv in enumerate(canv) if cv[r0 : max(r0, r + h), c0 : max(c0, c + w)].any()]
        assert [e.key for e in f.region(box)] == want, box
    f.close()


@SETTINGS
@given(scene=scenes(), on_disk=ON_DISK, lo=st.none() | st.integers(0, 40), hi=st.none() | st.integers(0, 40), group=st.none() | st.sampled_from(["a", "b"]))
def test_filter_area_is_inclusive(scene, on_disk, lo, hi, group, scratch):
    f = _scene_file(scene, on_disk, scratch)
    members = {
        k for k, (_, _, g) in enumerate(scene) if group is None or (g == group or (isinstance(g, list) and group in g))
    }
    if group is not None and not members:
        with pytest.raises(KeyError):
            f.filter(groups=group, area=(lo, hi))
        return
    want = [
        k
        for k, (_, m, _) in enumerate(scene)
        if k in members and (lo is None or m.sum() >= lo) and (hi is None or m.sum() <= hi)
    ]
    got = f.filter(groups=group, area=(lo, hi))
    assert [e.key for e in got] == want
    assert [e.key for e in f.filter(groups=group)] == sorted(members)
    f.close()


@SETTINGS
@given(scene=scenes(), on_disk=ON_DISK)
def test_overlap_graph_is_brute_force(scene, on_disk, scratch):
    canv = [_canvas(b, m) for b, m, _ in scene]
    want = []
    for i in range(len(canv)):
        for j in range(i + 1, len(canv)):
            n = int((canv[i] & canv[j]).sum())
            if n:
                want.append((i, j, n))
    f = _scene_file(scene, on_disk, scratch)
    nodes, edges = f.overlap_graph()
    assert [e.key for e in nodes] == list(range(len(scene)))
    assert [(a.key, b.key, n) for a, b, n in edges] == want
    f.close()


@SETTINGS
@given(scene=scenes(), keys=st.lists(st.integers(0, 7), max_size=10))
def test_results_in_key_order(scene, keys, scratch):
    f = _scene_file(scene, 0, scratch)
    keys = [k for k in keys if k < len(scene)]
    assert [e.key for e in f.fetch(keys=keys)] == sorted(set(keys))
    assert [e.key for e in f.look_for([b"e%d" % k for k in reversed(keys)])] == sorted(set(keys))
    if "a" in f.groups and "b" in f.groups:
        got = [e.key for e in f.fetch(groups=["b", "a"])]
        assert got == sorted(set(f.groups.keys("a").tolist()) | set(f.groups.keys("b").tolist()))
    f.close()


def test_mask_crop_matches_iidfile(reference):
    """``seg.mask(bbox)`` crops in image coordinates, as in iidfile 0.2.0."""
    m = np.random.default_rng(1).random((9, 11)) < 0.5
    ours = IIDFile()
    ours.add(b"a", b"", (5, 7, 14, 18), m)
    seg = ours.fetch(keys=[0])[0].seg
    ref = reference.impl.Segment(key=0, bbox=(5, 7, 14, 18))
    with reference.writer():
        ref.from_mask(m, (5, 7, 14, 18))
    for box in [(5, 7, 14, 18), (0, 0, 10, 10), (8, 9, 12, 30), (6, 8, 7, 9), (0, 0, 100, 100)]:
        np.testing.assert_array_equal(seg.mask(box), ref.mask(box))
    assert seg.bbox_xywh() == ref.bbox_xywh() and seg.bbox_polygon() == ref.bbox_polygon()
    assert seg.bbox_xywh(center=True) == ref.bbox_xywh(center=True)


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------

def _snapshot(path) -> tuple:
    with IIDFile(path) as f:
        es = [(e.key, e.iid.address, e.iid.domain, e.seg.bbox, e.seg.area, e.seg.mask().tobytes()) for e in f.fetch(everything=True)]
        return es, {g: f.groups.keys(g).tolist() for g in f.groups.list()}, f.meta.data


@pytest.mark.parametrize("touch", ["one-key", "nothing", "one-iid", "groups-only"])
def test_lazy_file_saved_over_its_own_path_keeps_everything(example, touch):
    before = _snapshot(example)
    f = IIDFile(example)
    if touch == "one-key":
        f.fetch(keys=[1])
    elif touch == "one-iid":
        f.fetch(keys=[2], iids=True, segs=False)
    elif touch == "groups-only":
        f.groups.list()
    f.save()
    assert _snapshot(example) == before
    # The object is usable afterwards, and points at the new file.
    assert [e.key for e in f.fetch(groups="rep")] == [0, 1]
    assert f.at(400, 600)[0].iid.address == b"tree"
    f.close()


def test_lazy_file_with_new_entries_saved_over_its_own_path(example):
    es, groups, meta = _snapshot(example)
    f = IIDFile(example)
    f.fetch(keys=[5])
    e = f.add(b"new", b"x", (2, 2, 4, 4), np.ones((2, 2), bool), group=["sys", "fresh"])
    assert e.key == 63 and len(f) == 64
    assert [x.key for x in f.at(3, 3)] == [63]
    assert [x.key for x in f.look_for(b"new")] == [63]
    f.meta.data = {"changed": True}
    f.save()
    f.close()
    es2, groups2, meta2 = _snapshot(example)
    assert es2[:63] == es and es2[63][:5] == (63, b"new", b"x", (2, 2, 4, 4), 4)
    assert groups2 == {**groups, "sys": groups["sys"] + [63], "fresh": [63]}
    assert meta2 == {"changed": True}


def _dir_listing(path: Path) -> list[str]:
    return sorted(os.listdir(path.parent))


@pytest.mark.parametrize("target", ["own-path", "other-file"])
def test_failed_save_non_json_meta_leaves_target_untouched(example, tmp_path, target):
    other = tmp_path / "other.iid"
    other.write_bytes(b"old content")
    path = example if target == "own-path" else other
    old = path.read_bytes()
    listing = _dir_listing(path)
    f = IIDFile(example)
    f.fetch(keys=[0])
    f.meta.data = {"bad": b"bytes"}
    with pytest.raises((TypeError, ValueError)) as info:
        f.save(path)
    assert "JSON" in str(info.value) or "json" in str(info.value)
    assert path.read_bytes() == old
    assert _dir_listing(path) == listing
    # Still usable: fix the metadata and save.
    f.meta.data = {"ok": 1}
    f.save(path)
    assert _snapshot(path)[2] == {"ok": 1}
    f.close()


@pytest.mark.parametrize("target", ["own-path", "other-file", "new-file"])
def test_failed_save_bbox_over_v0_limit_leaves_target_untouched(example, tmp_path, target):
    other = tmp_path / "other.iid"
    other.write_bytes(b"old content")
    path = {"own-path": example, "other-file": other, "new-file": tmp_path / "new.iid"}[target]
    old = path.read_bytes() if path.exists() else None
    listing = _dir_listing(path)
    f = IIDFile(example)
    f.add(b"wide", b"", (0, 65530, 1, 65540), np.ones((1, 10), bool))  # add accepts up to 2**32 - 1
    with pytest.raises(IIDLimitError) as info:
        f.save(path, version=0)
    assert "65535" in str(info.value)
    assert (path.read_bytes() if path.exists() else None) == old
    assert _dir_listing(path) == listing
    f.close()


def test_add_accepts_coordinates_up_to_u32():
    f = IIDFile()
    f.add(b"a", b"", (2**32 - 2, 2**32 - 3, 2**32 - 1, 2**32 - 1), np.ones((1, 2), bool))
    with pytest.raises(IIDLimitError):
        f.add(b"a", b"", (2**32 - 1, 0, 2**32, 1), np.ones((1, 1), bool))


@pytest.mark.parametrize("version", [None, 0, 1, 2])
def test_empty_file_round_trip(tmp_path, version):
    p = tmp_path / "e.iid"
    IIDFile().save(p, version=version)
    if version == 0:
        assert p.stat().st_size == 56  # as iidfile 0.2.0
    with iidschema.open(p) as f:
        assert f.version == (iidschema.DEFAULT_VERSION if version is None else version)
        assert len(f) == 0 and f.fetch(everything=True) == [] and f.at(0, 0) == [] and f.overlap_graph() == ([], [])
        assert f.groups.list() == [] and f.meta.data == {}


# --------------------------------------------------------------------------
# add() validation and edge cases
# --------------------------------------------------------------------------

M = np.ones((2, 3), bool)


@pytest.mark.parametrize(
    "kwargs,exc,words",
    [
        ({"address": "tree"}, TypeError, ["bytes"]),
        ({"address": 5}, TypeError, ["bytes"]),
        ({"address": None}, TypeError, ["bytes"]),
        ({"domain": "wordnet"}, TypeError, ["bytes"]),
        ({"mask": np.ones((2, 3, 1), bool)}, ValueError, ["2-D"]),
        ({"mask": np.ones(6, bool)}, ValueError, ["2-D"]),
        ({"mask": np.ones((3, 2), bool)}, ValueError, ["shape"]),
        ({"bbox": (0, 0, 2, 4)}, ValueError, ["shape"]),
        ({"bbox": (-1, 0, 1, 3)}, ValueError, []),
        ({"bbox": (0, -3, 2, 0)}, ValueError, []),
        ({"bbox": (0, 0, 2)}, ValueError, ["4"]),
        ({"bbox": (2, 0, 0, 3), "mask": np.ones((0, 3), bool)}, ValueError, []),
        ({"bbox": (0.0, 0, 2, 3)}, TypeError, []),
        ({"group": 5}, TypeError, ["str"]),
        ({"group": ["ok", b"bytes"]}, TypeError, ["str"]),
        ({"mask": np.array([["a", "b", "c"], ["d", "e", "f"]])}, TypeError, []),
    ],
)
def test_add_rejects_bad_input(kwargs, exc, words):
    f = IIDFile()
    f.add(b"first", b"", (0, 0, 2, 3), M, group="g")
    args = {"address": b"a", "domain": b"d", "bbox": (0, 0, 2, 3), "mask": M, "group": None} | kwargs
    with pytest.raises(exc) as info:
        f.add(**args)
    for w in words:
        assert w in str(info.value), str(info.value)
    # Nothing was half-added.
    assert len(f) == 1 and f.groups.list() == ["g"] and f.groups.keys("g").tolist() == [0]


@pytest.mark.parametrize("version", [0, 1, 2])
def test_add_empty_group_name_creates_the_group(tmp_path, version):
    f = IIDFile()
    f.add(b"a", b"", (0, 0, 2, 3), M, group="")
    f.add(b"b", b"", (0, 0, 2, 3), M)
    assert f.groups.list() == [""] and f.groups.keys("").tolist() == [0]
    p = tmp_path / "g.iid"
    f.save(p, version=version)
    with IIDFile(p) as g:
        assert g.groups.list() == [""] and [e.key for e in g.fetch(groups="")] == [0]


@pytest.mark.parametrize("version", [0, 1, 2])
def test_empty_group_saves_and_reloads(tmp_path, reference, version):
    f = IIDFile()
    f.add(b"a", b"", (0, 0, 2, 3), M)
    f.groups.add("empty")
    f.groups.add("also-empty", [])
    p = tmp_path / "g.iid"
    f.save(p, version=version)
    with IIDFile(p) as g:
        assert g.groups.list() == ["also-empty", "empty"]
        assert g.groups.keys("empty").tolist() == [] and g.fetch(groups="empty") == []
    if version == 0:
        r = reference.IIDFile(str(p))  # and iidfile 0.2.0 reads it
        assert r.groups.list() == ["also-empty", "empty"]


@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.parametrize("shape,bbox", [((0, 4), (5, 5, 5, 9)), ((3, 0), (1, 2, 4, 2)), ((0, 0), (0, 0, 0, 0))])
def test_zero_size_mask(tmp_path, shape, bbox, version):
    f = IIDFile()
    e = f.add(b"z", b"", bbox, np.zeros(shape, bool), group="z")
    assert e.seg.area == 0 and e.seg.mask().shape == shape and e.seg.regions() == []
    p = tmp_path / "z.iid"
    f.save(p, version=version)
    with IIDFile(p) as g:
        (e,) = g.fetch(everything=True)
        assert e.seg.bbox == bbox and e.seg.area == 0 and e.seg.mask().shape == shape
        assert g.at(bbox[1], bbox[0]) == [] and g.region((0, 0, 100, 100)) == []
        assert [x.key for x in g.filter(area=(0, 0))] == [0]
        assert g.overlap_graph()[1] == []


def test_integer_mask_is_boolean():
    f = IIDFile()
    e = f.add(b"i", b"", (0, 0, 2, 2), np.array([[1, 2], [0, 1]], np.uint8))
    assert e.seg.area == 3 and e.seg.mask().dtype == bool and len(e.seg.regions()) == 1


# --------------------------------------------------------------------------
# Container protocol, open(), reprs, lookups
# --------------------------------------------------------------------------

def test_open_context_len_iteration_reprs(example):
    with iidschema.open(example) as f:
        assert isinstance(f, IIDFile)
        assert len(f) == 63
        assert [e.key for e in f] == list(range(63))
        assert f[2].iid.address == b"root"
        assert 62 in f and 63 not in f and -1 not in f
        with pytest.raises(KeyError):
            f[63]
        r = repr(f)
        assert "example.iid" in r and "63" in r
        e = f.fetch(keys=[0])[0]
        for text in (repr(e), repr(e.iid), repr(e.seg), repr(e.seg.regions()[0]), repr(f.groups), repr(f.meta)):
            assert isinstance(text, str) and text
        assert "tree" in repr(e.iid) and "570" in repr(e.seg)
    assert "in memory" in repr(IIDFile()) or "IIDFile" in repr(IIDFile())


def test_look_for_domains(example):
    f = IIDFile()
    f.add(b"x", b"", (0, 0, 1, 1), np.ones((1, 1), bool))
    f.add(b"x", b"d", (0, 0, 1, 1), np.ones((1, 1), bool))
    f.add(b"x", None, (0, 0, 1, 1), np.ones((1, 1), bool))
    f.add(b"y", b"", (0, 0, 1, 1), np.ones((1, 1), bool))
    for g in (f, _reopened(f, example.parent / "d0.iid", 0), _reopened(f, example.parent / "d1.iid", 1)):
        assert [e.key for e in g.look_for([b"x"], domains=[None])] == [0, 2]
        assert [e.key for e in g.look_for([b"x"], domains=[b""])] == [0, 2]
        assert [e.key for e in g.look_for([b"x"], domains=[b"d", None])] == [0, 1, 2]
        assert [e.key for e in g.look_for(b"x")] == [0, 1, 2]
        assert [e.key for e in g.look_for([b"x", b"y"], domains=b"")] == [0, 2, 3]
        assert g.fetch(keys=[2])[0].iid.domain == b""


def _reopened(f: IIDFile, path: Path, version: int) -> IIDFile:
    f.save(path, version=version)
    return IIDFile(path)


def test_unknown_group_names_known_groups(example):
    f = IIDFile(example)
    for call in (lambda: f.fetch(groups=["nope"]), lambda: f.filter(groups="nope"), lambda: f.groups.keys("nope"),
                 lambda: f.look_for([b"tree"], groups=["nope"])):
        with pytest.raises(KeyError) as info:
            call()
        msg = str(info.value)
        assert "nope" in msg and "rep" in msg and "sys" in msg
    f.close()


def test_fetch_accepts_keys_and_groups_together(example):
    with IIDFile(example) as f:
        assert [e.key for e in f.fetch(keys=[2, 0], groups="rep")] == [0, 1, 2]
        assert [e.key for e in f.fetch(keys=7)] == [7]
        with pytest.raises(KeyError):
            f.fetch(keys=[1000])


def test_groups_get(example):
    with IIDFile(example) as f:
        assert f.groups.get(["rep"], keys_only=True) == {0, 1}
        assert [e.key for e in f.groups.get("rep")] == [0, 1]


# --------------------------------------------------------------------------
# Saving: where and how the file lands
# --------------------------------------------------------------------------

def test_save_keeps_the_target_mode(example):
    os.chmod(example, 0o640)
    with IIDFile(example) as f:
        f.save()
        assert (example.stat().st_mode & 0o777) == 0o640
        new = example.parent / "new.iid"
        f.save(new)
    umask = os.umask(0)
    os.umask(umask)
    assert (new.stat().st_mode & 0o777) == 0o666 & ~umask  # like open(path, "wb")


def test_save_through_a_symlink_updates_its_target(example):
    """iidfile 0.2.0 writes through a symlink (``open(path, "w+b")``); an
    atomic replace must not turn the link into a regular file and leave the
    real file stale."""
    link = example.parent / "link.iid"
    link.symlink_to(example.name)
    f = IIDFile(link)
    f.add(b"new", b"", (0, 0, 1, 1), np.ones((1, 1), bool))
    f.save()
    f.close()
    assert link.is_symlink(), "save() replaced the symlink by a regular file"
    with IIDFile(example) as g:
        assert len(g) == 64, "the symlink's target was not updated"


def test_meta_edited_in_place_is_saved(example):
    with IIDFile(example) as f:
        f.meta.data["camera"] = {"f": 35}
        f.save()
    with IIDFile(example) as f:
        assert f.meta.data == {"image": {"height": 1000, "width": 1000}, "camera": {"f": 35}}


def test_group_keys_cannot_be_corrupted_through_the_returned_array(example):
    """``groups.keys()`` must not hand out the internal array writable:
    sorting or editing what it returns would silently change the groups
    (and what ``save()`` writes)."""
    with IIDFile(example) as f:
        keys = f.groups.keys("sys")
        before = keys.tolist()
        try:
            keys[0] = 62
            keys[::-1].sort()
        except ValueError:
            pass  # read-only: fine
        assert f.groups.keys("sys").tolist() == before
        assert [e.key for e in f.fetch(groups="sys")] == before


@SETTINGS
@given(
    scene=scenes(),
    on_disk=st.sampled_from([0, 1]),
    loaded=st.sets(st.integers(0, 7)),
    queries=st.lists(st.tuples(st.integers(0, CANVAS), st.integers(0, CANVAS)), max_size=10),
)
def test_only_loaded_queries_see_exactly_the_loaded_segments(scene, on_disk, loaded, queries, scratch):
    loaded = sorted(k for k in loaded if k < len(scene))
    canv = [_canvas(b, m) for b, m, _ in scene]
    f = _scene_file(scene, on_disk, scratch)
    f.fetch(keys=loaded, iids=False, segs=True)
    f.fetch(keys=[k for k in range(len(scene)) if k not in loaded], iids=True, segs=False)  # iids only: not "loaded"
    for x, y in queries:
        want = [k for k in loaded if canv[k][y, x]]
        assert [e.key for e in f.at(x, y, only_loaded=True)] == want
        box = (y, x, y + 3, x + 3)
        want = [k for k in loaded if canv[k][y : y + 3, x : x + 3].any()]
        assert [e.key for e in f.region(box, only_loaded=True)] == want
    nodes, edges = f.overlap_graph(everything=False)
    assert [e.key for e in nodes] == loaded
    want = [(i, j, int((canv[i] & canv[j]).sum())) for i in loaded for j in loaded if i < j and (canv[i] & canv[j]).any()]
    assert [(a.key, b.key, n) for a, b, n in edges] == want
    f.close()


@SETTINGS
@given(scene=scenes(), split=st.integers(0, 8), on_disk=st.sampled_from([0, 1]),
       queries=st.lists(st.tuples(st.integers(0, CANVAS), st.integers(0, CANVAS)), max_size=10))
def test_queries_mix_file_entries_and_new_ones(scene, split, on_disk, queries, scratch):
    """Entries read from a file and entries added afterwards answer together."""
    split = min(split, len(scene))
    canv = [_canvas(b, m) for b, m, _ in scene]
    f = _scene_file(scene[:split], on_disk, scratch)
    for i, (bbox, m, g) in enumerate(scene[split:], start=split):
        f.add(b"e%d" % i, b"" if i % 2 else b"d", bbox, m, group=g)
    assert len(f) == len(scene)
    for x, y in queries:
        assert [e.key for e in f.at(x, y)] == [k for k, c in enumerate(canv) if c[y, x]]
        assert [e.key for e in f.region((y, x, y + 4, x + 2))] == [k for k, c in enumerate(canv) if c[y : y + 4, x : x + 2].any()]
    assert [e.key for e in f.look_for([b"e%d" % k for k in range(len(scene))][::2])] == list(range(0, len(scene), 2))
    assert [e.key for e in f.look_for([b"e0", b"e1", b"e5"], domains=[b""])] == [k for k in (1, 5) if k < len(scene)]
    assert [e.key for e in f.filter(area=(1, None))] == [k for k, (_, m, _) in enumerate(scene) if m.sum() >= 1]
    for name in ("a", "b"):
        members = [k for k, (_, _, g) in enumerate(scene) if g == name or (isinstance(g, list) and name in g)]
        if members:
            assert [e.key for e in f.fetch(groups=name)] == members
    want = [(i, j, int((canv[i] & canv[j]).sum())) for i in range(len(scene)) for j in range(i + 1, len(scene))
            if (canv[i] & canv[j]).any()]
    assert [(a.key, b.key, n) for a, b, n in f.overlap_graph()[1]] == want
    # And all of it survives saving over the file it came from.
    if f.fpath:
        f.save()
        g = IIDFile(f.fpath)
        assert [(e.iid.address, e.seg.bbox, e.seg.mask().tobytes()) for e in g.fetch(everything=True)] == [
            (b"e%d" % k, b, m.tobytes()) for k, (b, m, _) in enumerate(scene)
        ]
        g.close()
    f.close()
