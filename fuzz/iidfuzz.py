"""Fuzzing toolkit shared by ``tests/test_fuzz.py`` and ``fuzz/fuzz_reader.py``.

* :func:`seed_files` -- valid files to mutate: the version-0 conformance
  corpus and generated version-0 / version-1 files (every built-in codec, two
  LUT blocks, coordinates above 65535, empty files).
* :func:`field_map` -- where the integer fields of a *valid* file are
  (header, section table, LUT rows, record heads, region heads, group and
  index headers), located with the declarations of :mod:`iidschema.schema`
  (never a hand-written layout), so that mutations can hit lengths, offsets
  and counts precisely.
* :func:`mutate` -- apply mutations (bit flips, byte overwrites, inserts,
  deletes, truncation, field overwrites with huge values).
* :func:`fix_checksums` -- recompute every CRC of a (mutated) version-1 or
  version-2 file where the structure still allows it, so that mutations get
  past the checksums into the parsers.
* :func:`mutate_content` -- version 2: mutate the *decompressed* content of
  one block of a section and write the file again around it, so that the
  parsers behind the compression (LUT columns, records, groups, indexes) are
  fuzzed too, not only the zstd frames and their CRCs.
* :func:`read_everything` -- the oracle: open, fetch everything, decode
  every mask, read metadata and groups, run point / box / address queries.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # running from a checkout without installing
    sys.path.insert(0, str(REPO))

import iidschema  # noqa: E402
from iidschema import schema  # noqa: E402

#: Values written into integer fields: limits, off-by-ones and the huge
#: values that overflow naive arithmetic.
SPECIAL_VALUES = (0, 1, 2, 7, 8, 12, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                  2**32, 2**63 - 1, 2**63, 2**64 - 1)


class Field(NamedTuple):
    offset: int
    size: int  # bytes: 2, 4 or 8
    name: str


# --------------------------------------------------------------------------
# Layout helpers derived from the declarations
# --------------------------------------------------------------------------

def _leaves(dtype: np.dtype, base: int = 0, prefix: str = "") -> list[tuple[str, int, int]]:
    """(name, offset, size) of the scalar fields of a structured dtype."""
    out = []
    for name in dtype.names or ():
        sub, off = dtype.fields[name][:2]
        if sub.names:
            out += _leaves(sub, base + off, prefix + name + ".")
        else:
            out.append((prefix + name, base + off, sub.itemsize))
    return out


def _decl_fields(con: Any) -> list[tuple[str, int, int]]:
    """(name, offset, size) of the integer fields of a flat Struct that may
    contain Const fields (which numpy dtypes cannot express)."""
    out, pos = [], 0
    for sub in con.subcons:
        size = sub.sizeof()
        try:
            fmt = schema.format_of(sub)
        except TypeError:
            fmt = None
        if sub.name and fmt is not None:
            out.append((sub.name, pos, size))
        pos += size
    return out


_LUT0 = _leaves(schema.LUT0_DTYPE)
_LUT1 = _leaves(schema.LUT1_DTYPE)
_SECTION1_DTYPE = schema.dtype_of(schema.SectionEntry1)
_SECTION1 = _leaves(_SECTION1_DTYPE)
_HEADER0 = _leaves(schema.dtype_of(schema.Header0))
_HEADER1 = _decl_fields(schema.HeaderFixed1)
_IID_HEAD = _leaves(schema.dtype_of(schema.IIDHead0))
_SEG_HEAD0 = _leaves(schema.dtype_of(schema.SegmentHead0))
_REGION_HEAD0 = _leaves(schema.dtype_of(schema.RegionHead0))
_SEG_HEAD1 = _leaves(schema.dtype_of(schema.SegmentHead1))
_REGION_HEAD1 = _leaves(schema.dtype_of(schema.RegionHead1))
_BLOCK_HEAD = _leaves(schema.dtype_of(schema.BlockTableHead1))
_SPATIAL_HEAD = _decl_fields(schema.SpatialHeader)
_ADDRESS_HEAD = _decl_fields(schema.AddressHeader)
_U16 = struct.Struct(schema.format_of(schema.Int16ul))
_U32 = struct.Struct(schema.format_of(schema.Int32ul))
_FMT = {2: "<H", 4: "<I", 8: "<Q"}


def _u32(buf: Any, off: int) -> int:
    return _U32.unpack_from(buf, off)[0]


def _header1_field(buf: Any, name: str) -> int:
    for n, off, size in _HEADER1:
        if n == name:
            return struct.unpack_from(_FMT[size], buf, off)[0]
    raise KeyError(name)


def _add(out: list[Field], fields: Iterable[tuple[str, int, int]], base: int, prefix: str) -> None:
    out.extend(Field(base + off, size, f"{prefix}.{name}") for name, off, size in fields)


# --------------------------------------------------------------------------
# Field map of a valid file
# --------------------------------------------------------------------------

def field_map(data: bytes) -> list[Field]:
    """The integer fields of a valid ``.iid`` file (either version).

    Best effort on damaged input: whatever cannot be located is left out.
    """
    out: list[Field] = []
    try:
        version = _u32(data, 0)
        if version == 0:
            _map_v0(data, out)
        elif version == 1:
            _map_v1(data, out)
        elif version == 2:
            _map_v2(data, out)
    except (struct.error, ValueError, IndexError, KeyError, iidschema.IIDError):
        pass
    return [f for f in out if 0 <= f.offset and f.offset + f.size <= len(data)]


def _regions(data: bytes, out: list[Field], p: int, end: int, head: Any, fields: Any, lenfield: str, key: int) -> None:
    n = 0
    while p + head.size <= end and n < 64:
        _add(out, fields, p, f"region[{key}]")
        values = dict(zip((f[0] for f in fields), head.unpack_from(data, p)))
        step = values[lenfield] if lenfield == "len" else head.size + values[lenfield]
        if step <= 0:
            break
        p += step
        n += 1


def _map_v0(data: bytes, out: list[Field]) -> None:
    _add(out, _HEADER0, 0, "header")
    h = schema.Header0.parse(data[: schema.HEADER0_SIZE])
    count = h.lut.length // schema.LUT0_ROW
    lut = np.frombuffer(data, dtype=schema.LUT0_DTYPE, count=count, offset=h.lut.offset)
    for k in range(count):
        _add(out, _LUT0, h.lut.offset + k * schema.LUT0_ROW, f"lut[{k}]")
        _add(out, _IID_HEAD, h.iids.offset + int(lut[k]["iid"]["offset"]), f"iid[{k}]")
        seg = h.segs.offset + int(lut[k]["seg"]["offset"])
        _add(out, _SEG_HEAD0, seg, f"seg[{k}]")
        _regions(data, out, seg + schema.SEG_HEAD0.size, seg + int(lut[k]["seg"]["length"]), schema.REGION_HEAD0, _REGION_HEAD0, "len", k)
    out.append(Field(h.groups.offset, 4, "groups.json_len"))


def _sections_v1(data: bytes) -> tuple[int, dict[int, tuple[int, int, int]]]:
    """(header size, {id: (offset, length, table position)}) of a version-1 file."""
    nsec = _header1_field(data, "section_count")
    if nsec > schema.MAX_SECTIONS or schema.header1_size(nsec) > len(data):
        return schema.HEADER1_FIXED_SIZE, {}
    table = np.frombuffer(data, dtype=_SECTION1_DTYPE, count=nsec, offset=schema.HEADER1_FIXED_SIZE)
    out: dict[int, tuple[int, int, int]] = {}
    for i in range(nsec):
        sid = int(table["id"][i])
        if sid not in out:
            out[sid] = (int(table["offset"][i]), int(table["length"][i]), schema.HEADER1_FIXED_SIZE + i * _SECTION1_DTYPE.itemsize)
    return schema.header1_size(nsec), out


def _map_v1(data: bytes, out: list[Field]) -> None:
    _add(out, _HEADER1, 0, "header")
    hsize, secs = _sections_v1(data)
    for sid, (_, _, at) in secs.items():
        _add(out, _SECTION1, at, f"section[{sid}]")
    out.append(Field(hsize - 4, 4, "header.header_crc"))
    S = schema.SectionId
    count = _header1_field(data, "entry_count")
    if S.LUT in secs:
        lut_off = secs[S.LUT][0]
        lut = np.frombuffer(data, dtype=schema.LUT1_DTYPE, count=count, offset=lut_off)
        for k in range(count):
            _add(out, _LUT1, lut_off + k * schema.LUT1_ROW, f"lut[{k}]")
            if S.IIDS in secs:
                _add(out, _IID_HEAD, secs[S.IIDS][0] + int(lut[k]["iid"]["offset"]), f"iid[{k}]")
            if S.SEGS in secs:
                seg = secs[S.SEGS][0] + int(lut[k]["seg"]["offset"])
                _add(out, _SEG_HEAD1, seg, f"seg[{k}]")
                _regions(data, out, seg + schema.SEG_HEAD1.size, seg + int(lut[k]["seg"]["length"]), schema.REGION_HEAD1,
                         _REGION_HEAD1, "length", k)
        nblocks = (count + schema.LUT_BLOCK - 1) // schema.LUT_BLOCK
        for b in range(nblocks):
            out.append(Field(lut_off + count * schema.LUT1_ROW + 4 * b, 4, f"lut.block_crc[{b}]"))
    if S.GROUPS in secs:
        out.append(Field(secs[S.GROUPS][0], 4, "groups.json_len"))
    if S.CODECS in secs:
        off = secs[S.CODECS][0]
        n = _U16.unpack_from(data, off)[0]
        out.extend(Field(off + 2 * i, 2, "codecs") for i in range(n + 1))
    if S.BLOCK_CRCS in secs:
        off = secs[S.BLOCK_CRCS][0]
        out.append(Field(off, 4, "block_crcs.table_count"))
        p = off + 4
        for _ in range(_u32(data, off)):
            _add(out, _BLOCK_HEAD, p, "block_table")
            p += schema.BlockTableHead1.sizeof() + 4 * _u32(data, p + 8)
    if S.SPATIAL_INDEX in secs:
        off = secs[S.SPATIAL_INDEX][0]
        _add(out, _SPATIAL_HEAD, off, "spatial")
        # a few nodes: the root and the first leaves
        node = schema.SpatialNode.sizeof()
        hs = schema.SpatialHeader.sizeof()
        for i in range(min(8, (secs[S.SPATIAL_INDEX][1] - hs) // node)):
            _add(out, _leaves(schema.dtype_of(schema.SpatialNode)), off + hs + i * node, f"spatial.node[{i}]")
    if S.ADDRESS_INDEX in secs:
        off = secs[S.ADDRESS_INDEX][0]
        _add(out, _ADDRESS_HEAD, off, "address")
        hs = schema.AddressHeader.sizeof()
        for i in range(min(4, (secs[S.ADDRESS_INDEX][1] - hs) // 4)):
            out.append(Field(off + hs + 4 * i, 4, f"address.bucket[{i}]"))


_BLOCKED_HEAD2 = _leaves(schema.dtype_of(schema.BlockedHead2))
_BLOCK_REF2 = _leaves(schema.dtype_of(schema.BlockRef2))


def _map_v2(data: bytes, out: list[Field]) -> None:
    """Version 2: the header and section table as version 1; each blocked
    section's head and its first block table rows."""
    _add(out, _HEADER1, 0, "header")
    hsize, secs = _sections_v1(data)
    for sid, (off, length, at) in secs.items():
        _add(out, _SECTION1, at, f"section[{sid}]")
        if sid in schema.BLOCKED_SECTIONS2 and length >= schema.BLOCKED_HEAD2_SIZE:
            name = schema.SectionId.NAMES[sid]
            _add(out, _BLOCKED_HEAD2, off, f"{name}.head")
            count = _u32(data, off + 16)
            ref = schema.BLOCK_REF2_DTYPE.itemsize
            for b in range(min(count, 4)):
                _add(out, _BLOCK_REF2, off + schema.BLOCKED_HEAD2_SIZE + b * ref, f"{name}.block[{b}]")
    out.append(Field(hsize - 4, 4, "header.header_crc"))


