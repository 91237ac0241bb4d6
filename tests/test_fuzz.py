"""Mutation fuzzing: damaged files read completely or raise the library's own error.

Base files are valid files of both versions (the v0 conformance corpus,
generated seeds of every built-in codec, and fresh files from
``iidschema.strategies.file_bytes``).  Mutations flip bits, overwrite bytes,
insert, delete, truncate, copy ranges, and overwrite the integer fields --
located with the declarations of ``iidschema.schema`` (``fuzz/iidfuzz.py``)
-- with huge values (0xFFFFFFFF, 2**63, ...).  Version-1 inputs are often
re-checksummed after mutating so that the damage gets past the CRCs into the
parsers.

Properties:

1. every input either reads completely (open, ``fetch(everything=True)``,
   every ``seg.mask()``, metadata, groups, ``at``, ``region``,
   ``look_for``) or raises an ``iidschema.IIDError``: no other exception, no
   hang (per-input alarm), no allocation far beyond the file size
   (``MAX_MASK_PIXELS`` = 2**22, tracemalloc peak < 64 MB);
2. ``validate`` agrees with the reader: no error => reads completely;
   reader refuses => at least one error; and it never fails internally.

CI runs a fixed, derandomized ~200 examples.  The long campaign::

    IIDSCHEMA_FUZZ_EXAMPLES=100000 pytest -m slow tests/test_fuzz.py
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iidschema
import iidschema.masks
from iidschema import schema
from iidschema.strategies import file_bytes
from iidschema.validate import validate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import iidfuzz  # noqa: E402

#: Per-input time limit (seconds) and memory limit (bytes above the start).
TIME_LIMIT = float(os.environ.get("IIDSCHEMA_FUZZ_TIME_LIMIT", 10))
MEMORY_LIMIT = 64 * 2**20
MASK_LIMIT = 2**22
CI_EXAMPLES = {"read": 120, "validate": 80, "content": 120}
LONG_EXAMPLES = int(os.environ.get("IIDSCHEMA_FUZZ_EXAMPLES", "10000"))

SEEDS = iidfuzz.seed_files()
SEED_NAMES = sorted(SEEDS)


class Hang(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` in the
    library can swallow it."""


