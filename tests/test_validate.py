"""``iidschema validate``: one finding per problem, stable codes, the CLI.

Damaged files are made from valid seeds by overwriting fields located with
the schema declarations (``fuzz/iidfuzz.py``); version-1 files are
re-checksummed afterwards unless the test is about a checksum, so each case
shows the code of the damage itself.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import iidschema
import iidschema.masks
from iidschema import schema
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
