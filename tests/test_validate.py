"""``iidschema validate``: one finding per problem, stable codes, the CLI.

Damaged files are made from valid seeds by overwriting fields located with
the schema declarations (``fuzz/iidfuzz.py``); version-1 files are
re-checksummed afterwards unless the test is about a checksum, so each case
shows the code of the damage itself.  Version-2 files are damaged by the
helpers of the "Version 2" part below (heads, block table rows, and section
contents compressed again).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import zstandard
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iidschema
import iidschema.masks
from iidschema import schema
from iidschema import strategies as iss
from iidschema.blocked import compress_section
from iidschema.cli import main
from iidschema.validate import CODES, Finding, validate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "fuzz"))
import iidfuzz  # noqa: E402

SEEDS = iidfuzz.seed_files(include_corpus=False)
V0 = SEEDS["v0-gen-small"]
V1 = SEEDS["v1-gen-packbits"]
V1RLE = SEEDS["v1-gen-rle"]


def field(data: bytes, name: str, nth: int = 0) -> iidfuzz.Field:
    found = [f for f in iidfuzz.field_map(data) if f.name == name]
    assert len(found) > nth, f"no field {name!r} (#{nth})"
    return found[nth]


def put(data: bytes, name: str, value: int, fix: bool = True, nth: int = 0) -> bytes:
    return iidfuzz.mutate(data, [("field", field(data, name, nth), value)], fix=fix and data[:4] == b"\x01\0\0\0")


def codes(data: bytes) -> set[str]:
    return {f.code for f in validate(data, max_per_code=None)}


def errors(data: bytes) -> set[str]:
    return {f.code for f in validate(data, max_per_code=None) if f.is_error}


def reads(data: bytes) -> bool:
    try:
        iidfuzz.read_everything(data)
        return True
    except iidschema.IIDError:
        return False


def _groups_key_offset(data: bytes) -> int:
    """Absolute offset of the first key of the first group (version 0)."""
    h = schema.Header0.parse(data[:48])
    (json_len,) = struct.unpack_from("<I", data, h.groups.offset)
    table = json.loads(data[h.groups.offset + 4 : h.groups.offset + 4 + json_len])
    item = next(t for t in table if t["length"])
    return h.groups.offset + 4 + json_len + item["offset"]


# --------------------------------------------------------------------------
# Sound files
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SEEDS))
def test_sound_files_have_no_findings(name: str) -> None:
    assert validate(SEEDS[name]) == []


def test_conformance_corpus_is_sound(corpus) -> None:
    for path in corpus:
        assert validate(path) == [], path.name
        assert validate(str(path)) == validate(path.read_bytes())


# --------------------------------------------------------------------------
# One damage, one code
# --------------------------------------------------------------------------

V0_CASES = [
    ("IID001", lambda d: d[:20]),
    ("IID002", lambda d: put(d, "header.version", 7)),
    ("IID010", lambda d: put(d, "header.segs.length", 10**6)),
    ("IID011", lambda d: put(d, "header.meta.offset", 48)),
    ("IID020", lambda d: put(d, "header.lut.length", 21)),
    ("IID021", lambda d: put(d, "lut[2].key", 9)),
    ("IID022", lambda d: put(d, "lut[1].iid.offset", 0xFFFFFFFF)),
    ("IID023", lambda d: put(d, "lut[1].seg.length", 0xFFFFFFFF)),
    ("IID030", lambda d: put(d, "lut[0].iid.length", 5)),
    ("IID031", lambda d: put(d, "iid[1].key", 4)),
    ("IID032", lambda d: put(d, "iid[1].domain_len", 2)),
    ("IID040", lambda d: put(d, "lut[0].seg.length", 9)),
    ("IID041", lambda d: put(d, "seg[0].key", 3)),
    ("IID042", lambda d: put(d, "seg[0].bbox.maxr", 0)),
    ("IID044", lambda d: put(d, "region[0].bbox.minr", 0)),
    ("IID045", lambda d: put(d, "region[0].len", 200)),
    ("IID050", lambda d: put(d, "seg[0].area", 1234)),
    ("IID060", lambda d: d[: _meta_offset(d)] + b"\xff" + d[_meta_offset(d) + 1 :]),
    ("IID061", lambda d: put(d, "groups.json_len", 0xFFFF)),
    ("IID065", lambda d: d[: _groups_key_offset(d)] + b"\xff\xff\x00\x00" + d[_groups_key_offset(d) + 4 :]),
    ("IID014", lambda d: d + b"\0" * 5),
    ("IID027", lambda d: put(d, "lut[1].iid.length", 12)),
]


def _meta_offset(d: bytes) -> int:
    return schema.Header0.parse(d[:48]).meta.offset


@pytest.mark.parametrize("code, damage", V0_CASES, ids=[c for c, _ in V0_CASES])
def test_version0_damage_is_reported(code: str, damage) -> None:
    bad = damage(V0)
    found = validate(bad, max_per_code=None)
    assert code in {f.code for f in found}, [str(f) for f in found]
    assert CODES[code][0] == [f for f in found if f.code == code][0].severity
    # the reader and validate agree
    assert reads(bad) or any(f.is_error for f in found)


def _region_offset_v1(data: bytes, key: int = 0) -> int:
    return field(data, f"seg[{key}].region_count").offset + 4


V1_CASES = [
    ("IID003", lambda d: iidfuzz.fix_checksums(d[:8] + b"XIID" + d[12:]), True),
    ("IID004", lambda d: put(d, "header.header_crc", 1, fix=False), True),
    ("IID005", lambda d: put(d, "header.section_count", 65), True),
    ("IID006", lambda d: put(d, "header.flags", 4), False),
    ("IID006", lambda d: put(d, "region[0].flags", 1), False),
    ("IID012", lambda d: put(d, "section[8].id", 3), True),
    ("IID015", lambda d: put(d, "section[3].id", 0x8001), True),
    ("IID016", lambda d: put(put(d, "section[8].flags", 1), "section[8].id", 0x8001), True),
    ("IID017", lambda d: put(d, "section[8].id", 0x8001), False),
    ("IID018", lambda d: put(d, "section[3].crc", 1, fix=False), True),
    ("IID020", lambda d: put(d, "header.entry_count", 7), True),
    ("IID023", lambda d: put(d, "lut[2].seg.offset", 2**63), True),
    ("IID024", lambda d: put(d, "lut.block_crc[0]", 1, fix=False), True),
    ("IID025", lambda d: put(d, "lut[3].bbox.maxr", 0), True),
    ("IID033", lambda d: put(d, "lut[1].iid_crc", 1, fix=False), True),
    ("IID046", lambda d: put(d, "seg[0].region_count", 0), True),
    ("IID046", lambda d: put(d, "seg[0].region_count", 1000), True),
    ("IID047", lambda d: put(d, "lut[1].seg_crc", 1, fix=False), True),
    ("IID048", lambda d: put(d, "region[0].codec", 999), True),
    ("IID050", lambda d: put(d, "lut[0].area", 2**40), True),
    ("IID054", lambda d: put(d, "codecs", 5, nth=1), True),
    ("IID055", lambda d: put(d, "codecs", 0, nth=0), False),
    ("IID070", lambda d: put(d, "block_table.block_size", 0), True),
    ("IID071", lambda d: _damage_block(d), True),
    ("IID080", lambda d: put(d, "spatial.num_levels", 9), True),
    ("IID081", lambda d: _swap_leaf_ref(d), True),
    ("IID082", lambda d: put(d, "address.hash_id", 2), True),
    ("IID083", lambda d: _rename_address(d), True),
]


def _rename_address(d: bytes) -> bytes:
    """Change one byte of entry 0's address: its address index record no longer matches."""
    f = field(d, "iid[0].key")
    _, dlen, alen = schema.IID_HEAD0.unpack_from(d, f.offset)
    assert alen
    at = f.offset + schema.IID_HEAD0.size + dlen
    return iidfuzz.fix_checksums(d[:at] + bytes([d[at] ^ 0x20]) + d[at + 1 :])