@contextlib.contextmanager
def bounded(what: str) -> Iterator[None]:
    """Alarm after TIME_LIMIT seconds, MAX_MASK_PIXELS lowered, memory peak measured."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"{what}: no result after {TIME_LIMIT} s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_limit = iidschema.masks.MAX_MASK_PIXELS
    iidschema.masks.MAX_MASK_PIXELS = MASK_LIMIT
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1] - base
        assert peak < MEMORY_LIMIT, f"{what}: allocated {peak / 2**20:.1f} MB (limit {MEMORY_LIMIT / 2**20:.0f} MB)"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        iidschema.masks.MAX_MASK_PIXELS = old_limit
        if started:
            tracemalloc.stop()


def _keep(data: bytes) -> str:
    """Save a failing input for a regression test; return where it is."""
    d = Path(os.environ.get("IIDSCHEMA_FUZZ_SAVE", tempfile.gettempdir()))
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"fuzz-{hashlib.sha256(data).hexdigest()[:16]}.iid"
    path.write_bytes(data)
    return str(path)


# --------------------------------------------------------------------------
# Strategies: a base file and mutations of it
# --------------------------------------------------------------------------

def _ops(data: bytes) -> st.SearchStrategy[tuple]:
    n = max(len(data), 1)
    fields = iidfuzz.field_map(data)
    values = st.one_of(st.sampled_from(iidfuzz.SPECIAL_VALUES + (len(data), len(data) + 1)), st.integers(0, 2**64 - 1))
    pos = st.integers(0, n - 1)
    choices = [
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("byte"), pos, st.integers(0, 255)),
        st.tuples(st.just("insert"), st.integers(0, n), st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), pos, st.integers(1, 16)),
        st.tuples(st.just("truncate"), st.integers(0, n)),
        st.tuples(st.just("copy"), pos, pos, st.integers(1, 64)),
    ]
    if fields:
        choices.insert(0, st.tuples(st.just("field"), st.sampled_from(fields), values))
    return st.one_of(choices)


@st.composite
def mutated_files(draw: Any) -> tuple[str, bytes]:
    """(description, mutated bytes)."""
    source = draw(st.sampled_from(("seed", "seed", "seed", "fresh-v0", "fresh-v1", "fresh-v2")))
    if source == "seed":
        name = draw(st.sampled_from(SEED_NAMES))
        base = SEEDS[name]
    else:
        name = source
        base = draw(file_bytes(version=int(source[-1]), max_entries=3, max_side=12))
    ops = draw(st.lists(_ops(base), min_size=1, max_size=4))
    fix = iidfuzz._u32(base, 0) in (1, 2) and draw(st.booleans())
    shown = [op if op[0] != "field" else ("field", op[1].name, op[2]) for op in ops]
    return f"{name} {shown} fix_checksums={fix}", iidfuzz.mutate(base, ops, fix)


V2_SEEDS = [name for name in SEED_NAMES if name.startswith("v2-") and name != "v2-gen-empty"]
CONTENT_OPS = iidfuzz.byte_ops()


@st.composite
def content_mutated_files(draw: Any) -> tuple[str, bytes]:
    """Version 2: (description, a file whose section content was mutated
    behind its compression, with every block and CRC valid again)."""
    name = draw(st.sampled_from(V2_SEEDS))
    section = draw(st.sampled_from(sorted(schema.SectionId.NAMES[s] for s in schema.BLOCKED_SECTIONS2)))
    block = draw(st.integers(0, 3))
    ops = draw(st.lists(CONTENT_OPS, min_size=1, max_size=3))
    return f"{name} content of {section} block {block}: {ops}", iidfuzz.mutate_content(SEEDS[name], section, block, ops)


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

def check_reads_or_raises(desc: str, data: bytes) -> bool:
    """True: read completely; False: raised an IIDError.  Anything else fails."""
    try:
        with bounded(desc):
            try:
                iidfuzz.read_everything(data)
                return True
            except iidschema.IIDError:
                return False
    except Hang as exc:
        raise AssertionError(f"hang: {exc}; input saved to {_keep(data)}") from None
    except AssertionError as exc:
        raise AssertionError(f"{exc}; input saved to {_keep(data)}") from None
    except Exception as exc:  # noqa: BLE001 - this is what the test is about
        raise AssertionError(
            f"{desc}: {type(exc).__name__} is not an IIDError: {exc}; input saved to {_keep(data)}"
        ) from exc


def check_validate_agrees(desc: str, data: bytes) -> None:
    reads = check_reads_or_raises(desc, data)
    try:
        with bounded("validate " + desc):
            findings = validate(data, max_per_code=None)
    except Hang as exc:
        raise AssertionError(f"validate hangs: {exc}; input saved to {_keep(data)}") from None
    internal = [f for f in findings if f.code == "IID099"]
    assert not internal, f"{desc}: validate failed internally: {internal}; input saved to {_keep(data)}"
    errors = [f for f in findings if f.is_error]
    if not errors:
        assert reads, f"{desc}: validate finds no error but the reader refuses the file; input saved to {_keep(data)}"
    if not reads:
        assert errors, f"{desc}: the reader refuses the file, validate finds no error; input saved to {_keep(data)}"


def _settings(examples: int, ci: bool) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=ci,
        database=None if ci else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


@_settings(CI_EXAMPLES["read"], ci=True)
@given(mutated_files())
def test_mutated_files_read_or_raise_iiderror(case: tuple[str, bytes]) -> None:
    check_reads_or_raises(*case)


@_settings(CI_EXAMPLES["validate"], ci=True)
@given(mutated_files())
def test_validate_agrees_with_reader(case: tuple[str, bytes]) -> None:
    check_validate_agrees(*case)


@_settings(CI_EXAMPLES["content"], ci=True)
@given(content_mutated_files())
def test_mutated_v2_contents_read_or_raise_iiderror(case: tuple[str, bytes]) -> None:
    check_reads_or_raises(*case)


@_settings(CI_EXAMPLES["content"] // 2, ci=True)
@given(content_mutated_files())
def test_validate_agrees_with_reader_on_mutated_v2_contents(case: tuple[str, bytes]) -> None:
    check_validate_agrees(*case)


def test_content_mutation_gets_behind_the_compression() -> None:
    """A mutated LUT chunk reaches the LUT parser: the file is still sound
    as a container (every block decompresses, every CRC matches)."""
    data = SEEDS["v2-gen-auto"]
    assert iidfuzz.mutate_content(data, "lut", 0, []) != b""
    same = iidfuzz.mutate_content(data, "segs", 0, [])
    assert iidfuzz.read_everything(same) == iidfuzz.read_everything(data)
    # area of entry 0 (byte-planar: its low byte is at 16 + 16 * count... of the
    # chunk's columns): overwrite the whole area column's first plane
    count = 6
    area_plane = schema.LUT_CHUNK_HEAD2 + 4 * 4 * count
    changed = iidfuzz.mutate_content(data, "lut", 0, [("byte", area_plane, 200)])
    with iidschema.IIDFile(changed) as f:
        assert f.fetch(keys=[0])[0].seg.area == 200
    assert "IID050" in {f.code for f in validate(changed)}


@pytest.mark.slow
@_settings(LONG_EXAMPLES, ci=False)
@given(mutated_files())
def test_long_campaign_read(case: tuple[str, bytes]) -> None:
    check_reads_or_raises(*case)


@pytest.mark.slow
@_settings(LONG_EXAMPLES, ci=False)
@given(content_mutated_files())
def test_long_campaign_v2_contents(case: tuple[str, bytes]) -> None:
    check_reads_or_raises(*case)


@pytest.mark.slow
@_settings(max(1, LONG_EXAMPLES // 2), ci=False)
@given(mutated_files())
def test_long_campaign_validate(case: tuple[str, bytes]) -> None:
    check_validate_agrees(*case)


# --------------------------------------------------------------------------
# The seeds themselves, and the machinery
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", SEED_NAMES)
def test_seeds_are_sound(name: str) -> None:
    data = SEEDS[name]
    assert validate(data) == []
    with bounded(name):
        iidfuzz.read_everything(data)
    assert iidfuzz.fix_checksums(data) == data  # nothing to fix in a sound file


def test_field_map_uses_the_declarations() -> None:
    data = SEEDS["v1-gen-70"]
    names = {f.name.split(".", 1)[1] if "." in f.name else f.name for f in iidfuzz.field_map(data)}
    for expected in ("entry_count", "section_count", "offset", "length", "iid.offset", "seg.length", "region_count", "codec", "json_len"):
        assert expected in names, expected
    v0 = iidfuzz.field_map(SEEDS["v0-gen-small"])
    assert any(f.name == "header.segs.length" for f in v0) and any(f.name.endswith(".len") for f in v0)


def test_fix_checksums_gets_past_the_crcs() -> None:
    data = SEEDS["v1-gen-packbits"]
    field = next(f for f in iidfuzz.field_map(data) if f.name == "lut[1].area")
    broken = iidfuzz.mutate(data, [("field", field, 12345)])
    with pytest.raises(iidschema.IIDChecksumError):
        iidfuzz.read_everything(broken)
    fixed = iidfuzz.fix_checksums(broken)
    iidfuzz.read_everything(fixed)  # the wrong area is not a reader error...
    assert "IID050" in {f.code for f in validate(fixed)}  # ...but validate reports it


def test_alarm_catches_a_hang() -> None:
    import time

    global TIME_LIMIT
    old, TIME_LIMIT = TIME_LIMIT, 0.2
    try:
        with pytest.raises(Hang):
            with bounded("sleep"):
                time.sleep(5)
    finally:
        TIME_LIMIT = old


def test_memory_bound_catches_an_allocation() -> None:
    import numpy as np

    with pytest.raises(AssertionError, match="allocated"):
        with bounded("alloc"):
            a = np.ones(MEMORY_LIMIT + 2**20, dtype=np.uint8)
            del a
