"""cProfile of iidschema's slowest paths, for whoever optimises the core.

    python benchmarks/profile_core.py --n 100000 --out benchmarks/results/profiles

Profiles, on the benchmark workload of size N: add() of every entry, save()
as version 0, version 1 (codec auto) and version 2, fetch everything +
mask() (every version), masks() of version 2, look_for 20 addresses on
version 0 (no address index), fetch the tiny group on versions 1 and 2,
at() for 100 points on version 1, overlap_graph, and the RLE codec on the
workload's masks.  Writes one text file per
profile (top functions by own time and by cumulative time) and prints a
summary line per profile.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workload as W  # noqa: E402


def profile(name: str, fn, out: str, top: int = 25) -> float:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    wall = time.perf_counter() - t0
    buf = io.StringIO()
    buf.write(f"# {name}: {wall:.3f} s under cProfile\n\n## by own time (tottime)\n")
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    buf.write("\n## by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(top)
    with open(os.path.join(out, f"{name}.txt"), "w") as fh:
        fh.write(buf.getvalue())
    print(f"{name:28} {wall:8.3f} s", file=sys.stderr, flush=True)
    return wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "profiles"))
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "iidschema-bench"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    from iidschema import IIDFile
    from iidschema.codecs import get_codec

    w, _ = W.cached_workload(args.n, args.work)
    params = W.query_params(w)
    masks = w.masks()
    f = IIDFile()

    def add():
        for i in range(w.n):
            f.add(w.address(i), w.domain(i), tuple(int(v) for v in w.bboxes[i]), masks[i], group=w.group(i))

    n = w.n
    profile(f"add_n{n}", add, args.out)
    paths = {v: os.path.join(args.work, f"profile-n{n}-v{v}.iid") for v in (0, 1, 2)}
    profile(f"save_v0_n{n}", lambda: f.save(paths[0], version=0), args.out)
    profile(f"save_v1_auto_n{n}", lambda: f.save(paths[1], version=1, codec="auto"), args.out)
    profile(f"save_v2_n{n}", lambda: f.save(paths[2], version=2), args.out)

    def fetch_all(v):
        def run():
            with IIDFile(paths[v]) as g:
                for e in g.fetch(everything=True):
                    e.seg.mask()
        return run

    profile(f"fetch_all_v0_n{n}", fetch_all(0), args.out)
    profile(f"fetch_all_v1_n{n}", fetch_all(1), args.out)
    profile(f"fetch_all_v2_n{n}", fetch_all(2), args.out)

    def masks_v2():
        with IIDFile(paths[2]) as g:
            g.masks()

    profile(f"masks_v2_n{n}", masks_v2, args.out)
    addresses = [a.encode() for a in params["addresses"]]

    def look_for_v0():
        with IIDFile(paths[0]) as g:
            g.look_for(addresses)

    profile(f"look_for20_v0_n{n}", look_for_v0, args.out)

    def tiny(v):
        def run():
            for _ in range(20):
                with IIDFile(paths[v]) as g:
                    for e in g.fetch(groups=["tiny"]):
                        e.seg.mask()
        return run

    profile(f"fetch_tiny_v1_x20_n{n}", tiny(1), args.out)
    profile(f"fetch_tiny_v2_x20_n{n}", tiny(2), args.out)

    def at_v1():
        with IIDFile(paths[1]) as g:
            for x, y in params["points"]:
                g.at(x, y)

    profile(f"at100_v1_n{n}", at_v1, args.out)

    def overlap():
        with IIDFile(paths[1]) as g:
            g.overlap_graph()

    profile(f"overlap_graph_v1_n{n}", overlap, args.out)
    rle = get_codec("rle")
    some = masks[:20000]

    def codec():
        for m in some:
            rle.decode(rle.encode(m), m.shape)

    profile(f"rle_encode_decode_{len(some)}_masks", codec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
