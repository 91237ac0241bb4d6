"""Malformed files: every problem is an ``IIDFormatError`` (a ValueError)
naming the section and the byte offset, raised by the operation that reads
the damaged part, and never a ``struct.error``, ``IndexError``, construct
error, ``MemoryError`` or a hang.

Damaged files are made from one valid file written by iidschema, patching
fields at offsets derived from the :mod:`iidschema.schema` declarations
(their numpy dtypes give each field's offset and width) and the LUT.
"""

from __future__ import annotations

import io
import json
import struct
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iidschema
from iidschema import IIDError, IIDFile, IIDFormatError, IIDVersionError, schema
from iidschema import masks as masks_module
from iidschema.writer import write_v0

SECTIONS = ("lut", "iids", "meta", "groups", "segs")
HEADER_DT = schema.dtype_of(schema.Header0)
LUT_DT = schema.LUT0_DTYPE
IID_DT = schema.dtype_of(schema.IIDHead0)
SEG_DT = schema.SEG_HEAD0_DTYPE
REGION_DT = schema.dtype_of(schema.RegionHead0)


def field(dt: np.dtype, path: str) -> tuple[np.dtype, int]:
    """(dtype, byte offset) of the dotted field ``path`` of a structured dtype."""
    offset = 0
    for name in path.split("."):
        dt, off = dt.fields[name][:2]
        offset += off
    return dt, offset


def patch(data: bytes, base: int, dt: np.dtype, path: str, value: int) -> bytes:
    fdt, off = field(dt, path)
    buf = bytearray(data)
    np.frombuffer(buf, dtype=fdt, count=1, offset=base + off)[0] = value
    return bytes(buf)


def read_field(data: bytes, base: int, dt: np.dtype, path: str) -> int:
    fdt, off = field(dt, path)
    return int(np.frombuffer(data, dtype=fdt, count=1, offset=base + off)[0])


# --------------------------------------------------------------------------
# The valid file
# --------------------------------------------------------------------------

def _valid() -> bytes:
    f = IIDFile()
    two = np.zeros((6, 8), bool)
    two[0:2, 0:2] = True
    two[4:6, 5:8] = True
    f.add(b"two-islands", b"dom", (10, 20, 16, 28), two, group="g")  # 2 regions
    f.add(b"empty", b"", (30, 30, 35, 37), np.zeros((5, 7), bool), group="h")  # no region
    disk = np.ones((3, 3), bool)
    f.add(b"one", b"dom", (40, 40, 45, 45), np.pad(disk, 1), group=["g", "h"])  # 1 region, margin 1
    f.meta.data = {"a": "b", "n": [1, 2]}
    out = io.BytesIO()
    write_v0(out, f._records(), len(f), f.groups.as_dict(), f.meta.data)
    return out.getvalue()


VALID = _valid()


def header(data: bytes = VALID):
    return np.frombuffer(data, dtype=HEADER_DT, count=1)[0]


def sec(name: str, data: bytes = VALID) -> tuple[int, int]:
    h = header(data)
    return int(h[name]["offset"]), int(h[name]["length"])


def lut_at(key: int) -> int:
    return sec("lut")[0] + key * LUT_DT.itemsize


def lut_row(key: int):
    return np.frombuffer(VALID, dtype=LUT_DT, count=1, offset=lut_at(key))[0]


def iid_at(key: int) -> int:
    return sec("iids")[0] + int(lut_row(key)["iid"]["offset"])


def seg_at(key: int) -> int:
    return sec("segs")[0] + int(lut_row(key)["seg"]["offset"])


def region_at(key: int, index: int) -> int:
    pos = seg_at(key) + SEG_DT.itemsize
    for _ in range(index):
        pos += read_field(VALID, pos, REGION_DT, "len")
    return pos


def replace_section(name: str, new: bytes, data: bytes = VALID) -> bytes:
    """``data`` with section ``name`` replaced and the header re-laid out."""
    parts = {n: data[o : o + l] for n, (o, l) in ((n, sec(n, data)) for n in SECTIONS)}
    parts[name] = new
    h = {"version": 0, "rformat": 0}
    off = schema.HEADER0_SIZE
    for n in SECTIONS:
        h[n] = {"offset": off, "length": len(parts[n])}
        off += len(parts[n])
    return schema.Header0.build(h) + b"".join(parts[n] for n in SECTIONS)


