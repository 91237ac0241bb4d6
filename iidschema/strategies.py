"""Hypothesis strategies for ``.iid`` data, and one-line conformance checks.

For two audiences:

* **tests of code that handles .iid files** draw realistic and nasty inputs
  from the strategies below (masks of every awkward shape, bboxes at the
  limits of a format version, IIDs with empty domains and long addresses,
  non-ASCII nested metadata, whole in-memory files and their serialised
  bytes);
* **plugin authors** prove that their codec or their foreign format
  round-trips with :func:`check_codec` and :func:`check_format`, which run a
  property-based test and, on failure, raise an ``AssertionError`` that
  describes the *smallest* failing example hypothesis could shrink to.

Install with ``pip install iidschema[strategies]`` (hypothesis is an
optional dependency).  Example::

    from hypothesis import given
    from iidschema import strategies as iids

    @given(iids.masks(shape_classes=("thin", "noisy"), max_side=40))
    def test_my_thing(mask):
        ...

    iids.check_codec(MyCodec(), max_examples=500)     # raises AssertionError on a bug

Every strategy returns plain data (numpy bool arrays, tuples, bytes, dicts)
or library objects (:class:`~iidschema.IID`, :class:`~iidschema.IIDFile`);
nothing here touches the disk except :func:`file_bytes` and
:func:`check_format`, which use private temporary directories.
"""

from __future__ import annotations

try:
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "iidschema.strategies needs hypothesis, an optional dependency: pip install iidschema[strategies]"
    ) from _exc

import os
import tempfile
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from . import schema
from .iidfile import IIDFile
from .model import IID

__all__ = [
    "SHAPE_CLASSES",
    "EntryArgs",
    "masks",
    "bboxes",
    "iids",
    "entries",
    "groups",
    "group_names",
    "metadata",
    "iid_files",
    "file_bytes",
    "serialise",
    "check_codec",
    "check_format",
    "describe_mask",
]

#: Every mask shape class :func:`masks` knows, in the order it tries them
#: (hypothesis shrinks towards the first).
SHAPE_CLASSES: tuple[str, ...] = ("empty", "full", "thin", "noisy", "islands", "checkerboard", "blob")

#: Largest coordinate of each format version (max exclusive bbox bound).
_COORD_LIMIT = {0: schema.MAX_COORD_V0, 1: schema.MAX_COORD_V1, 2: schema.MAX_COORD_V1}


# --------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------

def _side(lo: int, hi: int) -> st.SearchStrategy[int]:
    """A side length in ``lo..hi``, with the packbits byte boundaries
    (7, 8, 9, 15, 16, 17, ...) drawn more often than chance would."""
    special = [v for v in (lo, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, hi) if lo <= v <= hi]
    return st.one_of(st.integers(lo, hi), st.sampled_from(sorted(set(special))))


@st.composite
def _shape(draw: Any, lo: int, hi: int) -> tuple[int, int]:
    return draw(_side(lo, hi)), draw(_side(lo, hi))


@st.composite
def _empty_mask(draw: Any, max_side: int) -> np.ndarray:
    # zero-size shapes (0 x n, n x 0, 0 x 0) included
    return np.zeros(draw(_shape(0, max_side)), dtype=bool)


@st.composite
def _full_mask(draw: Any, max_side: int) -> np.ndarray:
    return np.ones(draw(_shape(1, max_side)), dtype=bool)


@st.composite
def _thin_mask(draw: Any, max_side: int) -> np.ndarray:
    n = draw(_side(1, max_side))
    bits = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    return bits.reshape((1, n) if draw(st.booleans()) else (n, 1))


@st.composite
def _noisy_mask(draw: Any, max_side: int) -> np.ndarray:
    return draw(hnp.arrays(dtype=bool, shape=_shape(1, max_side), elements=st.booleans()))