def _swap_leaf_ref(d: bytes) -> bytes:
    """Point a leaf of the spatial index at another entry (both still in range)."""
    f = field(d, "spatial.node[2].ref")
    (ref,) = struct.unpack_from("<I", d, f.offset)
    return put(d, "spatial.node[2].ref", (ref + 1) % 6)


def _damage_block(d: bytes) -> bytes:
    """Damage the spatial index, then fix every checksum except the index's
    block CRCs (so only the block table sees it)."""
    f = field(d, "spatial.node[1].minr")
    bad = bytearray(iidfuzz.fix_checksums(d))
    before = bytes(bad)
    bad = bytearray(iidfuzz.mutate(bytes(bad), [("field", f, 1)], fix=True))
    # restore the block CRC table of the original (fix_checksums recomputed it)
    off, length, _ = iidfuzz._sections_v1(before)[1][schema.SectionId.BLOCK_CRCS]
    bad[off : off + length] = before[off : off + length]
    hs, secs = iidfuzz._sections_v1(bytes(bad))
    crc_off = 4  # id:uint16 flags:uint16 crc:uint32
    struct.pack_into("<I", bad, secs[schema.SectionId.BLOCK_CRCS][2] + crc_off, iidfuzz._crc(bad[off : off + length]))
    struct.pack_into("<I", bad, hs - 4, iidfuzz._crc(bad[: hs - 4]))
    return bytes(bad)


@pytest.mark.parametrize("code, damage, is_error", V1_CASES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(V1_CASES)])
def test_version1_damage_is_reported(code: str, damage, is_error: bool) -> None:
    bad = damage(V1)
    found = validate(bad, max_per_code=None)
    assert code in {f.code for f in found}, [str(f) for f in found]
    assert not [f for f in found if f.code == "IID099"]
    if not reads(bad):
        assert any(f.is_error for f in found)
    if not is_error:
        assert not any(f.is_error for f in found), [str(f) for f in found]