def groups_section(table, data: bytes) -> bytes:
    raw = table if isinstance(table, bytes) else json.dumps(table).encode()
    return struct.pack("<I", len(raw)) + raw + data


def check_error(exc: BaseException, section: str, data: bytes, offset: int | set | None = None) -> None:
    """``offset``: the exact offset expected, or a set of acceptable ones;
    by default any offset inside the file."""
    assert isinstance(exc, IIDFormatError) and isinstance(exc, ValueError), repr(exc)
    assert exc.section == section, (exc.section, str(exc))
    assert isinstance(exc.offset, int), (exc.offset, str(exc))
    if offset is None:
        assert 0 <= exc.offset <= len(data), (exc.offset, str(exc))
    elif isinstance(offset, set):
        assert exc.offset in offset, (exc.offset, offset, str(exc))
    else:
        assert exc.offset == offset, (exc.offset, offset, str(exc))
    msg = str(exc)
    assert len(exc.message) >= 15 and section in msg and str(exc.offset) in msg, msg


def test_the_valid_file_is_valid():
    with IIDFile(VALID) as f:
        es = f.fetch(everything=True)
        assert [len(e.seg.regions()) for e in es] == [2, 0, 1]
        assert f.groups.keys("g").tolist() == [0, 2] and f.meta.data == {"a": "b", "n": [1, 2]}
        assert schema.File.build(schema.File.parse(VALID)) == VALID


# --------------------------------------------------------------------------
# Header problems: raised by opening
# --------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 4, 47])
def test_truncated_header(size, tmp_path):
    data = VALID[:size]
    with pytest.raises(IIDFormatError) as info:
        IIDFile(data)
    check_error(info.value, "header", data, offset=0)
    p = tmp_path / "t.iid"
    p.write_bytes(data)
    with pytest.raises(IIDFormatError) as info:
        IIDFile(p)  # through the mmap source, incl. a 0-byte file
    check_error(info.value, "header", data, offset=0)


@pytest.mark.parametrize("version", [7, 3, 0xFFFFFFFF])
def test_unknown_version(version):
    data = patch(VALID, 0, HEADER_DT, "version", version)
    with pytest.raises(IIDVersionError) as info:
        IIDFile(data)
    exc = info.value
    check_error(exc, "header", data, offset=0)
    assert exc.found == version and exc.supported == iidschema.SUPPORTED_VERSIONS
    assert str(version) in str(exc)
    assert all(str(v) in str(exc) for v in iidschema.SUPPORTED_VERSIONS)


@pytest.mark.parametrize("name", SECTIONS)
@pytest.mark.parametrize(
    "how",
    ["offset-past-eof", "length-past-eof", "length-ffffffff", "offset-ffffffff"],
)
def test_section_outside_the_file(name, how):
    off, length = sec(name)
    if how == "offset-past-eof":
        off = len(VALID) + 8
        data = patch(VALID, 0, HEADER_DT, f"{name}.offset", off)
    elif how == "length-past-eof":
        data = patch(VALID, 0, HEADER_DT, f"{name}.length", len(VALID) - off + 1)
    elif how == "length-ffffffff":
        data = patch(VALID, 0, HEADER_DT, f"{name}.length", 0xFFFFFFFF)
    else:
        off = 0xFFFFFFFF
        data = patch(VALID, 0, HEADER_DT, f"{name}.offset", off)
    with pytest.raises(IIDFormatError) as info:
        IIDFile(data)
    # Where the section claims to start, or the header field that claims it.
    fields = {field(HEADER_DT, f"{name}.offset")[1], field(HEADER_DT, f"{name}.length")[1]}
    check_error(info.value, name, data, offset={off} | fields)


