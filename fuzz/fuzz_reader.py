"""Coverage-guided fuzzing of the readers and of ``validate`` with atheris.

Run (from the repository root; see fuzz/README.md)::

    python fuzz/fuzz_reader.py -max_total_time=300 -timeout=10 -rss_limit_mb=2048 fuzz/corpus

The corpus directory is filled with the seeds on first use: the version-0
conformance corpus (``../shared/conformance/v0/*.iid``) and generated
version-0 / version-1 files (``iidfuzz.seed_files``).

Each input is tried as is and, when it looks like a version-1 file, once
more with its checksums recomputed (``iidfuzz.fix_checksums``), so that
mutations reach the parsers behind the CRCs.  A crash is: the reader raising
anything but an ``iidschema.IIDError``; ``validate`` failing internally
(IID099) or disagreeing with the reader (no error but the reader refuses, or
the reader refuses and no error); a hang (``-timeout``); memory
(``-rss_limit_mb``; masks are capped at 2**22 pixels here).  libFuzzer writes
the input to ``crash-*`` / ``timeout-*`` / ``oom-*`` in the current directory:
turn it into a regression test under ``tests/regressions/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

with atheris.instrument_imports(include=["iidschema"]):
    import iidschema
    import iidschema.codecs
    import iidschema.codecs.packbits
    import iidschema.codecs.rle
    import iidschema.codecs.zstd
    import iidschema.index.address
    import iidschema.index.spatial
    import iidschema.masks
    from iidschema.validate import validate

import iidfuzz  # noqa: E402

iidschema.masks.MAX_MASK_PIXELS = 2**22


def _one(data: bytes) -> None:
    try:
        iidfuzz.read_everything(data)
        reads = True
    except iidschema.IIDError:
        reads = False
    findings = validate(data, max_per_code=None)
    internal = [f for f in findings if f.code == "IID099"]
    if internal:
        raise AssertionError(f"validate failed internally: {internal[0]}")
    errors = [f for f in findings if f.is_error]
    # validate may be stricter than the reader (errors on a readable file),
    # never more lenient:
    if not reads and not errors:
        raise AssertionError("the reader refuses the file but validate finds no error")


def test_one_input(data: bytes) -> None:
    _one(data)
    if len(data) >= 4 and data[:4] == b"\x01\x00\x00\x00":
        fixed = iidfuzz.fix_checksums(data)
        if fixed != data:
            _one(fixed)


def _seed_corpus(argv: list[str]) -> None:
    """Fill the first corpus directory given (creating it) with the seeds."""
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    if not dirs:
        dirs = [str(HERE / "corpus")]
        argv.append(dirs[0])
    corpus = Path(dirs[0])
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for name, data in iidfuzz.seed_files().items():
            (corpus / f"{name}.iid").write_bytes(data)


def main() -> None:
    argv = list(sys.argv)
    _seed_corpus(argv)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