# --------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------

def apply(data: bytes, op: tuple) -> bytes:
    """One mutation.  ``op`` is one of::

        ("flip", pos, bit)          ("byte", pos, value)
        ("insert", pos, bytes)      ("delete", pos, n)
        ("truncate", n)             ("field", Field, value)
        ("copy", src, dst, n)       (overwrite dst with n bytes from src)

    Positions are taken modulo the length, so any int is valid.
    """
    buf = bytearray(data)
    kind = op[0]
    n = len(buf)
    if kind == "truncate":
        return bytes(buf[: op[1] % (n + 1)])
    if kind == "insert":
        pos = op[1] % (n + 1)
        return bytes(buf[:pos] + op[2] + buf[pos:])
    if not n:
        return bytes(buf)
    if kind == "flip":
        buf[op[1] % n] ^= 1 << (op[2] % 8)
    elif kind == "byte":
        buf[op[1] % n] = op[2] & 0xFF
    elif kind == "delete":
        pos = op[1] % n
        del buf[pos : pos + max(1, op[2])]
    elif kind == "field":
        f: Field = op[1]
        if f.offset + f.size <= n:
            buf[f.offset : f.offset + f.size] = (op[2] % (1 << (8 * f.size))).to_bytes(f.size, "little")
    elif kind == "copy":
        src, dst, k = op[1] % n, op[2] % n, op[3]
        chunk = buf[src : src + k]
        buf[dst : dst + len(chunk)] = chunk
        buf = buf[:n] if len(buf) > n else buf
    else:
        raise ValueError(f"unknown mutation {op!r}")
    return bytes(buf)


