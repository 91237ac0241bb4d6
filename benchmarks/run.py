"""Benchmark suite: iidschema against iidfile 0.2.0, pycocotools and other
ways to store the same masks.

    python benchmarks/run.py --sizes 1000,10000,100000,1000000 --out benchmarks/results
    python benchmarks/run.py --quick --out /tmp/bench            # N = 1000, 10000, few repeats

For each N it generates a deterministic workload (``workload.py``), then
measures, each in its own subprocess (``_task.py``, with a timeout), for
iidschema (format version 0, version 1 and version 2, each saved with
``codec="auto"``) and for iidfile 0.2.0 on the same data: add+save, file size, open, fetch everything (and
decode every mask), fetch one tiny group, fetch 50 keys, look_for 20
addresses, filter by area, at() for 100 points, region() for 20 boxes,
overlap_graph, and the peak memory of open and fetch-everything.  The median
of repeated runs is reported.  A peer operation predicted (from the
previous size) to exceed the timeout is not started; one that runs past it
is killed; the table says which.

It also compares the RLE codec with pycocotools, file sizes with COCO RLE
JSON, one PNG per entry, medmask ``.mska`` and zstd over all packed bits,
and fetch-everything with a physical floor (reading the file from the page
cache + ``np.unpackbits`` of the same pixels).

Writes ``results.json`` and ``results.md`` to ``--out``.  Timings are never
asserted anywhere; ``tests/test_benchmarks_smoke.py`` only runs ``--quick``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workload as W  # noqa: E402

LIBS = [("iidschema", 0), ("iidschema", 1), ("iidschema", 2), ("iidfile", None)]
#: The iidschema format versions measured; their keys in the results are ``iidschema-v<version>``.
VERSIONS = [v for lib, v in LIBS if lib == "iidschema"]
QUERY_OPS = ["open", "fetch_all", "masks_all", "fetch_tiny", "fetch_keys50", "look_for20", "filter_area", "at100", "region20", "overlap_graph"]
OP_TITLES = {
    "add_save": "add + save",
    "add": "  of which add()",
    "save": "  of which save()",
    "add_many_save": "add_many + save⁴",
    "open": "open (header)",
    "fetch_all": "fetch everything + mask() each",
    "masks_all": "every mask as columns: masks()³",
    "fetch_tiny": "fetch tiny group (10 entries) + masks",
    "fetch_keys50": "fetch 50 keys + masks",
    "look_for20": "look_for 20 addresses",
    "filter_area": "filter by area (~10 %)",
    "at100": "at(x, y), 100 points",
    "region20": "region(), 20 boxes 100x100",
    "overlap_graph": "overlap_graph",
}
#: How the run time of an operation of iidfile 0.2.0 grows with N (for skipping).
GROWTH = {"overlap_graph": 2.0}


def lib_key(lib: str, version: int | None) -> str:
    return lib if version is None else f"{lib}-v{version}"


def fmt_time(t: float | None) -> str:
    if t is None:
        return "–"
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    if t < 1:
        return f"{t * 1e3:.1f} ms"
    return f"{t:.2f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def fmt_n(n: int) -> str:
    return f"{n:,}".replace(",", " ")


class Runner:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.python = sys.executable
        self.results: dict[str, Any] = {"machine": machine(), "args": vars(args), "sizes": {}}
        self.history: dict[tuple[str, str], tuple[int, float]] = {}

    # -- subprocesses ------------------------------------------------------

    def task(self, lib: str, version: int | None, op: str, n: int, file: str, extra: list[str] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        key = (lib_key(lib, version), op + ("" if not extra or "--memory" not in extra else "-" + extra[extra.index("--memory") + 1]))
        timeout = timeout or self.args.timeout
        if lib == "iidfile" and key in self.history:
            n0, t0 = self.history[key]
            predicted = t0 * (n / n0) ** GROWTH.get(op, 1.0)
            if predicted > timeout:
                return {"skipped": f"predicted {predicted:.0f} s > {timeout:.0f} s limit ({t0:.2f} s at N={fmt_n(n0)})"}
        cmd = [self.python, os.path.join(HERE, "_task.py"), lib, op, "--file", file,
               "--repeats", str(self.args.repeats), "--budget", str(self.args.budget)]
        if version is not None:
            cmd += ["--version", str(version)]
        cmd += extra or []
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.history[key] = (n, float("inf"))
            return {"timeout": timeout}
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": " | ".join(tail)[-400:]}
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["wall"] = wall
        single = out.get("median", wall)
        self.history[key] = (n, single)
        return out

    def log(self, *parts: Any) -> None:
        print(*parts, file=sys.stderr, flush=True)

    # -- one size ----------------------------------------------------------

    def size(self, n: int) -> None:
        args = self.args
        work = os.path.join(args.work, f"n{n}")
        os.makedirs(work, exist_ok=True)
        t0 = time.perf_counter()
        w, wpath = W.cached_workload(n, args.work)
        params = W.query_params(w)
        ppath = os.path.join(args.work, f"params-{n}.json")
        W.save_params(params, ppath)
        res: dict[str, Any] = {
            "n": n, "side": w.side, "mask_pixels": w.mask_pixels, "packed_bytes": int(w.packed.size),
            "workload_seconds": time.perf_counter() - t0, "ops": {}, "sizes": {}, "memory": {},
        }
        self.results["sizes"][str(n)] = res
        self.log(f"== N = {fmt_n(n)} (image {w.side} x {w.side}, {fmt_bytes(w.mask_pixels)} of decoded mask pixels)")

        files: dict[str, str | None] = {}
        for lib, version in LIBS:
            lk = lib_key(lib, version)
            if lib == "iidfile" and n > args.peer_max_n:
                files[lk] = None
                res["ops"].setdefault(lk, {})["add_save"] = {"skipped": f"not run above N={fmt_n(args.peer_max_n)} (--peer-max-n)"}
                continue
            path = os.path.join(work, f"{lk}.iid")
            r = self.task(lib, version, "add_save", n, path, ["--workload", wpath], timeout=args.timeout)
            res["ops"].setdefault(lk, {})["add_save"] = r
            files[lk] = path if "size" in r else None
            self.log(f"  {lk:14} add+save {fmt_time(r.get('median'))} {r.get('skipped') or r.get('timeout') or r.get('error') or ''}")
            if lib == "iidfile":
                # No bulk add in iidfile 0.2.0: its add loop is its only way.
                res["ops"][lk]["add_many_save"] = r
                continue
            many_path = os.path.join(work, f"{lk}-add_many.iid")
            rm = self.task(lib, version, "add_many_save", n, many_path, ["--workload", wpath], timeout=args.timeout)
            if "size" in rm and files[lk]:
                with open(many_path, "rb") as a, open(path, "rb") as b:
                    rm["same_bytes_as_add_loop"] = a.read() == b.read()
                os.remove(many_path)
            res["ops"][lk]["add_many_save"] = rm
            self.log(f"  {lk:14} add_many+save {fmt_time(rm.get('median'))} same bytes: {rm.get('same_bytes_as_add_loop')} "
                     f"{rm.get('timeout') or rm.get('error') or ''}")
        # iidfile reads version-0 files written by iidschema (same bytes):
        # if its own writer could not finish, it still gets measured reading.
        peer_file = files.get("iidfile") or files.get("iidschema-v0")
        if "iidfile" not in files or (n > args.peer_max_n):
            peer_file = None
        res["peer_file"] = "own" if files.get("iidfile") else ("iidschema-v0" if peer_file else None)

        for op in QUERY_OPS:
            for lib, version in LIBS:
                lk = lib_key(lib, version)
                path = peer_file if lib == "iidfile" else files.get(lk)
                if path is None:
                    res["ops"][lk][op] = res["ops"][lk].get("add_save", {}) if lib != "iidfile" else {
                        "skipped": f"not run above N={fmt_n(args.peer_max_n)} (--peer-max-n)"}
                    continue
                r = self.task(lib, version, op, n, path, ["--params", ppath])
                res["ops"][lk][op] = r
                self.log(f"  {lk:14} {op:14} {fmt_time(r.get('median'))} {r.get('skipped') or r.get('timeout') or r.get('error') or ''}")
        for lib, version in LIBS:
            lk = lib_key(lib, version)
            path = peer_file if lib == "iidfile" else files.get(lk)
            if path is None:
                continue
            for op in ("open", "fetch_all") + (("masks_all",) if lib != "iidfile" else ()):
                for mode in ("rss", "tracemalloc"):
                    r = self.task(lib, version, op, n, path, ["--params", ppath, "--memory", mode])
                    res["memory"].setdefault(lk, {})[f"{op}-{mode}"] = r
            self.log(f"  {lk:14} memory fetch_all {fmt_bytes(res['memory'][lk]['fetch_all-rss'].get('peak_bytes'))} (rss)")
        for lk, path in files.items():
            if path:
                res["sizes"][lk] = os.path.getsize(path)
        if files.get("iidschema-v0"):
            res["floor"] = floors(w, files["iidschema-v0"])
        if n <= args.compare_max_n:
            res["sizes"].update(other_sizes(w, files.get("iidschema-v0"), args, self))
            res["codec"] = codec_compare(w)
        self.save()

    def save(self) -> None:
        os.makedirs(self.args.out, exist_ok=True)
        with open(os.path.join(self.args.out, "results.json"), "w") as fh:
            json.dump(self.results, fh, indent=1, default=str)
        with open(os.path.join(self.args.out, "results.md"), "w") as fh:
            fh.write(markdown(self.results))


# -- floors and comparisons -------------------------------------------------------


def _best(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floors(w: W.Workload, path: str) -> dict[str, float]:
    """Physical floors of fetch-everything: read the file from the page
    cache, and unpack the same number of packed pixels (one bulk call, and a
    per-mask loop, the least a per-entry API can do)."""
    def read():
        with open(path, "rb") as fh:
            return fh.read()

    read()
    t_read = _best(read)
    buf = w.packed.copy()
    t_bulk = _best(lambda: np.unpackbits(buf))
    shapes = (w.bboxes[:, 2] - w.bboxes[:, 0]) * (w.bboxes[:, 3] - w.bboxes[:, 1])
    offs = w.offsets

    def loop():
        for i in range(w.n):
            np.unpackbits(buf[offs[i] : offs[i + 1]], count=int(shapes[i]))

    t_loop = _best(loop, 3)

    # What any API that hands out one object per entry and a fresh mask per
    # mask() call costs even with nothing left to decode: one small object per
    # entry kept in a list (as fetch returns them), then, per entry, a second
    # object (the segment) and a copy of an already decoded mask.
    class _Entry:
        __slots__ = ("key", "seg")

    class _Seg:
        __slots__ = ("key", "bbox", "area", "mask")

    bits = np.unpackbits(buf).view(np.bool_)
    starts = (8 * offs[:-1]).tolist()
    dims = list(zip((w.bboxes[:, 2] - w.bboxes[:, 0]).tolist(), (w.bboxes[:, 3] - w.bboxes[:, 1]).tolist()))

    def objects():
        entries = []
        for i in range(w.n):
            e = _Entry()
            e.key = i
            entries.append(e)
        for e, s, (h, wd) in zip(entries, starts, dims):
            seg = e.seg = _Seg()
            seg.key, seg.bbox, seg.area = e.key, (0, 0, h, wd), 0
            seg.mask = bits[s : s + h * wd].reshape(h, wd).copy()
            seg.mask = None

    t_objects = _best(objects, 3)
    return {"read_file": t_read, "unpackbits_bulk": t_bulk, "unpackbits_per_mask": t_loop,
            "floor": t_read + t_bulk, "floor_per_mask": t_read + t_loop,
            "objects_per_entry": t_objects, "floor_objects": t_read + t_bulk + t_objects}


def codec_compare(w: W.Workload, limit: int = 20000) -> dict[str, Any]:
    """iidschema's RLE codec against pycocotools on the workload's masks and
    on a few large masks: encode and decode time, encoded bytes."""
    from iidschema.codecs import get_codec

    out: dict[str, Any] = {}
    try:
        from pycocotools import mask as cmask
    except ImportError:  # pragma: no cover
        return {"error": "pycocotools not installed"}
    rle = get_codec("rle")
    rng = np.random.default_rng(1)
    yy, xx = np.ogrid[:1024, :1024]
    large = []
    for i in range(20):
        m = np.zeros((1024, 1024), bool)
        for k in range(8):  # 3 blobs, then 5 holes
            cy, cx = rng.integers(100, 924, 2)
            ry, rx = rng.integers(60, 350, 2) if k < 3 else rng.integers(5, 40, 2)
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            m = (m | inside) if k < 3 else (m & ~inside)
        large.append(m)
    sets = {"workload masks": w.masks()[:limit], "large masks (20 x 1024², blobs with holes)": large}
    for name, masks in sets.items():
        fmasks = [np.asfortranarray(m.astype(np.uint8)) for m in masks]
        enc = [rle.encode(m) for m in masks]
        shapes = [m.shape for m in masks]
        coco = [cmask.encode(m) for m in fmasks]
        r = {
            "masks": len(masks),
            "pixels": int(sum(m.size for m in masks)),
            "iidschema_encode": _best(lambda: [rle.encode(m) for m in masks], 3),
            "pycocotools_encode": _best(lambda: [cmask.encode(m) for m in fmasks], 3),
            "iidschema_decode": _best(lambda: [rle.decode(p, m.shape) for p, m in zip(enc, masks)], 3),
            "pycocotools_decode": _best(lambda: [cmask.decode(c) for c in coco], 3),
            # The batch API: every mask in one call (any mix of sizes).
            "iidschema_encode_many": _best(lambda: rle.encode_many(masks), 3),
            "iidschema_decode_many": _best(lambda: rle.decode_many(enc, shapes), 3),
            "iidschema_bytes": int(sum(len(p) for p in enc)),
            "pycocotools_bytes": int(sum(len(c["counts"]) for c in coco)),
        }
        # pycocotools needs Fortran-ordered uint8 input; converting is part of a real call.
        r["pycocotools_encode_with_conversion"] = _best(
            lambda: [cmask.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks], 3)
        out[name] = r
    return out


def other_sizes(w: W.Workload, v0_path: str | None, args: argparse.Namespace, runner: Runner) -> dict[str, Any]:
    """Bytes to store the same masks in other ways."""
    out: dict[str, Any] = {}
    masks = w.masks()
    # COCO RLE JSON: per entry bbox + compressed RLE of the bbox-sized mask
    # (smaller than COCO's usual full-image RLE: favourable to COCO).
    try:
        from pycocotools import mask as cmask

        anns = []
        for i, m in enumerate(masks):
            minr, minc, maxr, maxc = (int(v) for v in w.bboxes[i])
            c = cmask.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": i, "address": w.address(i).decode(), "domain": w.domain(i).decode(),
                         "bbox": [minc, minr, maxc - minc, maxr - minr],
                         "segmentation": {"size": [maxr - minr, maxc - minc], "counts": c["counts"].decode("ascii")}})
        doc = {"images": [{"id": 1, "height": w.side, "width": w.side}], "annotations": anns,
               "groups": {g: [i for i in range(w.n) if w.group(i) == g] for g in W.GROUPS}}
        out["coco_rle_json"] = len(json.dumps(doc, separators=(",", ":")).encode())
    except ImportError:  # pragma: no cover
        out["coco_rle_json"] = None
    # One PNG per entry, 1 bit per pixel.
    from PIL import Image

    total = 0
    for m in masks:
        buf = io.BytesIO()
        Image.fromarray(m).convert("1").save(buf, format="PNG")
        total += buf.tell()
    out["png_per_entry"] = total
    # zstd over all packed bits (no random access, no bboxes).
    import zstandard

    out["zstd_packed_bits"] = len(zstandard.ZstdCompressor(level=3).compress(w.packed.tobytes()))
    out["zstd19_packed_bits"] = len(zstandard.ZstdCompressor(level=19).compress(w.packed.tobytes())) if w.n <= 100000 else None
    out["packed_bits"] = int(w.packed.size)
    # medmask .mska (layers of label volumes over the whole image), through
    # iidschema's medmask writer, in a subprocess with the timeout.
    if v0_path is not None:
        dst = os.path.join(os.path.dirname(v0_path), "medmask.mska")
        code = ("import sys, os; from iidschema import IIDFile; from iidschema.formats.medmask import write_mska;"
                "f = IIDFile(sys.argv[1]); write_mska(f, sys.argv[2], layout='layers', sidecar=False);"
                "print(os.path.getsize(sys.argv[2]))")
        if w.side * w.side > args.medmask_max_pixels:
            out["medmask_mska"] = {"skipped": f"image {w.side}² px: label volumes too large (> {args.medmask_max_pixels:.0e} px)"}
        else:
            try:
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-c", code, v0_path, dst], capture_output=True, text=True, timeout=args.timeout)
                if proc.returncode == 0:
                    out["medmask_mska"] = int(proc.stdout.strip().splitlines()[-1])
                    out["medmask_seconds"] = time.perf_counter() - t0
                else:
                    out["medmask_mska"] = {"error": proc.stderr.strip().splitlines()[-1][-300:]}
            except subprocess.TimeoutExpired:
                out["medmask_mska"] = {"timeout": args.timeout}
    return out


# -- report -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            info["memory_gb"] = round(int(fh.readline().split()[1]) / 1024**2, 1)
    except OSError:  # pragma: no cover
        pass
    versions = {}
    for mod in ("numpy", "scipy", "iidfile", "pycocotools", "PIL", "zstandard", "medmask", "skimage"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except ImportError:
            versions[mod] = None
    try:
        from importlib.metadata import version

        versions["iidfile"] = version("iidfile")
        versions["iidschema"] = version("iidschema")
        versions["pycocotools"] = version("pycocotools")
    except Exception:  # noqa: BLE001
        pass
    info["versions"] = versions
    return info


def _cell(r: dict[str, Any] | None, key: str = "median") -> str:
    if not r:
        return "–"
    if "timeout" in r:
        return f"> {r['timeout']:.0f} s (killed)"
    if "skipped" in r:
        return "skipped¹"
    if "error" in r:
        return "error²"
    return fmt_time(r.get(key))


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "median") -> str:
    ta = a.get(key) if a else None
    if not b or ta is None:
        return "–"
    if "timeout" in b:
        return f"< {ta / b['timeout']:.2g}"
    tb = b.get(key)
    if tb is None:
        if "skipped" in b and "predicted" in b["skipped"]:
            pred = float(b["skipped"].split()[1])
            return f"≈ {ta / pred:.2g}"
        return "–"
    return f"{ta / tb:.3g}" if tb else "–"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = ["# Benchmark results", ""]
    lines.append(f"Machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs, {m.get('memory_gb', '?')} GB RAM; "
                 f"Python {m['python']} on {m['platform']}.  ")
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v) + ".")
    lines.append("")
    lines.append("Times are medians of repeated runs (each query on a freshly opened file; the open is not timed, "
                 "warm page cache). Ratios are iidschema / iidfile: **0.05 means 20x faster**. "
                 "¹ not run: predicted from the previous size to exceed the time limit, or above `--peer-max-n`; "
                 "'> N s (killed)': ran past the limit. ² failed (see results.json). "
                 "³ iidfile 0.2.0 has no columnar read: its column is its fetch everything + mask() each again. "
                 "⁴ the same entries in one `add_many()` call (the file is byte for byte the one of the add loop); "
                 "iidfile 0.2.0 has no bulk add: its column is its add loop + save.")
    lines.append("")
    skipped_notes = []
    for n_key, res in results["sizes"].items():
        n = res["n"]
        lines.append(f"## N = {fmt_n(n)} segments (image {res['side']} x {res['side']}, "
                     f"{fmt_bytes(res['mask_pixels'])} of decoded mask pixels)")
        lines.append("")
        # Bytes read by each query (through a CountingSource), for versions 1 and up.
        counted = [v for v in VERSIONS if v >= 1]
        lines.append("| operation | " + " | ".join(f"iidschema v{v}" for v in VERSIONS) + " | iidfile 0.2.0 | "
                     + " | ".join(f"v{v} / iidfile" for v in VERSIONS) + " | "
                     + " | ".join(f"v{v} bytes read (query)" for v in counted) + " |")
        lines.append("|---|" + "---:|" * (2 * len(VERSIONS) + 1 + len(counted)))
        ops = res["ops"]
        vops = {v: ops.get(f"iidschema-v{v}", {}) for v in VERSIONS}
        peer = ops.get("iidfile", {})
        for op in ["add_save", "add", "save", "add_many_save"] + QUERY_OPS:
            src_op = "add_save" if op in ("add", "save") else op
            key = op if op in ("add", "save") else "median"
            mine = {v: vops[v].get(src_op) for v in VERSIONS}
            c = peer.get(src_op)
            nbytes = [mine[v].get("bytes", {}).get("query") if mine[v] and op not in ("add", "save") else None for v in counted]
            lines.append(f"| {OP_TITLES[op]} | " + " | ".join(_cell(mine[v], key) for v in VERSIONS) + f" | {_cell(c, key)} | "
                         + " | ".join(_ratio(mine[v], c, key) for v in VERSIONS) + " | "
                         + " | ".join(fmt_bytes(nb) if nb is not None else "" for nb in nbytes) + " |")
            for lk, r in (("iidfile", c),):
                if r and "skipped" in r and op not in ("add", "save"):
                    note = f"N={fmt_n(n)} {lk}: {r['skipped']}" if "--peer-max-n" in r["skipped"] else \
                        f"N={fmt_n(n)} {lk} {op}: {r['skipped']}"
                    if note not in skipped_notes:
                        skipped_notes.append(note)
        lines.append("")
        if res.get("peer_file") == "iidschema-v0":
            lines.append("iidfile's queries read the version-0 file written by iidschema (same layout), "
                         "its own writer having not finished.")
            lines.append("")
        sizes = res.get("sizes", {})
        if sizes:
            lines.append("| storage | bytes | B/entry | this / one PNG per entry | iidschema v1 size / this | iidschema v2 size / this |")
            lines.append("|---|---:|---:|---:|---:|---:|")
            v1s, v2s, png = sizes.get("iidschema-v1"), sizes.get("iidschema-v2"), sizes.get("png_per_entry")
            png = png if isinstance(png, (int, float)) and png else None
            names = [("iidschema-v2", "iidschema v2, codec auto (zstd blocks)"), ("iidschema-v1", "iidschema v1, codec auto"),
                     ("iidschema-v0", "iidschema v0 (= iidfile layout)"),
                     ("iidfile", "iidfile 0.2.0"), ("coco_rle_json", "COCO RLE JSON (bbox-cropped RLE)"),
                     ("png_per_entry", "one 1-bit PNG per entry (Pillow)"), ("medmask_mska", "medmask .mska (label layers)"),
                     ("zstd_packed_bits", "zstd -3 over all packed bits (no random access)"),
                     ("zstd19_packed_bits", "zstd -19 over all packed bits (no random access)"),
                     ("packed_bits", "packed bits, no bboxes (np.packbits)")]
            for k, title in names:
                v = sizes.get(k)
                if isinstance(v, dict):
                    lines.append(f"| {title} | {v.get('skipped') or ('timeout' if 'timeout' in v else v.get('error'))} | | | | |")
                elif v is not None:
                    lines.append(f"| {title} | {fmt_bytes(v)} | {v / n:.1f} | {f'{v / png:.2f}x' if png else ''} | "
                                 f"{f'{v1s / v:.2f}x' if v1s and v else ''} | {f'{v2s / v:.2f}x' if v2s and v else ''} |")
            lines.append("")
        mem = res.get("memory", {})
        if mem:
            lines.append("| peak memory | open (RSS) | open (tracemalloc) | fetch everything (RSS) | fetch everything (tracemalloc) | fetch-all RSS / decoded mask bytes | masks() (RSS) | masks() RSS / decoded mask bytes |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            for lk, r in mem.items():
                fa = r.get("fetch_all-rss", {}).get("peak_bytes")
                ma = r.get("masks_all-rss", {}).get("peak_bytes")
                cols = f"{fmt_bytes(ma)} | {ma / res['mask_pixels']:.2f}" if ma else "– | –"
                lines.append(f"| {lk} | {fmt_bytes(r.get('open-rss', {}).get('peak_bytes'))} | {fmt_bytes(r.get('open-tracemalloc', {}).get('peak_bytes'))} | "
                             f"{fmt_bytes(fa)} | {fmt_bytes(r.get('fetch_all-tracemalloc', {}).get('peak_bytes'))} | "
                             f"{fa / res['mask_pixels']:.2f} | {cols} |" if fa else f"| {lk} | – | – | – | – | – | – | – |")
            lines.append("")
        fl = res.get("floor")
        if fl:
            fa = {v: vops[v].get("fetch_all", {}).get("median") for v in VERSIONS}
            ma = {v: vops[v].get("masks_all", {}).get("median") for v in VERSIONS}
            fa = {v: t for v, t in fa.items() if t}
            ma = {v: t for v, t in ma.items() if t}
            lines.append(f"Physical floor of fetch everything: read the file {fmt_time(fl['read_file'])} + one bulk "
                         f"`np.unpackbits` {fmt_time(fl['unpackbits_bulk'])} = **{fmt_time(fl['floor'])}** "
                         f"(a per-mask `np.unpackbits` loop: {fmt_time(fl['floor_per_mask'])}; "
                         + (f"one object per entry and one copied, already decoded mask each, with nothing to decode: "
                            f"{fmt_time(fl['objects_per_entry'])}, so any per-entry API needs at least "
                            f"{fmt_time(fl['floor_objects'])}). " if "objects_per_entry" in fl else "). ")
                         + ("iidschema " + ", ".join(f"v{v} / floor = {t / fl['floor']:.1f}" for v, t in fa.items())
                            + " (per-mask floor: " + ", ".join(f"{t / fl['floor_per_mask']:.1f}" for t in fa.values()) + ")."
                            if fa else "")
                         + (" Every mask as columns (`masks()`): " + ", ".join(f"v{v} / floor = {t / fl['floor']:.1f}" for v, t in ma.items()) + "."
                            if ma else ""))
            lines.append("")
        codec = res.get("codec")
        if codec and "error" not in codec:
            lines.append("| RLE codec vs pycocotools | masks | iidschema encode: per mask / batch | pycocotools encode (+ Fortran uint8 conversion) | iidschema decode: per mask / batch | pycocotools decode | bytes iidschema / pycocotools |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|")
            for name, r in codec.items():
                per = lambda key: fmt_time(r[key] / r["masks"]) if r.get(key) is not None else "-"  # noqa: E731
                lines.append(f"| {name} | {r['masks']} | {per('iidschema_encode')} / {per('iidschema_encode_many')} | "
                             f"{per('pycocotools_encode')} ({per('pycocotools_encode_with_conversion')}) | "
                             f"{per('iidschema_decode')} / {per('iidschema_decode_many')} | "
                             f"{per('pycocotools_decode')} | {r['iidschema_bytes'] / r['pycocotools_bytes']:.2f} |")
            lines.append("")
            lines.append("Times per mask.  *Per mask*: one `encode`/`decode` call per mask; *batch*: one "
                         "`encode_many(masks)` / `decode_many(buffers, shapes)` call for all of them.  pycocotools is "
                         "called per mask: its `encode` takes a 3-D batch only of same-sized masks, so per-mask calls are "
                         "its only way for masks of differing sizes.")
            lines.append("")
    if skipped_notes:
        lines.append("Not run:")
        lines.append("")
        lines.extend(f"* {s}" for s in skipped_notes)
        lines.append("")
    lines.extend(targets(results))
    return "\n".join(lines) + "\n"


def _get(results, n, lk, op, key="median"):
    r = results["sizes"].get(str(n), {}).get("ops", {}).get(lk, {}).get(op)
    return r.get(key) if r else None


#: The iidschema versions checked together in one row of the targets table:
#: versions 0 and 1 (the rows of earlier runs, unchanged), then version 2 in
#: rows of its own, so that it never changes the status of the older rows.
TARGET_GROUPS: list[tuple[str, ...]] = [("iidschema-v0", "iidschema-v1"), ("iidschema-v2",)]


def targets(results: dict[str, Any]) -> list[str]:
    """The performance targets of the project, checked against this run."""
    S = results["sizes"]
    rows = []

    def row(name, value, ok, note=""):
        status = "–" if ok is None else ("met" if ok else "**not met**")
        rows.append(f"| {name} | {value} | {status} | {note} |")

    def suffix(lks: tuple[str, ...]) -> str:
        """Row-name suffix of a version group (none for the original v0 + v1 rows)."""
        return "" if lks == TARGET_GROUPS[0] else " (" + ", ".join(lk.replace("iidschema-", "") for lk in lks) + ")"

    def speedup(n, op, lks):
        for lk in lks:
            a = _get(results, n, lk, op)
            peer = S.get(str(n), {}).get("ops", {}).get("iidfile", {}).get(op, {})
            b = peer.get("median") or (peer.get("timeout"))
            if a and b:
                yield lk, b / a, "timeout" in peer

    for op, n, goal in (("add_save", 100000, 20), ("add_many_save", 100000, 20), ("fetch_all", 100000, 20), ("masks_all", 100000, 20),
                        ("overlap_graph", 10000, 100)):
        for lks in TARGET_GROUPS:
            name = f"{OP_TITLES[op]} at N={fmt_n(n)}: ≥ {goal}x faster than iidfile{suffix(lks)}"
            vals = list(speedup(n, op, lks)) if str(n) in S else []
            if vals:
                text = ", ".join(f"{lk}: {'>' if t else ''}{x:.1f}x" for lk, x, t in vals)
                row(name, text, all(x >= goal for _, x, _ in vals))
            else:
                row(name, "not measured", None)
    for n in (100000,):
        fl = S.get(str(n), {}).get("floor")
        if fl:
            for op in ("fetch_all", "masks_all"):
                for lks in TARGET_GROUPS:
                    vals = [(lk, _get(results, n, lk, op) / fl["floor"]) for lk in lks if _get(results, n, lk, op)]
                    if vals:
                        row(f"{OP_TITLES[op]} at N={fmt_n(n)} within 3x of the unpackbits floor{suffix(lks)}",
                            ", ".join(f"{lk}: {x:.1f}x" for lk, x in vals), all(x <= 3 for _, x in vals))
    for lks in TARGET_GROUPS:
        opens = [(int(n), [_get(results, n, lk, "open") for lk in lks]) for n in S]
        opens = [(n, ts) for n, ts in opens if all(ts)]
        if len(opens) >= 2:
            text = "; ".join(f"N={fmt_n(n)}: " + ", ".join(f"{lk.replace('iidschema-', '')} {fmt_time(t)}" for lk, t in zip(lks, ts))
                             for n, ts in opens)
            ok = all(max(ts[i] for _, ts in opens) < 3 * min(ts[i] for _, ts in opens) for i in range(len(lks)))
            row(f"open constant in N{suffix(lks)}", text, ok)
    big = max((int(n) for n in S), default=0)
    for op, title in (("fetch_tiny", "fetch tiny group"), ("look_for20", "look_for 20"), ("at100", "at() (per point)"), ("region20", "region() (per box)")):
        for lk in ("iidschema-v1", "iidschema-v2"):
            t = _get(results, big, lk, op)
            if t is None:
                continue
            per = {"at100": 100, "region20": 20}.get(op, 1)
            nb = S[str(big)]["ops"][lk][op].get("bytes", {}).get("query")
            row(f"{title} at N={fmt_n(big)} under 2 ms ({lk.replace('iidschema-', '')})",
                f"{fmt_time(t / per)}, {fmt_bytes(nb / per if nb else None)} read", t / per < 2e-3)
    codec = None
    for n in sorted(S, key=int):
        codec = S[n].get("codec") or codec
    if codec and "error" not in codec:
        for name, r in codec.items():
            pe, pd = r["pycocotools_encode"], r["pycocotools_decode"]
            pec = r.get("pycocotools_encode_with_conversion", pe)
            text = (f"one call per mask: encode {r['iidschema_encode'] / pe:.2f}x, decode {r['iidschema_decode'] / pd:.2f}x")
            ok = r["iidschema_encode"] <= pe and r["iidschema_decode"] <= pd
            note = ""
            if "iidschema_encode_many" in r:
                em, dm = r["iidschema_encode_many"], r["iidschema_decode_many"]
                text += (f"; batch API: encode {em / pe:.2f}x ({em / pec:.2f}x of pycocotools with its Fortran uint8 "
                         f"conversion), decode {dm / pd:.2f}x")
                batch_ok = em <= pec and dm <= pd
                if batch_ok and not ok:
                    note = "met by the batch API (encode counted with the input conversion pycocotools needs)"
                ok = ok or batch_ok
            row(f"RLE encode/decode no slower than pycocotools ({name})", text, ok, note)
    for n in sorted(S, key=int):
        sz = S[n].get("sizes", {})
        for v in (1, 2):
            mine, png = sz.get(f"iidschema-v{v}"), sz.get("png_per_entry")
            if isinstance(mine, (int, float)) and isinstance(png, (int, float)) and mine and png:
                x = mine / png
                row(f"v{v} auto size ≤ 0.6x one PNG per entry (N={fmt_n(int(n))})",
                    f"{x:.2f}x ({mine / int(n):.1f} B/entry, PNG {png / int(n):.1f})", x <= 0.6)
    for n in sorted(S, key=int):
        mem = S[n].get("memory", {})
        for what in ("fetch_all", "masks_all"):
            for lks in TARGET_GROUPS:
                vals = [(lk, mem[lk][f"{what}-rss"]["peak_bytes"] / S[n]["mask_pixels"]) for lk in lks
                        if mem.get(lk, {}).get(f"{what}-rss", {}).get("peak_bytes")]
                if vals and int(n) >= 10000:
                    title = "fetch everything" if what == "fetch_all" else "masks()"
                    row(f"peak memory of {title} ≤ 3x decoded mask bytes (N={fmt_n(int(n))}, RSS){suffix(lks)}",
                        ", ".join(f"{lk}: {x:.2f}x" for lk, x in vals), all(x <= 3 for _, x in vals))
    return ["## Targets", "", "| target | measured | status | |", "|---|---|---|---|", *rows, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", help="comma-separated N (default 1000,10000,100000)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="folder for results.json and results.md")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "iidschema-bench"), help="scratch folder (workloads, .iid files)")
    ap.add_argument("--quick", action="store_true", help="N = 1000, 10000 only, few repeats (smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds after which a task stops repeating")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before a task is killed (default 5 min)")
    ap.add_argument("--peer-max-n", type=int, default=100000, help="largest N at which iidfile 0.2.0 is run")
    ap.add_argument("--compare-max-n", type=int, default=100000, help="largest N for the size and codec comparisons")
    ap.add_argument("--medmask-max-pixels", type=float, default=4e8, help="largest image for the medmask comparison")
    ap.add_argument("--report-only", action="store_true", help="re-render results.md from --out/results.json")
    args = ap.parse_args(argv)
    if args.report_only:
        with open(os.path.join(args.out, "results.json")) as fh:
            results = json.load(fh)
        with open(os.path.join(args.out, "results.md"), "w") as fh:
            fh.write(markdown(results))
        print(os.path.join(args.out, "results.md"))
        return 0
    if args.quick:
        args.sizes = "1000,10000"
        args.repeats = min(args.repeats, 3)
        args.budget = min(args.budget, 2.0)
        args.timeout = min(args.timeout, 30.0)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    runner = Runner(args)
    t0 = time.perf_counter()
    for n in sizes:
        runner.size(n)
    runner.results["seconds"] = time.perf_counter() - t0
    runner.save()
    print(os.path.join(args.out, "results.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
