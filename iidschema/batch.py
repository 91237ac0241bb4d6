"""Batch work over many files, on Dask.

Converting, validating or indexing millions of ``.iid`` files is one call::

    from iidschema.batch import map_files

    def count(path):
        with iidschema.open(path) as f:
            return len(f)

    result = map_files(count, paths, scheduler="distributed", workers=8)
    result.values            # {path: count} of the files that worked
    result.errors            # {path: "IIDFormatError: ..."} of those that failed
    result.raise_if_failed() # or look at result.failures

A failing file never stops the batch: its exception is caught where it ran
and recorded (type, message, traceback) in its :class:`FileResult`.  Results
come back in input order.

Schedulers (``scheduler=``):

``"sync"``
    a plain loop in this process (no Dask needed): debugging, small batches.
``"threads"`` / ``"processes"``
    Dask's local schedulers (``dask.bag``) with ``workers`` threads/processes.
``"distributed"``
    a ``distributed.LocalCluster`` of ``workers`` worker processes (one
    thread each), started for this batch and closed after it.
an address (``"tcp://host:8786"``, ``"host:8786"``) or a ``distributed.Client``
    an existing Dask cluster.

Progress is a tqdm bar on stderr, updated as partitions finish, for every
scheduler (a plain loop updates per file).  ``func`` must be picklable for
``"processes"`` and distributed schedulers (Dask uses cloudpickle, so
lambdas and closures work; module-level functions are safest).

Command lines get ``--scheduler`` and ``--workers`` from
:func:`add_batch_arguments`, and :func:`batch_options` turns the parsed
arguments into keyword arguments of :func:`map_files` / :func:`run_batch`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

__all__ = [
    "FileResult",
    "BatchResult",
    "BatchError",
    "map_files",
    "run_batch",
    "add_batch_arguments",
    "batch_options",
    "SCHEDULERS",
    "file_summary",
]

#: Scheduler names understood besides a cluster address.
SCHEDULERS = ("sync", "threads", "processes", "distributed")


@dataclass
class FileResult:
    """What happened to one item (usually a path)."""

    item: Any
    ok: bool
    value: Any = None
    #: ``"ExceptionType: message"`` when it failed.
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    seconds: float = 0.0

    def __repr__(self) -> str:
        what = f"value={self.value!r:.60}" if self.ok else f"error={self.error!r:.80}"
        return f"FileResult({self.item!r}, ok={self.ok}, {what})"


class BatchError(Exception):
    """Raised by :meth:`BatchResult.raise_if_failed`; ``.result`` is the batch."""

    def __init__(self, result: "BatchResult"):
        self.result = result
        first = result.failures[0]
        super().__init__(f"{len(result.failures)} of {len(result)} items failed; first: {first.item}: {first.error}")


@dataclass
class BatchResult:
    """Per-item results of a batch, in input order."""

    results: list[FileResult] = field(default_factory=list)
    scheduler: str = "sync"
    workers: int = 1
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[FileResult]:
        return iter(self.results)

    @property
    def ok(self) -> bool:
        """True when every item succeeded."""
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[FileResult]:
        return [r for r in self.results if not r.ok]

    @property
    def successes(self) -> list[FileResult]:
        return [r for r in self.results if r.ok]

    @property
    def values(self) -> dict[Any, Any]:
        """``{item: value}`` of the items that succeeded (items must be hashable)."""
        return {r.item: r.value for r in self.results if r.ok}

    @property
    def errors(self) -> dict[Any, str]:
        """``{item: "Type: message"}`` of the items that failed."""
        return {r.item: r.error for r in self.results if not r.ok}

    def raise_if_failed(self) -> "BatchResult":
        if not self.ok:
            raise BatchError(self)
        return self

    def summary(self) -> str:
        n, bad = len(self.results), len(self.failures)
        rate = n / self.seconds if self.seconds > 0 else float("inf")
        return (f"{n - bad} of {n} items ok, {bad} failed, in {self.seconds:.2f} s "
                f"({rate:.0f} items/s, scheduler {self.scheduler}, {self.workers} workers)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary with the failures (for ``--json`` output)."""
        return {
            "items": len(self.results),
            "ok": len(self.results) - len(self.failures),
            "failed": len(self.failures),
            "seconds": round(self.seconds, 3),
            "scheduler": self.scheduler,
            "workers": self.workers,
            "failures": [{"item": str(r.item), "error": r.error, "type": r.error_type} for r in self.failures],
        }