def test_undecodable_payload_is_iid049() -> None:
    data = V1RLE
    f = field(data, "region[0].length")
    # keep the length, break the run lengths: runs no longer add up to h*w
    at = f.offset + 8
    bad = iidfuzz.fix_checksums(data[:at] + b"\x7f" + data[at + 1 :])
    assert "IID049" in errors(bad)


def test_oversize_claims_are_findings_not_allocations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iidschema.masks, "MAX_MASK_PIXELS", 16)
    found = validate(V1, max_per_code=None)
    assert "IID051" in {f.code for f in found}
    assert all(f.code == "IID051" for f in found if f.is_error)


def test_padding_bits_warning() -> None:
    data = SEEDS["v0-gen-small"]
    # find a region whose pixel count is not a multiple of 8 and set its last padding bit
    for f in [f for f in iidfuzz.field_map(data) if f.name.endswith(".len") and f.name.startswith("region")]:
        rlen, a, b, c, d = schema.REGION_HEAD0.unpack_from(data, f.offset)
        if ((c - a) * (d - b)) % 8:
            last = f.offset + rlen - 1
            bad = data[:last] + bytes([data[last] | 1]) + data[last + 1 :]
            found = validate(bad)
            assert [x.code for x in found] == ["IID052"], found
            assert reads(bad)
            return
    pytest.skip("no region with padding bits in the seed")


def test_every_problem_is_reported_not_just_the_first() -> None:
    bad = V0
    for name, value in (("lut[1].key", 7), ("iid[2].domain_len", 99), ("seg[3].area", 999), ("seg[0].key", 5)):
        bad = put(bad, name, value)
    bad += b"\0\0"
    found = validate(bad, max_per_code=None)
    assert {"IID021", "IID032", "IID050", "IID041", "IID014"} <= {f.code for f in found}, [str(f) for f in found]
    # v1: a damaged header CRC does not stop the walk
    bad1 = put(put(V1, "lut[2].area", 77), "header.header_crc", 0, fix=False)
    assert {"IID004", "IID050"} <= codes(bad1)


def test_findings_carry_section_offset_and_message() -> None:
    bad = put(V0, "seg[0].key", 3)
    (f,) = [f for f in validate(bad) if f.code == "IID041"]
    assert f.severity == "error" and f.section == "segs"
    assert f.offset == field(V0, "seg[0].key").offset
    assert "holds key 3" in f.message and "\n" not in f.message
    assert str(f).startswith("error IID041 [segs@")
    assert Finding(**f.to_dict()) == f


def test_max_per_code_counts_the_rest() -> None:
    bad = V0
    for k in range(6):
        bad = put(bad, f"lut[{k}].key", 100 + k)
    assert len([f for f in validate(bad, max_per_code=None) if f.code == "IID021"]) == 6
    capped = [f for f in validate(bad, max_per_code=2) if f.code == "IID021"]
    assert len(capped) == 3 and "4 more IID021" in capped[-1].message


def test_unreadable_path_is_iid000(tmp_path: Path) -> None:
    (f,) = validate(tmp_path / "missing.iid")
    assert f.code == "IID000" and f.is_error


def test_empty_and_tiny_inputs() -> None:
    assert [f.code for f in validate(b"")] == ["IID001"]
    assert [f.code for f in validate(b"\0\0\0\0")] == ["IID001"]
    assert [f.code for f in validate(b"\x01\0\0\0" + b"\0" * 10)] == ["IID001"]
    assert [f.code for f in validate(b"\x09\0\0\0" + b"\0" * 60)] == ["IID002"]


# --------------------------------------------------------------------------
# Version 2
# --------------------------------------------------------------------------
#
# Damaged version-2 files are made by hand from files IIDFile.save writes:
# heads, block table rows and header fields are overwritten in place (the
# header's CRCs fixed with _fix2 unless the test is about them); section
# contents are changed decompressed and compressed again with the section's
# block size and shuffle (_with_content: every CRC correct), so each case
# shows the code of the damage itself.

_SECTION2 = schema.dtype_of(schema.SectionEntry1)
_HEAD2 = schema.dtype_of(schema.BlockedHead2)
_REF2 = schema.BLOCK_REF2_DTYPE
_SID = schema.SectionId.IDS
_BLOCKED2 = sorted(schema.SectionId.NAMES[sid] for sid in schema.BLOCKED_SECTIONS2)


def _field_at(con: Any, name: str) -> int:
    """Offset of field ``name`` in a fixed-size Struct declaration."""
    names = [sub.name for sub in con.subcons]
    return sum(sub.sizeof() for sub in con.subcons[: names.index(name)])


_ENTRY_COUNT_AT = _field_at(schema.HeaderFixed1, "entry_count")
#: The entry of _v2_file(codec, n=6) with an empty bbox.
_NO_PIXELS = 6