@st.composite
def _islands_mask(draw: Any, max_side: int) -> np.ndarray:
    """Isolated pixels on a lattice of step 2 (or 3): many 8-connected
    components, so many regions per segment."""
    h, w = draw(_shape(1, max_side))
    step = draw(st.sampled_from((2, 3)))
    lattice = np.zeros((h, w), dtype=bool)
    lattice[::step, ::step] = True
    n = int(lattice.sum())
    keep = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    out = np.zeros((h, w), dtype=bool)
    out[lattice] = ~keep  # shrinks towards "every island present"
    return out


@st.composite
def _checkerboard_mask(draw: Any, max_side: int) -> np.ndarray:
    h, w = draw(_shape(1, max_side))
    phase = draw(st.integers(0, 1))
    rows, cols = np.indices((h, w))
    return (rows + cols) % 2 == phase


@st.composite
def _blob_mask(draw: Any, max_side: int) -> np.ndarray:
    """A filled ellipse (possibly clipped by the mask's edges)."""
    h, w = draw(_shape(1, max_side))
    cy = draw(st.floats(-0.5, h - 0.5, allow_nan=False))
    cx = draw(st.floats(-0.5, w - 0.5, allow_nan=False))
    ry = draw(st.floats(0.5, max(h, 1), allow_nan=False))
    rx = draw(st.floats(0.5, max(w, 1), allow_nan=False))
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


_MASK_CLASSES: dict[str, Callable[[int], st.SearchStrategy[np.ndarray]]] = {
    "empty": _empty_mask,
    "full": _full_mask,
    "thin": _thin_mask,
    "noisy": _noisy_mask,
    "islands": _islands_mask,
    "checkerboard": _checkerboard_mask,
    "blob": _blob_mask,
}


def masks(shape_classes: Iterable[str] | None = None, max_side: int = 32) -> st.SearchStrategy[np.ndarray]:
    """2-D C-contiguous ``bool`` arrays.

    :param shape_classes: any of :data:`SHAPE_CLASSES` (default: all):

        * ``"empty"`` -- all False, including zero-size shapes (``0 x n``);
        * ``"full"`` -- all True;
        * ``"thin"`` -- ``1 x n`` or ``n x 1``, random pixels;
        * ``"noisy"`` -- independent random pixels;
        * ``"islands"`` -- isolated pixels on a lattice (many components);
        * ``"checkerboard"`` -- alternating pixels (diagonal contacts);
        * ``"blob"`` -- a filled, possibly clipped, ellipse.
    :param max_side: largest height and width (sides around the packbits byte
        boundaries 7/8/9, 15/16/17, ... are favoured).
    """
    names = tuple(SHAPE_CLASSES if shape_classes is None else shape_classes)
    if isinstance(shape_classes, str):
        names = (shape_classes,)
    unknown = [n for n in names if n not in _MASK_CLASSES]
    if unknown or not names:
        raise ValueError(f"unknown shape classes {unknown!r}; choose from {SHAPE_CLASSES}")
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    return st.one_of([_MASK_CLASSES[n](max_side) for n in names]).map(np.ascontiguousarray)