# -- running one item ---------------------------------------------------------


def _call(func: Callable[[Any], Any], item: Any) -> FileResult:
    start = time.perf_counter()
    try:
        value = func(item)
    except Exception as exc:  # noqa: BLE001 - a batch records every failure and goes on
        return FileResult(
            item, False, None, f"{type(exc).__name__}: {exc}", type(exc).__name__,
            traceback.format_exc(limit=8), time.perf_counter() - start,
        )
    return FileResult(item, True, value, seconds=time.perf_counter() - start)


def _run_partition(items: Iterable[Any], func: Callable[[Any], Any]) -> list[FileResult]:
    return [_call(func, item) for item in items]


def _partition_failed(items: Sequence[Any], exc: BaseException) -> list[FileResult]:
    """Results for a partition whose task died as a whole (a worker killed by
    a segfault or the OOM killer): each of its items is reported failed."""
    msg = f"{type(exc).__name__}: {exc} (the task running this item and {len(items) - 1} others died)"
    return [FileResult(item, False, None, msg, type(exc).__name__, None) for item in items]


# -- schedulers ----------------------------------------------------------------


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def _partitions(n: int, workers: int, partition_size: int | None) -> list[tuple[int, int]]:
    """``[start, stop)`` of each partition: small enough to balance the
    workers and move the progress bar, large enough that a million files do
    not become a million tasks."""
    if n == 0:
        return []
    if partition_size is None:
        partition_size = max(1, min(1000, math.ceil(n / (workers * 8))))
    return [(i, min(n, i + partition_size)) for i in range(0, n, partition_size)]


def _bar(total: int, progress: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=not progress, leave=False, mininterval=0.2)


def _run_sync(func: Callable[[Any], Any], items: list[Any], progress: bool, desc: str) -> list[FileResult]:
    out = []
    with _bar(len(items), progress, desc) as bar:
        for item in items:
            out.append(_call(func, item))
            bar.update(1)
    return out