def _v2_file(codec: str, n: int = 6) -> bytes:
    """Entries of every kind (noisy and empty masks, an empty bbox), two
    groups, metadata: a file of version 2 with ``codec``.

    Not with zstd an empty bbox: write_v2 stores zstd's frame of the empty
    mask (9 bytes) for it, which readers refuse (an empty bbox has no
    payload; validate says IID113)."""
    rng = np.random.default_rng(20261122)
    f = iidschema.IIDFile()
    for k in range(n):
        h, w = int(rng.integers(1, 9)), int(rng.integers(1, 11))
        mask = rng.random((h, w)) < 0.5 if k % 3 else np.zeros((h, w), bool)
        r, c = int(rng.integers(0, 40)), int(rng.integers(0, 40))
        f.add(f"addr{k}".encode(), [b"", b"wordnet"][k % 2], (r, c, r + h, c + w), mask, group=["sys", "caf\u00e9"][: k % 3])
    if codec != "zstd":
        f.add(b"no pixels", b"", (5, 5, 5, 9), np.zeros((0, 4), bool))
    f.meta.data = {"image": {"height": 64, "width": 64}, "note": "\u00e9t\u00e9"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v2.iid"
        f.save(path, version=2, codec=codec)
        return path.read_bytes()


V2 = {codec: _v2_file(codec) for codec in ("packbits", "rle", "zstd")}
V2P = V2["packbits"]
V2_TWO_CHUNKS = _v2_file("packbits", n=schema.LUT_CHUNK2 + 30)


def _sections2(data: bytes) -> dict[str, tuple[int, int, int]]:
    """name -> (offset, length, offset of its section table row)."""
    header = schema.Header2.parse(data)
    return {schema.SectionId.NAMES[s.id]: (s.offset, s.length, schema.HEADER1_FIXED_SIZE + i * _SECTION2.itemsize)
            for i, s in enumerate(header.sections)}


def _set(data: bytes, at: int, dtype: np.dtype, name: str, value: int) -> bytes:
    """``data`` with field ``name`` of a ``dtype`` record at ``at`` set to ``value``."""
    ftype, pos = dtype.fields[name][:2]
    return data[: at + pos] + np.array([value], dtype=ftype).tobytes() + data[at + pos + ftype.itemsize :]


def _fix_header_crc(data: bytes) -> bytes:
    hsize = schema.header1_size(len(_sections2(data)))
    return data[: hsize - 4] + struct.pack("<I", crc32c(data[: hsize - 4])) + data[hsize:]


def _fix2(data: bytes) -> bytes:
    """The header's CRCs recomputed: each section's (of a blocked section,
    its 20-byte head) and the header's own; block CRCs are left alone."""
    for name, (off, length, row) in _sections2(data).items():
        covered = schema.BLOCKED_HEAD2_SIZE if _SID[name] in schema.BLOCKED_SECTIONS2 else length
        data = _set(data, row, _SECTION2, "crc", crc32c(data[off : off + covered]))
    return _fix_header_crc(data)


def _head2(data: bytes, section: str, name: str, value: int, fix: bool = True) -> bytes:
    """A blocked section's head field set to ``value`` (header CRCs fixed)."""
    bad = _set(data, _sections2(data)[section][0], _HEAD2, name, value)
    return _fix2(bad) if fix else bad


def _row_at(data: bytes, section: str, block: int = 0) -> int:
    """File offset of the block table row of ``block``."""
    return _sections2(data)[section][0] + schema.BLOCKED_HEAD2_SIZE + block * _REF2.itemsize


def _block_at(data: bytes, section: str, block: int = 0) -> int:
    """File offset of stored ``block`` of ``section`` (from its table row)."""
    return _sections2(data)[section][0] + int(np.frombuffer(data, _REF2, 1, _row_at(data, section, block))["offset"][0])


def _content2(data: bytes, section: str) -> bytes:
    """A blocked section's content, read by the library's reader."""
    with iidschema.IIDFile(data) as f:
        blocked = f._reader.blocked(section)
        return bytes(blocked.read(0, blocked.raw_length))


def _with_section(data: bytes, section: str, body: bytes) -> bytes:
    """``data`` with ``section``'s stored bytes replaced by ``body``; the
    sections laid out again in file order (8-byte aligned), header CRCs fixed."""
    secs = _sections2(data)
    out = data[: schema.header1_size(len(secs))]
    for name, (off, length, row) in sorted(secs.items(), key=lambda item: item[1][0]):
        out += bytes(-len(out) % 8)
        new = body if name == section else data[off : off + length]
        out = _set(_set(out, row, _SECTION2, "offset", len(out)), row, _SECTION2, "length", len(new)) + new
    return _fix2(out)


def _with_content(data: bytes, section: str, edit: Callable[[bytearray], Any], block_size: int | None = None) -> bytes:
    """``data`` with blocked ``section``'s content changed in place by
    ``edit`` and compressed again (its block size, unless ``block_size``
    is given, and its shuffle): every CRC correct."""
    _, size, _, shuffle, _ = schema.BLOCKED_HEAD2.unpack_from(data, _sections2(data)[section][0])
    content = bytearray(_content2(data, section))
    edit(content)
    return _with_section(data, section, b"".join(compress_section([bytes(content)], block_size or size, 3, 1, shuffle)))


def _with_lut(data: bytes, edit: Callable[[np.ndarray, np.ndarray], Any], chunk: int = 0) -> bytes:
    """``data`` with LUT chunk ``chunk`` changed: ``edit(bases, rows)`` on
    its (iid_base, seg_base) and its rows (:data:`schema.LUT2_DTYPE`)."""
    count = schema.Header2.parse(data).entry_count
    m = min(schema.LUT_CHUNK2, count - chunk * schema.LUT_CHUNK2)
    at = chunk * schema.LUT_CHUNK2_SIZE
    head = schema.LUT_CHUNK_HEAD2

    def change(content: bytearray) -> None:
        bases = np.frombuffer(content, dtype="<u8", count=2, offset=at).copy()
        rows = schema.planar_to_records(bytes(content[at + head : at + head + m * schema.LUT2_ROW]), m, schema.LUT2_DTYPE)
        edit(bases, rows)
        content[at : at + head + m * schema.LUT2_ROW] = bases.tobytes() + schema.records_to_planar(rows)

    return _with_content(data, "lut", change)


def _set_row(key: int, **fields: int) -> Callable[[np.ndarray, np.ndarray], None]:
    def edit(bases: np.ndarray, rows: np.ndarray) -> None:
        for name, value in fields.items():
            rows[name][key] = value

    return edit


def _frame_of_wrong_size(data: bytes) -> bytes:
    """segs (one block) stored as a sound zstd frame of one byte more than
    the block's content, its table row and CRC matching the frame."""
    off = _sections2(data)["segs"][0]
    raw_length = schema.BLOCKED_HEAD2.unpack_from(data, off)[0]
    frame = zstandard.ZstdCompressor().compress(bytes(raw_length + 1))
    ref = np.array([(schema.BLOCKED_HEAD2_SIZE + _REF2.itemsize, len(frame), crc32c(frame))], dtype=_REF2).tobytes()
    return _with_section(data, "segs", data[off : off + schema.BLOCKED_HEAD2_SIZE] + ref + frame)


def _damage_stored_byte(data: bytes, section: str) -> bytes:
    """One byte of ``section``'s first stored block changed (its CRC not)."""
    at = _block_at(data, section) + 3
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def _payload_boundary(data: bytes) -> bytes:
    """Entry 0's payload one byte longer, entry 1's one shorter: the records
    still lie back to back, but neither payload decodes."""

    def edit(bases: np.ndarray, rows: np.ndarray) -> None:
        rows["seg_length"][0] += 1
        rows["seg_length"][1] -= 1

    return _with_lut(data, edit)


def _group_key(data: bytes, value: int) -> bytes:
    """The first key of the first non-empty group set to ``value`` (in the groups content)."""

    def edit(content: bytearray) -> None:
        (json_len,) = struct.unpack_from("<I", content, 0)
        table = json.loads(bytes(content[4 : 4 + json_len]))
        item = next(t for t in table if t["length"])
        struct.pack_into("<I", content, 4 + json_len + item["offset"], value)

    return _with_content(data, "groups", edit)


def _leaf_minr(data: bytes) -> bytes:
    """The first leaf of the spatial index given another bbox (its minr + 1)."""
    from iidschema.index.spatial import level_sizes

    def edit(content: bytearray) -> None:
        _, node_size, n, _, _ = struct.unpack_from("<4sIIIQ", content, 0)
        sizes = level_sizes(n, node_size)
        at = schema.SpatialHeader.sizeof() + sum(sizes[1:]) * schema.SpatialNode.sizeof()
        struct.pack_into("<I", content, at, struct.unpack_from("<I", content, at)[0] + 1)

    return _with_content(data, "spatial_index", edit)


def _address_byte(content: bytearray) -> None:
    """Change the first address byte of IID record 0 (iids content)."""
    _, dlen, alen = schema.IID_HEAD0.unpack_from(content, 0)
    assert alen
    content[schema.IID_HEAD0.size + dlen] ^= 0x20


def _claim_blocks(data: bytes, section: str, count: int) -> bytes:
    """A head claiming ``count`` full blocks (raw_length and count agree, the table does not fit)."""
    block_size = schema.BLOCKED_HEAD2.unpack_from(data, _sections2(data)[section][0])[1]
    return _head2(_head2(data, section, "count", count), section, "raw_length", count * block_size)


def _lut_rows(data: bytes) -> np.ndarray:
    """The rows of the first LUT chunk."""
    content = _content2(data, "lut")
    count = schema.Header2.parse(data).entry_count
    return schema.planar_to_records(content[schema.LUT_CHUNK_HEAD2 :], min(count, schema.LUT_CHUNK2), schema.LUT2_DTYPE)


def _pixels(data: bytes, key: int) -> int:
    rows = _lut_rows(data)
    return int(rows["height"][key]) * int(rows["width"][key])


def _lut_block(bad: bytes) -> int:
    return _block_at(bad, "lut")


def _head_field_at(section: str, name: str) -> Callable[[bytes], int]:
    return lambda bad: _sections2(bad)[section][0] + _HEAD2.fields[name][1]


def _section_at(section: str) -> Callable[[bytes], int]:
    return lambda bad: _sections2(bad)[section][0]


# (code, damage, expected section, where the finding points in the damaged file)
V2_CASES = [
    ("IID106", lambda d: _damage_stored_byte(d, "segs"), "segs", lambda bad: _block_at(bad, "segs")),
    ("IID101", lambda d: _fix_header_crc(_set(d, _sections2(d)["lut"][2], _SECTION2, "crc", 12345)), "lut", _section_at("lut")),
    ("IID101", lambda d: _head2(d, "lut", "shuffle", 1, fix=False), "lut", _section_at("lut")),
    ("IID105", lambda d: _set(d, _row_at(d, "segs"), _REF2, "offset", 4), "segs", lambda bad: _row_at(bad, "segs")),
    ("IID105", lambda d: _set(d, _row_at(d, "iids"), _REF2, "offset", 10**9), "iids", lambda bad: _row_at(bad, "iids")),
    ("IID050", lambda d: _with_lut(d, _set_row(1, area=_lut_rows(d)["area"][1] + 5)), "lut", _lut_block),
    ("IID113", lambda d: _with_lut(d, _set_row(0, seg_length=_pixels(d, 0) + 65)), "lut", _lut_block),
    ("IID113", lambda d: _with_lut(d, _set_row(_NO_PIXELS, seg_length=1)), "lut", _lut_block),
    ("IID049", _payload_boundary, "segs", lambda bad: _block_at(bad, "segs")),
    ("IID103", lambda d: _head2(d, "lut", "compression", 7), "lut", _head_field_at("lut", "compression")),
    ("IID108", lambda d: _head2(d, "groups", "shuffle", 3), "groups", _head_field_at("groups", "shuffle")),
    ("IID010", lambda d: d[:-7], "segs", _section_at("segs")),
    ("IID005", lambda d: d[:40], "header", lambda bad: schema.HEADER1_FIXED_SIZE),
    ("IID100", lambda d: _with_section(d, "groups", bytes(10)), "groups", _section_at("groups")),
    ("IID102", lambda d: _head2(d, "groups", "block_size", 0), "groups", _head_field_at("groups", "block_size")),
    ("IID102", lambda d: _head2(d, "iids", "raw_length", 10**6), "iids", _head_field_at("iids", "count")),
    ("IID104", lambda d: _claim_blocks(d, "segs", 1000), "segs", _head_field_at("segs", "count")),
    ("IID107", _frame_of_wrong_size, "segs", lambda bad: _block_at(bad, "segs")),
    ("IID110", lambda d: _with_content(d, "lut", lambda c: None, block_size=schema.LUT_CHUNK2_SIZE // 2), "lut",
     _head_field_at("lut", "block_size")),
    ("IID112", lambda d: _with_lut(d, _set_row(0, minr=schema.MAX_COORD_V1)), "lut", _lut_block),
    ("IID020", lambda d: _fix2(d[:_ENTRY_COUNT_AT] + struct.pack("<I", 8) + d[_ENTRY_COUNT_AT + 4 :]), "lut", _section_at("lut")),
    ("IID031", lambda d: _with_content(d, "iids", lambda c: struct.pack_into("<I", c, 0, 5)), "iids",
     lambda bad: _block_at(bad, "iids")),
    ("IID065", lambda d: _group_key(d, 0xFFFF), "groups", lambda bad: _block_at(bad, "groups")),
    ("IID081", _leaf_minr, "spatial_index", lambda bad: _block_at(bad, "spatial_index")),
    ("IID083", lambda d: _with_content(d, "iids", _address_byte), "address_index", lambda bad: _block_at(bad, "address_index")),
    ("IID017", lambda d: _fix2(_set(d, _sections2(d)["codecs"][2], _SECTION2, "id", schema.SectionId.BLOCK_CRCS)), "header",
     lambda bad: _sections2(bad)["block_crcs"][2]),
    ("IID055", lambda d: _with_section(d, "codecs", schema.Codecs1.build({"count": 1, "ids": [1]})), "codecs", _section_at("codecs")),
    ("IID027", lambda d: _with_content(d, "iids", lambda c: c.extend(b"xyz")), "iids", lambda bad: _block_at(bad, "iids")),
]
#: Cases whose damage is legal: only warnings.
_V2_WARNINGS_ONLY = {"IID017", "IID027", "IID055"}


@pytest.mark.parametrize("name", [*sorted(V2), "two-chunks"])
def test_version2_sound_files_have_no_findings(name: str) -> None:
    data = V2_TWO_CHUNKS if name == "two-chunks" else V2[name]
    assert validate(data) == []
    assert reads(data)


@pytest.mark.parametrize("code, damage, section, where", V2_CASES, ids=[f"{c}-{i}" for i, (c, *_) in enumerate(V2_CASES)])
def test_version2_damage_is_reported(code: str, damage, section: str, where) -> None:
    bad = damage(V2P)
    found = validate(bad, max_per_code=None)
    hits = [f for f in found if f.code == code]
    assert hits, [str(f) for f in found]
    assert any(f.section == section and f.offset == where(bad) for f in hits), [str(f) for f in hits]
    assert all(f.severity == CODES[code][0] for f in hits)
    assert not [f for f in found if f.code == "IID099"]
    if not reads(bad):
        assert any(f.is_error for f in found)
    if code in _V2_WARNINGS_ONLY:
        assert not any(f.is_error for f in found), [str(f) for f in found]


def test_version2_a_damaged_block_is_reported_once() -> None:
    """The records in an unusable block are not checked: one finding, not one per record."""
    found = validate(_damage_stored_byte(V2P, "segs"), max_per_code=None)
    assert [f.code for f in found] == ["IID106"], [str(f) for f in found]


def test_version2_content_findings_name_the_block_and_content_offset() -> None:
    bad = _with_content(V2P, "iids", lambda c: struct.pack_into("<I", c, 0, 5))
    (f,) = [f for f in validate(bad) if f.code == "IID031"]
    assert f.offset == _block_at(bad, "iids") and f.message.endswith("holds key 5 [content offset 0, block 0]")
    bad = _with_lut(V2P, _set_row(1, area=10**6))
    (f,) = [f for f in validate(bad) if f.code == "IID050"]
    assert f.section == "lut" and f.offset == _block_at(bad, "lut")
    assert f.message.startswith("entry 1: area is 1000000") and f.message.endswith("[LUT chunk 0 at content offset 0, block 0]")


def test_version2_chunk_bases_continue_the_records_before_them() -> None:
    def shift_iid_base(bases: np.ndarray, rows: np.ndarray) -> None:
        bases[0] += 1

    chunk1 = schema.LUT_CHUNK2
    bad = _with_lut(V2_TWO_CHUNKS, shift_iid_base, chunk=1)
    found = validate(bad, max_per_code=None)
    (f,) = [f for f in found if f.code == "IID111"]
    assert f.section == "lut" and f.offset == _block_at(bad, "lut", 1) and f.message.startswith("LUT chunk 1: iid_base is")
    # the records read from that base are found wrong, and located in chunk 1
    assert any(f.code == "IID031" and f"IID record of entry {chunk1} " in f.message for f in found)
    assert all(f.offset == _block_at(bad, "lut", 1) for f in found if f.code in ("IID022", "IID111"))


def test_version2_oversize_content_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iidschema.masks, "MAX_MASK_PIXELS", 16)
    found = validate(V2P, max_per_code=None)
    assert any(f.code == "IID109" and f.section == "lut" and f.offset == _sections2(V2P)["lut"][0] for f in found)
    assert {f.code for f in found if f.is_error} == {"IID109"}, [str(f) for f in found]


def test_version2_a_block_declaring_a_huge_size_is_refused_unread() -> None:
    """A zstd frame may declare its content size, and then decompressors
    allocate it whatever output limit they are given: validate checks the
    declaration first (a 1 TiB claim in a tiny file is one finding)."""
    off = _sections2(V2P)["segs"][0]
    raw_length = schema.BLOCKED_HEAD2.unpack_from(V2P, off)[0]
    frame = zstandard.ZstdCompressor().compress(bytes(raw_length))
    assert zstandard.frame_content_size(frame) == raw_length
    # the same frame with an 8-byte content size field claiming 2**40
    fhd = frame[4]
    fcs = {0: 1 if fhd & 0x20 else 0, 1: 2, 2: 4, 3: 8}[fhd >> 6]
    fixed = 5 + (0 if fhd & 0x20 else 1) + (0, 1, 2, 4)[fhd & 3]
    huge = frame[:4] + bytes([fhd | 0xC0]) + frame[5:fixed] + struct.pack("<Q", 2**40) + frame[fixed + fcs :]
    ref = np.array([(schema.BLOCKED_HEAD2_SIZE + _REF2.itemsize, len(huge), crc32c(huge))], dtype=_REF2).tobytes()
    bad = _with_section(V2P, "segs", V2P[off : off + schema.BLOCKED_HEAD2_SIZE] + ref + huge)
    found = [f for f in validate(bad) if f.is_error]
    assert [f.code for f in found] == ["IID107"] and "declares 1099511627776 bytes" in found[0].message


def test_version2_cli(tmp_path: Path, capsys) -> None:
    good, bad = tmp_path / "good2.iid", tmp_path / "bad2.iid"
    good.write_bytes(V2["rle"])
    bad.write_bytes(_damage_stored_byte(V2P, "segs"))
    assert main(["validate", str(good)]) == 0
    assert "checked 1 file: 1 ok" in capsys.readouterr().out
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert re.search(rf"bad2\.iid: error IID106 \[segs@{_block_at(V2P, 'segs')}\] segs: block 0 ", out), out


# -- random damage ------------------------------------------------------------

_RAW_OPS = iidfuzz.byte_ops()
_HUGE = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 7, 8, 255, 2**16 - 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))