def describe_mask(mask: np.ndarray, limit: int = 400) -> str:
    """A short human-readable picture of a mask (``#`` set, ``.`` clear)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    head = f"{h}x{w} mask, {int(mask.sum())} pixels set"
    if h * w == 0:
        return head
    if h * w > limit:
        return head + ", packbits " + np.packbits(mask.ravel()).tobytes()[:64].hex() + ("..." if h * w > 512 else "")
    rows = ["".join("#" if v else "." for v in row) for row in mask]
    return head + ":\n    " + "\n    ".join(rows)


# --------------------------------------------------------------------------
# Geometry and labels
# --------------------------------------------------------------------------

def _coord(lo: int, hi: int) -> st.SearchStrategy[int]:
    """An integer in ``lo..hi`` with both ends drawn often."""
    return st.one_of(st.integers(lo, hi), st.sampled_from(sorted({lo, hi})))


@st.composite
def bboxes(
    draw: Any,
    image_shape: tuple[int, int] | None = None,
    version: int = 0,
    mask_shape: tuple[int, int] | None = None,
) -> tuple[int, int, int, int]:
    """Bounding boxes ``(minr, minc, maxr, maxc)`` (max exclusive) that the
    format ``version`` can store.

    :param image_shape: ``(height, width)`` of the image the box must lie
        in; default: the whole coordinate range of the version (0..65535 for
        version 0, 0..2**32-1 for version 1), with both ends favoured.
    :param mask_shape: when given, the box has exactly this shape (so it can
        be passed to :meth:`IIDFile.add` with a mask of that shape).
    """
    if version not in _COORD_LIMIT:
        raise ValueError(f"unknown format version {version}")
    limit = _COORD_LIMIT[version]
    height, width = (limit, limit) if image_shape is None else (min(image_shape[0], limit), min(image_shape[1], limit))
    if mask_shape is not None:
        h, w = (int(v) for v in mask_shape)
        if h > height or w > width:
            raise ValueError(f"a {h}x{w} mask does not fit a {height}x{width} image")
        minr = draw(_coord(0, height - h))
        minc = draw(_coord(0, width - w))
        return minr, minc, minr + h, minc + w
    minr = draw(_coord(0, height))
    minc = draw(_coord(0, width))
    maxr = draw(_coord(minr, height))
    maxc = draw(_coord(minc, width))
    return minr, minc, maxr, maxc


_DOMAINS = (b"", b"wordnet", b"coco", "d\u00e9j\u00e0".encode(), b"\x00\xff")


def iids(max_address: int = 24, long_addresses: bool = True) -> st.SearchStrategy[IID]:
    """:class:`~iidschema.IID` objects: arbitrary bytes for address and
    domain, the empty domain often, and (with ``long_addresses``) addresses
    of a few kilobytes."""
    short = st.binary(max_size=max_address)
    address = st.one_of(short, st.binary(min_size=1000, max_size=5000)) if long_addresses else short
    domain = st.one_of(st.sampled_from(_DOMAINS), st.binary(max_size=16))
    return st.builds(lambda a, d: IID(address=a, domain=d), address, domain)


class EntryArgs(NamedTuple):
    """The arguments of :meth:`IIDFile.add`: ``f.add(*entry)``."""

    address: bytes
    domain: bytes
    bbox: tuple[int, int, int, int]
    mask: np.ndarray


@st.composite
def entries(
    draw: Any,
    version: int = 0,
    max_side: int = 16,
    shape_classes: Iterable[str] | None = None,
    image_shape: tuple[int, int] | None = None,
    long_addresses: bool = True,
) -> EntryArgs:
    """One entry as :class:`EntryArgs` (address, domain, bbox, mask), the
    bbox placed anywhere the format ``version`` allows (or inside
    ``image_shape``) with exactly the mask's shape."""
    mask = draw(masks(shape_classes, max_side))
    iid = draw(iids(long_addresses=long_addresses))
    box = draw(bboxes(image_shape=image_shape, version=version, mask_shape=mask.shape))
    return EntryArgs(iid.address, iid.domain, box, mask)


def group_names() -> st.SearchStrategy[str]:
    """Group names: ASCII, non-ASCII, the empty string, JSON-awkward text."""
    return st.one_of(st.sampled_from(("sys", "", "caf\u00e9", "\u7fa4", 'q"uo\\te', "a b")), st.text(max_size=12))


@st.composite
def groups(draw: Any, n_entries: int, max_groups: int = 4) -> dict[str, list[int]]:
    """``{name: ascending keys}`` for a file of ``n_entries`` entries
    (keys in ``0..n_entries-1``; empty groups included)."""
    if n_entries < 0:
        raise ValueError("n_entries must be >= 0")
    keys = st.lists(st.integers(0, n_entries - 1), unique=True) if n_entries else st.just([])
    out = draw(st.dictionaries(group_names(), keys, max_size=max_groups))
    return {name: sorted(k) for name, k in out.items()}


