"""Shared fixtures: the conformance corpus, the reference implementation
(iidfile 0.2.0) as an oracle, and small helpers to build and damage files.

The corpus lives in ``../shared/conformance/v0`` beside the checkout (CI puts
``shared`` there); ``IIDSCHEMA_SHARED`` points at another ``shared`` folder.
When the corpus is missing the tests that need it are skipped on a developer
machine and *fail* when ``CI`` is set, so a broken CI checkout cannot pass by
skipping.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    env = os.environ.get("IIDSCHEMA_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def corpus_dir() -> Path:
    return shared_dir() / "conformance" / "v0"


def corpus_files() -> list[Path]:
    d = corpus_dir()
    return sorted(d.glob("*.iid")) if d.is_dir() else []


_MISSING = "corpus-missing"


def _corpus_missing() -> None:
    msg = (
        f"conformance corpus not found at {corpus_dir()} "
        "(expected ../shared/conformance/v0 beside the checkout; set IIDSCHEMA_SHARED to the 'shared' folder)"
    )
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail("CI: " + msg, pytrace=False)
    pytest.skip(msg)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``corpus_case``: one parameter per ``*.iid`` of the corpus."""
    if "corpus_case" in metafunc.fixturenames:
        files = corpus_files()
        if files:
            metafunc.parametrize("corpus_case", files, ids=[p.stem for p in files], indirect=True)
        else:
            metafunc.parametrize("corpus_case", [_MISSING], ids=[_MISSING], indirect=True)


@pytest.fixture
def corpus_case(request: pytest.FixtureRequest) -> Path:
    if request.param == _MISSING:
        _corpus_missing()
    return request.param


@pytest.fixture(scope="session")
def corpus() -> list[Path]:
    """Every ``*.iid`` of the corpus (fails in CI / skips elsewhere when missing)."""
    files = corpus_files()
    if not files:
        _corpus_missing()
    return files


# --------------------------------------------------------------------------
# The reference implementation
# --------------------------------------------------------------------------

class Reference:
    """iidfile 0.2.0, usable as a writer with current scikit-image.

    ``Segment.from_mask`` stores a float area with scikit-image >= 0.2x and
    ``save()`` then fails in ``struct.pack``; :meth:`writer` patches it to
    cast the area to int (what older scikit-image gave) for the duration of
    a ``with`` block only.
    """

    def __init__(self) -> None:
        import iidfile
        import iidfile.iidfile as impl

        self.module = iidfile
        self.impl = impl
        self.IIDFile = iidfile.IIDFile

    @contextlib.contextmanager
    def writer(self) -> Iterator[Any]:
        impl = self.impl
        original = impl.Segment.from_mask

        def from_mask(seg, mask, bbox):
            original(seg, mask, bbox)
            seg.area = int(seg.area)

        impl.Segment.from_mask = from_mask
        try:
            yield self.IIDFile
        finally:
            impl.Segment.from_mask = original


@pytest.fixture(scope="session")
def reference() -> Reference:
    pytest.importorskip("iidfile")
    return Reference()


@pytest.fixture
def reference_writer(reference: Reference) -> Iterator[Any]:
    """``iidfile.IIDFile`` with the area patch applied, undone afterwards."""
    with reference.writer() as cls:
        yield cls


# --------------------------------------------------------------------------
# Scratch space usable from hypothesis tests (no function-scoped tmp_path)
# --------------------------------------------------------------------------

class Scratch:
    def __init__(self, root: Path):
        self.root = root
        self._n = itertools.count()

    def path(self, name: str = "f.iid") -> Path:
        d = self.root / f"s{next(self._n)}"
        d.mkdir()
        return d / name


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Scratch:
    return Scratch(tmp_path_factory.mktemp("scratch"))


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def sha256(data: bytes) -> str:
    return hashlib.sha256(bytes(data)).hexdigest()


def mask_digest(mask: np.ndarray) -> str:
    """sha256 of ``numpy.packbits`` of a bool mask (the corpus' ``mask_sha256``)."""
    return sha256(np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes())


def disk(r: int) -> np.ndarray:
    yy, xx = np.ogrid[: 2 * r, : 2 * r]
    return (yy - r + 0.5) ** 2 + (xx - r + 0.5) ** 2 <= r * r


@pytest.fixture(scope="session")
def helpers():
    """Helper functions as a namespace (tests cannot import conftest)."""

    class H:
        pass

    h = H()
    h.sha256 = sha256
    h.mask_digest = mask_digest
    h.disk = disk
    h.corpus_dir = corpus_dir
    return h
