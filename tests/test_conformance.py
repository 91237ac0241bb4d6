"""The v0 conformance corpus (written by iidfile 0.2.0) read and re-written.

Every ``NAME.iid`` must parse to exactly ``NAME.expected.json``; re-saving it
as version 0, and rebuilding it from scratch with ``IIDFile.add``, must give
its bytes back.  The only allowed difference is the order of the keys inside
a group: iidfile writes them in Python set order (not reproducible, see the
corpus README), iidschema ascending, so those runs are sorted before comparing.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

import iidschema
from iidschema import IIDFile, schema
from iidschema.reader import open_reader
from iidschema.source import BytesSource

SECTIONS = ("lut", "iids", "meta", "groups", "segs")


def _sha(data) -> str:
    return hashlib.sha256(bytes(data)).hexdigest()


def _expected(path: Path) -> dict:
    return json.loads(path.with_name(path.stem + ".expected.json").read_text(encoding="utf-8"))


def _normalise_groups(data: bytes) -> bytes:
    """``data`` with the keys of each group sorted in place (nothing else moves)."""
    out = bytearray(data)
    head = schema.Header0.parse(data[: schema.HEADER0_SIZE])
    off = head.groups.offset
    (json_len,) = struct.unpack_from("<I", data, off)
    table = json.loads(data[off + 4 : off + 4 + json_len].decode("utf-8"))
    start = off + 4 + json_len
    for item in table:
        a = start + item["offset"]
        keys = np.frombuffer(data, dtype="<u4", count=item["length"] // 4, offset=a)
        out[a : a + item["length"]] = np.sort(keys).astype("<u4").tobytes()
    return bytes(out)


def _groups_sorted_in_file(exp: dict) -> bool:
    return all(g["keys_file_order"] == sorted(g["keys_file_order"]) for g in exp["group_table"])


def test_corpus_is_complete(corpus):
    # Guards against an accidentally empty or half-copied corpus.
    names = {p.stem for p in corpus}
    assert {"empty", "single", "many_groups", "zero_length_domain"} <= names
    for p in corpus:
        assert p.with_name(p.stem + ".expected.json").is_file(), p


def test_corpus_file_matches_its_description(corpus_case):
    exp = _expected(corpus_case)
    data = corpus_case.read_bytes()
    assert len(data) == exp["size"]
    assert _sha(data) == exp["sha256"]


def test_header(corpus_case):
    exp = _expected(corpus_case)
    data = corpus_case.read_bytes()
    parsed = schema.File.parse(data)
    assert parsed.version == exp["header"]["version"] == 0
    head = parsed.body.header
    assert head.rformat == exp["header"]["rformat"]
    for name in SECTIONS:
        assert (head[name].offset, head[name].length) == (exp["header"][name]["offset"], exp["header"][name]["length"]), name
    reader = open_reader(BytesSource(data))
    assert reader.version == 0 and reader.rformat == exp["header"]["rformat"]
    assert reader.sections() == {n: (exp["header"][n]["offset"], exp["header"][n]["length"]) for n in SECTIONS}
    assert reader.count == len(exp["entries"])
    # The fast-path header struct agrees with the declaration.
    assert schema.HEADER0.unpack_from(data, 0)[:2] == (0, exp["header"]["rformat"])


def test_entries(corpus_case):
    exp = _expected(corpus_case)
    with IIDFile(corpus_case) as f:
        _check_entries(f, exp)
        lut = f.lut
        assert lut.shape == (len(exp["entries"]),)
        for e, x in zip(f.fetch(everything=True), exp["entries"]):
            regions = e.seg.regions()
            assert [list(r.bbox) for r in regions] == [r["bbox"] for r in x["regions"]]
            assert [schema.REGION_HEAD0.size + len(r.payload) for r in regions] == [r["len"] for r in x["regions"]]
            row = lut[e.key]
            assert int(row["key"]) == e.key
            assert (int(row["iid"]["offset"]), int(row["iid"]["length"])) == (x["iid_bufloc"]["offset"], x["iid_bufloc"]["length"])
            assert (int(row["seg"]["offset"]), int(row["seg"]["length"])) == (x["seg_bufloc"]["offset"], x["seg_bufloc"]["length"])


@pytest.mark.parametrize("version", [1, 2])
def test_content_survives_a_round_trip_through_a_newer_version(corpus_case, tmp_path, version):
    exp = _expected(corpus_case)
    p1 = tmp_path / f"v{version}.iid"
    with IIDFile(corpus_case) as f:
        f.save(p1, version=version)
    with IIDFile(p1) as g:
        assert g.version == version
        _check_entries(g, exp)
        assert {n: g.groups.keys(n).tolist() for n in g.groups.list()} == exp["groups"]
        assert g.meta.data == exp["meta"]


def _check_entries(f: IIDFile, exp: dict) -> None:
    """Everything the expected file says about the entries, except the layout."""
    assert len(f) == len(exp["entries"])
    entries = f.fetch(everything=True)
    assert [e.key for e in entries] == [x["key"] for x in exp["entries"]] == list(range(len(f)))
    for e, x in zip(entries, exp["entries"]):
        assert e.iid.address == bytes.fromhex(x["address_hex"])
        assert e.iid.domain == bytes.fromhex(x["domain_hex"])  # b"" where iidfile says None
        assert list(e.seg.bbox) == x["bbox"]
        assert e.seg.area == x["area"]
        mask = e.seg.mask()
        assert mask.dtype == bool
        assert list(mask.shape) == x["mask_shape"]
        assert int(mask.sum()) == x["mask_true"]
        assert _sha(np.packbits(mask.ravel()).tobytes()) == x["mask_sha256"]


def test_regions_agree_with_the_declaration(corpus_case):
    """The reader's fast path and a construct parse of the same bytes agree."""
    exp = _expected(corpus_case)
    parsed = schema.File.parse(corpus_case.read_bytes()).body
    for x, seg, iid in zip(exp["entries"], parsed.segs, parsed.iids):
        assert seg.key == iid.key == x["key"]
        assert [[r.bbox.minr, r.bbox.minc, r.bbox.maxr, r.bbox.maxc] for r in seg.regions] == [r["bbox"] for r in x["regions"]]
        assert [r.len for r in seg.regions] == [r["len"] for r in x["regions"]]
        assert iid.address == bytes.fromhex(x["address_hex"]) and iid.domain == bytes.fromhex(x["domain_hex"])