def _run_local(func: Callable[[Any], Any], items: list[Any], scheduler: str, workers: int, progress: bool, desc: str,
               partition_size: int | None) -> list[FileResult]:
    """``dask.bag`` on the local threaded or multiprocessing scheduler."""
    import dask
    import dask.bag as db
    from dask.callbacks import Callback

    spans = _partitions(len(items), workers, partition_size)
    bag = db.from_sequence(items, partition_size=spans[0][1] - spans[0][0]) if items else db.from_sequence([], npartitions=1)
    mapped = bag.map_partitions(_run_partition, func)
    name = mapped.name

    with _bar(len(items), progress, desc) as bar:

        class _Progress(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                if isinstance(key, tuple) and key and key[0] == name and isinstance(result, list):
                    bar.update(len(result))

        with _Progress():
            (parts,) = dask.compute(mapped.to_delayed(), scheduler=scheduler, num_workers=workers)
    return [r for part in parts for r in part]


def _is_address(scheduler: Any) -> bool:
    return isinstance(scheduler, str) and scheduler not in SCHEDULERS


def _run_distributed(func: Callable[[Any], Any], items: list[Any], scheduler: Any, workers: int, progress: bool,
                     desc: str, partition_size: int | None) -> tuple[list[FileResult], int]:
    """One future per partition on a distributed cluster; a partition whose
    task fails as a whole (killed worker) marks its items failed."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    own_client = False
    if scheduler == "distributed":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        own_client = True
    elif _is_address(scheduler):
        client = Client(scheduler)
        own_client = True
    else:
        client = scheduler  # a Client
    try:
        nworkers = len(client.scheduler_info().get("workers", {})) or workers
        spans = _partitions(len(items), nworkers, partition_size)
        futures = [client.submit(_run_partition, items[a:b], func, pure=False) for a, b in spans]
        index = {fut.key: i for i, fut in enumerate(futures)}
        parts: list[list[FileResult] | None] = [None] * len(spans)
        with _bar(len(items), progress, desc) as bar:
            for fut in as_completed(futures):
                i = index[fut.key]
                a, b = spans[i]
                try:
                    parts[i] = fut.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker and friends
                    parts[i] = _partition_failed(items[a:b], exc)
                bar.update(b - a)
                fut.release()
        return [r for part in parts for r in (part or [])], nworkers
    finally:
        if own_client:
            client.close()
        if cluster is not None:
            cluster.close()


def run_batch(
    func: Callable[[Any], Any],
    items: Iterable[Any],
    scheduler: Any = "sync",
    workers: int | None = None,
    progress: bool = True,
    *,
    partition_size: int | None = None,
    desc: str = "batch",
) -> BatchResult:
    """Apply ``func`` to every item and collect per-item results and errors.

    :param func: called as ``func(item)``; its return value is kept.
    :param items: the work items (paths, or tuples such as ``(src, dst)``).
    :param scheduler: ``"sync"``, ``"threads"``, ``"processes"``,
        ``"distributed"`` (a LocalCluster for this batch), a scheduler
        address, or a ``distributed.Client``.
    :param workers: threads/processes/worker processes (default: CPU count;
        ignored by ``"sync"`` and by existing clusters).
    :param progress: show a tqdm bar on stderr.
    :param partition_size: items per Dask task (default: about eight tasks
        per worker, at most 1000 items each).
    """
    items = list(items)
    workers = _default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    start = time.perf_counter()
    name = scheduler if isinstance(scheduler, str) else type(scheduler).__name__
    if scheduler in ("sync", "synchronous", "single-threaded", None):
        results, name, workers = _run_sync(func, items, progress, desc), "sync", 1
    elif scheduler in ("threads", "processes"):
        results = _run_local(func, items, scheduler, workers, progress, desc, partition_size)
    elif scheduler == "distributed" or _is_address(scheduler) or hasattr(scheduler, "submit"):
        results, workers = _run_distributed(func, items, scheduler, workers, progress, desc, partition_size)
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}: use one of {', '.join(SCHEDULERS)}, an address or a Client")
    return BatchResult(results, scheduler=name, workers=workers, seconds=time.perf_counter() - start)


def map_files(
    func: Callable[[str], Any],
    paths: Iterable[str | os.PathLike[str]],
    scheduler: Any = "sync",
    workers: int | None = None,
    progress: bool = True,
    *,
    partition_size: int | None = None,
) -> BatchResult:
    """Apply ``func(path)`` to every file; see :func:`run_batch`.

    Paths are passed as ``str`` (``os.fspath``) and reported in input order;
    URLs (``s3://...``) pass through unchanged, so ``func`` can open them
    with ``iidschema.open``.  A file whose ``func`` raises is recorded in
    :attr:`BatchResult.errors` and the batch goes on.
    """
    return run_batch(func, [os.fspath(p) for p in paths], scheduler, workers, progress,
                     partition_size=partition_size, desc="files")


# -- command line ----------------------------------------------------------------


def add_batch_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--scheduler`` and ``--workers`` to a command's parser."""
    group = parser.add_argument_group("batch execution (Dask)")
    group.add_argument(
        "--scheduler",
        default="sync",
        metavar="NAME|ADDRESS",
        help="where the files are processed: sync (default, this process), threads, processes, "
        "distributed (a local Dask cluster of --workers processes), or the address of a running "
        "Dask scheduler (tcp://host:8786)",
    )
    group.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="threads / processes / worker processes (default: the number of CPUs)",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def batch_options(args: argparse.Namespace) -> dict[str, Any]:
    """``{"scheduler": ..., "workers": ...}`` from arguments added by
    :func:`add_batch_arguments` (pass on with ``**``)."""
    return {"scheduler": getattr(args, "scheduler", "sync"), "workers": getattr(args, "workers", None)}


# -- a ready-made per-file task ----------------------------------------------------


def file_summary(path: str) -> dict[str, Any]:
    """Open ``path`` (a local path or URL) lazily and summarise it: version,
    size, entry count, groups and their sizes, and the union bbox of the
    segments (read from the LUT / segment heads, no mask decoded).  A small
    "index" record per file, e.g. for a catalogue of a large collection."""
    import numpy as np

    from .iidfile import IIDFile

    with IIDFile(path) as f:
        keys = f._all_keys()
        boxes, areas = f._heads(keys)
        union = None
        if len(keys):
            union = [int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max())]
        return {
            "path": path,
            "version": f.version,
            "size": f._reader.source.size if f._reader is not None else 0,
            "entries": len(f),
            "groups": {name: int(f.groups.keys(name).size) for name in f.groups},
            "bbox": union,
            "area": int(np.sum(areas)) if len(keys) else 0,
        }