@pytest.mark.parametrize(
    "first,second", [("lut", "iids"), ("iids", "meta"), ("meta", "groups"), ("groups", "segs")]
)
def test_overlapping_sections(first, second):
    off, length = sec(first)
    # ``second`` starts one byte before the end of ``first``, same end.
    s_off, s_len = sec(second)
    data = patch(VALID, 0, HEADER_DT, f"{second}.offset", off + length - 1)
    data = patch(data, 0, HEADER_DT, f"{second}.length", s_len + 1)
    with pytest.raises(IIDFormatError) as info:
        IIDFile(data)
    check_error(info.value, second, data, offset=off + length - 1)


def test_out_of_order_sections():
    # meta and groups swap places in the header.
    (m_off, m_len), (g_off, g_len) = sec("meta"), sec("groups")
    data = patch(VALID, 0, HEADER_DT, "meta.offset", g_off)
    data = patch(data, 0, HEADER_DT, "meta.length", g_len)
    data = patch(data, 0, HEADER_DT, "groups.offset", m_off)
    data = patch(data, 0, HEADER_DT, "groups.length", m_len)
    with pytest.raises(IIDFormatError) as info:
        IIDFile(data)
    check_error(info.value, "groups", data, offset=m_off)


def test_section_inside_the_header():
    data = patch(VALID, 0, HEADER_DT, "lut.offset", 8)
    with pytest.raises(IIDFormatError) as info:
        IIDFile(data)
    check_error(info.value, "lut", data, offset=8)


@pytest.mark.parametrize("delta", [-1, +1, -19])
def test_lut_length_not_a_multiple_of_the_row(delta):
    off, length = sec("lut")
    data = patch(VALID, 0, HEADER_DT, "lut.length", length + delta)
    if delta > 0:  # keep the sections in order: move iids by the same amount? no: shrink iids instead
        data = patch(data, 0, HEADER_DT, "iids.offset", sec("iids")[0] + delta)
        data = patch(data, 0, HEADER_DT, "iids.length", sec("iids")[1] - delta)
    with pytest.raises(IIDFormatError) as info:
        IIDFile(data)
    check_error(info.value, "lut", data, offset=off)


# --------------------------------------------------------------------------
# Damage inside sections: opening works, the access that reads it raises
# --------------------------------------------------------------------------

def _opens(data: bytes) -> IIDFile:
    f = IIDFile(data)  # must not raise: only the header is read
    assert len(f) == 3
    return f


def _raises_on(data: bytes, access, section: str, offset: int | None = None) -> None:
    f = _opens(data)
    with pytest.raises(IIDFormatError) as info:
        access(f)
    check_error(info.value, section, data, offset)


def _fetch(keys, iids=True, segs=True):
    def go(f):
        for e in f.fetch(keys=keys, iids=iids, segs=segs):
            if segs:
                e.seg.mask()
    return go


def test_lut_row_key_is_not_its_index():
    data = patch(VALID, lut_at(1), LUT_DT, "key", 2)
    _raises_on(data, _fetch([1]), "lut", lut_at(1))
    _raises_on(data, lambda f: f[1].iid, "lut", lut_at(1))
    _raises_on(data, lambda f: f.at(32, 32), "lut", lut_at(1))  # vectorised head path
    _raises_on(data, lambda f: f.filter(area=(0, None)), "lut", lut_at(1))
    # The other entries, meta and groups stay readable.
    f = _opens(data)
    assert [e.key for e in f.fetch(keys=[0, 2])] == [0, 2]
    assert f.meta.data["a"] == "b" and f.groups.list() == ["g", "h"]


@pytest.mark.parametrize(
    "path,value",
    [
        ("iid.offset", None),  # = section length: starts at its end, length > 0
        ("iid.length", 0xFFFFFFFF),
        ("iid.offset", 0xFFFFFFFF),
        ("seg.offset", None),
        ("seg.length", 0xFFFFFFFF),
        ("seg.offset", 0xFFFFFFFF),
    ],
)
def test_lut_bufloc_outside_its_section(path, value):
    section = "iids" if path.startswith("iid") else "segs"
    if value is None:
        value = sec(section)[1]
    data = patch(VALID, lut_at(1), LUT_DT, path, value)
    access = (lambda f: f[1].iid) if section == "iids" else (lambda f: f[1].seg)
    _raises_on(data, access, "lut", lut_at(1))
    _raises_on(data, _fetch([1]), "lut", lut_at(1))
    f = _opens(data)
    f.fetch(keys=[0, 2])


