"""docs/FORMAT.md §8 (version 2) is enough to read the files iidschema writes.

The parser below is written from the text of FORMAT.md §8 only (plus
docs/CODECS.md for the ``rle`` and ``zstd`` mask codecs, for which it calls
iidschema's codecs): it uses ``struct``, ``crc32c``, ``zstandard`` and
``numpy``, never iidschema's schema, reader or blocked modules.  It is strict
where the document says "must" (including the block placement rules that
iidschema's reader does not check), so a file iidschema writes and this
parser refuses means the document or the writer is wrong.

The tests write files with iidschema (``IIDFile.add``/``add_many`` +
``save(version=2, codec=...)``) and check that the parser finds the same
entries, groups and metadata as ``iidschema.open``; and, the other way round,
that iidschema reads files this module writes from the document with layout
choices iidschema's writer never makes (stored blocks, odd block sizes and
shuffles, another section order, no optional sections, an unknown optional
section).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import zstandard
from crc32c import crc32c
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import iidschema
from iidschema import IIDFile
from iidschema import strategies as iss

# ---------------------------------------------------------------------------
# The independent parser (FORMAT.md §8)
# ---------------------------------------------------------------------------

MAGIC = b"\x89IID\r\n\x1a\n"
LUT, IIDS, META, GROUPS, SEGS, SPATIAL, ADDRESS, CODECS = 1, 2, 3, 4, 5, 6, 7, 8
BLOCKED = {LUT, IIDS, GROUPS, SEGS, SPATIAL, ADDRESS}  # §8.3
PLAIN = {META, CODECS}
MANDATORY = {LUT, IIDS, META, GROUPS, SEGS}
CHUNK = 1024  # §8.5
CHUNK_SIZE = 16 + CHUNK * 38  # 38 928
# §8.5: the LUT row fields, in declaration order, with their sizes.
FIELDS = (("minr", 4), ("minc", 4), ("height", 4), ("width", 4), ("area", 8),
          ("iid_length", 4), ("seg_length", 8), ("codec", 2))
SLACK = 64  # §8.7
MAX_COORD = 2**32 - 1


class DocError(Exception):
    """The file breaks a rule of FORMAT.md §8."""


def need(cond: bool, what: str) -> None:
    if not cond:
        raise DocError(what)


class Entry(NamedTuple):
    key: int
    address: bytes
    domain: bytes
    bbox: tuple[int, int, int, int]
    area: int
    codec: int
    payload: bytes
    mask: np.ndarray


class Parsed(NamedTuple):
    rformat: int
    entries: list[Entry]
    groups: dict[str, list[int]]
    meta: Any
    codecs: list[int] | None
    contents: dict[int, bytes]  # section id -> content (known sections)
    heads: dict[int, tuple[int, int, int, int, int]]  # blocked: raw_length, block_size, compression, shuffle, count


def unshuffle(block: bytes, t: int) -> bytes:
    """§8.4: D[i*t + j] = S[j*k + i]; the trailing n - k*t bytes as they are."""
    n = len(block)
    k = n // t
    s = np.frombuffer(block, dtype=np.uint8)
    d = np.empty(n, dtype=np.uint8)
    for j in range(t):
        d[j : k * t : t] = s[j * k : (j + 1) * k]
    d[k * t :] = s[k * t :]
    return d.tobytes()


def shuffle(block: bytes, t: int) -> bytes:
    """§8.4: S[j*k + i] = D[i*t + j]; the trailing partial element unchanged."""
    n = len(block)
    k = n // t
    d = np.frombuffer(block, dtype=np.uint8)
    return b"".join(d[j : k * t : t].tobytes() for j in range(t)) + d[k * t :].tobytes()


def decompress_block(stored: bytes, n: int) -> bytes:
    """§8.4 step 2, compression 1: exactly one zstd frame of exactly n bytes,
    its declared content size checked before anything is decompressed."""
    try:
        declared = zstandard.frame_content_size(stored)
    except zstandard.ZstdError as exc:
        raise DocError(f"not a zstd frame: {exc}") from None
    need(declared in (-1, n), f"zstd frame declares {declared} bytes, the block holds {n}")
    try:
        if declared == -1:
            return zstandard.ZstdDecompressor().decompress(stored, max_output_size=n)
        d = zstandard.ZstdDecompressor().decompressobj()
        out = d.decompress(stored)
    except zstandard.ZstdError as exc:
        raise DocError(f"bad zstd frame: {exc}") from None
    need(d.eof and not d.unused_data, "a block is not exactly one zstd frame")
    return out


def blocked_content(data: bytes, off: int, length: int, crc: int) -> tuple[bytes, tuple[int, int, int, int, int]]:
    """§8.4: the content of a blocked section."""
    need(length >= 20, "blocked section shorter than its head")
    head = data[off : off + 20]
    need(crc32c(head) == crc, "head CRC mismatch")
    raw_length, block_size, compression, t, count = struct.unpack("<QIHHI", head)
    need(1 <= block_size <= 2**24, "block_size out of range")
    need(compression in (0, 1), "unknown compression")
    need(count == -(-raw_length // block_size), "count != ceil(raw_length / block_size)")
    table_end = 20 + 16 * count
    need(table_end <= length, "block table runs past the section")
    parts = []
    expect = table_end  # placement: back to back from the end of the table
    for b in range(count):
        o, n_stored, block_crc = struct.unpack_from("<QII", data, off + 20 + 16 * b)
        need(o == expect, f"block {b} not right after the previous one")
        need(o + n_stored <= length, f"block {b} runs past the section")
        stored = data[off + o : off + o + n_stored]
        need(crc32c(stored) == block_crc, f"block {b} CRC mismatch")
        n = min(block_size, raw_length - b * block_size)
        if compression == 0:
            need(n_stored == n, "stored block of the wrong size")
            block = stored
        else:
            block = decompress_block(stored, n)
        need(len(block) == n, f"block {b} decodes to {len(block)} bytes, not {n}")
        parts.append(unshuffle(block, t) if t >= 2 else block)
        expect = o + n_stored
    need(expect == length, "the last block does not end at the end of the section")
    return b"".join(parts), (raw_length, block_size, compression, t, count)


def planar_column(chunk: bytes, pos: int, size: int, m: int) -> list[int]:
    """§8.5: byte j of value i at pos + j*m + i."""
    return [sum(chunk[pos + j * m + i] << (8 * j) for j in range(size)) for i in range(m)]


def lut_rows(content: bytes, n: int, block_size: int) -> list[dict[str, int]]:
    """§8.5: every LUT row, with iid_offset and seg_offset derived."""
    chunks = -(-n // CHUNK)
    need(len(content) == 16 * chunks + 38 * n, "LUT content size")
    need(n == 0 or block_size == CHUNK_SIZE, "LUT block size")
    rows: list[dict[str, int]] = []
    for c in range(chunks):
        m = min(CHUNK, n - CHUNK * c)
        chunk = content[c * CHUNK_SIZE : c * CHUNK_SIZE + 16 + 38 * m]
        iid_base, seg_base = struct.unpack_from("<QQ", chunk, 0)
        cols, pos = {}, 16
        for name, size in FIELDS:
            cols[name] = planar_column(chunk, pos, size, m)
            pos += size * m
        iid_off, seg_off = iid_base, seg_base
        for i in range(m):
            row = {name: cols[name][i] for name, _ in FIELDS}
            row["iid_offset"], row["seg_offset"] = iid_off, seg_off
            iid_off += row["iid_length"]
            seg_off += row["seg_length"]
            rows.append(row)
    return rows


def unpack_bits(payload: bytes, h: int, w: int) -> np.ndarray:
    """§8.7 packbits: pixel p is bit 7 - p % 8 of byte p // 8."""
    n = h * w
    need(len(payload) == (n + 7) // 8, "packbits payload size")
    u8 = np.frombuffer(payload, dtype=np.uint8)
    bits = (u8[:, None] >> np.arange(7, -1, -1, dtype=np.uint8)) & 1
    return bits.reshape(-1)[:n].astype(bool).reshape(h, w)


def decode_mask(codec: int, payload: bytes, h: int, w: int) -> np.ndarray:
    if codec == 0:
        return unpack_bits(payload, h, w)
    from iidschema.codecs import get_codec  # rle, zstd: docs/CODECS.md

    return np.asarray(get_codec(codec).decode(payload, (h, w)), dtype=bool)


def parse_groups(content: bytes, n: int) -> dict[str, list[int]]:
    """§8.8 / §3.4."""
    need(len(content) >= 4, "groups shorter than json_len")
    (json_len,) = struct.unpack_from("<I", content, 0)
    need(json_len <= len(content) - 4, "group table past the end")
    table = json.loads(content[4 : 4 + json_len].decode("utf-8"))
    data = content[4 + json_len :]
    need(isinstance(table, list), "group table is not a list")
    out: dict[str, list[int]] = {}
    for item in table:
        name, g_off, g_len = item["name"], item["offset"], item["length"]
        need(name not in out and g_len % 4 == 0 and g_off + g_len <= len(data), f"group {name!r}")
        keys = list(struct.unpack_from(f"<{g_len // 4}I", data, g_off))
        need(all(k < n for k in keys), f"group {name!r} key out of range")
        out[name] = keys
    return out


def check_indexes(contents: dict[int, bytes], entries: list[Entry]) -> None:
    """§8.8: the index contents have the version-1 layouts (INDEXES.md)."""
    n = len(entries)
    if SPATIAL in contents:
        sp = contents[SPATIAL]
        magic, node_size, num_entries, levels, nodes = struct.unpack_from("<4sIIIQ", sp, 0)
        need(magic == b"SIDX" and num_entries == n and len(sp) == 24 + 20 * nodes, "spatial index header")
        leaves = [struct.unpack_from("<5I", sp, 24 + 20 * (nodes - n + j)) for j in range(n)]
        need(sorted((ref, (a, b, c, d)) for a, b, c, d, ref in leaves) == [(e.key, e.bbox) for e in entries],
             "spatial index leaves are not the LUT bboxes")
    if ADDRESS in contents:
        ad = contents[ADDRESS]
        magic, hash_id, bits, num_entries = struct.unpack_from("<4sIII", ad, 0)
        r = 16 + 4 * (2**bits + 1)
        need(magic == b"AIDX" and hash_id == 1 and num_entries == n and len(ad) == r + 12 * n, "address index header")
        records = [struct.unpack_from("<QI", ad, r + 12 * j) for j in range(n)]
        need(records == sorted(records) and sorted(k for _, k in records) == list(range(n)), "address index records")


def parse_v2(data: bytes) -> Parsed:
    """A whole version-2 file, every rule of FORMAT.md §8 that can be checked."""
    need(len(data) >= 28, "shorter than the fixed header")
    version, rformat = struct.unpack_from("<II", data, 0)
    need(version == 2, "not version 2")
    need(data[8:16] == MAGIC, "magic")
    n, _flags, s = struct.unpack_from("<III", data, 16)
    need(s <= 64, "more than 64 sections")
    hsize = 32 + 24 * s
    need(len(data) >= hsize, "header past the end")
    need(crc32c(data[: hsize - 4]) == struct.unpack_from("<I", data, hsize - 4)[0], "header_crc")
    table: dict[int, tuple[int, int, int]] = {}
    spans = []
    for i in range(s):
        sid, flags, crc, off, length = struct.unpack_from("<HHIQQ", data, 28 + 24 * i)
        need(off >= hsize and off + length <= len(data), f"section {sid} bounds")
        spans.append((off, length))
        if sid not in BLOCKED | PLAIN:
            need(not flags & 1, f"unknown required section {sid}")
            continue
        need(sid not in table, f"section {sid} twice")
        table[sid] = (crc, off, length)
    spans.sort()
    need(all(a + la <= b for (a, la), (b, _) in zip(spans, spans[1:])), "overlapping sections")
    need(MANDATORY <= set(table), "mandatory section missing")
    contents: dict[int, bytes] = {}
    heads = {}
    for sid, (crc, off, length) in table.items():
        if sid in PLAIN:
            contents[sid] = data[off : off + length]
            need(crc32c(contents[sid]) == crc, f"section {sid} CRC")
        else:
            contents[sid], heads[sid] = blocked_content(data, off, length, crc)
    codecs = None
    if CODECS in contents:
        (count,) = struct.unpack_from("<H", contents[CODECS], 0)
        codecs = list(struct.unpack_from(f"<{count}H", contents[CODECS], 2))
    iids, segs = contents[IIDS], contents[SEGS]
    entries = []
    for key, row in enumerate(lut_rows(contents[LUT], n, heads[LUT][1])):
        io, il = row["iid_offset"], row["iid_length"]
        need(io + il <= len(iids), f"entry {key}: IID record outside the content")
        need(il >= 12, f"entry {key}: IID record too short")
        k, dlen, alen = struct.unpack_from("<III", iids, io)
        need(k == key and 12 + dlen + alen == il, f"entry {key}: IID record")
        domain, address = iids[io + 12 : io + 12 + dlen], iids[io + 12 + dlen : io + il]
        h, w = row["height"], row["width"]
        bbox = (row["minr"], row["minc"], row["minr"] + h, row["minc"] + w)
        need(bbox[2] <= MAX_COORD and bbox[3] <= MAX_COORD, f"entry {key}: coordinates")
        so, sl = row["seg_offset"], row["seg_length"]
        need(sl <= h * w + SLACK, f"entry {key}: payload longer than h*w + 64")
        need(so + sl <= len(segs), f"entry {key}: payload outside the content")
        payload = segs[so : so + sl]
        if h * w == 0:
            need(sl == 0, f"entry {key}: payload for an empty bbox")
            mask = np.zeros((h, w), dtype=bool)
        else:
            mask = decode_mask(row["codec"], payload, h, w)
        entries.append(Entry(key, address, domain, bbox, row["area"], row["codec"], payload, mask))
    groups = parse_groups(contents[GROUPS], n)
    meta = json.loads(contents[META].decode("utf-8"))
    check_indexes(contents, entries)
    return Parsed(rformat, entries, groups, meta, codecs, contents, heads)


# ---------------------------------------------------------------------------
# A writer from the document, for layouts iidschema never writes
# ---------------------------------------------------------------------------

def blocked_section(content: bytes, block_size: int, compression: int, t: int) -> tuple[bytes, int]:
    """§8.4: (section bytes, the section entry's crc)."""
    blocks = []
    for start in range(0, len(content), block_size):
        block = content[start : start + block_size]
        block = shuffle(block, t) if t >= 2 else block
        blocks.append(zstandard.ZstdCompressor(level=1).compress(block) if compression else block)
    count = len(blocks)
    head = struct.pack("<QIHHI", len(content), block_size, compression, t, count)
    rows, at = [], 20 + 16 * count
    for block in blocks:
        rows.append(struct.pack("<QII", at, len(block), crc32c(block)))
        at += len(block)
    return head + b"".join(rows) + b"".join(blocks), crc32c(head)


def write_from_doc(n: int, rformat: int, sections: list[tuple[int, int, bytes]]) -> bytes:
    """§8.2: a file of ``sections`` (id, flags, stored bytes + crc computed by
    the caller as ``(bytes, crc)``), in that order, 8-byte aligned."""
    hsize = 32 + 24 * len(sections)
    entries, body, at = [], b"", hsize
    for sid, flags, (stored, crc) in sections:
        pad = -at % 8
        body += b"\0" * pad
        at += pad
        entries.append(struct.pack("<HHIQQ", sid, flags, crc, at, len(stored)))
        body += stored
        at += len(stored)
    head = struct.pack("<II8sIII", 2, rformat, MAGIC, n, 0, len(sections)) + b"".join(entries)
    return head + struct.pack("<I", crc32c(head)) + body


def rewrite(parsed: Parsed, layout: dict[int, tuple[int, int, int]], order: list[int] | None = None,
            extra: list[tuple[int, int, bytes]] = ()) -> bytes:
    """``parsed`` written again with ``layout``: section id -> (block_size,
    compression, shuffle); sections not in ``layout`` and not plain are left
    out (only optional ones may be)."""
    out = []
    for sid in order or sorted(parsed.contents):
        content = parsed.contents[sid]
        if sid in PLAIN:
            out.append((sid, 0, (content, crc32c(content))))
        elif sid in layout:
            out.append((sid, 0, blocked_section(content, *layout[sid])))
    out += [(sid, flags, (data, crc32c(data))) for sid, flags, data in extra]
    return write_from_doc(len(parsed.entries), parsed.rformat, out)


def encode_lut(rows: list[dict[str, int]]) -> bytes:
    """§8.5: LUT content of ``rows`` (records back to back in key order)."""
    out, iid_base, seg_base = [], 0, 0
    for c in range(0, len(rows), CHUNK):
        chunk = rows[c : c + CHUNK]
        m = len(chunk)
        out.append(struct.pack("<QQ", iid_base, seg_base))
        for name, size in FIELDS:
            out.append(bytes((row[name] >> (8 * j)) & 0xFF for j in range(size) for row in chunk))
        iid_base += sum(row["iid_length"] for row in chunk)
        seg_base += sum(row["seg_length"] for row in chunk)
        assert sum(map(len, out[-len(FIELDS) :])) == 38 * m
    return b"".join(out)


# ---------------------------------------------------------------------------
# Comparison with iidschema
# ---------------------------------------------------------------------------

def expected_from_iidschema(path: Path) -> tuple[list[tuple], dict[str, list[int]], Any]:
    with iidschema.open(path) as g:
        entries = [(e.key, e.iid.address, e.iid.domain, tuple(int(v) for v in e.seg.bbox), int(e.seg.area),
                    np.asarray(e.seg.mask(), dtype=bool)) for e in g]
        groups = {name: sorted(int(k) for k in g.groups.keys(name)) for name in g.groups}
        meta = g.meta.data
    return entries, groups, meta


def assert_same(parsed: Parsed, path: Path) -> None:
    entries, groups, meta = expected_from_iidschema(path)
    assert len(parsed.entries) == len(entries)
    for mine, (key, address, domain, bbox, area, mask) in zip(parsed.entries, entries):
        assert (mine.key, mine.address, mine.domain, mine.bbox, mine.area) == (key, address, domain, bbox, area)
        assert mine.mask.shape == mask.shape and np.array_equal(mine.mask, mask), f"entry {key}: mask"
    assert {name: sorted(keys) for name, keys in parsed.groups.items()} == groups
    assert parsed.meta == meta


def assert_matches_source(parsed: Parsed, f: IIDFile) -> None:
    """The parsed entries are what was added to ``f``."""
    want = list(f)
    assert len(parsed.entries) == len(want)
    for mine, e in zip(parsed.entries, want):
        assert (mine.address, mine.domain, mine.bbox) == (e.iid.address, e.iid.domain, tuple(e.seg.bbox))
        assert np.array_equal(mine.mask, np.asarray(e.seg.mask(), dtype=bool))
        assert mine.area == int(np.count_nonzero(mine.mask))


def save(f: IIDFile, path: Path, codec: Any = "auto") -> Parsed:
    f.save(path, version=2, codec=codec)
    return parse_v2(path.read_bytes())


CODEC_IDS = {"auto": 0, "packbits": 0, "rle": 1, "zstd": 2}


def sample_file() -> IIDFile:
    """Several entries: odd shapes, an all-False mask, empty IID parts,
    a zero-size mask, groups (one empty) and nested metadata."""
    rng = np.random.default_rng(7)
    f = IIDFile()
    f.add(b"tree", b"wordnet", (1, 2, 3, 5), np.array([[1, 0, 1], [0, 1, 1]], bool), group="sys")
    f.add(b"", b"", (10, 20, 19, 37), rng.random((9, 17)) < 0.4, group=["sys", "noise"])
    f.add(b"all-false", b"d", (0, 0, 4, 4), np.zeros((4, 4), bool))
    f.add(b"full", b"dom\xff", (100, 200, 164, 248), np.ones((64, 48), bool), group="noise")
    f.add(b"x" * 300, b"wordnet", (5, 5, 6, 13), np.ones((1, 8), bool))
    f.add(b"zero", b"", (7, 7, 7, 11), np.zeros((0, 4), bool))
    f.add(b"big-coords", b"", (2**32 - 3, 2**31, 2**32 - 1, 2**31 + 9), rng.random((2, 9)) < 0.5)
    f.groups.add("empty", [])
    f.meta.data = {"image": {"height": 480, "width": 640}, "caf\u00e9": [1, 2.5, None, "\U0001f642"]}
    return f


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md"


def doc_example_bytes() -> bytes:
    """The hex dump of FORMAT.md §8.14."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### 8.14") :]
    dump = section[section.index("```") + 3 :]
    dump = dump[: dump.index("```")]
    out = b""
    for line in dump.strip().splitlines():
        m = re.match(r"([0-9a-f]{8}): ((?:[0-9a-f]{2} ?)+)", line)
        assert m and int(m.group(1), 16) == len(out), line
        out += bytes.fromhex(m.group(2))
    return out


def test_worked_example_of_the_document(tmp_path: Path) -> None:
    data = doc_example_bytes()
    assert len(data) == 694
    parsed = parse_v2(data)
    (e,) = parsed.entries
    assert (e.address, e.domain, e.bbox, e.area, e.codec, e.payload) == (b"tree", b"wordnet", (1, 2, 3, 5), 4, 0, b"\xac")
    assert e.mask.tolist() == [[True, False, True], [False, True, True]]
    assert parsed.groups == {"sys": [0]} and parsed.meta == {} and parsed.codecs == [0]
    assert {sid: head[0] for sid, head in parsed.heads.items()} == {GROUPS: 51, LUT: 54, SPATIAL: 44, ADDRESS: 36,
                                                                     IIDS: 23, SEGS: 1}
    assert parsed.contents[GROUPS] == b"+\0\0\0" + b'[{"name": "sys", "offset": 0, "length": 4}]' + b"\0\0\0\0"
    assert parsed.contents[LUT] == bytes(16) + struct.pack("<4IQIQH", 1, 2, 2, 3, 4, 23, 1, 0)
    path = tmp_path / "doc.iid"
    path.write_bytes(data)
    assert_same(parsed, path)
    # The writer still makes these contents (its stored bytes depend on its
    # block sizes, zstd level and zstd version: §8.12).
    f = IIDFile()
    f.add(b"tree", b"wordnet", (1, 2, 3, 5), np.array([[1, 0, 1], [0, 1, 1]], bool), group="sys")
    assert save(f, tmp_path / "now.iid").contents == parsed.contents


def test_shuffle_definition() -> None:
    # FORMAT.md §8.14: 51 bytes with element size 4 -> 12 elements, 3 trailing bytes.
    plain = b"+\0\0\0" + b'[{"name": "sys", "offset": 0, "length": 4}]' + b"\0\0\0\0"
    stored = shuffle(plain, 4)
    assert stored[:12] == bytes([plain[4 * i] for i in range(12)]) and stored[48:] == plain[48:]
    assert stored.hex().startswith("2b5b613a79206622") and unshuffle(stored, 4) == plain
    assert shuffle(b"abc", 7) == b"abc"  # t > n: unchanged
    assert shuffle(bytes(range(10)), 3) == bytes([0, 3, 6, 1, 4, 7, 2, 5, 8, 9])


def test_planar_example_of_the_document() -> None:
    # §8.5: minr = 1, 300, 70000 in a chunk of 3 rows.
    col = bytes.fromhex("01 2c 70 00 01 11 00 00 01 00 00 00")
    assert planar_column(col, 0, 4, 3) == [1, 300, 70000]


@pytest.mark.parametrize("codec", ["auto", "packbits", "rle", "zstd"])
def test_sample_file_parses_from_the_document(tmp_path: Path, codec: str) -> None:
    f = sample_file()
    path = tmp_path / "f.iid"
    parsed = save(f, path, codec)
    assert {e.codec for e in parsed.entries} == {CODEC_IDS[codec]}
    assert parsed.codecs == [CODEC_IDS[codec]]
    assert_matches_source(parsed, f)
    assert_same(parsed, path)
    assert parsed.groups == {"sys": [0, 1], "noise": [1, 3], "empty": []}


def test_zstd_zero_size_mask(tmp_path: Path) -> None:
    """An empty bbox has no payload, whatever the codec (zstd would make a
    9-byte frame of nothing)."""
    f = IIDFile()
    f.add(b"zero", b"", (7, 7, 7, 11), np.zeros((0, 4), bool))
    path = tmp_path / "z.iid"
    f.save(path, version=2, codec="zstd")
    assert_same(parse_v2(path.read_bytes()), path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "e.iid"
    parsed = save(IIDFile(), path)
    assert parsed.entries == [] and parsed.codecs == [] and parsed.groups == {}
    assert parsed.heads[LUT][0] == 0 and parsed.heads[LUT][4] == 0
    assert_same(parsed, path)


@pytest.mark.parametrize("codec", ["packbits", "rle"])
def test_many_entries_span_chunks_and_blocks(tmp_path: Path, codec: str) -> None:
    """Three LUT chunks (non-zero bases, a short last chunk) and records that
    straddle block boundaries, written through add_many."""
    rng = np.random.default_rng(1)
    n = 2 * CHUNK + 77
    shapes = rng.integers(0, 40, size=(n, 2))
    shapes[::97] = 0  # some zero-size masks
    masks = [rng.random(tuple(s)) < 0.5 for s in shapes]
    corners = rng.integers(0, 5000, size=(n, 2))
    boxes = np.concatenate([corners, corners + shapes], axis=1)
    f = IIDFile()
    f.add_many([b"obj-%d" % i for i in range(n)], [b"d%d" % (i % 3) for i in range(n)], boxes, masks)
    f.groups.add("odd", range(1, n, 2))
    path = tmp_path / "many.iid"
    parsed = save(f, path, codec)
    assert parsed.heads[LUT][4] == 3 and parsed.heads[SEGS][4] > 1 and parsed.heads[IIDS][4] >= 1
    assert_matches_source(parsed, f)
    assert_same(parsed, path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(f=iss.iid_files(version=2, max_entries=6, max_side=24), codec=st.sampled_from(["packbits", "rle", "zstd"]))
def test_hypothesis_files_parse_from_the_document(tmp_path_factory: Any, f: IIDFile, codec: str) -> None:
    if codec == "zstd":  # see test_zstd_zero_size_mask
        assume(all(e.seg.bbox[0] < e.seg.bbox[2] and e.seg.bbox[1] < e.seg.bbox[3] for e in f))
    path = tmp_path_factory.mktemp("h") / "f.iid"
    parsed = save(f, path, codec)
    assert_matches_source(parsed, f)
    assert_same(parsed, path)
    assert parsed.meta == f.meta.data
    assert {name: sorted(keys) for name, keys in parsed.groups.items()} == {
        name: sorted(int(k) for k in f.groups.keys(name)) for name in f.groups}


# -- iidschema reads what the document allows and its writer never makes ------

LAYOUTS = {
    "stored, no shuffle": {IIDS: (65536, 0, 0), SEGS: (65536, 0, 0), GROUPS: (65536, 0, 0), SPATIAL: (4096, 0, 0),
                           ADDRESS: (4096, 0, 0), LUT: (CHUNK_SIZE, 0, 0)},
    "tiny blocks, odd shuffles": {IIDS: (7, 1, 3), SEGS: (5, 1, 2), GROUPS: (3, 0, 5), SPATIAL: (33, 1, 7),
                                  ADDRESS: (1, 1, 0), LUT: (CHUNK_SIZE, 1, 38)},
    "no indexes, one big block": {IIDS: (1 << 24, 1, 0), SEGS: (1 << 24, 0, 9), GROUPS: (1 << 24, 1, 4),
                                  LUT: (CHUNK_SIZE, 1, 1)},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_iidschema_reads_layouts_of_the_document(tmp_path: Path, layout: str) -> None:
    f = sample_file()
    for i in range(1100):  # two LUT chunks
        f.add(b"n%d" % i, b"", (i, i, i + 3, i + 2), np.eye(3, 2, dtype=bool))
    src = tmp_path / "src.iid"
    parsed = save(f, src)
    order = [SEGS, LUT, CODECS, ADDRESS, IIDS, META, SPATIAL, GROUPS]  # any order is allowed
    unknown = [(0x8001, 0, b"private, optional: skipped")]
    data = rewrite(parsed, LAYOUTS[layout], order, unknown)
    again = parse_v2(data)
    assert again.contents == {sid: c for sid, c in parsed.contents.items() if sid in PLAIN or sid in LAYOUTS[layout]}
    path = tmp_path / "rewritten.iid"
    path.write_bytes(data)
    assert_same(again, path)
    assert_matches_source(again, f)
    with iidschema.open(path) as g:  # queries through (or without) the rewritten indexes
        assert [e.key for e in g.at(3, 2)] == [e.key for e in parsed.entries if e.bbox[0] <= 2 < e.bbox[2]
                                               and e.bbox[1] <= 3 < e.bbox[3] and e.mask[2 - e.bbox[0], 3 - e.bbox[1]]]
        assert [e.key for e in g.look_for([b"n1000"])] == [len(parsed.entries) - 100]


def test_required_unknown_section_and_block_crcs_id(tmp_path: Path) -> None:
    """§8.3: an unknown REQUIRED section (id 9 included) is refused, an optional one skipped."""
    parsed = save(sample_file(), tmp_path / "src.iid")
    layout = {sid: (65536, 1, 0) for sid in BLOCKED - {LUT}} | {LUT: (CHUNK_SIZE, 1, 0)}
    for sid, flags, ok in ((9, 0, True), (9, 1, False), (0x7000, 1, False), (0x7000, 0, True)):
        data = rewrite(parsed, layout, extra=[(sid, flags, b"opaque")])
        path = tmp_path / f"u{sid}-{flags}.iid"
        path.write_bytes(data)
        if ok:
            assert_same(parse_v2(data), path)
        else:
            with pytest.raises(DocError):
                parse_v2(data)
            with pytest.raises(iidschema.IIDFormatError):
                iidschema.open(path)


def read_everything(path: Path) -> None:
    with iidschema.open(path) as g:
        for e in g:
            e.iid.address, e.seg.mask()
        for name in g.groups:
            g.groups.keys(name)
        g.meta.data


@pytest.mark.parametrize("sid", [LUT, IIDS, META, GROUPS, SEGS])
@pytest.mark.parametrize("where", ["head", "row", "block"])
def test_damage_is_refused_by_both(tmp_path: Path, sid: int, where: str) -> None:
    """A flipped byte in a section's head, block table row or block (for meta:
    its bytes) fails a CRC or a check of §8.10 in both readers."""
    src = tmp_path / "src.iid"
    parse = save(sample_file(), src)
    data = bytearray(src.read_bytes())
    (s,) = struct.unpack_from("<I", data, 24)
    entry = next(i for i in range(s) if struct.unpack_from("<H", data, 28 + 24 * i)[0] == sid)
    _, _, _, off, length = struct.unpack_from("<HHIQQ", data, 28 + 24 * entry)
    if sid == META:
        at = off + {"head": 0, "row": length // 2, "block": length - 1}[where]
    else:
        count = parse.heads[sid][4]
        at = off + {"head": 8, "row": 20 + 16 * (count - 1) + 13, "block": length - 1}[where]
    data[at] ^= 0x10
    path = tmp_path / "bad.iid"
    path.write_bytes(bytes(data))
    with pytest.raises(DocError):
        parse_v2(bytes(data))
    with pytest.raises(iidschema.IIDFormatError):
        read_everything(path)


STANDARD = {sid: (4096, 1, 0) for sid in BLOCKED - {LUT}} | {LUT: (CHUNK_SIZE, 1, 0)}


def _set(rows: list[dict[str, int]], i: int, **fields: int) -> None:
    rows[i].update(fields)


# name -> mutation of (LUT rows, contents, layout) of a two-entry file; each
# breaks a "must" of §8 that iidschema checks (§8.10).
MUTATIONS = {
    "LUT block size is not one chunk": lambda rows, c, lay: lay.update({LUT: (1000, 1, 0)}),
    "LUT content length": lambda rows, c, lay: c.update({LUT: c[LUT] + b"\0"}),
    "payload longer than h*w + 64": lambda rows, c, lay: (_set(rows, 0, seg_length=6 + 65),
                                                          c.update({SEGS: c[SEGS] + bytes(70)})),
    "payload outside the content": lambda rows, c, lay: _set(rows, 0, seg_length=2),
    "payload for an empty bbox": lambda rows, c, lay: (_set(rows, 1, seg_length=1), c.update({SEGS: c[SEGS] + b"\0"})),
    "IID record key": lambda rows, c, lay: c.update({IIDS: b"\5" + c[IIDS][1:]}),
    "IID record lengths": lambda rows, c, lay: c.update({IIDS: c[IIDS][:4] + b"\6" + c[IIDS][5:]}),
    "coordinate past 2**32 - 1": lambda rows, c, lay: _set(rows, 0, minr=2**32 - 2),
    "unknown codec id": lambda rows, c, lay: _set(rows, 0, codec=0x8123),
    "group key past the entry count": lambda rows, c, lay: c.update({GROUPS: c[GROUPS][:-4] + struct.pack("<I", 2)}),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_both_readers_refuse(tmp_path: Path, name: str) -> None:
    f = IIDFile()
    f.add(b"tree", b"wordnet", (1, 2, 3, 5), np.array([[1, 0, 1], [0, 1, 1]], bool), group="sys")
    f.add(b"zero", b"", (7, 7, 7, 11), np.zeros((0, 4), bool))
    parsed = save(f, tmp_path / "src.iid")
    rows = lut_rows(parsed.contents[LUT], 2, CHUNK_SIZE)
    contents, layout = dict(parsed.contents), dict(STANDARD)
    MUTATIONS[name](rows, contents, layout)
    if contents[LUT] == parsed.contents[LUT]:
        contents[LUT] = encode_lut(rows)
    data = rewrite(parsed._replace(contents=contents), layout)
    path = tmp_path / "bad.iid"
    path.write_bytes(data)
    with pytest.raises((DocError, iidschema.IIDError)):
        parse_v2(data)
    with pytest.raises(iidschema.IIDError):
        read_everything(path)