def _fit(value: int, dtype: np.dtype, name: str) -> int:
    return value % (1 << (8 * dtype.fields[name][0].itemsize))


@st.composite
def _damaged_v2(draw: Any) -> bytes:
    """A version-2 file damaged one of four ways: raw bytes (no CRC fixed),
    a blocked section's head or first table row (the header's CRCs fixed),
    or a byte of a section's content (compressed again, every CRC right)."""
    codec = draw(st.sampled_from(("packbits", "rle", "zstd")))
    data = draw(iss.file_bytes(version=2, codec=codec, max_entries=4, max_side=10))
    kind = draw(st.sampled_from(("raw", "head", "row", "content")))
    section = draw(st.sampled_from(_BLOCKED2))
    if kind == "raw":
        return iidfuzz.mutate(data, draw(st.lists(_RAW_OPS, min_size=1, max_size=3)))
    if kind == "head":
        name = draw(st.sampled_from(_HEAD2.names))
        return _head2(data, section, name, _fit(draw(_HUGE), _HEAD2, name))
    if kind == "row":
        if not schema.BLOCKED_HEAD2.unpack_from(data, _sections2(data)[section][0])[4]:
            return data  # no block, no row
        name = draw(st.sampled_from(_REF2.names))
        return _fix2(_set(data, _row_at(data, section), _REF2, name, _fit(draw(_HUGE), _REF2, name)))
    content = _content2(data, section)
    if not content:
        return data
    at, value = draw(st.integers(0, len(content) - 1)), draw(st.integers(0, 255))

    def put(content: bytearray) -> None:
        content[at] = value

    return _with_content(data, section, put)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_damaged_v2())
