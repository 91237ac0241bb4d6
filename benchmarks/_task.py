"""One benchmark measurement, run in its own subprocess by ``run.py``.

    python benchmarks/_task.py LIB OP --file F [--workload W.npz] [--params P.json]
                               [--version V] [--repeats R] [--budget S] [--memory rss|tracemalloc]

LIB is ``iidschema`` or ``iidfile`` (0.2.0).  Prints one JSON object on the
last line of stdout: ``times`` (seconds of each run), ``median``, ``answer``
(result count, to compare libraries) and, for iidschema queries, ``bytes``
(bytes read through a CountingSource: ``open`` and ``query``).

Every query run starts from a freshly opened file (the open is not timed):
a lazy library must not profit from entries cached by the previous run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

QUERY_OPS = ("fetch_all", "masks_all", "fetch_tiny", "fetch_keys50", "look_for20", "filter_area", "at100", "region20", "overlap_graph")


# -- libraries -------------------------------------------------------------------


def patch_iidfile():
    """iidfile 0.2.0 stores a float area with current scikit-image and then
    fails in save(): cast it to int after the original from_mask runs."""
    import iidfile.iidfile as impl

    if getattr(impl.Segment.from_mask, "_patched", False):
        return
    original = impl.Segment.from_mask

    def from_mask(seg, mask, bbox):
        original(seg, mask, bbox)
        seg.area = int(seg.area)

    from_mask._patched = True
    impl.Segment.from_mask = from_mask


class Lib:
    def __init__(self, name: str, version: int | None):
        self.name = name
        self.version = version
        if name == "iidfile":
            patch_iidfile()
            from iidfile import IIDFile
        else:
            from iidschema import IIDFile
        self.IIDFile = IIDFile

    def open(self, path, source=None):
        if self.name == "iidschema" and source is not None:
            return self.IIDFile(source)
        return self.IIDFile(path)

    def close(self, f):
        if self.name == "iidschema":
            f.close()
        else:
            f.mmap.close()
            f.file.close()

    def build_and_save(self, w, out, many=False):
        # The inputs (address, domain, bbox tuple, mask, group) are made before
        # the clock starts, so that the add loop measures the library only
        # (unpacking each workload mask alone costs about 1 s per 100 000).
        # ``many``: iidschema's add_many() with the same inputs as columns.
        if self.name == "iidschema":
            inputs = list(w.entries())
        else:
            inputs = [(a, d or None, b, m, g) for a, d, b, m, g in w.entries()]
        f = self.IIDFile()
        if many:
            addresses, domains, bboxes, masks, groups = (list(col) for col in zip(*inputs))
            bboxes = np.array(bboxes, dtype=np.int64)  # columns, as a caller of add_many has them
            t0 = time.perf_counter()
            f.add_many(addresses, domains, bboxes, masks, groups=groups)
        else:
            t0 = time.perf_counter()
            for address, domain, bbox, mask, group in inputs:
                f.add(address, domain, bbox, mask, group=group)
        t1 = time.perf_counter()
        if self.name == "iidschema":
            f.save(out, version=self.version, codec="auto")
        else:
            f.save(out)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1


def run_query(lib: Lib, f, op: str, params: dict) -> int:
    """Run one query on an open file; return an answer count."""
    if op == "fetch_all":
        entries = f.fetch(everything=True)
        for e in entries:
            e.seg.mask()
        return len(entries)
    if op == "masks_all":
        # Every mask as columns (IIDFile.masks()); iidfile 0.2.0 has no such
        # API, so its column repeats its only way: fetch + mask() each.
        if lib.name == "iidfile":
            return run_query(lib, f, "fetch_all", params)
        cols = f.masks()
        return len(cols)
    if op == "fetch_tiny":
        entries = f.fetch(groups=["tiny"])
        for e in entries:
            e.seg.mask()
        return len(entries)
    if op == "fetch_keys50":
        entries = f.fetch(keys=list(params["keys"]))
        for e in entries:
            e.seg.mask()
        return len(entries)
    if op == "look_for20":
        return len(f.look_for([a.encode() for a in params["addresses"]]))
    if op == "filter_area":
        return len(f.filter(area=tuple(params["area"])))
    if op == "at100":
        return sum(len(f.at(x, y)) for x, y in params["points"])
    if op == "region20":
        return sum(len(f.region(tuple(b))) for b in params["boxes"])
    if op == "overlap_graph":
        nodes, edges = f.overlap_graph()
        return len(edges)
    raise ValueError(op)


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    """Peak RSS since the last :func:`_reset_peak` (Linux VmHWM), else since start."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _reset_peak() -> bool:
    """Reset the RSS high-water mark (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:  # pragma: no cover
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("lib", choices=["iidschema", "iidfile"])
    ap.add_argument("op")
    ap.add_argument("--file", required=True)
    ap.add_argument("--workload")
    ap.add_argument("--params")
    ap.add_argument("--version", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=20.0, help="stop repeating after this many seconds")
    ap.add_argument("--memory", choices=["rss", "tracemalloc"], default=None)
    args = ap.parse_args()

    lib = Lib(args.lib, args.version)
    params = json.load(open(args.params)) if args.params else {}
    out: dict = {"lib": args.lib, "op": args.op, "version": args.version}
    times: list[float] = []

    def repeat(fn):
        spent = 0.0
        while len(times) < args.repeats and (not times or spent < args.budget):
            gc.collect()
            t = fn()
            times.append(t)
            spent += t

    if args.op in ("add_save", "add_many_save"):
        from workload import load_workload

        w = load_workload(args.workload)
        adds, saves = [], []

        def once():
            gc.collect()
            a, s = lib.build_and_save(w, args.file, many=args.op == "add_many_save")
            adds.append(a)
            saves.append(s)
            return a + s

        repeat(once)
        out["add"] = statistics.median(adds)
        out["save"] = statistics.median(saves)
        out["size"] = os.path.getsize(args.file)
    elif args.op == "open" and args.memory is None:
        def once():
            t0 = time.perf_counter()
            f = lib.open(args.file)
            t = time.perf_counter() - t0
            lib.close(f)
            return t

        args.repeats = max(args.repeats, 20)
        repeat(once)
    elif args.memory is not None:
        # Peak memory of "open" or "fetch_all" (one run, nothing timed).
        # Warm up: the first fetch imports codecs and plugins lazily; that
        # memory is not the operation's.
        f = lib.open(args.file)
        for e in f.fetch(keys=[0]):
            e.seg.mask()
        lib.close(f)
        del f, e
        gc.collect()

        if args.memory == "tracemalloc":
            import tracemalloc

            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
        else:
            gc.collect()
            out["peak_reset"] = _reset_peak()
            base_rss, base_max = _rss(), _maxrss()
        f = lib.open(args.file)
        answer = run_query(lib, f, args.op, params) if args.op in ("fetch_all", "masks_all") else len(f.lut.entries if args.lib == "iidfile" else f)
        if args.memory == "tracemalloc":
            cur, peak = tracemalloc.get_traced_memory()
            out["peak_bytes"] = peak - base
        else:
            out["peak_bytes"] = max(_maxrss(), _rss()) - base_rss
            out["rss_peak_before"] = base_max
        out["answer"] = answer
        out["mode"] = args.memory
        print(json.dumps(out))
        return
    elif args.op in QUERY_OPS:
        answers = []

        def once():
            f = lib.open(args.file)
            gc.collect()
            t0 = time.perf_counter()
            answers.append(run_query(lib, f, args.op, params))
            t = time.perf_counter() - t0
            lib.close(f)
            return t

        repeat(once)
        out["answer"] = answers[0]
        if args.lib == "iidschema":
            from iidschema.source import CountingSource, MmapSource

            src = CountingSource(MmapSource(args.file))
            f = lib.open(args.file, source=src)
            opened = src.bytes_read
            run_query(lib, f, args.op, params)
            out["bytes"] = {"open": opened, "query": src.bytes_read - opened, "requests": len(src.requests)}
            f.close()
    else:
        raise SystemExit(f"unknown op {args.op}")
    out["times"] = times
    out["median"] = statistics.median(times)
    out["runs"] = len(times)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
