"""Differential tests against iidfile 0.2.0, both directions.

Random files (addresses and domains incl. empty and long ones, bboxes
anywhere in 0..65535, boolean masks up to 40x40 incl. empty / full / noise /
multi-island, 0-3 overlapping groups, nested non-ASCII JSON metadata) are

* written by iidschema as version 0 and read by ``iidfile.IIDFile``;
* written by iidfile 0.2.0 and read by iidschema;
* written by both, and the bytes compared (exactly when iidfile's group key
  order is ascending, which it is for keys < 8; otherwise after sorting each
  group's keys).

Masks are boolean: iidfile splits touching pixels of *different* integer
values into separate regions, iidschema treats any non-zero as True.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from iidschema import IIDFile, schema

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

@st.composite
def masks(draw, min_side: int = 1, max_side: int = 40) -> np.ndarray:
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    kind = draw(st.sampled_from(["empty", "full", "noise", "islands", "drawn"]))
    if kind == "empty" or h * w == 0:
        return np.zeros((h, w), bool)
    if kind == "full":
        return np.ones((h, w), bool)
    if kind == "drawn":
        return draw(hnp.arrays(np.bool_, (h, w)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "noise":
        return rng.random((h, w)) < draw(st.sampled_from([0.05, 0.3, 0.5, 0.9]))
    m = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 6))):
        r, c = int(rng.integers(0, h)), int(rng.integers(0, w))
        m[r : r + int(rng.integers(1, 6)), c : c + int(rng.integers(1, 6))] = True
    return m


def _origin(side: int):
    top = 65535 - side
    return st.one_of(st.just(0), st.just(top), st.integers(0, top))


@st.composite
def entries(draw, min_side: int = 1) -> tuple[bytes, bytes, tuple[int, int, int, int], np.ndarray]:
    m = draw(masks(min_side=min_side))
    h, w = m.shape
    r, c = draw(_origin(h)), draw(_origin(w))
    address = draw(st.one_of(st.binary(max_size=10), st.binary(min_size=200, max_size=1500)))
    domain = draw(st.one_of(st.just(b""), st.binary(max_size=12), st.sampled_from([b"wordnet", b"\x00\xff"])))
    return address, domain, (r, c, r + h, c + w), m


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["ünïcødé", "日本語", "🙂 astral", "tab\tnl\n\"q\"\\"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
metas = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
group_names = st.lists(st.text(max_size=6) | st.sampled_from(["sys", "rep", "gröup"]), max_size=3, unique=True)


@st.composite
def files(draw, min_side: int = 1, max_entries: int = 12, nonempty_groups: bool = False):
    ents = draw(st.lists(entries(min_side=min_side), max_size=max_entries))
    n = len(ents)
    groups = {}
    for name in draw(group_names):
        keys = sorted(draw(st.sets(st.integers(0, n - 1), max_size=n))) if n else []
        if nonempty_groups and not keys:
            if not n:
                continue
            keys = [draw(st.integers(0, n - 1))]
        groups[name] = keys
    return ents, groups, draw(metas)


# --------------------------------------------------------------------------
# Writers and readers
# --------------------------------------------------------------------------

def build_ours(ents, groups, meta) -> IIDFile:
    """An in-memory IIDFile of ``ents`` (groups created first, in table order)."""
    f = IIDFile()
    for name in groups:
        f.groups.add(name)
    for address, domain, bbox, mask in ents:
        f.add(address, domain, bbox, mask)
    for name, keys in groups.items():
        f.groups.add(name, keys)
    f.meta.data = meta
    return f


def write_ours(path, ents, groups, meta) -> bytes:
    f = build_ours(ents, groups, meta)
    f.save(path, version=0)
    f.close()
    return path.read_bytes()


def write_reference(reference, path, ents, groups, meta) -> bytes:
    with reference.writer() as RefIIDFile:
        r = RefIIDFile()
        for address, domain, bbox, mask in ents:
            r.add(address=address, domain=domain, bbox=bbox, mask=mask)
        for name, keys in groups.items():
            r.groups.add(name=name, keys=keys)
        r.meta.data = meta
        r.save(str(path))
    return path.read_bytes()


def read_reference(reference, path):
    r = reference.IIDFile(str(path))
    got = sorted(r.fetch(everything=True), key=lambda e: e.key)
    out = [
        (e.key, bytes(e.iid.address), b"" if e.iid.domain is None else bytes(e.iid.domain), tuple(e.seg.bbox), e.seg.area, e.seg.mask())
        for e in got
    ]
    groups = {g: sorted(r.groups._entries[g].keys_set) for g in r.groups.list()}
    meta = r.meta.data
    r.mmap.close()
    r.file.close()
    return out, groups, meta


def read_ours(path):
    with IIDFile(path) as f:
        out = [(e.key, e.iid.address, e.iid.domain, e.seg.bbox, e.seg.area, e.seg.mask()) for e in f.fetch(everything=True)]
        groups = {g: f.groups.keys(g).tolist() for g in f.groups.list()}
        return out, groups, f.meta.data


def check_same(got, ents, groups, meta) -> None:
    out, got_groups, got_meta = got
    assert [row[0] for row in out] == list(range(len(ents)))
    for (key, address, domain, bbox, area, mask), (a, d, b, m) in zip(out, ents):
        assert address == a, key
        assert domain == d, key
        assert tuple(int(v) for v in bbox) == b, key
        assert type(area) is int and area == int(m.sum()), key
        assert mask.shape == m.shape and mask.dtype == bool, key
        np.testing.assert_array_equal(mask, m)
    assert got_groups == {g: sorted(k) for g, k in groups.items()}
    assert got_meta == meta


def normalise_groups(data: bytes) -> bytes:
    """Sort the keys of each group in place (iidfile writes set order)."""
    out = bytearray(data)
    head = schema.Header0.parse(data[: schema.HEADER0_SIZE])
    off = head.groups.offset
    (json_len,) = struct.unpack_from("<I", data, off)
    start = off + 4 + json_len
    for item in json.loads(data[off + 4 : start].decode("utf-8")):
        a = start + item["offset"]
        keys = np.frombuffer(data, dtype="<u4", count=item["length"] // 4, offset=a)
        out[a : a + item["length"]] = np.sort(keys).astype("<u4").tobytes()
    return bytes(out)


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

@SETTINGS
@given(spec=files(min_side=0))
def test_written_by_iidschema_read_by_iidfile(reference, scratch, spec):
    ents, groups, meta = spec
    path = scratch.path()
    write_ours(path, ents, groups, meta)
    check_same(read_reference(reference, path), ents, groups, meta)


@SETTINGS
@given(spec=files(nonempty_groups=True))
def test_written_by_iidfile_read_by_iidschema(reference, scratch, spec):
    # iidfile 0.2.0 cannot save an empty group nor add a zero-size mask.
    ents, groups, meta = spec
    path = scratch.path()
    write_reference(reference, path, ents, groups, meta)
    check_same(read_ours(path), ents, groups, meta)


@SETTINGS
@given(spec=files(nonempty_groups=True))
def test_same_bytes_as_iidfile_up_to_group_key_order(reference, scratch, spec):
    ents, groups, meta = spec
    ours = write_ours(scratch.path(), ents, groups, meta)
    theirs = write_reference(reference, scratch.path(), ents, groups, meta)
    assert ours == normalise_groups(theirs)


@SETTINGS
@given(spec=files(nonempty_groups=True, max_entries=8))
def test_same_bytes_as_iidfile_small_keys(reference, scratch, spec):
    # Keys < 8 never collide in a Python set, so iidfile writes them ascending.
    ents, groups, meta = spec
    ours = write_ours(scratch.path(), ents, groups, meta)
    theirs = write_reference(reference, scratch.path(), ents, groups, meta)
    assert ours == theirs


@SETTINGS
@given(ents=st.lists(entries(), max_size=12), meta=metas, single=st.booleans())
def test_same_bytes_no_groups_or_single_key_groups(reference, scratch, ents, meta, single):
    groups = {f"g{k}": [k] for k in range(len(ents))} if single else {}
    ours = write_ours(scratch.path(), ents, groups, meta)
    theirs = write_reference(reference, scratch.path(), ents, groups, meta)
    assert ours == theirs


def test_zero_size_mask_read_by_iidfile(reference, scratch):
    ents = [(b"a", b"", (5, 5, 5, 9), np.zeros((0, 4), bool)), (b"b", b"d", (0, 0, 3, 0), np.zeros((3, 0), bool))]
    path = scratch.path()
    write_ours(path, ents, {"g": [0, 1]}, {})
    check_same(read_reference(reference, path), ents, {"g": [0, 1]}, {})


def test_extremes(reference, scratch):
    """Largest coordinates and a long address, both directions, same bytes."""
    m = np.ones((1, 1), bool)
    ents = [
        (b"x" * 70000, b"d" * 300, (65534, 65534, 65535, 65535), m),
        (b"", b"", (0, 0, 2, 3), np.array([[1, 0, 1], [0, 1, 0]], bool)),
        (b"e", b"", (65535 - 40, 0, 65535, 40), np.eye(40, dtype=bool)),
    ]
    meta = {"ü": ["\U0001f642", {"n": None, "big": 2**80, "f": -0.0}]}
    groups = {"": [2], "b": [0, 2]}
    ours = write_ours(scratch.path(), ents, groups, meta)
    p = scratch.path()
    theirs = write_reference(reference, p, ents, groups, meta)
    assert ours == theirs
    check_same(read_ours(p), ents, groups, meta)
    q = scratch.path()
    q.write_bytes(ours)
    check_same(read_reference(reference, q), ents, groups, meta)


def _via_v1(scratch, ents, groups, meta, codec) -> IIDFile:
    f = build_ours(ents, groups, meta)
    p1 = scratch.path()
    f.save(p1, version=1, codec=codec)
    f.close()
    g = IIDFile(p1)
    assert g.version == 1
    return g


@SETTINGS
@given(spec=files(min_side=0), codec=st.sampled_from(["auto", 0, 1, 2]))
def test_v0_export_of_a_v1_file_is_read_by_iidfile(reference, scratch, spec, codec):
    """Saved as version 1 (any codec), reopened and exported as version 0:
    iidfile 0.2.0 reads the same content."""
    ents, groups, meta = spec
    p0 = scratch.path()
    with _via_v1(scratch, ents, groups, meta, codec) as g:
        g.save(p0, version=0)
    check_same(read_reference(reference, p0), ents, groups, meta)
    check_same(read_ours(p0), ents, groups, meta)


@pytest.mark.parametrize("codec", ["auto", 0])
def test_v0_export_of_a_v1_file_is_the_direct_v0_file(scratch, codec):
    """Version 0 is one layout per content (iidfile 0.2.0's): exporting a
    version-1 file gives the bytes of a direct version-0 save."""
    gap = np.array([[1, 1, 1, 1, 1, 0, 1, 1, 1, 1]], bool)  # two components
    dots = np.zeros((9, 9), bool)
    dots[::2, ::2] = True  # 25 one-pixel components
    ents = [(b"gap", b"", (0, 0, 1, 10), gap), (b"dots", b"d", (5, 5, 14, 14), dots)]
    direct = write_ours(scratch.path(), ents, {"g": [1]}, {})
    p0 = scratch.path()
    with _via_v1(scratch, ents, {"g": [1]}, {}, codec) as g:
        g.save(p0, version=0)
    assert p0.read_bytes() == direct