def test_version2_damage_never_makes_validate_raise(bad: bytes) -> None:
    found = validate(bad, max_per_code=None)  # must not raise
    assert not [f for f in found if f.code == "IID099"], [str(f) for f in found]
    # the reader and validate agree: a file the reader refuses has an error
    assert reads(bad) or any(f.is_error for f in found), [str(f) for f in found]


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.iid"
    good.write_bytes(V1)
    bad = tmp_path / "bad.iid"
    bad.write_bytes(put(V0, "seg[0].area", 1234))
    warn = tmp_path / "warn.iid"
    warn.write_bytes(V0 + b"\0")
    return {"good": good, "bad": bad, "warn": warn}


def test_cli_exit_status_and_text(files, capsys) -> None:
    assert main(["validate", str(files["good"]), str(files["warn"])]) == 0
    out = capsys.readouterr().out
    assert "warning IID014" in out and "checked 2 files: 2 ok, 0 with errors; 0 errors, 1 warnings" in out
    assert main(["validate", str(files["good"]), str(files["bad"])]) == 1
    out = capsys.readouterr().out
    assert re.search(r"bad\.iid: error IID050 \[segs@\d+\] entry 0: area is 1234", out)
    assert "1 with errors" in out
    assert main(["validate", "--errors-only", str(files["warn"])]) == 0
    assert "IID014" not in capsys.readouterr().out


