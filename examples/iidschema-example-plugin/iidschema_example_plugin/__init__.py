"""An iidschema format plugin: ``example-npz`` (read/write) and ``example-csv``
(write only).

The hook returns declarations only; the functions below are named by
``"module:function"`` strings, so nothing is imported or run until a file is
read or written in these formats.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np

from iidschema.formats import FormatSpec, Option
from iidschema.plugins import hookimpl

__all__ = ["iidschema_formats", "read_npz", "write_npz", "probe_npz", "write_csv"]

_MAGIC = "iidschema-example-npz/1"


@hookimpl
def iidschema_formats() -> list[FormatSpec]:
    return [
        FormatSpec(
            "example-npz",
            (".npz",),
            "example plugin: every entry (IID, bbox, packed mask), groups and metadata in one .npz",
            reader="iidschema_example_plugin:read_npz",
            writer="iidschema_example_plugin:write_npz",
            probe="iidschema_example_plugin:probe_npz",
            write_options=(Option("compressed", True, "use np.savez_compressed", bool),),
        ),
        FormatSpec(
            "example-csv",
            (".csv",),
            "example plugin: one CSV line per entry with its bbox and area (write only)",
            writer="iidschema_example_plugin:write_csv",
            write_options=(
                Option("delimiter", ",", "field separator (one character)", str, check=lambda v: None if len(v) == 1 else "must be one character"),
            ),
        ),
    ]


def _offsets(chunks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.array([len(c) for c in chunks], dtype=np.int64)
    data = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    return data, np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)


def write_npz(f: Any, path: str, *, compressed: bool = True) -> None:
    entries = f.fetch(everything=True)
    addr, addr_off = _offsets([e.iid.address for e in entries])
    dom, dom_off = _offsets([e.iid.domain for e in entries])
    bits, bits_off = _offsets([np.packbits(e.seg.mask().ravel()).tobytes() for e in entries])
    extra = {"magic": _MAGIC, "groups": {n: [int(k) for k in f.groups.keys(n)] for n in f.groups}, "meta": f.meta.data}
    arrays = dict(
        bboxes=np.array([e.seg.bbox for e in entries], dtype=np.int64).reshape(-1, 4),
        addresses=addr, address_offsets=addr_off, domains=dom, domain_offsets=dom_off,
        bits=bits, bits_offsets=bits_off,
        extra=np.frombuffer(json.dumps(extra).encode("utf-8"), dtype=np.uint8),
    )
    with open(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)


def probe_npz(path: str) -> str | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "extra" not in z.files:
                return "an .npz without iidschema data"
            extra = json.loads(z["extra"].tobytes().decode("utf-8"))
    except Exception as exc:  # noqa: BLE001
        return f"not a readable .npz ({type(exc).__name__})"
    return None if extra.get("magic") == _MAGIC else "an .npz from something else"


def read_npz(path: str) -> Any:
    from iidschema import IIDFile

    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    extra = json.loads(a["extra"].tobytes().decode("utf-8"))
    f = IIDFile()
    for i, box in enumerate(a["bboxes"].tolist()):
        h, w = box[2] - box[0], box[3] - box[1]
        raw = a["bits"][a["bits_offsets"][i] : a["bits_offsets"][i + 1]]
        mask = np.unpackbits(raw, count=h * w).astype(bool).reshape(h, w)
        address = a["addresses"][a["address_offsets"][i] : a["address_offsets"][i + 1]].tobytes()
        domain = a["domains"][a["domain_offsets"][i] : a["domain_offsets"][i + 1]].tobytes()
        f.add(address, domain, box, mask)
    for name, keys in extra["groups"].items():
        f.groups.add(name, keys)
    f.meta.data = extra["meta"]
    return f


def write_csv(f: Any, path: str, *, delimiter: str = ",") -> None:
    buf = io.StringIO()
    out = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    out.writerow(["key", "domain", "address", "minr", "minc", "maxr", "maxc", "area"])
    for e in f.fetch(everything=True):
        out.writerow([e.key, e.iid.domain.hex(), e.iid.address.hex(), *e.seg.bbox, e.seg.area])
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())
