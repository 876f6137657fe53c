"""One writer per output, checked before the work: what every pipeline stage does with its output paths.

:func:`claim_outputs` (and the :func:`writes` decorator the stage functions in ``searchr3.stages`` carry):

1. **Lock**: takes an exclusive ``fcntl`` lock on ``<parent>/.<name>.lock`` for every output path (in a fixed
   order, so two stages sharing outputs cannot deadlock). A second run that wants an output already held
   fails at once with :class:`~searchr3.errors.OutputBusy` (exit 5) naming the output and the process that
   holds it. The lock is the kernel's: a killed holder releases it, so there is never a stale lock to delete.
2. **Orphans**: with the lock held, nobody else is writing, so the temporary files a killed run left behind
   are removed: ``.<name>.building-*`` and ``.<name>.old-*`` folders of ``searchr3.files.atomic_directory``,
   ``.<name>.*.tmp`` files of ``atomic_file``, beside the output and anywhere inside an output folder.
3. **Writable**: each output's folder (and an existing output folder itself, which the atomic swap renames)
   must accept a new file; if not, :class:`~searchr3.errors.OutputUnwritable` stops the stage before it
   trains, naming the folder.

:func:`metrics_with` commits a stage's metrics file together with its model: the metrics' temporary file is
created before the work (a read-only ``metrics/`` fails then, not after training), and if the metrics cannot
be written after the model was exported, the new model is removed, so a model never sits beside metrics of
another run (``dvc repro`` rebuilds both).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from searchr3.errors import OutputBusy, OutputUnwritable
from searchr3.files import atomic_file, json_text
from searchr3.ranks import secondary_rank

log = logging.getLogger(__name__)


def lock_path(output: str | Path) -> Path:
    output = Path(output)
    return output.parent / f".{output.name}.lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "another process"
    return text.splitlines()[0][:200] if text else "another process"


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``output`` for the block; :class:`OutputBusy` at once if someone else holds it."""
    path = lock_path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:  # the folder cannot even hold the lock file: not writable
        raise OutputUnwritable(output, path.parent, err) from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusy(output, _holder(path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {' '.join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))}\n"
                     .encode())
        yield path
    finally:
        os.close(fd)  # releases the lock; the (empty-ish) lock file stays, so no one races on creating it


def _orphans(output: Path) -> list[Path]:
    name = output.name
    found = [p for pattern in (f".{name}.building-*", f".{name}.old-*", f".{name}.*.tmp")
             for p in output.parent.glob(pattern)]
    if output.is_dir():
        for pattern in (".*.building-*", ".*.old-*", ".*.tmp"):
            found += output.rglob(pattern)
    return sorted(set(found))


def remove_orphans(output: str | Path) -> list[Path]:
    """Remove what a killed writer of ``output`` left behind (call only while holding its lock)."""
    removed = []
    for path in _orphans(Path(output)):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except FileNotFoundError:
            continue
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run: %s", len(removed),
                 ", ".join(str(p) for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    return removed


def check_writable(output: str | Path) -> None:
    """The folder that will receive ``output`` accepts a new file (and so does ``output`` if it is an existing
    folder: the atomic swap moves it); :class:`OutputUnwritable` otherwise."""
    output = Path(output)
    folders = [output.parent] + ([output] if output.is_dir() else [])
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{output.name}.probe-", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise OutputUnwritable(output, folder, err) from err


@contextlib.contextmanager
def claim_outputs(*outputs: str | Path) -> Iterator[list[Path]]:
    """Lock every output (sorted, so two claimants never deadlock), remove orphans, check they are writable."""
    paths = sorted({Path(os.path.abspath(p)) for p in outputs if p})
    with contextlib.ExitStack() as stack:
        for path in paths:
            stack.enter_context(output_lock(path))
        for path in paths:
            remove_orphans(path)
            check_writable(path)
        yield paths


def writes(*params: str, also=()):
    """Decorator for a stage function: :func:`claim_outputs` on the arguments named ``params`` (defaults
    included) plus the fixed paths ``also`` (a tuple, or a callable of the bound arguments) for the call."""
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if secondary_rank():  # a distributed training launch: rank 0 claims and writes; the others write nothing
                return fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            extra = also(bound.arguments) if callable(also) else also
            with claim_outputs(*(bound.arguments[p] for p in params), *extra):
                return fn(*args, **kwargs)
        wrapper.outputs = params
        return wrapper
    return decorate


@contextlib.contextmanager
def metrics_with(metrics: str | Path, *outputs: str | Path):
    """Yield ``put(summary)``; the metrics file is committed at the end of the block, and if committing it fails
    after the work, ``outputs`` (the new model/index) are removed so they never disagree with the metrics."""
    box: dict = {}
    worked = False
    try:
        with atomic_file(metrics, "w") as handle:  # created now: an unwritable metrics folder fails before the work
            yield lambda summary: box.__setitem__("summary", summary)
            worked = True
            handle.write(json_text(box.get("summary")))
    except OSError as err:
        if not worked:
            raise
        for out in outputs:
            shutil.rmtree(out, ignore_errors=True)
        raise OSError(err.errno or errno.EIO, f"{err.strerror or err}; the new {', '.join(map(str, outputs))} was "
                      "removed so that it does not sit beside older metrics", str(metrics)) from err