def test_cli_json(files, capsys) -> None:
    assert main(["validate", "--json", str(files["good"]), str(files["bad"]), str(files["warn"])]) == 1
    doc = json.loads(capsys.readouterr().out)
    by = {Path(f["file"]).name: f for f in doc["files"]}
    assert by["good.iid"]["ok"] and by["good.iid"]["findings"] == []
    assert not by["bad.iid"]["ok"] and by["bad.iid"]["errors"] >= 1
    f = next(x for x in by["bad.iid"]["findings"] if x["code"] == "IID050")
    assert set(f) == {"code", "severity", "section", "offset", "message"}
    assert by["warn.iid"]["ok"] and by["warn.iid"]["warnings"] == 1
    assert doc["summary"] == {"files": 3, "files_with_errors": 1, "errors": by["bad.iid"]["errors"], "warnings": 1}


def test_cli_progress_bar_only_on_a_terminal(files, capsys, monkeypatch) -> None:
    paths = [str(files["good"])] * 3
    main(["validate", *paths])
    assert capsys.readouterr().err == ""  # not a TTY: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    main(["validate", *paths])
    assert "validating" in capsys.readouterr().err
    main(["validate", "--quiet", *paths])
    assert capsys.readouterr().err == ""


def test_cli_as_a_program(files) -> None:
    run = subprocess.run([sys.executable, "-m", "iidschema", "validate", str(files["bad"])], capture_output=True, text=True)
    assert run.returncode == 1 and "IID050" in run.stdout and run.stderr == ""
    run = subprocess.run([sys.executable, "-m", "iidschema", "validate"], capture_output=True, text=True)
    assert run.returncode == 2


# --------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------

def test_every_code_is_documented_with_its_severity() -> None:
    doc = (REPO / "docs" / "CONFORMANCE.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(IID\d{3})` \| (error|warning) \|", doc, flags=re.M))
    assert rows == {code: sev for code, (sev, _) in CODES.items()}


def test_validate_cli_on_a_scheduler_reports_what_the_sequential_run_reports(tmp_path, capsys):
    from iidschema.cli import main
    from iidschema.demo import build_sample

    good = tmp_path / "good.iid"
    build_sample().save(good)
    bad = tmp_path / "bad.iid"
    bad.write_bytes(b"\x07\0\0\0" + bytes(60))
    args = ["validate", "-q", "--json", str(good), str(bad)]
    assert main(args) == 1
    sequential = capsys.readouterr().out
    assert main(args + ["--scheduler", "threads", "--workers", "2"]) == 1
    assert capsys.readouterr().out == sequential