def byte_ops(max_pos: int = 2**16) -> Any:
    """A hypothesis strategy of one :func:`apply` operation on raw bytes at
    positions up to ``max_pos`` (taken modulo the length): flips, overwrites,
    inserts, deletes, truncations and copies."""
    from hypothesis import strategies as st

    pos = st.integers(0, max_pos)
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("byte"), pos, st.integers(0, 255)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), pos, st.integers(1, 8)),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("copy"), pos, pos, st.integers(1, 32)),
    )


def mutate(data: bytes, ops: Sequence[tuple], fix: bool = False) -> bytes:
    for op in ops:
        data = apply(data, op)
    return fix_checksums(data) if fix else data


# --------------------------------------------------------------------------
# Checksum fix-up (version 1)
# --------------------------------------------------------------------------

def _crc(data: Any) -> int:
    import crc32c

    return crc32c.crc32c(data)


def fix_checksums(data: bytes) -> bytes:
    """Recompute the CRCs of a version-1 file where its structure allows:
    record CRCs in the LUT, LUT block CRCs, index block CRCs, section CRCs,
    the header CRC (innermost first); of a version-2 file: every block's
    CRC in its table row, the heads' CRCs, plain sections' CRCs and the
    header CRC.  Anything else is returned unchanged."""
    if len(data) < schema.HEADER1_FIXED_SIZE or _u32(data, 0) not in (1, 2):
        return data
    buf = bytearray(data)
    try:
        (_fix if _u32(data, 0) == 1 else _fix_v2)(buf)
    except (struct.error, ValueError, IndexError, OverflowError):
        pass
    return bytes(buf)


