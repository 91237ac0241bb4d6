"""Remote lazy reads (iidschema.remote.FsspecSource) against a real HTTP
server on loopback that honours Range requests and counts what it serves.

The large files (~24 MB each, version 0 and version 1) are built once per
module; opening one and fetching an entry must transfer a few kilobytes,
and every answer must equal the local read of the same file.
"""

from __future__ import annotations

import http.server
import os
import re
import threading

import numpy as np
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")  # fsspec's HTTP filesystem

import iidschema  # noqa: E402
from iidschema import IIDFile  # noqa: E402
from iidschema.remote import FsspecSource  # noqa: E402

BUDGET = 64 * 1024  # bytes a lazy open + one small query may transfer


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files of ``server.root``; honours ``Range: bytes=a-b``;
    adds every body byte it sends to ``server.served``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _target(self):
        name = self.path.lstrip("/").split("?")[0]
        path = os.path.join(self.server.root, name)
        if "/" in name or not os.path.isfile(path):
            self.send_error(404)
            return None
        return path

    def do_HEAD(self):
        path = self._target()
        if path is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        path = self._target()
        if path is None:
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        status = 200
        if rng and self.server.ranges:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m:
                self.send_error(416)
                return
            a, b = m.groups()
            if a == "":  # suffix range
                start, end = max(0, size - int(b)), size - 1
            else:
                start, end = int(a), min(size - 1, int(b)) if b else size - 1
            if start > end or start >= size:
                self.send_error(416)
                return
            status = 206
        with open(path, "rb") as fh:
            fh.seek(start)
            body = fh.read(end - start + 1)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self.wfile.write(body)
        with self.server.lock:
            self.server.served += len(body)
            self.server.gets += 1


class RangeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, root: str, ranges: bool = True):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.ranges = ranges
        self.served = 0
        self.gets = 0
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def reset(self) -> None:
        with self.lock:
            self.served = 0
            self.gets = 0


def _serve(root: str, ranges: bool = True):
    server = RangeServer(root, ranges)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