@pytest.mark.parametrize("path,delta", [("domain_len", +1), ("address_len", +1), ("domain_len", -1), ("address_len", 0xFFFFFF00)])
def test_iid_record_lengths_do_not_fill_it(path, delta):
    at = iid_at(0)
    value = (read_field(VALID, at, IID_DT, path) + delta) & 0xFFFFFFFF
    data = patch(VALID, at, IID_DT, path, value)
    _raises_on(data, lambda f: f[0].iid, "iids", at)
    _raises_on(data, lambda f: f.look_for([b"one"]), "iids", at)
    f = _opens(data)
    assert f[0].seg.area == 10 and f[2].iid.address == b"one"


def test_iid_record_shorter_than_its_head():
    data = patch(VALID, lut_at(1), LUT_DT, "iid.length", 11)
    _raises_on(data, lambda f: f[1].iid, "iids", iid_at(1))


def test_iid_record_key_mismatch():
    data = patch(VALID, iid_at(2), IID_DT, "key", 0)
    _raises_on(data, lambda f: f[2].iid, "iids", iid_at(2))


def test_segment_record_key_mismatch():
    data = patch(VALID, seg_at(2), SEG_DT, "key", 7)
    _raises_on(data, lambda f: f[2].seg, "segs", seg_at(2))
    _raises_on(data, lambda f: f.at(42, 42), "segs", seg_at(2))


@pytest.mark.parametrize("length", [0, 4, 15])
def test_segment_shorter_than_its_head(length):
    data = patch(VALID, lut_at(1), LUT_DT, "seg.length", length)
    _raises_on(data, lambda f: f[1].seg, "segs", seg_at(1))
    _raises_on(data, lambda f: f.filter(area=(1, None)), "segs", seg_at(1))


def test_segment_bbox_inverted():
    data = patch(VALID, seg_at(2), SEG_DT, "bbox.maxr", 39)
    _raises_on(data, lambda f: f[2].seg, "segs", seg_at(2))


@pytest.mark.parametrize("value", [0, 4, 11, 12])
def test_region_length_below_its_head(value):
    at = region_at(0, 0)
    data = patch(VALID, at, REGION_DT, "len", value)
    _raises_on(data, lambda f: f[0].seg, "segs", at)  # and no endless loop on len 0


@pytest.mark.parametrize("delta", [+1, -1])
def test_region_length_does_not_match_its_bbox(delta):
    at = region_at(0, 0)
    data = patch(VALID, at, REGION_DT, "len", read_field(VALID, at, REGION_DT, "len") + delta)
    _raises_on(data, lambda f: f[0].seg, "segs", at)


@pytest.mark.parametrize(
    "path,value",
    [
        ("bbox.minr", 9),  # above the segment bbox (10, 20, 16, 28)
        ("bbox.minc", 19),
        ("bbox.maxr", 17),
        ("bbox.maxc", 29),
        ("bbox.maxr", 10),  # empty (minr == maxr)
        ("bbox.maxc", 20),  # empty
        ("bbox.minr", 0xFFFF),  # inverted
    ],
)
def test_region_bbox_outside_the_segment_or_empty(path, value):
    at = region_at(0, 0)
    assert read_field(VALID, at, REGION_DT, "bbox.minr") == 10 and read_field(VALID, at, REGION_DT, "bbox.minc") == 20
    data = patch(VALID, at, REGION_DT, path, value)
    _raises_on(data, lambda f: f[0].seg, "segs", at)


def test_second_region_bbox_outside():
    at = region_at(0, 1)
    data = patch(VALID, at, REGION_DT, "bbox.maxc", 29)
    _raises_on(data, lambda f: f[0].seg, "segs", at)