def metadata(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """JSON values as stored in the metadata section: nested lists and
    objects, non-ASCII text, big and negative integers, finite floats."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**64), max_value=2**64),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=16),
        st.sampled_from(("\u00e9t\u00e9", "\u6771\u4eac", "\U0001f332", "\x00", "")),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
        max_leaves=max_leaves,
    )


# --------------------------------------------------------------------------
# Whole files
# --------------------------------------------------------------------------

@st.composite
def iid_files(
    draw: Any,
    version: int = 0,
    max_entries: int = 6,
    max_side: int = 16,
    shape_classes: Iterable[str] | None = None,
    image_shape: tuple[int, int] | None = None,
    long_addresses: bool = True,
) -> IIDFile:
    """In-memory :class:`~iidschema.IIDFile` objects (0..``max_entries``
    entries, groups, metadata) whose :meth:`~IIDFile.save` writes format
    ``version`` by default."""
    n = draw(st.integers(0, max_entries))
    f = IIDFile()
    for _ in range(n):
        f.add(*draw(entries(version, max_side, shape_classes, image_shape, long_addresses)))
    for name, keys in draw(groups(n)).items():
        f.groups.add(name, keys)
    f.meta.data = draw(metadata())
    f.version = version
    return f


def serialise(f: IIDFile, version: int | None = None, codec: Any = "auto") -> bytes:
    """The bytes ``f.save()`` writes (through a private temporary file)."""
    version = f.version if version is None else version
    with tempfile.TemporaryDirectory(prefix="iidschema-") as tmp:
        path = os.path.join(tmp, "f.iid")
        if version >= 1:
            f.save(path, version=version, codec=codec)
        else:
            f.save(path, version=version)
        with open(path, "rb") as fh:
            data = fh.read()
        f.close()
    return data


def file_bytes(version: int = 0, codec: Any = "auto", **kwargs: Any) -> st.SearchStrategy[bytes]:
    """Serialised ``.iid`` files of format ``version`` (0, 1 or 2), written by
    :meth:`IIDFile.save` from :func:`iid_files` (``kwargs`` are passed on;
    ``codec`` is the mask codec of versions 1 and 2, default ``"auto"``)."""
    if version not in _COORD_LIMIT:
        raise ValueError(f"unknown format version {version}")
    return iid_files(version=version, **kwargs).map(lambda f: serialise(f, version, codec))


# --------------------------------------------------------------------------
# Property runners for plugin authors
# --------------------------------------------------------------------------

class _Failure(AssertionError):
    pass


def _run(prop: Callable[[Any], None], strategy: st.SearchStrategy[Any], max_examples: int, what: str, seed: int | None) -> None:
    """Run ``prop`` over ``strategy``; re-raise the failure of the smallest
    example as one AssertionError."""

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
        print_blob=False,
    )
    @given(strategy)
    def run(example: Any) -> None:
        prop(example)

    if seed is not None:
        from hypothesis import seed as _seed

        run = _seed(seed)(run)
    try:
        run()
    except _Failure as exc:
        raise AssertionError(f"{what} fails; smallest failing example (after shrinking):\n{exc}") from None


def _codec_property(codec: Any) -> Callable[[np.ndarray], None]:
    from .errors import IIDCodecError

    name = getattr(codec, "name", repr(codec))

    def prop(mask: np.ndarray) -> None:
        h, w = mask.shape
        shown = describe_mask(mask)
        try:
            buf = codec.encode(mask)
        except Exception as exc:  # noqa: BLE001 - any failure is the codec's bug
            raise _Failure(f"encode({shown}) raised {type(exc).__name__}: {exc}") from None
        try:
            data = bytes(memoryview(buf))
        except TypeError:
            raise _Failure(f"encode({shown}) returned {type(buf).__name__}, not a bytes-like object") from None
        where = f"{shown}\n  encoded ({len(data)} bytes): {data[:64].hex()}{'...' if len(data) > 64 else ''}"
        try:
            out = codec.decode(data, (h, w))
        except Exception as exc:  # noqa: BLE001
            raise _Failure(f"decode(encode(mask)) raised {type(exc).__name__}: {exc}\n  mask: {where}") from None
        if not isinstance(out, np.ndarray) or out.dtype != np.bool_:
            raise _Failure(f"decode returned {type(out).__name__} {getattr(out, 'dtype', '')}, not a bool ndarray\n  mask: {where}")
        if out.shape != (h, w):
            raise _Failure(f"decode returned shape {out.shape}, expected {(h, w)}\n  mask: {where}")
        if not np.array_equal(out, mask):
            raise _Failure(f"decode(encode(mask)) != mask\n  mask: {where}\n  decoded: {describe_mask(out)}")
        # A payload decoded with the wrong shape must be refused with
        # IIDCodecError or give exactly that shape: never another shape,
        # never another exception type.
        for other in ((h + 1, w), (h, w + 1), (max(h - 1, 0), w)):
            if other == (h, w):
                continue
            try:
                wrong = codec.decode(data, other)
            except IIDCodecError:
                continue
            except Exception as exc:  # noqa: BLE001
                raise _Failure(
                    f"decode(payload, {other}) raised {type(exc).__name__} ({exc}); a bad payload must raise IIDCodecError\n"
                    f"  mask: {where}"
                ) from None
            if not isinstance(wrong, np.ndarray) or wrong.shape != other:
                raise _Failure(f"decode(payload, {other}) returned shape {getattr(wrong, 'shape', None)}\n  mask: {where}")

    prop.__name__ = f"round_trip_{name}"
    return prop


def check_codec(
    codec: Any,
    max_examples: int = 200,
    shape_classes: Iterable[str] | None = None,
    max_side: int = 48,
    seed: int | None = None,
) -> None:
    """Property-check a mask codec; raise ``AssertionError`` on a bug.

    For masks of every shape class (:func:`masks`): ``encode`` returns
    bytes; ``decode(encode(m), m.shape)`` is a ``bool`` array equal to ``m``;
    decoding the payload with a wrong shape raises
    :class:`~iidschema.errors.IIDCodecError` or returns that exact shape.
    The error message shows the smallest failing mask hypothesis found.

    :param codec: a codec object (``id``, ``name``, ``encode``, ``decode``),
        or the id / name of an installed codec.
    :param seed: fix hypothesis' seed (default: derandomized, so the same
        examples run every time).
    """
    if isinstance(codec, (int, str)):
        from .codecs import get_codec

        codec = get_codec(codec)
    name = getattr(codec, "name", type(codec).__name__)
    _run(_codec_property(codec), masks(shape_classes, max_side), max_examples, f"codec {name!r} round trip", seed)


def _entries_of(obj: Any) -> list[Any]:
    fetch = getattr(obj, "fetch", None)
    if callable(fetch):
        try:
            return list(fetch(everything=True))
        except TypeError:
            pass
    return list(obj)


def _describe_file(f: IIDFile) -> str:
    lines = [f"{len(f)} entries"]
    for e in f:
        lines.append(
            f"  [{e.key}] address={e.iid.address[:40]!r}{'...' if len(e.iid.address) > 40 else ''} domain={e.iid.domain!r} "
            f"bbox={e.seg.bbox} {describe_mask(e.seg.mask())}".replace("\n", "\n      ")
        )
    lines.append(f"  groups={ {n: f.groups.keys(n).tolist() for n in f.groups} }")
    lines.append(f"  meta={f.meta.data!r}")
    return "\n".join(lines)


def _format_property(
    reader: Callable[[str], Any], writer: Callable[[IIDFile, str], None], check_groups: bool, check_meta: bool, suffix: str
) -> Callable[[IIDFile], None]:
    def prop(f: IIDFile) -> None:
        shown = _describe_file(f)
        with tempfile.TemporaryDirectory(prefix="iidschema-format-") as tmp:
            path = os.path.join(tmp, "f" + suffix)
            try:
                writer(f, path)
            except Exception as exc:  # noqa: BLE001
                raise _Failure(f"writer raised {type(exc).__name__}: {exc}\n  file: {shown}") from None
            try:
                got = reader(path)
            except Exception as exc:  # noqa: BLE001
                raise _Failure(f"reader raised {type(exc).__name__}: {exc}\n  file: {shown}") from None
            try:
                problems = _compare(f, got, check_groups, check_meta)
            except _Failure:
                raise
            except Exception as exc:  # noqa: BLE001
                problems = [f"reading the result raised {type(exc).__name__}: {exc}"]
            finally:
                close = getattr(got, "close", None)
                if callable(close):
                    close()
        if problems:
            raise _Failure("; ".join(problems[:5]) + f"\n  file: {shown}")

    return prop


def _compare(f: IIDFile, got: Any, check_groups: bool, check_meta: bool) -> list[str]:
    want = list(f)
    have = _entries_of(got)
    if len(have) != len(want):
        return [f"{len(want)} entries written, {len(have)} read back"]
    problems = []
    for a, b in zip(want, have):
        dom_b = b.iid.domain if b.iid.domain is not None else b""
        if (bytes(b.iid.address), bytes(dom_b)) != (a.iid.address, a.iid.domain):
            problems.append(f"entry {a.key}: label {(a.iid.address, a.iid.domain)!r} read back as {(b.iid.address, dom_b)!r}")
        if tuple(int(v) for v in b.seg.bbox) != a.seg.bbox:
            problems.append(f"entry {a.key}: bbox {a.seg.bbox} read back as {tuple(b.seg.bbox)}")
            continue
        m = np.asarray(b.seg.mask(), dtype=bool)
        if m.shape != a.seg.shape or not np.array_equal(m, a.seg.mask()):
            problems.append(f"entry {a.key}: mask read back as {describe_mask(m)}")
    if check_groups:
        want_g = {n: sorted(f.groups.keys(n).tolist()) for n in f.groups}
        got_g = {n: sorted(int(k) for k in got.groups.keys(n)) for n in got.groups}
        if want_g != got_g:
            problems.append(f"groups {want_g!r} read back as {got_g!r}")
    if check_meta and got.meta.data != f.meta.data:
        problems.append(f"meta {f.meta.data!r} read back as {got.meta.data!r}")
    return problems


def check_format(
    reader: Callable[[str], Any],
    writer: Callable[[IIDFile, str], None],
    max_examples: int = 50,
    *,
    version: int = 1,
    groups: bool = False,
    meta: bool = False,
    max_entries: int = 5,
    max_side: int = 16,
    shape_classes: Iterable[str] | None = None,
    suffix: str = "",
    seed: int | None = None,
) -> None:
    """Property-check a file format (reader + writer); raise ``AssertionError`` on a bug.

    For in-memory files drawn from :func:`iid_files`, ``writer(f, path)``
    then ``reader(path)`` must give back the same entries in the same order:
    labels (address and domain; ``None`` counts as ``b""``), bboxes and
    masks, and with ``groups=True`` / ``meta=True`` the groups and metadata.
    The error message shows the smallest failing file hypothesis found.

    :param reader: ``path -> IIDFile-like`` (``fetch(everything=True)`` or
        iteration yields entries with ``.iid.address``, ``.iid.domain``,
        ``.seg.bbox`` and ``.seg.mask()``; ``close()`` is called if present).
    :param writer: ``(IIDFile, path) -> None``.
    :param version: coordinate range of the drawn bboxes (0: up to 65535,
        1: up to 2**32-1).
    :param suffix: file name suffix for formats that care (e.g. ``".json"``).
    """
    strategy = iid_files(version=version, max_entries=max_entries, max_side=max_side, shape_classes=shape_classes)
    _run(_format_property(reader, writer, groups, meta, suffix), strategy, max_examples, "format round trip", seed)