def _stop(server, thread):
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _build(n_small: int = 4000, n_big: int = 160, seed: int = 7) -> IIDFile:
    """~3 MB of small scattered entries with unique addresses, plus big
    noise masks (incompressible, ~150 KB each) that make the file large."""
    rng = np.random.default_rng(seed)
    f = IIDFile()
    side = 6000
    for i in range(n_small):
        h, w = (int(v) for v in rng.integers(4, 40, 2))
        r, c = (int(v) for v in rng.integers(0, side - 40, 2))
        mask = rng.random((h, w)) < 0.7
        mask[h // 2, :] = True
        f.add(f"small-{i}".encode(), b"dom%d" % (i % 3), (r, c, r + h, c + w), mask, group="tiny" if i % 500 == 0 else "small")
    for i in range(n_big):
        r, c = (int(v) for v in rng.integers(0, side - 1200, 2))
        mask = rng.random((1000, 1200)) < 0.5
        mask[0, :] = True
        f.add(f"big-{i}".encode(), b"noise", (r, c, r + 1000, c + 1200), mask, group="big")
    f.meta.data = {"image": {"height": side, "width": side}}
    return f


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    f = _build()
    f.save(str(root / "big1.iid"), version=1, codec="packbits")
    f.save(str(root / "big0.iid"), version=0)
    f.save(str(root / "big2.iid"), version=2)
    server, thread = _serve(str(root))
    try:
        yield server, root
    finally:
        _stop(server, thread)


def _file_source(f: IIDFile):
    """The source of the file itself (a version-2 reader reads through a
    source of decompressed section contents wrapping it)."""
    return getattr(f._reader, "file_source", f._reader.source)


def _same(a, b) -> None:
    assert [e.key for e in a] == [e.key for e in b]
    for x, y in zip(a, b):
        assert x.iid == y.iid
        assert x.seg.bbox == y.seg.bbox and x.seg.area == y.seg.area
        assert np.array_equal(x.seg.mask(), y.seg.mask())


@pytest.mark.parametrize("version", [0, 1, 2])
def test_open_and_fetch_one_transfers_kilobytes(served, version):
    server, root = served
    name = f"big{version}.iid"
    size = os.path.getsize(root / name)
    assert size > 20_000_000
    server.reset()
    with iidschema.open(server.url(name)) as remote, IIDFile(str(root / name)) as local:
        assert isinstance(_file_source(remote), FsspecSource)
        assert len(remote) == len(local) and remote.version == version
        opened = server.served
        assert opened < BUDGET
        _same(remote.fetch(keys=[1234]), local.fetch(keys=[1234]))
        assert server.served < BUDGET, f"open + fetch one entry served {server.served} bytes of {size}"
        # The counters of the source agree with the server's.
        assert _file_source(remote).bytes_fetched == server.served


def _lonely_point(f: IIDFile) -> tuple[int, int]:
    """(x, y) of a pixel of a small entry whose bbox meets no other bbox."""
    boxes, _ = f._reader.heads(np.arange(len(f)))
    for key in range(0, 4000, 7):
        (entry,) = f.fetch(keys=[key])
        mask = entry.seg.mask()
        r, c = (int(v) for v in np.argwhere(mask)[0])
        y, x = entry.seg.bbox[0] + r, entry.seg.bbox[1] + c
        inside = (boxes[:, 0] <= y) & (y < boxes[:, 2]) & (boxes[:, 1] <= x) & (x < boxes[:, 3])
        if int(inside.sum()) == 1:
            return x, y
    raise AssertionError("no lonely entry")  # pragma: no cover


@pytest.mark.parametrize("version", [1, 2])
def test_indexed_queries_transfer_kilobytes(served, version):
    """Bytes served for open + one query of a file with indexes: a few KiB
    per place touched (version 1: index nodes and their checksum blocks, a
    LUT block and its CRC word, the records; version 2: the compressed
    blocks holding them)."""
    server, root = served
    name = f"big{version}.iid"
    with IIDFile(str(root / name)) as local:
        x, y = _lonely_point(local)
    queries = [
        ("at", lambda f: f.at(x, y), BUDGET),
        ("look_for one", lambda f: f.look_for([b"small-2345"]), BUDGET),
        ("look_for three", lambda f: f.look_for([b"small-2345", b"small-9", b"absent"]), 2 * BUDGET),
        ("region", lambda f: f.region((y, x, y + 1, x + 1)), BUDGET),
        # Version 2 reads whole blocks: per scattered entry its LUT chunk (1024
        # rows), IID block and segment block, compressed (about 37 KiB here).
        ("tiny group (8 scattered entries)", lambda f: f.fetch(groups="tiny"), (4 if version == 1 else 6) * BUDGET),
    ]
    for what, query, budget in queries:
        server.reset()
        with iidschema.open(server.url(name)) as remote, IIDFile(str(root / name)) as local:
            got = query(remote)
            served_bytes = server.served
            assert got, what
            _same(got, query(local))
            assert served_bytes < budget, f"{what}: open + query served {served_bytes} bytes"


def test_v0_group_fetch_is_lazy(served):
    server, root = served
    server.reset()
    with iidschema.open(server.url("big0.iid")) as remote, IIDFile(str(root / "big0.iid")) as local:
        _same(remote.fetch(groups="tiny"), local.fetch(groups="tiny"))
        # 8 entries scattered over the file: header, groups, their LUT rows and records.
        assert server.served < 3 * BUDGET
    # No spatial index in version 0: at() reads every segment head, in
    # merged, batched range requests (thousands of tiny requests would be
    # slow, and refused by small servers).
    with IIDFile(str(root / "big1.iid")) as local1:
        x, y = _lonely_point(local1)
    server.reset()
    with iidschema.open(server.url("big0.iid")) as remote, IIDFile(str(root / "big0.iid")) as local:
        _same(remote.at(x, y), local.at(x, y))
        assert server.gets < 400


def test_full_read_matches_local_with_few_requests(served):
    server, root = served
    server.reset()
    with iidschema.open(server.url("big1.iid")) as remote, IIDFile(str(root / "big1.iid")) as local:
        keys = list(range(3990, 4010))  # small and big entries across the boundary
        _same(remote.fetch(keys=keys), local.fetch(keys=keys))
        server.reset()
        everything = remote.fetch(everything=True)
        assert len(everything) == len(local)
        # Sequential read-ahead: far fewer requests than 8 KiB blocks.
        size = os.path.getsize(root / "big1.iid")
        assert server.gets < size // (8 * 1024) // 20
        _same(everything[::97], local.fetch(keys=[e.key for e in everything[::97]]))
        assert remote.meta.data == local.meta.data
        assert {g: remote.groups.keys(g).tolist() for g in remote.groups} == {
            g: local.groups.keys(g).tolist() for g in local.groups
        }


def test_server_without_ranges_is_reported(tmp_path):
    f = IIDFile()
    f.add(b"a", b"d", (0, 0, 2, 2), np.ones((2, 2), bool))
    f.save(str(tmp_path / "a.iid"))
    # A file larger than one block, so that a range is really needed.
    pad = IIDFile()
    for i in range(400):
        pad.add(b"x%d" % i, b"d", (i, 0, i + 8, 8), np.ones((8, 8), bool))
    pad.save(str(tmp_path / "b.iid"), version=0)
    server, thread = _serve(str(tmp_path), ranges=False)
    try:
        with pytest.raises(OSError, match="Range"):
            with iidschema.open(server.url("b.iid")) as g:
                g.fetch(keys=[300])
    finally:
        _stop(server, thread)


def test_memory_filesystem_and_pickle(tmp_path):
    import pickle

    import fsspec

    f = _build(n_small=300, n_big=2, seed=3)
    for version in (0, 1):
        path = tmp_path / f"m{version}.iid"
        f.save(str(path), version=version)
        with fsspec.open(f"memory://iidschema-test/m{version}.iid", "wb") as fh:
            fh.write(path.read_bytes())
        src = FsspecSource(f"memory://iidschema-test/m{version}.iid", block_size=1024)
        src2 = pickle.loads(pickle.dumps(src))
        for s in (src, src2):
            with IIDFile(s) as remote, IIDFile(str(path)) as local:
                _same(remote.fetch(everything=True), local.fetch(everything=True))
                assert [e.key for e in remote.at(100, 100)] == [e.key for e in local.at(100, 100)]
        assert src.requests > 0
    with pytest.raises(ValueError, match="closed"):
        src.read(0, 4)
    fsspec.filesystem("memory").rm("/iidschema-test", recursive=True)


def test_source_reads_and_gathers_exactly(tmp_path):
    import fsspec

    data = bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8))
    with fsspec.open("memory://iidschema-test/raw.bin", "wb") as fh:
        fh.write(data)
    src = FsspecSource("memory://iidschema-test/raw.bin", block_size=1000, cache_bytes=5000)
    rng = np.random.default_rng(1)
    for _ in range(200):
        off = int(rng.integers(0, len(data)))
        n = int(rng.integers(0, min(12_000, len(data) - off) + 1))
        assert bytes(src.read(off, n)) == data[off : off + n]
    offs = rng.integers(0, len(data) - 20, 50)
    got = src.gather(offs, 20)
    assert all(bytes(got[i]) == data[o : o + 20] for i, o in enumerate(offs.tolist()))
    assert len(src._blocks) <= 5
    with pytest.raises(iidschema.IIDFormatError):
        src.read(len(data) - 2, 5)
    fsspec.filesystem("memory").rm("/iidschema-test", recursive=True)