@pytest.mark.parametrize("cut", [1, 5, 12, 14])
def test_region_overruns_its_segment(cut):
    # The LUT makes segment 0 end ``cut`` bytes early: its last region overruns
    # (or its head is truncated).
    length = int(lut_row(0)["seg"]["length"])
    data = patch(VALID, lut_at(0), LUT_DT, "seg.length", length - cut)
    f = _opens(data)
    with pytest.raises(IIDFormatError) as info:
        f[0].seg
    check_error(info.value, "segs", data)
    assert info.value.offset in {region_at(0, 0), region_at(0, 1)}


def test_region_length_huge():
    at = region_at(0, 1)
    data = patch(VALID, at, REGION_DT, "len", 0xFFFFFFFF)
    _raises_on(data, lambda f: f[0].seg, "segs", at)


def test_trailing_bytes_after_regions_are_not_a_region():
    # 3 junk bytes after the last region of segment 2 (steal them from the
    # length of the section: the LUT says the record is 3 bytes longer).
    length = int(lut_row(2)["seg"]["length"])
    junk = replace_section("segs", VALID[sec("segs")[0] : sec("segs")[0] + sec("segs")[1]] + b"\x01\x02\x03")
    data = patch(junk, lut_at(2), LUT_DT, "seg.length", length + 3)
    f = _opens(data)
    with pytest.raises(IIDFormatError) as info:
        f[2].seg
    check_error(info.value, "segs", data)


# -- groups -------------------------------------------------------------------

def _groups(data: bytes):
    return _raises_on_groups(data)


def _raises_on_groups(data: bytes, offset: int | None = None) -> IIDFormatError:
    for access in (lambda f: f.groups.list(), lambda f: f.fetch(groups=["g"]), lambda f: f.filter(groups="h")):
        f = _opens(data)
        with pytest.raises(IIDFormatError) as info:
            access(f)
        check_error(info.value, "groups", data, offset)
        # The rest of the file is unaffected.
        assert f.meta.data["a"] == "b" and [e.key for e in f.fetch(all_keys=True)] == [0, 1, 2]
    return info.value


KEYS = struct.pack("<3I", 0, 2, 1)
GOOD_TABLE = [{"name": "g", "offset": 0, "length": 8}, {"name": "h", "offset": 8, "length": 4}]


@pytest.mark.parametrize(
    "table",
    [
        b"[{\"name\": \"g\", ",  # not JSON
        b"\xff\xfe[]",  # not UTF-8
        b"",  # empty JSON text
        {"g": [0, 2]},  # not a list
        "g",
        [["g", 0, 8]],  # item not an object
        [{"name": 5, "offset": 0, "length": 8}],
        [{"name": "g", "offset": "0", "length": 8}],
        [{"name": "g", "offset": -4, "length": 4}],
        [{"name": "g", "offset": 0, "length": 8.0}],
        [{"name": "g", "offset": 0}],
        [{"name": "g", "offset": 0, "length": True}],
        [{"name": "g", "offset": 0, "length": 8}, {"name": "g", "offset": 8, "length": 4}],  # listed twice
        [{"name": "g", "offset": 4, "length": 12}],  # past the group data
        [{"name": "g", "offset": 12, "length": 4}],  # starts at the end
        [{"name": "g", "offset": 2**40, "length": 4}],
        [{"name": "g", "offset": 0, "length": 6}],  # not whole keys
    ],
    ids=lambda t: repr(t)[:40],
)
def test_bad_group_table(table):
    data = replace_section("groups", groups_section(table, KEYS))
    exc = _raises_on_groups(data)
    g_off = sec("groups", data)[0]
    assert g_off <= exc.offset <= g_off + sec("groups", data)[1]


def test_good_group_table_is_accepted():
    data = replace_section("groups", groups_section(GOOD_TABLE, KEYS))
    f = _opens(data)
    assert {g: f.groups.keys(g).tolist() for g in f.groups.list()} == {"g": [0, 2], "h": [1]}


@pytest.mark.parametrize("prefix", [0xFFFFFFFF, 1000, None])
def test_group_json_length_prefix_past_the_section(prefix):
    raw = json.dumps(GOOD_TABLE).encode()
    body = struct.pack("<I", len(raw) + 13 if prefix is None else prefix) + raw + KEYS
    data = replace_section("groups", body)
    _raises_on_groups(data)


