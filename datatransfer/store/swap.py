"""A folder of results replaced all at once (the influence store, the report): the new one is written in a temporary
folder beside it and renamed into place, so that a reader sees the old result or the new one, never a mix, and an
interrupted run leaves the old one as it was. One writer at a time: a lock file beside the folder.

    with sole_writer(out, "python -m aggregate"):          # refuses a second writer; cleans up after killed ones
        with written_beside(out, is_ours, "an influence store") as tmp:
            ...write into tmp...                            # put at out on success, removed on any error
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from datatransfer.errors import StoreError
from datatransfer.store.lock import exclusive_or_refuse

log = logging.getLogger(__name__)


def lock_file(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def sole_writer(out: Path, who: str, error: type = StoreError) -> Iterator[Path]:
    """Run the ``with`` block as the only writer of ``out``: a second ``who`` at once is refused with ``error``
    (exit 2), since it would replace the folder while the first writes or reads it. Holding the lock, what runs that
    were killed outright (SIGKILL, a lost node) left is dealt with: a previous folder moved aside but not replaced
    goes back, temporary folders are removed."""
    lock = lock_file(out)

    def refuse(holder: str) -> Exception:
        return error(f"another `{who}` is writing {out} right now ({holder}; lock {lock}); run this again once it "
                     f"has finished")

    with exclusive_or_refuse(lock, refuse):
        olds = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
        if olds and not out.exists():  # killed between its two renames: the previous folder goes back
            log.info(f"putting {olds[-1]} back at {out}: a `{who}` was killed while replacing it")
            os.rename(olds.pop(), out)
        for left in [*out.parent.glob(f".{out.name}.writing-*"), *olds]:
            log.info(f"removing {left}, left by a `{who}` that was killed")
            shutil.rmtree(left, ignore_errors=True)
        yield out


@contextlib.contextmanager
def written_beside(out: Path, is_ours: Callable[[Path], bool], what: str, error: type = StoreError) -> Iterator[Path]:
    """A temporary folder path beside ``out`` (not created), put at ``out`` once the ``with`` block ends without an
    error; on any error (or Ctrl-C, SIGTERM) it is removed and ``out`` is left as it was. An existing ``out`` is
    replaced only if ``is_ours(out)`` says it is ``what`` (else ``error``, raised before the block runs)."""
    refuse_foreign(out, is_ours, what, error)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.writing-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        _replace(tmp, out, is_ours, what, error)
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path, tries: int = 20) -> None:
    """Remove ``tmp``, again if it comes back: after an error in one write, zarr's other writes of the same call
    may still be in flight in its event loop thread and create folders after a first removal (seen with a full
    disk). What is still left then, the next writer removes (``sole_writer``)."""
    for _ in range(tries):
        shutil.rmtree(tmp, ignore_errors=True)
        time.sleep(0.05)
        if not tmp.exists():
            return


def refuse_foreign(out: Path, is_ours: Callable[[Path], bool], what: str, error: type = StoreError) -> None:
    if out.exists() and not is_ours(out):
        raise error(f"{out} exists and is not {what}; refusing to replace it (give another path, or remove it)")


def _replace(tmp: Path, out: Path, is_ours: Callable[[Path], bool], what: str, error: type) -> None:
    old = None
    if out.exists():
        refuse_foreign(out, is_ours, what, error)  # again: it may have appeared while the new one was written
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:  # the previous folder back in place
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
