"""An exclusive lock on a file, for the short critical sections of several processes sharing a store (adding
targets, submitting rows). ``fcntl.flock``: reliable on local disks and on NFS v4 and Lustre with flock enabled;
where the filesystem refuses it, a warning says the section runs unprotected."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike):
    """Hold an exclusive lock on ``path`` (created if absent) for the ``with`` block; waits for other holders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:
            log.warning("could not lock %s (%s): this filesystem does not support flock; run one such command at "
                        "a time", p, e.strerror or e)
        yield


@contextlib.contextmanager
def exclusive_or_refuse(path: str | os.PathLike, refuse: Callable[[str], Exception]):
    """Hold an exclusive lock on ``path`` (created if absent) for the ``with`` block, without waiting: when another
    process holds it, raise ``refuse(holder)`` (holder: what that process wrote into the file, its pid and host).
    The lock ends with its process, so a killed holder never leaves it held."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise refuse(f.read().strip() or "unknown") from None
        except OSError as e:
            log.warning("could not lock %s (%s): this filesystem does not support flock; run one such command at "
                        "a time", p, e.strerror or e)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
