"""Groups are read one at a time.

The groups section (versions 0 and 1) is a length-prefixed JSON table of
``{name, offset, length}`` followed by the key lists of every group.  A
reader reads the table (small) and then only the keys of the groups asked
for; version 1 verifies only the 4 KiB checksum blocks those reads touch
(the ``block_crcs`` table of the groups section), or the whole section once
for files written without that table.

Bytes are counted with :class:`iidschema.source.CountingSource`.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iidschema import IIDChecksumError, IIDFile, IIDFormatError, schema, writer
from iidschema.source import BytesSource, CountingSource
from iidschema.writer2 import write_v2
from iidschema.validate import validate

VERSIONS = [0, 1, 2]
BLOCK = schema.BLOCK_SIZE1


# --------------------------------------------------------------------------
# Building files: entries are 1x1 masks (their content does not matter here),
# the groups vary.
# --------------------------------------------------------------------------

_BASES: dict[int, IIDFile] = {}


def _base(n: int) -> IIDFile:
    """An in-memory file of ``n`` entries (made once per ``n``)."""
    if n not in _BASES:
        f = IIDFile()
        one = np.ones((1, 1), bool)
        for i in range(n):
            f.add(b"a%d" % i, b"d", (i % 97, i % 89, i % 97 + 1, i % 89 + 1), one)
        _BASES[n] = f
    return _BASES[n]


def _write(n: int, groups: dict, version: int) -> bytes:
    f = _base(n)
    out = io.BytesIO()
    write = (writer.write_v0, writer.write_v1, write_v2)[version]
    write(out, f._records(), len(f), groups, {"n": n})
    return out.getvalue()


def _sections(data: bytes) -> dict[str, tuple[int, int]]:
    f = IIDFile(BytesSource(data))
    return f._reader.sections()


def _stored(data: bytes) -> dict[str, list[int]]:
    """The groups as the construct declaration parses the whole section (the oracle)."""
    with IIDFile(BytesSource(data)) as f:
        # The section's content: its bytes, or (version 2) its blocks decompressed.
        off, length = f._reader._sections["groups"]
        parsed = schema.Groups0.parse(bytes(f._reader.source.read(off, length, "groups")))
    out = {}
    for item in parsed.table:
        raw = parsed.data[item["offset"] : item["offset"] + item["length"]]
        out[item["name"]] = np.frombuffer(raw, dtype=schema.GROUP_KEY0_DTYPE).astype(np.int64).tolist()
    return out


def _counting(data: bytes) -> tuple[IIDFile, CountingSource]:
    src = CountingSource(BytesSource(data))
    return IIDFile(src), src


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]


def _group_offset(data: bytes, name: str) -> tuple[int, int]:
    """Absolute offset of group ``name``'s keys and their byte length
    (version 2: the file offset of the compressed block holding them, as
    errors report it)."""
    with IIDFile(BytesSource(data)) as f:
        off, length = f._reader._sections["groups"]
        content = bytes(f._reader.source.read(off, length, "groups"))
        (json_len,) = schema.GROUP_TABLE_LEN0.unpack_from(content, 0)
        table = json.loads(content[4 : 4 + json_len])
        item = next(i for i in table if i["name"] == name)
        at = off + 4 + json_len + item["offset"]
        physical = getattr(f._reader.source, "physical", None)
        return (physical(at) if physical is not None else at), item["length"]


# --------------------------------------------------------------------------
# A per-group read returns what the whole section says
# --------------------------------------------------------------------------

N_HYP = 3000


@st.composite
def _group_specs(draw):
    """Groups of varied sizes (empty ones too, and some spanning several
    4 KiB blocks), keys generated from a drawn seed so that big groups are
    cheap to draw."""
    names = draw(st.lists(st.one_of(st.sampled_from(["", "tiny", "caf\u00e9", 'q"uo\\te', "big"]), st.text(max_size=6)),
                          unique=True, max_size=6))
    out = {}
    for name in names:
        size = draw(st.one_of(st.just(0), st.integers(1, 12), st.integers(1000, N_HYP)))
        seed = draw(st.integers(0, 2**16))
        out[name] = np.sort(np.random.default_rng(seed).choice(N_HYP, size, replace=False)).tolist()
    return out


@st.composite
def _additions(draw, disk_names):
    """(name, keys) added after opening: to stored groups and to new ones."""
    pool = st.sampled_from(sorted(disk_names)) if disk_names else st.nothing()
    name = st.one_of(pool, st.sampled_from(["new", "tiny", "n\u00e9w"]))
    keys = st.lists(st.integers(0, N_HYP - 1), max_size=5)
    return draw(st.lists(st.tuples(name, keys), max_size=6))


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_per_group_read_equals_the_whole_section(version, data):
    groups = data.draw(_group_specs())
    raw = _write(N_HYP, groups, version)
    stored = _stored(raw)
    assert stored == groups

    # Names alone: the table, in table order.
    f = IIDFile(BytesSource(raw))
    assert list(f.groups) == list(groups) and f.groups.list() == sorted(groups) and len(f.groups) == len(groups)
    assert all(name in f.groups for name in groups) and "no such group \u2603" not in f.groups

    # Each group on its own, in a drawn order, from a fresh file each time.
    order = data.draw(st.permutations(list(groups)))
    for name in order:
        g = IIDFile(BytesSource(raw))
        assert g.groups.keys(name).tolist() == stored[name]
        assert g._reader.group_keys(name).tolist() == stored[name]
    for name in order:  # all from one file, cached
        assert f.groups.keys(name).tolist() == stored[name]
    with pytest.raises(KeyError, match="no group"):
        f.groups.keys("no such group \u2603")

    # Additions merge with what is stored; new names come after the stored ones.
    adds = data.draw(_additions(set(groups)))
    f = IIDFile(BytesSource(raw))
    expected = {name: set(keys) for name, keys in stored.items()}
    for i, (name, keys) in enumerate(adds):
        if i % 2:
            f.groups.keys(name) if name in f.groups else None  # some groups read before the addition
        f.groups.add(name, keys)
        expected.setdefault(name, set()).update(keys)
    got = f.groups.as_dict()
    assert list(got) == list(expected)
    assert {name: k.tolist() for name, k in got.items()} == {name: sorted(k) for name, k in expected.items()}


@pytest.mark.parametrize("version", VERSIONS)
def test_entries_added_with_groups_and_saved(tmp_path, version):
    raw = _write(50, {"a": [1, 2], "b": [], "c": [7]}, version)
    p = tmp_path / "f.iid"
    p.write_bytes(raw)
    f = IIDFile(p)
    f.groups.add("b")  # exists: no change of order
    for i in range(5):
        f.add(b"x%d" % i, b"", (0, 0, 1, 1), np.ones((1, 1), bool), group=["a", "z"] if i % 2 else "z")
    assert list(f.groups) == ["a", "b", "c", "z"]
    assert f.groups.keys("a").tolist() == [1, 2, 51, 53] and f.groups.keys("z").tolist() == [50, 51, 52, 53, 54]
    f.save(p, version=version)
    g = IIDFile(p)
    assert {n: k.tolist() for n, k in g.groups.as_dict().items()} == {
        "a": [1, 2, 51, 53], "b": [], "c": [7], "z": [50, 51, 52, 53, 54]}
    assert validate(p) == []


def test_add_checks_what_it_is_given():
    f = IIDFile(BytesSource(_write(10, {"g": [1]}, 1)))
    with pytest.raises(TypeError, match="group names are str"):
        f.groups.add(5, [1])
    with pytest.raises(TypeError, match="group names are str"):
        f.groups.add(["g"], [1])
    with pytest.raises(TypeError):
        f.groups.add("g", [True])
    with pytest.raises(TypeError):
        f.groups.add("g", np.array([True]))
    for bad in ([10], [-1], np.array([3, 10]), np.array([-1], np.int8), [1, 2, 99]):
        with pytest.raises(KeyError):
            f.groups.add("g", bad)
    f.groups.add("g", np.array([3, 2], np.uint16))
    f.groups.add("g", (k for k in [4, np.int64(5)]))
    f.groups.add("g", [9])
    assert f.groups.keys("g").tolist() == [1, 2, 3, 4, 5, 9]


# --------------------------------------------------------------------------
# Bytes read for one small group of a big section
# --------------------------------------------------------------------------

TINY = [3, 1717, 4242, 5000, 7777, 9001, 11111, 13000, 17000, 19999]


@pytest.fixture(scope="module")
def big():
    """20 000 entries; ten groups of all 20 000 keys around "tiny" (10 keys):
    200 010 keys, 800 KB of group data."""
    every = list(range(20000))
    groups = {f"all{i}": every for i in range(5)}
    groups["tiny"] = TINY
    groups.update({f"more{i}": every for i in range(5)})
    return {v: _write(20000, groups, v) for v in VERSIONS}


@pytest.mark.parametrize("version", VERSIONS)
def test_one_tiny_group_reads_bytes_of_the_group_not_of_the_section(big, version):
    data = big[version]
    g_off, g_len = _sections(data)["groups"]
    assert g_len > (800_000 if version < 2 else 4_000)  # version 2: compressed (its content is checked below)
    f, src = _counting(data)
    opened = src.bytes_read
    assert f.groups.keys("tiny").tolist() == TINY
    read = src.bytes_read - opened
    # The table and tiny's keys; version 1 also the 4 KiB blocks they lie in
    # and the block_crcs section (whose groups table is 4 bytes per block).
    assert read < 64 * 1024, read
    in_groups = sum(max(0, min(o + n, g_off + g_len) - max(o, g_off)) for o, n in src.requests)
    if version == 2:
        # Whole compressed blocks: the head, two table rows and the (at most
        # two) blocks holding the group table and tiny's keys.
        with IIDFile(data) as g:
            blocked = g._reader.blocked("groups")
            blocked.refs(0, blocked.count - 1)
            assert blocked.raw_length > 800_000
            assert in_groups <= 20 + 2 * 16 + 2 * int(blocked.sizes.max()), in_groups
    else:
        assert in_groups <= (4 * BLOCK if version == 1 else 1024), in_groups
    # Names cost nothing more; the keys are kept.
    before = src.bytes_read
    assert f.groups.list() == sorted(f"all{i}" for i in range(5)) + sorted(f"more{i}" for i in range(5)) + ["tiny"]
    assert f.groups.keys("tiny").tolist() == TINY and src.bytes_read == before


@pytest.mark.parametrize("version", VERSIONS)
def test_fetch_of_a_tiny_group_reads_little(big, version):
    data = big[version]
    f, src = _counting(data)
    entries = f.fetch(groups=["tiny"])
    assert [e.key for e in entries] == TINY
    for e in entries:
        assert e.seg.mask().tolist() == [[True]]
    # The group, plus per entry its LUT block (version 1: 64 rows) and records.
    per_entry = 64 * schema.LUT1_ROW + 4 if version == 1 else 256
    assert src.bytes_read < 64 * 1024 + len(TINY) * per_entry, src.bytes_read


# --------------------------------------------------------------------------
# Version 1 integrity: per block
# --------------------------------------------------------------------------

def test_damage_in_another_group_does_not_stop_a_tiny_group(big):
    data = big[1]
    t_off, t_len = _group_offset(data, "tiny")
    m_off, m_len = _group_offset(data, "more3")
    at = m_off + m_len // 2
    assert abs(at - t_off) > 2 * BLOCK
    bad = _flip(data, at)
    f = IIDFile(BytesSource(bad))
    assert f.groups.keys("tiny").tolist() == TINY
    assert [e.key for e in f.fetch(groups=["tiny"])] == TINY
    assert f.groups.keys("all0").size == 20000  # an intact group further away
    with pytest.raises(IIDChecksumError) as info:
        f.groups.keys("more3")
    g_off, _ = _sections(bad)["groups"]
    assert info.value.section == "groups" and info.value.offset == g_off + (at - g_off) // BLOCK * BLOCK
    with pytest.raises(IIDChecksumError):
        f.groups.as_dict()
    assert {(x.code, x.section) for x in validate(bad)} >= {("IID071", "groups"), ("IID018", "groups")}


@pytest.mark.parametrize("where", ["first", "last"])
def test_damage_in_the_tiny_group_is_reported(big, where):
    data = big[1]
    t_off, t_len = _group_offset(data, "tiny")
    at = t_off if where == "first" else t_off + t_len - 1
    bad = _flip(data, at)
    for access in (lambda f: f.groups.keys("tiny"), lambda f: f.fetch(groups=["tiny"]), lambda f: f.filter(groups="tiny")):
        f = IIDFile(BytesSource(bad))
        with pytest.raises(IIDChecksumError) as info:
            access(f)
        g_off, _ = _sections(bad)["groups"]
        assert info.value.section == "groups" and info.value.offset == g_off + (at - g_off) // BLOCK * BLOCK
        assert f.groups.list()[-1] == "tiny"  # the table lies in another block
        assert f.groups.keys("all0").size == 20000


def test_damage_in_the_group_table_is_reported_on_any_use(big):
    data = big[1]
    g_off, _ = _sections(data)["groups"]
    bad = _flip(data, g_off + 10)
    for access in (lambda f: f.groups.list(), lambda f: "tiny" in f.groups, lambda f: f.groups.keys("tiny")):
        f = IIDFile(BytesSource(bad))
        with pytest.raises(IIDChecksumError) as info:
            access(f)
        assert info.value.section == "groups" and info.value.offset == g_off
        assert f.meta.data == {"n": 20000}


def _old_writer(monkeypatch):
    """Make write_v1 write what it wrote before groups had a block CRC table."""
    original = writer._block_crcs

    def without_groups(sections, *args, **kwargs):
        return original({sid: b for sid, b in sections.items() if sid != schema.SectionId.GROUPS}, *args, **kwargs)

    monkeypatch.setattr(writer, "_block_crcs", without_groups)


def test_files_without_a_groups_block_table_verify_the_whole_section(monkeypatch):
    every = list(range(3000))
    groups = {"all": every, "tiny": [5, 7], "more": every}
    new = _write(3000, groups, 1)
    _old_writer(monkeypatch)
    old = _write(3000, groups, 1)
    assert len(old) < len(new)  # one table less in block_crcs
    for data in (old, new):
        f = IIDFile(BytesSource(data))
        assert {n: k.tolist() for n, k in f.groups.as_dict().items()} == groups
        assert validate(data) == []
    m_off, m_len = _group_offset(old, "more")
    # Old file: any damage in the section is found by the whole-section CRC.
    bad_old = _flip(old, m_off + m_len - 8)
    f = IIDFile(BytesSource(bad_old))
    with pytest.raises(IIDChecksumError) as info:
        f.groups.keys("tiny")
    assert info.value.section == "groups" and info.value.offset == _sections(old)["groups"][0]
    codes = {x.code for x in validate(bad_old)}
    assert "IID018" in codes and "IID071" not in codes  # section checksum; no block table to report
    # New file: the damaged block only.
    m_off, m_len = _group_offset(new, "more")
    f = IIDFile(BytesSource(_flip(new, m_off + m_len - 8)))
    assert f.groups.keys("tiny").tolist() == [5, 7]


def test_old_file_reads_with_whole_section_bytes(monkeypatch):
    """Without a block table the first group read costs the whole section
    (its CRC), as before; later reads cost only their keys."""
    every = list(range(3000))
    _old_writer(monkeypatch)
    data = _write(3000, {"all": every, "tiny": [5, 7]}, 1)
    g_off, g_len = _sections(data)["groups"]
    f, src = _counting(data)
    f.groups.keys("tiny")
    assert sum(n for o, n in src.requests if g_off <= o < g_off + g_len) >= g_len
    before = src.bytes_read
    assert f.groups.keys("all").size == 3000
    assert src.bytes_read - before == 4 * 3000


# --------------------------------------------------------------------------
# Hostile group tables (both versions)
# --------------------------------------------------------------------------

def _with_groups_section(version: int, section: bytes, monkeypatch, n: int = 4) -> bytes:
    """A file whose groups section is ``section`` (version 1: with correct
    section and block checksums, so that the format checks are what fails)."""
    monkeypatch.setattr(writer, "_groups_v0", lambda groups, count: section)
    return _write(n, {}, version)


def _section(table, data: bytes = b"", prefix: int | None = None) -> bytes:
    raw = table if isinstance(table, bytes) else json.dumps(table).encode()
    return struct.pack("<I", len(raw) if prefix is None else prefix) + raw + data


KEYS = struct.pack("<3I", 0, 2, 1)
HOSTILE = [
    b"",
    b"\x02\x00",
    b"\x02\x00\x00",
    _section([], prefix=3),
    _section([], prefix=0xFFFFFFFF),
    _section(b"[" * 100_000 + b"]" * 100_000),
    _section(b"[{\"name\": "),
    _section(b"\xff"),
    _section({"name": "g"}),
    _section([None]),
    _section([{"name": "g", "offset": 0}]),
    _section([{"name": "g", "offset": 0, "length": -4}], KEYS),
    _section([{"name": "g", "offset": 0, "length": 2**62}], KEYS),
    _section([{"name": "g", "offset": 2**62, "length": 4}], KEYS),
    _section([{"name": "g", "offset": 4, "length": 9}], KEYS),
    _section([{"name": "g", "offset": 12, "length": 4}], KEYS),
    _section([{"name": "g", "offset": 0, "length": 4}, {"name": "g", "offset": 4, "length": 4}], KEYS),
    _section([{"name": "x" * 10_000, "offset": 0, "length": 1 << 40}], KEYS),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("section", HOSTILE, ids=lambda s: repr(s[:24]))
def test_hostile_group_table(version, section, monkeypatch):
    data = _with_groups_section(version, section, monkeypatch)
    g_off, g_len = _sections(data)["groups"]
    for access in (lambda f: f.groups.list(), lambda f: len(f.groups), lambda f: f.groups.keys("g"),
                   lambda f: f.fetch(groups=["g"]), lambda f: f.groups.add("g", [1]) or f.groups.as_dict()):
        f = IIDFile(BytesSource(data))
        with pytest.raises(IIDFormatError) as info:
            access(f)
        assert not isinstance(info.value, IIDChecksumError)
        assert info.value.section == "groups" and g_off <= info.value.offset <= g_off + g_len, info.value
        assert [e.key for e in f.fetch(all_keys=True, iids=True)] == [0, 1, 2, 3]  # the rest of the file is fine


@pytest.mark.parametrize("version", VERSIONS)
def test_key_past_the_entry_count_fails_only_its_group(version, monkeypatch):
    table = [{"name": "g", "offset": 0, "length": 8}, {"name": "h", "offset": 8, "length": 4}]
    data = _with_groups_section(version, _section(table, struct.pack("<3I", 0, 4, 1)), monkeypatch)
    f = IIDFile(BytesSource(data))
    assert f.groups.list() == ["g", "h"] and f.groups.keys("h").tolist() == [1]
    with pytest.raises(IIDFormatError, match="holds key 4") as info:
        f.groups.keys("g")
    assert info.value.offset == _group_offset(data, "g")[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_truncation_of_a_groups_section(version, monkeypatch):
    good = _section([{"name": "g", "offset": 0, "length": 8}, {"name": "h", "offset": 8, "length": 4}], KEYS)
    for cut in range(len(good)):
        data = _with_groups_section(version, good[:cut], monkeypatch)
        f = IIDFile(BytesSource(data))
        try:
            got = f.groups.as_dict()
        except IIDFormatError as exc:
            assert exc.section == "groups"
        else:  # a cut inside unused key data could still be a valid section; not with this table
            raise AssertionError(f"cut at {cut} read as {got}")


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=80), table=st.one_of(st.binary(max_size=40), st.lists(
    st.fixed_dictionaries({"name": st.sampled_from(["g", "h", ""]), "offset": st.integers(-2, 20),
                           "length": st.integers(-2, 20)}), max_size=3).map(lambda t: json.dumps(t).encode())))
def test_random_group_sections_raise_only_format_errors(version, body, table, monkeypatch):
    for section in (body, _section(table, body), _section(table, body, prefix=len(body) % 7)):
        data = _with_groups_section(version, section, monkeypatch)
        f = IIDFile(BytesSource(data))
        try:
            names = list(f.groups)
            for name in names:
                keys = f.groups.keys(name)
                assert keys.size == 0 or 0 <= keys.min() <= keys.max() < 4
        except IIDFormatError as exc:
            assert exc.section == "groups"


def test_damaged_block_crcs_leaves_groups_readable_through_their_section_crc(big):
    data = big[1]
    b_off, b_len = _sections(data)["block_crcs"]
    bad = _flip(data, b_off + b_len - 2)  # a CRC of an index block
    f = IIDFile(BytesSource(bad))
    assert f.groups.keys("tiny").tolist() == TINY
    assert [e.key for e in f.fetch(groups=["tiny"])] == TINY
    for _ in range(2):  # reported by every index use, not only the first
        with pytest.raises(IIDChecksumError) as info:
            f.region((0, 0, 5, 5))
        assert info.value.section == "block_crcs"
    # With block_crcs damaged the groups section is verified as a whole.
    t_off, _ = _group_offset(data, "more3")
    f = IIDFile(BytesSource(_flip(bad, t_off + 8)))
    with pytest.raises(IIDChecksumError) as info:
        f.groups.keys("tiny")
    assert info.value.section == "groups"