@pytest.mark.parametrize("size", [0, 1, 3])
def test_groups_section_shorter_than_its_length_prefix(size):
    data = replace_section("groups", b"\x02\x00\x00\x00[]"[:size])
    _raises_on_groups(data, offset=sec("groups", data)[0])


@pytest.mark.parametrize("key", [3, 1000, 0xFFFFFFFF])
def test_group_key_past_the_entry_count(key):
    data = replace_section("groups", groups_section(GOOD_TABLE, struct.pack("<3I", 0, key, 1)))
    # Groups are read one by one: the bad key is reported by every read of
    # group "g", while the table and group "h" stay readable.
    for access in (lambda f: f.groups.keys("g"), lambda f: f.fetch(groups=["g"]), lambda f: f.filter(groups=["h", "g"]),
                   lambda f: f.groups.as_dict()):
        f = _opens(data)
        with pytest.raises(IIDFormatError) as info:
            access(f)
        check_error(info.value, "groups", data, None)
        assert f.groups.list() == ["g", "h"] and f.groups.keys("h").tolist() == [1]
        assert f.meta.data["a"] == "b" and [e.key for e in f.fetch(all_keys=True)] == [0, 1, 2]
    exc = info.value
    raw_len = len(json.dumps(GOOD_TABLE).encode())
    assert exc.offset == sec("groups", data)[0] + 4 + raw_len  # where group "g"'s keys start
    assert str(key) in str(exc)


# -- meta ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "meta",
    [b"\xff\xfe{}", b"{\"a\": \"\xc3\"}", b"{not json", b"", b"{} {}", b"{\"a\": 1", b"\x00"],
    ids=["bad-utf8", "truncated-utf8", "not-json", "empty", "two-values", "unterminated", "nul"],
)
def test_bad_meta(meta):
    data = replace_section("meta", meta)
    f = _opens(data)
    with pytest.raises(IIDFormatError) as info:
        f.meta.data
    check_error(info.value, "meta", data, offset=sec("meta", data)[0])
    # Everything else still works.
    assert [e.iid.address for e in f.fetch(everything=True)] == [b"two-islands", b"empty", b"one"]
    assert f.groups.list() == ["g", "h"]


def test_errors_are_value_errors_and_iid_errors():
    assert issubclass(IIDFormatError, ValueError) and issubclass(IIDFormatError, IIDError)
    assert issubclass(IIDVersionError, IIDFormatError)


# --------------------------------------------------------------------------
# Fuzzing: random damage never leaks an implementation exception
# --------------------------------------------------------------------------

@contextmanager
def _small_mask_limit():
    # A damaged bbox can claim billions of pixels; the library refuses masks
    # above MAX_MASK_PIXELS (IIDLimitError).  Keep the fuzz cheap.
    with mock.patch.object(masks_module, "MAX_MASK_PIXELS", 1_000_000):
        yield


def _exercise(data: bytes) -> None:
    try:
        f = IIDFile(data)
    except IIDFormatError as exc:
        assert exc.section is not None and exc.offset is not None, str(exc)
        return
    ops = [
        lambda: [(e.iid.address, e.seg.mask()) for e in f.fetch(everything=True)],
        lambda: [f.groups.keys(g) for g in f.groups.list()],
        lambda: f.meta.data,
        lambda: f.at(42, 42),
        lambda: f.region((0, 0, 100, 100)),
        lambda: f.filter(area=(1, 100)),
        lambda: f.look_for([b"one"]),
        lambda: f.overlap_graph(),
    ]
    for op in ops:
        try:
            op()
        except IIDFormatError as exc:
            assert exc.section is not None and exc.offset is not None, str(exc)
        except IIDError:
            pass  # e.g. IIDLimitError for a mask claiming too many pixels


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_fuzz_byte_edits(edits):
    buf = bytearray(VALID)
    for pos, value in edits:
        buf[pos] = value
    with _small_mask_limit():
        _exercise(bytes(buf))


