"""IIDFile.add_many: the same file as an add() loop, add()'s checks with the
index of the bad item, nothing added on error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iidschema import IIDFile, writer
from iidschema.errors import IIDLimitError
from iidschema.strategies import entries, group_names, serialise

BUILTINS = ["auto", "packbits", "rle", "zstd"]


def _items(seed: int = 0, count: int = 300) -> list[tuple[bytes, bytes, tuple[int, int, int, int], np.ndarray, object]]:
    """(address, domain, bbox, mask, group) of varied entries: blobs, noise,
    empty and full masks, zero-sized bboxes, and one mask too large for
    version 1's one-region path."""
    rng = np.random.default_rng(seed)
    out = []
    group_choices = [None, "train", "val", ["train", "tiny"], ("b", "a"), "caf\u00e9"]
    for i in range(count):
        h, w = (int(v) for v in rng.integers(0, 48, 2))
        kind = i % 7
        if kind == 0:
            m = rng.random((h, w)) < 0.2
        elif kind == 1:
            m = np.ones((h, w), bool)
        elif kind == 2:
            m = np.zeros((h, w), bool)
        elif kind == 3 and h > 2 and w > 2:
            m = np.zeros((h, w), bool)
            m[1:-1, 1 : w // 2] = True
        else:
            rr, cc = np.ogrid[:h, :w]
            m = (rr - h / 2) ** 2 / max(h / 2, 1) ** 2 + (cc - w / 2) ** 2 / max(w / 2, 1) ** 2 <= 1
        if i == 5:
            h, w = 0, 7
            m = np.zeros((0, 7), bool)
        r, c = (int(v) for v in rng.integers(0, 60000, 2))
        domain = [b"", b"coco", b"wordnet"][i % 3]
        out.append((b"obj-%d" % i, domain, (r, c, r + h, c + w), m, group_choices[i % len(group_choices)]))
    big = np.zeros((1100, 1000), bool)
    big[10:300, 20:400] = True
    big[700:1000, 600:990] = True
    out.append((b"big", b"coco", (5, 5, 1105, 1005), big, "train"))
    return out


def _by_add(items, f: IIDFile | None = None) -> IIDFile:
    f = IIDFile() if f is None else f
    for address, domain, bbox, mask, group in items:
        f.add(address, domain, bbox, mask, group=group)
    return f


def _by_add_many(items, f: IIDFile | None = None) -> IIDFile:
    f = IIDFile() if f is None else f
    if items:
        addresses, domains, bboxes, masks, groups = (list(col) for col in zip(*items))
    else:
        addresses, domains, bboxes, masks, groups = [], [], [], [], []
    f.add_many(addresses, domains, bboxes, masks, groups=groups)
    return f


@pytest.mark.parametrize("version,codec", [(0, "auto")] + [(1, c) for c in BUILTINS])
def test_same_bytes_as_an_add_loop(version: int, codec: str) -> None:
    items = _items()
    want = serialise(_by_add(items), version, codec)
    assert serialise(_by_add_many(items), version, codec) == want
    # Mixed with add(), several calls, and one-value domains and groups.
    f = IIDFile()
    _by_add(items[:40], f)
    addresses, domains, bboxes, masks, groups = (list(col) for col in zip(*items[40:]))
    f.add_many(addresses[:100], domains[:100], np.array(bboxes[:100]), masks[:100], groups=groups[:100])
    _by_add_many(items[140:200], f)
    _by_add(items[200:], f)
    assert serialise(f, version, codec) == want


@pytest.mark.parametrize("version", [0, 1, 2])
def test_same_bytes_on_every_writer_path(monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    # Small batches and steps, the one-by-one writer, zstd in the background.
    from iidschema import codecs

    items = _items(1, 200)
    want = serialise(_by_add(items), version)
    monkeypatch.setattr(writer, "_BULK_BATCH", 37)
    monkeypatch.setattr(writer, "_STEP", 16)
    monkeypatch.setattr(codecs, "_BACKGROUND_MIN", 4)
    assert serialise(_by_add_many(items), version) == want
    monkeypatch.setattr(writer, "_PARALLEL_MIN", 2)  # the worker thread's share too
    assert serialise(_by_add_many(items), version) == want
    monkeypatch.setattr(writer, "_BULK", False)
    assert serialise(_by_add_many(items), version) == want


@pytest.mark.parametrize("version", [0, 1, 2])
def test_batches_bounded_by_pixels(monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    # A pixel budget smaller than some single masks: every batch holds at
    # most the budget, or one larger segment alone; the bytes do not change.
    items = _items(3, 120)
    want = serialise(_by_add(items), version)
    budget = 900
    monkeypatch.setattr(writer, "_BULK_PIXELS", budget)
    seen: list[list[int]] = []
    real = writer._batches

    def spy(records):
        for batch in real(records):
            if type(batch) is writer.AddedColumns:
                seen.append(batch.packed.pixels.tolist())
            else:
                seen.append([(s.bbox[2] - s.bbox[0]) * (s.bbox[3] - s.bbox[1]) for _, s in batch])
            yield batch

    monkeypatch.setattr(writer, "_batches", spy)
    for build in (_by_add_many, _by_add):
        seen.clear()
        assert serialise(build(items), version) == want
        assert sum(map(len, seen)) == len(items)
        assert len(seen) > 3
        assert all(sum(b) <= budget or len(b) == 1 for b in seen)
        # Greedy: a batch ends only where the next segment would not fit.
        assert all(sum(b) + nxt[0] > budget for b, nxt in zip(seen, seen[1:]))


def test_entries_read_like_added_ones(tmp_path) -> None:
    items = _items(2, 60)
    a, b = _by_add(items), _by_add_many(items)
    assert len(a) == len(b) == len(items)
    for ea, eb in zip(a, b):
        assert (eb.key, eb.iid.address, eb.iid.domain) == (ea.key, ea.iid.address, ea.iid.domain)
        assert (eb.seg.bbox, eb.seg.area) == (ea.seg.bbox, ea.seg.area)
        assert np.array_equal(eb.seg.mask(), ea.seg.mask())
        assert [r.bbox for r in eb.seg.regions()] == [r.bbox for r in ea.seg.regions()]
    assert a.groups.list() == b.groups.list()
    for name in a.groups:
        assert a.groups.keys(name).tolist() == b.groups.keys(name).tolist()
    assert [e.key for e in b.filter(area=(10, 200))] == [e.key for e in a.filter(area=(10, 200))]
    assert [e.key for e in b.region((0, 0, 30000, 30000))] == [e.key for e in a.region((0, 0, 30000, 30000))]
    # Saved and reopened, then saved again over itself (entries read back).
    b.save(tmp_path / "b.iid", version=1)
    b.save(tmp_path / "b.iid", version=1)
    with IIDFile(tmp_path / "b.iid") as g:
        assert [e.iid.address for e in g.fetch(everything=True)] == [x[0] for x in items]


def _answers(f: IIDFile, items: list) -> dict:
    """Every query's answer on ``f``, as keys and plain values; points and
    boxes are taken inside some of ``items``' bboxes."""
    keys = lambda entries: [e.key for e in entries]  # noqa: E731
    boxes = [item[2] for item in items]
    points = [((b[1] + b[3]) // 2, (b[0] + b[2]) // 2) for b in boxes[1::7]]
    regions = [(b[0] - 5, b[1] - 5, b[2] + 5, b[3] + 5) for b in boxes[::11]]
    nodes, edges = f.overlap_graph()
    cols = f.masks(iids=True)
    some = f.masks(keys=[len(f) - 1, 3, 40, 41])
    return {
        "iter": [(e.key, e.iid.address, e.iid.domain, e.seg.bbox, e.seg.area) for e in f],
        "at": [keys(f.at(x, y)) for x, y in points],
        "at_loaded": [keys(f.at(x, y, only_loaded=True)) for x, y in points],
        "region": [keys(f.region(box)) for box in regions],
        "region_loaded": [keys(f.region(box, only_loaded=True)) for box in regions],
        "filter": keys(f.filter(area=(10, 200))),
        "look_for": keys(f.look_for([items[7][0], items[55][0], b"nope"])),
        "groups": {name: f.groups.keys(name).tolist() for name in f.groups},
        "graph": (keys(nodes), [(a.key, b.key, p) for a, b, p in edges]),
        "fetch": keys(f.fetch(keys=[2, 50, 3])),
        "masks": (cols.keys.tolist(), cols.bboxes.tolist(), cols.areas.tolist(), [m.tolist() for m in cols],
                  cols.addresses, cols.domains),
        "some": [m.tolist() for m in some],
    }


@pytest.mark.parametrize("reopen", [False, True])
def test_queries_on_mixed_entries_as_on_an_add_loop(tmp_path, reopen: bool) -> None:
    # Entries of add() and of two add_many() calls, the latter made only when
    # asked for: every query answers as on a file built by add() alone.
    items = _items(5, 90)
    # Entries overlapping others (each shifted by a pixel), for the graph.
    items += [(b"dup%d" % i, d, (b[0] + 1, b[1] + 1, b[2] + 1, b[3] + 1), m, g) for i, (_, d, b, m, g) in enumerate(items[::9])]
    want = _answers(_by_add(items), items)
    assert all(want[k] for k in ("at", "region", "filter", "look_for"))
    assert any(want["at"]) and any(want["region"]) and want["graph"][1]
    f = _by_add(items[:20])
    _by_add_many(items[20:50], f)
    _by_add(items[50:60], f)
    _by_add_many(items[60:], f)
    assert len(f._entries) == 30  # those of add(); the others are columns until asked for
    assert f.masks().keys.size == len(items) and len(f._entries) == 30  # masks() makes no entry
    if reopen:
        f.save(tmp_path / "m.iid", version=1)
    assert _answers(f, items) == want
    f[25].seg.mask()  # a made entry and the columns it came from agree
    assert _answers(f, items) == want
    assert serialise(f, 1) == serialise(_by_add(items), 1)


def test_added_rows_finds_each_key_in_its_columns() -> None:
    items = _items(6, 40)
    f = _by_add(items[:5])
    _by_add_many(items[5:15], f)
    _by_add(items[15:20], f)
    _by_add_many(items[20:], f)
    keys = np.random.default_rng(0).permutation(len(items))
    seen = np.zeros(len(items), dtype=np.int64)
    for cols, idx, rows in f._added_rows(keys):
        assert (cols.first_key + rows == keys[idx]).all()
        seen[keys[idx]] += 1
    assert seen.tolist() == [0] * 5 + [1] * 10 + [0] * 5 + [1] * (len(items) - 20)
    assert list(f._added_rows(np.array([0, 17], dtype=np.int64))) == []


def test_add_many_to_a_file_read_from_disk(tmp_path) -> None:
    items = _items(3, 80)
    path = tmp_path / "a.iid"
    _by_add(items[:30]).save(path, version=1)
    with IIDFile(path) as f:
        _by_add_many(items[30:], f)
        assert len(f) == len(items)
        got = serialise(f, 1)
    assert got == serialise(_by_add(items), 1)


def test_masks_are_copied_and_converted() -> None:
    rng = np.random.default_rng(4)
    base = rng.random((20, 30)) < 0.5
    masks = [
        base.copy(),
        base.astype(np.uint8) * 7,  # numeric
        base[:, ::2],  # not contiguous
        np.asfortranarray(base),  # Fortran order
        base.tolist(),  # nested lists
    ]
    shapes = [np.asarray(m).shape for m in masks]
    bboxes = [(i, i, i + h, i + w) for i, (h, w) in enumerate(shapes)]
    addresses = [b"a", bytearray(b"b"), memoryview(b"c"), b"d", b"e"]
    f = IIDFile()
    f.add_many(addresses, memoryview(b"dom"), bboxes, masks)
    g = IIDFile()
    for a, box, m in zip(addresses, bboxes, masks):
        g.add(a, memoryview(b"dom"), box, m)
    masks[0][:] = False  # the caller reuses their arrays
    base[:] = False
    for ea, eb in zip(g, f):
        assert type(eb.iid.address) is bytes and eb.iid.address == ea.iid.address
        assert eb.iid.domain == b"dom"
        assert eb.seg.area == ea.seg.area
        assert np.array_equal(eb.seg.mask(), ea.seg.mask())
    assert serialise(f, 1) == serialise(g, 1)


def test_groups() -> None:
    m = [np.ones((1, 1), bool)] * 4
    boxes = np.array([[0, 0, 1, 1]] * 4)
    f = IIDFile()
    f.groups.add("old", [])
    assert f.add_many([b"a", b"b"], None, boxes[:2], m[:2], groups="one") == range(0, 2)
    assert f.add_many([b"c", b"d"], b"", boxes[2:], m[2:], groups=["x", None]) == range(2, 4)
    f.add_many([b"e", b"f", b"g"], [b"1", None, b"3"], np.zeros((3, 4), int), [np.zeros((0, 0), bool)] * 3,
               groups=[["z", "y"], None, ("y",)])
    assert f.groups.list() == sorted(["old", "one", "x", "z", "y"])
    assert list(f.groups) == ["old", "one", "x", "z", "y"]  # creation order, as add() makes it
    assert f.groups.keys("one").tolist() == [0, 1]
    assert f.groups.keys("x").tolist() == [2]
    assert f.groups.keys("y").tolist() == [4, 6]
    assert f.groups.keys("z").tolist() == [4]
    assert [f[k].iid.domain for k in (2, 4, 5, 6)] == [b"", b"1", b"", b"3"]


def test_empty_input_adds_nothing() -> None:
    items = _items(5, 3)
    before = serialise(_by_add(items), 1)
    f = _by_add(items)
    n = len(items)
    assert f.add_many([], None, np.zeros((0, 4), int), [], groups="new") == range(n, n)
    assert f.add_many([], [], [], []) == range(n, n)
    assert len(f) == n and "new" not in f.groups
    assert serialise(f, 1) == before


def _bad(**change):
    """Arguments of a 4-item add_many call, item 2 changed as asked."""
    args = {
        "addresses": [b"a", b"b", b"c", b"d"],
        "domains": [b"d"] * 4,
        "bboxes": [(0, 0, 2, 3), (5, 5, 7, 8), (9, 9, 11, 12), (1, 1, 3, 4)],
        "masks": [np.ones((2, 3), bool) for _ in range(4)],
        "groups": ["g", None, "h", "g"],
    }
    for key, value in change.items():
        args[key] = list(args[key])
        args[key][2] = value
    return args


@pytest.mark.parametrize(
    "change,error,text",
    [
        ({"masks": np.ones((3, 3), bool)}, ValueError, "mask shape (3, 3) does not match bbox"),
        ({"masks": np.ones((2, 3, 1), bool)}, ValueError, "mask must be 2-D"),
        ({"masks": np.array([["x"] * 3] * 2)}, TypeError, "boolean-convertible"),
        ({"bboxes": (11, 9, 9, 12)}, ValueError, "inverted"),
        ({"bboxes": (-1, 9, 1, 12)}, IIDLimitError, "outside"),
        ({"bboxes": (0, 0, 2**32, 3)}, IIDLimitError, "outside"),
        ({"bboxes": (9.0, 9, 11, 12)}, TypeError, "integers"),
        ({"bboxes": (True, 9, 11, 12)}, TypeError, "integers"),
        ({"bboxes": (9, 9, 11)}, ValueError, "4 values"),
        ({"addresses": "c"}, TypeError, "address must be bytes"),
        ({"addresses": None}, TypeError, "address must be bytes"),
        ({"domains": "d"}, TypeError, "domain must be bytes"),
        ({"groups": 5}, TypeError, "group names are str"),
        ({"groups": ["ok", b"no"]}, TypeError, "group names are str"),
    ],
)
def test_bad_items_name_their_index_and_add_nothing(change, error, text) -> None:
    f = _by_add(_items(6, 2))
    before = (len(f), f.groups.list(), serialise(f, 1))
    f = _by_add(_items(6, 2))
    args = _bad(**change)
    with pytest.raises(error) as info:
        f.add_many(**args)
    assert str(info.value).startswith("add_many item 2: ")
    assert text in str(info.value)
    # add() says the same about that item.
    with pytest.raises(error) as direct:
        IIDFile().add(args["addresses"][2], args["domains"][2], args["bboxes"][2], args["masks"][2], group=args["groups"][2])
    assert str(info.value) == f"add_many item 2: {direct.value}"
    assert (len(f), f.groups.list(), serialise(f, 1)) == before
    # An ndarray of bboxes reports the same row.
    if "bboxes" not in change and "masks" not in change:
        args["bboxes"] = np.array(args["bboxes"])
        with pytest.raises(error, match="add_many item 2: "):
            IIDFile().add_many(**args)


@pytest.mark.parametrize(
    "kwargs,text",
    [
        ({"addresses": [b"a"]}, "1 addresses for 4 masks"),
        ({"domains": [b"a"]}, "1 domains for 4 masks"),
        ({"bboxes": [(0, 0, 2, 3)]}, "1 bboxes for 4 masks"),
        ({"groups": ["a"]}, "1 groups for 4 masks"),
    ],
)
def test_lengths_must_agree(kwargs, text) -> None:
    args = _bad()
    args.update(kwargs)
    f = IIDFile()
    with pytest.raises(ValueError, match=text):
        f.add_many(**args)
    assert len(f) == 0


def test_bad_single_values() -> None:
    args = _bad()
    f = IIDFile()
    with pytest.raises(TypeError, match="^domain must be bytes"):
        f.add_many(**{**args, "domains": "text"})
    with pytest.raises(TypeError, match="^group names are str, got b'g'"):
        f.add_many(**{**args, "groups": b"g"})
    bboxes = np.array(args["bboxes"], dtype=np.uint64)
    bboxes[3, 2] = 2**63 + 5
    with pytest.raises(IIDLimitError, match="^add_many item 3: bbox .* outside"):
        f.add_many(**{**args, "bboxes": bboxes})
    assert len(f) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    items=st.lists(st.tuples(entries(version=1, max_side=12, long_addresses=False), st.one_of(st.none(), group_names())), max_size=12),
    version=st.sampled_from([0, 1]),
    codec=st.sampled_from(BUILTINS),
)
def test_round_trip_property(items, version, codec) -> None:
    if version == 0:
        # version 0 holds coordinates up to 65535 only
        items = [(e._replace(bbox=tuple(v % 60000 for v in e.bbox[:2]) + (e.bbox[0] % 60000 + e.mask.shape[0], e.bbox[1] % 60000 + e.mask.shape[1])), g) for e, g in items]
    rows = [(e.address, e.domain, e.bbox, e.mask, g) for e, g in items]
    want = serialise(_by_add(rows), version, codec)
    assert serialise(_by_add_many(rows), version, codec) == want


@settings(max_examples=200, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(0, 19), st.integers(0, 19), st.floats(0, 1)), min_size=1, max_size=30),
       seed=st.integers(0, 2**32 - 1))
def test_areas_are_counted_from_the_packed_stream(shapes, seed):
    """add_many's areas come from the packed stream of every mask (words
    counted in place, each mask's first and last word split at its bytes):
    masks of any size and offset count exactly their set pixels."""
    from iidschema.adding import popcounts
    from iidschema.codecs.packbits import pack_masks

    rng = np.random.default_rng(seed)
    masks = [rng.random((h, w)) < p for h, w, p in shapes]
    assert popcounts(pack_masks(masks)).tolist() == [int(m.sum()) for m in masks]