def test_groups_and_meta(corpus_case):
    exp = _expected(corpus_case)
    data = corpus_case.read_bytes()
    with IIDFile(corpus_case) as f:
        assert f.groups.list() == sorted(exp["groups"])
        assert {g: f.groups.keys(g).tolist() for g in f.groups.list()} == exp["groups"]
        assert f.meta.data == exp["meta"]
    parsed = schema.File.parse(data).body
    meta_off, meta_len = parsed.header.meta.offset, parsed.header.meta.length
    assert _sha(data[meta_off : meta_off + meta_len]) == exp["meta_raw_sha256"]
    assert parsed.meta == exp["meta"]
    g_off = parsed.header.groups.offset
    (json_len,) = struct.unpack_from("<I", data, g_off)
    assert data[g_off + 4 : g_off + 4 + json_len].decode("utf-8") == exp["groups_json_raw"]
    table = parsed.groups.table
    assert [(t["name"], t["offset"], t["length"]) for t in table] == [
        (t["name"], t["offset"], t["length"]) for t in exp["group_table"]
    ]
    for t in exp["group_table"]:
        keys = np.frombuffer(parsed.groups.data, dtype="<u4", count=t["length"] // 4, offset=t["offset"])
        assert keys.tolist() == t["keys_file_order"]


def test_build_of_parse_is_identity(corpus_case):
    data = corpus_case.read_bytes()
    assert schema.File.build(schema.File.parse(data)) == data


@pytest.mark.parametrize("fetch_first", [False, True], ids=["lazy", "fetched"])
def test_resave_v0_is_byte_identical(corpus_case, tmp_path, fetch_first):
    exp = _expected(corpus_case)
    data = corpus_case.read_bytes()
    out = tmp_path / "resaved.iid"
    with IIDFile(corpus_case) as f:
        if fetch_first:
            f.fetch(everything=True)
        f.save(out, version=0)
    new = out.read_bytes()
    if _groups_sorted_in_file(exp):
        assert _sha(new) == exp["sha256"]
    else:
        assert new != data  # the corpus file keeps iidfile's set order
    assert new == _normalise_groups(data)
    # The file we read from is untouched.
    assert _sha(corpus_case.read_bytes()) == exp["sha256"]


@pytest.mark.parametrize("version", [1, 2])
def test_v0_through_a_newer_version_and_back_is_byte_identical(corpus_case, tmp_path, version):
    """Nothing iidfile wrote is lost in a newer version: saved as version 1
    or 2 and back as version 0, the bytes are the (group-normalised) file."""
    newer, back = tmp_path / "newer.iid", tmp_path / "back.iid"
    with IIDFile(corpus_case) as f:
        f.save(newer, version=version)
    with IIDFile(newer) as g:
        g.save(back, version=0)
    assert back.read_bytes() == _normalise_groups(corpus_case.read_bytes())


def test_rebuild_from_scratch_gives_the_same_bytes(corpus_case, tmp_path):
    exp = _expected(corpus_case)
    data = corpus_case.read_bytes()
    with IIDFile(corpus_case) as src:
        entries = src.fetch(everything=True)
        table_order = [t["name"] for t in exp["group_table"]]
        membership: dict[int, list[str]] = {}
        for name in table_order:
            for k in src.groups.keys(name).tolist():
                membership.setdefault(k, []).append(name)
        g = IIDFile()
        for name in table_order:  # groups keep creation order, like the file's table
            g.groups.add(name)
        for e in entries:
            g.add(e.iid.address, e.iid.domain, e.seg.bbox, e.seg.mask(), group=membership.get(e.key))
        g.meta.data = src.meta.data
    out = tmp_path / "rebuilt.iid"
    g.save(out, version=0)
    new = out.read_bytes()
    assert new == _normalise_groups(data)
    if _groups_sorted_in_file(exp):
        assert _sha(new) == exp["sha256"]
    g.close()


def test_new_empty_file_as_v0_is_the_corpus_empty_file(corpus, tmp_path):
    # The corpus 'empty.iid' is what IIDFile().save() writes in iidfile 0.2.0.
    empty = [p for p in corpus if p.stem == "empty"][0]
    out = tmp_path / "e.iid"
    IIDFile().save(out, version=0)
    assert out.read_bytes() == empty.read_bytes()
    assert iidschema.DEFAULT_VERSION in iidschema.SUPPORTED_VERSIONS