def _fix_v2(buf: bytearray) -> None:
    hsize, secs = _sections_v1(bytes(buf))
    if not secs:
        return
    crc_off = dict((n, o) for n, o, _ in _SECTION1)["crc"]
    head = schema.BLOCKED_HEAD2_SIZE
    ref = schema.BLOCK_REF2_DTYPE.itemsize
    for sid, (off, length, at) in secs.items():
        if not _inside(buf, off, length):
            continue
        if sid in schema.BLOCKED_SECTIONS2 and length >= head:
            count = _u32(buf, off + 16)
            for b in range(min(count, (length - head) // ref)):
                row = off + head + b * ref
                fields = np.frombuffer(bytes(buf[row : row + ref]), dtype=schema.BLOCK_REF2_DTYPE)[0]
                start, size = int(fields["offset"]), int(fields["length"])
                if start + size <= length:
                    _U32.pack_into(buf, row + schema.BLOCK_REF2_DTYPE.fields["crc"][1], _crc(buf[off + start : off + start + size]))
            _U32.pack_into(buf, at + crc_off, _crc(buf[off : off + head]))
        else:
            _U32.pack_into(buf, at + crc_off, _crc(buf[off : off + length]))
    _U32.pack_into(buf, hsize - 4, _crc(buf[: hsize - 4]))


def mutate_content(data: bytes, section: str, block: int, ops: Sequence[tuple]) -> bytes:
    """Version 2: apply ``ops`` (as :func:`apply`) to the decompressed content
    of ``block`` (modulo the block count) of blocked ``section``, compress it
    again, and write the file with that section rebuilt (its table, the
    sections after it moved, every CRC correct).  A file or section this
    cannot take apart is returned unchanged."""
    from iidschema.blocked import assemble_section, compress_section

    try:
        with iidschema.IIDFile(bytes(data)) as f:
            reader = f._reader
            blocked = reader.blocked(section) if reader.version == 2 else None
            if blocked is None or not blocked.count:
                return data
            b = block % blocked.count
            blocks = blocked.blocks(0, blocked.count - 1, keep=False)
            size, element = blocked.block_size, blocked.shuffle
    except iidschema.IIDError:
        return data
    content = blocks[b]
    for op in ops:
        content = apply(content, op)
    # Blocks keep their size except the changed one, which is compressed on
    # its own (its length may change: the table rows say where it lies).
    parts = [compress_section([raw], max(len(raw), 1), 3, 1, element)[1:] for raw in blocks[:b] + [content] + blocks[b + 1 :]]
    stored = [p[0] if p else b"" for p in parts]
    raw_sizes = [len(x) for x in blocks[:b]] + [len(content)] + [len(x) for x in blocks[b + 1 :]]
    if any(r != size for r in raw_sizes[:-1]):
        size = max(raw_sizes)  # the changed block no longer fits the grid: a reader must refuse the file
    section_bytes = b"".join(assemble_section(sum(raw_sizes), size, schema.BLOCK_ZSTD, element, stored))
    return _replace_section(data, schema.SectionId.IDS[section], section_bytes)


def _replace_section(data: bytes, sid: int, new: bytes) -> bytes:
    """``data`` with section ``sid``'s bytes replaced by ``new``; every
    section is laid out again in file order and the CRCs fixed."""
    hsize, secs = _sections_v1(data)
    order = sorted(secs.items(), key=lambda item: item[1][0])
    buf = bytearray(data[:hsize])
    pos = hsize
    for s_id, (off, length, at) in order:
        body = new if s_id == sid else data[off : off + length]
        pos += (-pos) % 8
        buf += b"\0" * (pos - len(buf))
        entry = np.frombuffer(bytes(buf[at : at + _SECTION1_DTYPE.itemsize]), dtype=_SECTION1_DTYPE).copy()
        entry["offset"], entry["length"] = pos, len(body)
        buf[at : at + _SECTION1_DTYPE.itemsize] = entry.tobytes()
        buf += body
        pos += len(body)
    return fix_checksums(bytes(buf))




def _inside(buf: bytearray, off: int, length: int) -> bool:
    return 0 <= off and 0 <= length and off + length <= len(buf)


def _fix(buf: bytearray) -> None:
    S = schema.SectionId
    hsize, secs = _sections_v1(bytes(buf))
    if not secs:
        return
    ok = {sid: v for sid, v in secs.items() if _inside(buf, v[0], v[1])}
    count = _header1_field(buf, "entry_count")
    if S.LUT in ok:
        lut_off, lut_len, _ = ok[S.LUT]
        n = min(count, lut_len // schema.LUT1_ROW)
        lut = np.frombuffer(buf, dtype=schema.LUT1_DTYPE, count=n, offset=lut_off).copy()
        for kind, sid in (("iid", S.IIDS), ("seg", S.SEGS)):
            if sid not in ok:
                continue
            base, size, _ = ok[sid]
            for k in range(n):
                rel, length = int(lut[k][kind]["offset"]), int(lut[k][kind]["length"])
                if rel + length <= size:
                    lut[k][f"{kind}_crc"] = _crc(buf[base + rel : base + rel + length])
        buf[lut_off : lut_off + n * schema.LUT1_ROW] = lut.tobytes()
        if lut_len == schema.lut1_size(count):
            step = schema.LUT_BLOCK * schema.LUT1_ROW
            at = lut_off + count * schema.LUT1_ROW
            for b in range((count + schema.LUT_BLOCK - 1) // schema.LUT_BLOCK):
                lo = lut_off + b * step
                hi = min(lut_off + count * schema.LUT1_ROW, lo + step)
                _U32.pack_into(buf, at + 4 * b, _crc(buf[lo:hi]))
    if S.BLOCK_CRCS in ok:
        off, length, _ = ok[S.BLOCK_CRCS]
        end = off + length
        if length >= 4:
            p = off + 4
            head = schema.BlockTableHead1.sizeof()
            for _ in range(min(_u32(buf, off), 64)):
                if p + head > end:
                    break
                sid, _, block, n = struct.unpack_from(schema.format_of(schema.BlockTableHead1), buf, p)
                if p + head + 4 * n > end:
                    break
                if sid in ok and block:
                    base, size, _ = ok[sid]
                    if n == (size + block - 1) // block:
                        for b in range(n):
                            s = base + b * block
                            _U32.pack_into(buf, p + head + 4 * b, _crc(buf[s : min(s + block, base + size)]))
                p += head + 4 * n
    crc_off = dict((n, o) for n, o, _ in _SECTION1)["crc"]
    for sid, (off, length, at) in ok.items():
        _U32.pack_into(buf, at + crc_off, _crc(buf[off : off + length]))
    # every section entry (also duplicates and out-of-bounds ones keep theirs)
    _U32.pack_into(buf, hsize - 4, _crc(buf[: hsize - 4]))


# --------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------

def read_everything(data: bytes) -> int:
    """Read a file completely through the public API; return the number of
    entries.  Raises whatever the library raises."""
    with iidschema.IIDFile(bytes(data)) as f:
        entries = f.fetch(everything=True)
        total = 0
        for e in entries:
            e.iid.address
            total += int(e.seg.mask().sum())
        f.meta.data
        for name in f.groups:
            f.groups.keys(name)
        points = [(0, 0)] + [(e.seg.bbox[1], e.seg.bbox[0]) for e in entries[:3]]
        for x, y in points:
            f.at(x, y)
        f.region((0, 0, schema.MAX_U32, schema.MAX_U32))
        f.look_for([e.iid.address for e in entries[:3]] + [b"\x00no such address"])
        return len(entries)


# --------------------------------------------------------------------------
# Seed files
# --------------------------------------------------------------------------

def corpus_files() -> list[Path]:
    import os

    shared = Path(os.environ["IIDSCHEMA_SHARED"]) if os.environ.get("IIDSCHEMA_SHARED") else REPO.parent / "shared"
    d = shared / "conformance" / "v0"
    return sorted(d.glob("*.iid")) if d.is_dir() else []


def _build(version: int, n: int, rng: np.random.Generator, offset: int = 0, codec: Any = "auto", big: bool = False) -> bytes:
    import os
    import tempfile

    f = iidschema.IIDFile()
    for k in range(n):
        h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        kind = k % 5
        if kind == 0:
            m = rng.random((h, w)) < 0.5
        elif kind == 1:
            m = np.zeros((h, w), bool)
            m[::2, ::2] = True  # islands: several regions
        elif kind == 2:
            m = np.ones((h, w), bool)
        elif kind == 3:
            m = np.zeros((h, w), bool)
        else:
            m = np.zeros((1, w), bool)
            m[0, ::3] = True
        r0, c0 = int(rng.integers(0, 50)) + offset, int(rng.integers(0, 50)) + offset
        if big and k == 0:
            m = rng.random((300, 200)) < 0.7
            h, w = m.shape
        f.add(f"addr{k % 7}".encode(), [b"", b"wordnet", "d\u00e9j\u00e0".encode()][k % 3], (r0, c0, r0 + m.shape[0], c0 + m.shape[1]), m,
              group=["sys", "caf\u00e9"][: k % 3])
    f.meta.data = {"image": {"height": 480, "width": 640}, "note": "\u00e9t\u00e9 \U0001f332", "nested": [1, [2, {"x": None}]]}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seed.iid")
        if version >= 1:
            f.save(path, version=version, codec=codec)
        else:
            f.save(path, version=0)
        f.close()
        return Path(path).read_bytes()


def seed_files(include_corpus: bool = True) -> dict[str, bytes]:
    """Valid files to mutate, by name."""
    out: dict[str, bytes] = {}
    if include_corpus:
        for p in corpus_files():
            out["v0-corpus-" + p.stem] = p.read_bytes()
    rng = np.random.default_rng(20240601)
    out["v0-gen-small"] = _build(0, 6, rng)
    out["v0-gen-empty"] = _build(0, 0, rng)
    for codec in ("packbits", "rle", "zstd", "auto"):
        out[f"v1-gen-{codec}"] = _build(1, 6, rng, codec=codec)
    out["v1-gen-wide"] = _build(1, 4, rng, offset=70000)
    out["v1-gen-70"] = _build(1, 70, rng, codec="auto")
    out["v1-gen-empty"] = _build(1, 0, rng)
    out["v1-gen-big-zstd"] = _build(1, 3, rng, codec="zstd", big=True)
    for codec in ("auto", "rle", "zstd"):
        out[f"v2-gen-{codec}"] = _build(2, 6, rng, codec=codec)
    out["v2-gen-wide"] = _build(2, 4, rng, offset=70000)
    out["v2-gen-1100"] = _build(2, 1100, rng)  # two LUT chunks
    out["v2-gen-empty"] = _build(2, 0, rng)
    out["v2-gen-big"] = _build(2, 3, rng, big=True)
    return out
