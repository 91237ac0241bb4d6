"""How small could a file with random access be?  A measurement for the
format-version decision of issue 6 ("v1 auto at most 0.6x one PNG per
entry ... compressing small segments together in blocks is one way;
measure, then choose").

Version 1 cannot meet that target: its per-entry metadata alone (LUT row
64 B, spatial index 21 B, address index 13 B) is above it.  This script
lays the *same* data (the benchmark workload saved as version 1 with
``codec="auto"``) out in a candidate block-compressed layout, measures every
part, and proves random access on it: sampled entries are decoded from
their blocks alone and compared with the version-1 file.  It writes no
file format; it measures one.

This layout has since been implemented, with changes, as format version 2
(``IIDFile.save(path, version=2)``: zstd blocks, a columnar LUT, bare
packbits payloads); the script also writes the same data as a real
version-2 file and prints its size beside the candidate's.

Candidate layout (every block independently zstd-compressed, with a block
table of 24 bytes per block: offset, compressed and raw length, first key,
CRC32C, so that integrity is checked per block, not per record):

* segs: per segment ``varint(region count)`` then per region
  ``varint(r0 - minr) varint(c0 - minc) varint(h) varint(w) varint(codec)
  varint(length) payload`` (the version-1 payloads, unchanged), blocks of
  about ``--block`` raw bytes;
* LUT: per 4096 entries, columns ``minr, minc, h, w, area, seg length``
  as little-endian uint32, byte-shuffled (as blosc does), one block each;
* iids: ``varint(len) domain varint(len) address`` records, blocks as segs;
* address index: entries sorted by a 32-bit address hash, hashes
  delta-coded as varints and keys as shuffled uint32, blocks of 4096;
* spatial index: keys in Hilbert order of their bbox centres (shuffled
  uint32, blocks of 4096) with each leaf's bbox (64 entries) uncompressed;
* groups: the version-1 section, compressed.

``python benchmarks/v2_size_study.py --n 100000`` (about a minute).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BLOCK_TABLE_ROW = 24
LUT_BLOCK = 4096
LEAF = 64


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def shuffle(a: np.ndarray) -> bytes:
    """Byte-shuffle (all first bytes, then all second bytes, ...)."""
    return np.ascontiguousarray(a.astype("<u4").view(np.uint8).reshape(-1, 4).T).tobytes()


def blocks(records: list[bytes], target: int) -> list[tuple[int, bytes]]:
    """Records cut into blocks of about ``target`` raw bytes: (first record, raw bytes)."""
    out, cur, first, size = [], [], 0, 0
    for i, rec in enumerate(records):
        if cur and size + len(rec) > target:
            out.append((first, b"".join(cur)))
            cur, first, size = [], i, 0
        cur.append(rec)
        size += len(rec)
    if cur:
        out.append((first, b"".join(cur)))
    return out


def hilbert(x: np.ndarray, y: np.ndarray, order: int = 16) -> np.ndarray:
    """Hilbert index of integer points (vectorised, as FlatGeobuf sorts)."""
    x, y = x.astype(np.int64).copy(), y.astype(np.int64).copy()
    d = np.zeros_like(x)
    s = 1 << (order - 1)
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        flip = ~ry
        swap_x = np.where(flip & rx, s - 1 - x, x)
        swap_y = np.where(flip & rx, s - 1 - y, y)
        x, y = np.where(flip, swap_y, swap_x), np.where(flip, swap_x, swap_y)
        s //= 2
    return d


def main() -> None:
    import zstandard

    import iidschema
    from iidschema import bulk
    from workload import make_workload

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--block", type=int, default=65536, help="raw bytes per segs / iids block")
    ap.add_argument("--level", type=int, default=3, help="zstd level")
    ap.add_argument("--lut-block", type=int, default=4096, help="entries per LUT / index block")
    ap.add_argument("--samples", type=int, default=500, help="entries decoded from blocks to prove random access")
    ap.add_argument("--random-addresses", action="store_true",
                    help="16 random bytes per address instead of the workload's 'obj-<i>' (which compress to almost nothing)")
    args = ap.parse_args()
    global LUT_BLOCK
    LUT_BLOCK = args.lut_block
    zc = zstandard.ZstdCompressor(level=args.level)
    zd = zstandard.ZstdDecompressor()

    w = make_workload(args.n)
    addresses, domains, bboxes, masks, groups = (list(col) for col in zip(*w.entries()))
    if args.random_addresses:
        addresses = [bytes(a) for a in np.random.default_rng(1).integers(0, 256, size=(len(addresses), 16), dtype=np.uint8)]
    f = iidschema.IIDFile()
    f.add_many(addresses, domains, np.array(bboxes, dtype=np.int64), masks, groups=groups)
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "v1.iid")
    f.save(path, version=1, codec="auto")
    g = iidschema.open(path)
    n = len(g)
    sizes_v1 = {name: length for name, (_, length) in g._reader.sections().items()}
    file_v1 = os.path.getsize(path)
    # The same data as a real version-2 file (the default codec, "auto").
    path_v2 = os.path.join(tmp, "v2.iid")
    f.save(path_v2, version=2, codec="auto")
    f.close()
    with iidschema.open(path_v2) as g2:
        assert g2.version == 2 and len(g2) == n
        sizes_v2 = {name: length for name, (_, length) in g2._reader.sections().items()}
    file_v2 = os.path.getsize(path_v2)

    # The same PNG baseline as benchmarks/run.py: one 1-bit PNG per entry.
    from PIL import Image
    import io

    def png_size(m: np.ndarray) -> int:
        if not m.size:
            return 0
        buf = io.BytesIO()
        Image.fromarray(m).save(buf, format="PNG", optimize=False)
        return len(buf.getvalue())

    png = sum(png_size(m) for m in masks)

    keys = np.arange(n, dtype=np.int64)
    t = bulk.segment_table(g._reader, keys)
    boxes = t.boxes
    records = []
    for i in range(n):
        minr, minc = int(boxes[i, 0]), int(boxes[i, 1])
        parts = [varint(int(t.count[i]))]
        for j in range(int(t.first[i]), int(t.first[i]) + int(t.count[i])):
            r0, c0, r1, c1 = (int(v) for v in t.rbox[j])
            payload = t.u8[int(t.roff[j]) : int(t.roff[j]) + int(t.rlen[j])].tobytes()
            parts += [varint(r0 - minr), varint(c0 - minc), varint(r1 - r0), varint(c1 - c0),
                      varint(int(t.rcodec[j])), varint(len(payload)), payload]
        records.append(b"".join(parts))
    seg_blocks = blocks(records, args.block)
    seg_z = [zc.compress(raw) for _, raw in seg_blocks]

    h = boxes[:, 2] - boxes[:, 0]
    wd = boxes[:, 3] - boxes[:, 1]
    seg_len = np.array([len(r) for r in records], dtype=np.int64)
    lut_cols = [boxes[:, 0], boxes[:, 1], h, wd, t.areas, seg_len]
    lut_z = [zc.compress(b"".join(shuffle(col[a : a + LUT_BLOCK]) for col in lut_cols)) for a in range(0, n, LUT_BLOCK)]

    iid_records = [varint(len(d)) + d + varint(len(a)) + a for a, d in zip(addresses, domains)]
    iid_blocks = blocks(iid_records, args.block)
    iid_z = [zc.compress(raw) for _, raw in iid_blocks]

    hashes = np.array([zlib.crc32(a) for a in addresses], dtype=np.int64)
    order = np.argsort(hashes, kind="stable")
    sh = hashes[order]
    addr_z = []
    for a in range(0, n, LUT_BLOCK):
        part = sh[a : a + LUT_BLOCK]
        deltas = np.diff(part, prepend=part[0])
        addr_z.append(zc.compress(varint(int(part[0])) + b"".join(varint(int(v)) for v in deltas) + shuffle(order[a : a + LUT_BLOCK])))

    cy = (boxes[:, 0] + boxes[:, 2]) // 2
    cx = (boxes[:, 1] + boxes[:, 3]) // 2
    scale = max(int(max(cy.max(initial=0), cx.max(initial=0))) + 1, 1)
    hil = hilbert(cx * 65535 // scale, cy * 65535 // scale)
    sorder = np.argsort(hil, kind="stable")
    spatial_z = [zc.compress(shuffle(sorder[a : a + LUT_BLOCK])) for a in range(0, n, LUT_BLOCK)]
    leaves = -(-n // LEAF)
    spatial_leaf_bytes = leaves * 16

    raw = open(path, "rb").read()
    off, length = g._reader.sections()["groups"]
    groups_z = len(zc.compress(raw[off : off + length]))
    off, length = g._reader.sections()["meta"]
    meta = length

    def tabled(parts: list[bytes]) -> int:
        return sum(map(len, parts)) + BLOCK_TABLE_ROW * len(parts)

    v2 = {
        "segs": tabled(seg_z),
        "lut": tabled(lut_z),
        "iids": tabled(iid_z),
        "address_index": tabled(addr_z),
        "spatial_index": tabled(spatial_z) + spatial_leaf_bytes,
        "groups": groups_z + BLOCK_TABLE_ROW,
        "meta": meta,
        "header": 32 + 24 * 9 + 4,
    }
    total = sum(v2.values())

    # Random access: decode sampled entries from their own blocks only.
    rng = np.random.default_rng(0)
    sample = rng.choice(n, size=min(args.samples, n), replace=False)
    firsts = np.array([first for first, _ in seg_blocks], dtype=np.int64)
    from iidschema.codecs import get_codec

    def lut_columns(lb: int) -> np.ndarray:
        """LUT block ``lb`` decompressed: (columns, entries) int64."""
        m = min(LUT_BLOCK, n - lb * LUT_BLOCK)
        raw = np.frombuffer(zd.decompress(lut_z[lb]), dtype=np.uint8)
        return raw.reshape(len(lut_cols), 4, m).transpose(0, 2, 1).copy().view("<u4").reshape(len(lut_cols), m).astype(np.int64)

    t0 = time.perf_counter()
    read_bytes = 0
    for k in sample.tolist():
        b = int(np.searchsorted(firsts, k, side="right")) - 1
        lb = k // LUT_BLOCK
        cols = lut_columns(lb)
        read_bytes += len(lut_z[lb])
        minr, minc, hh, ww = (int(cols[c, k - lb * LUT_BLOCK]) for c in range(4))
        # The record's place in its segs block: the lengths of the records
        # before it in that block (from the LUT blocks they are in).
        first = int(firsts[b])
        pos = 0
        for other in range(first // LUT_BLOCK, lb + 1):
            lens = cols[5] if other == lb else lut_columns(other)[5]
            if other != lb:
                read_bytes += len(lut_z[other])
            lo = max(first, other * LUT_BLOCK) - other * LUT_BLOCK
            hi = (k if other == lb else (other + 1) * LUT_BLOCK) - other * LUT_BLOCK
            pos += int(lens[lo:hi].sum())
        block = zd.decompress(seg_z[b])
        read_bytes += len(seg_z[b])
        count, pos = read_varint(block, pos)
        mask = np.zeros((hh, ww), dtype=bool)
        for _ in range(count):
            dr, pos = read_varint(block, pos)
            dc, pos = read_varint(block, pos)
            rh, pos = read_varint(block, pos)
            rw, pos = read_varint(block, pos)
            codec, pos = read_varint(block, pos)
            plen, pos = read_varint(block, pos)
            region = get_codec(codec).decode(block[pos : pos + plen], (rh, rw))
            pos += plen
            mask[dr : dr + rh, dc : dc + rw] |= region
        assert (minr, minc, minr + hh, minc + ww) == g[k].seg.bbox
        assert np.array_equal(mask, g[k].seg.mask()), k
    per_access = (time.perf_counter() - t0) / len(sample)

    print(f"N = {n}, block {args.block} B, LUT block {LUT_BLOCK} entries, zstd level {args.level}"
          + (", random 16-byte addresses" if args.random_addresses else ", addresses 'obj-<i>'"))
    print(f"one 1-bit PNG per entry: {png / n:.1f} B/entry; target 0.6x = {0.6 * png / n:.1f} B/entry")
    print(f"version 1 (codec auto): {file_v1 / n:.1f} B/entry = {file_v1 / png:.2f}x PNG  ("
          + ", ".join(f"{k} {v / n:.1f}" for k, v in sizes_v1.items()) + ")")
    print(f"candidate layout: {total / n:.1f} B/entry = {total / png:.2f}x PNG  ("
          + ", ".join(f"{k} {v / n:.1f}" for k, v in v2.items()) + ")")
    print(f"version 2 as written by IIDFile.save(version=2): {file_v2 / n:.1f} B/entry = {file_v2 / png:.2f}x PNG  ("
          + ", ".join(f"{k} {v / n:.1f}" for k, v in sizes_v2.items()) + ")")
    print(f"random access: {len(sample)} sampled entries decoded from their blocks alone and equal to version 1's; "
          f"{per_access * 1e6:.0f} us and {read_bytes / len(sample) / 1024:.1f} KiB compressed read per entry")
    g.close()


if __name__ == "__main__":
    main()