@FUZZ
@given(
    where=st.sampled_from(
        [("lut", LUT_DT, k, p) for k in range(3) for p in ("key", "iid.offset", "iid.length", "seg.offset", "seg.length")]
        + [("seg", SEG_DT, k, p) for k in range(3) for p in ("key", "bbox.minr", "bbox.minc", "bbox.maxr", "bbox.maxc", "area")]
        + [("iid", IID_DT, k, p) for k in range(3) for p in ("key", "domain_len", "address_len")]
        + [("header", HEADER_DT, 0, f"{s}.{p}") for s in SECTIONS for p in ("offset", "length")]
    ),
    value=st.one_of(st.integers(0, 70), st.sampled_from([0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 0x10000])),
)
def test_fuzz_field_values(where, value):
    kind, dt, key, path = where
    base = {"lut": lut_at, "seg": seg_at, "iid": iid_at, "header": lambda k: 0}[kind](key)
    fdt, _ = field(dt, path)
    value &= int(np.iinfo(fdt).max)
    with _small_mask_limit():
        _exercise(patch(VALID, base, dt, path, value))


@FUZZ
@given(cut=st.integers(0, len(VALID) - 1))
def test_fuzz_truncation(cut):
    _exercise(VALID[:cut])


# --------------------------------------------------------------------------
# Hostile JSON
# --------------------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_meta_json():
    # json.loads raises RecursionError (not a ValueError) on deep nesting.
    data = replace_section("meta", DEEP)
    f = _opens(data)
    with pytest.raises(IIDFormatError) as info:
        f.meta.data
    check_error(info.value, "meta", data, offset=sec("meta", data)[0])


def test_deeply_nested_group_table_json():
    data = replace_section("groups", groups_section(DEEP, b""))
    _raises_on_groups(data)


# --------------------------------------------------------------------------
# Unusual but valid layouts are read
# --------------------------------------------------------------------------

def test_gaps_trailing_bytes_and_permuted_records_are_read():
    """The LUT locates records anywhere in their section, and sections may
    have gaps between them and trailing bytes after them (FORMAT.md)."""
    order = [2, 0, 1]
    iids_off, _ = sec("iids")
    segs_off, _ = sec("segs")
    iid_recs = {k: VALID[iid_at(k) : iid_at(k) + int(lut_row(k)["iid"]["length"])] for k in range(3)}
    seg_recs = {k: VALID[seg_at(k) : seg_at(k) + int(lut_row(k)["seg"]["length"])] for k in range(3)}
    lut = np.frombuffer(VALID, dtype=LUT_DT, count=3, offset=sec("lut")[0]).copy()
    pos_i = pos_s = 0
    for k in order:
        lut[k]["iid"]["offset"], pos_i = pos_i, pos_i + len(iid_recs[k])
        lut[k]["seg"]["offset"], pos_s = pos_s, pos_s + len(seg_recs[k])
    parts = {
        "lut": lut.tobytes(),
        "iids": b"".join(iid_recs[k] for k in order),
        "meta": VALID[sec("meta")[0] : sum(sec("meta"))],
        "groups": VALID[sec("groups")[0] : sum(sec("groups"))],
        "segs": b"".join(seg_recs[k] for k in order),
    }
    h = {"version": 0, "rformat": 0}
    body = b""
    off = schema.HEADER0_SIZE
    for n in SECTIONS:
        gap = b"\xee" * 3
        body += gap + parts[n]
        off += len(gap)
        h[n] = {"offset": off, "length": len(parts[n])}
        off += len(parts[n])
    data = schema.Header0.build(h) + body + b"trailing"
    with IIDFile(data) as f, IIDFile(VALID) as g:
        got = [(e.iid.address, e.iid.domain, e.seg.bbox, e.seg.area, e.seg.mask().tobytes()) for e in f.fetch(everything=True)]
        want = [(e.iid.address, e.iid.domain, e.seg.bbox, e.seg.area, e.seg.mask().tobytes()) for e in g.fetch(everything=True)]
        assert got == want
        assert f.meta.data == g.meta.data and f.groups.list() == g.groups.list()
        assert [e.key for e in f.at(42, 42)] == [2]
