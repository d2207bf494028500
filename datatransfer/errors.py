"""Expected errors and how the command-line apps report them. Imports nothing heavy (no torch), so every app,
fast or slow to start, shares it."""

from __future__ import annotations

import contextlib
import sys


class AppError(Exception):
    """A problem the user can fix (bad value, missing file, refused store, Slurm not answering). The apps print its
    message on one line and exit with status 2; nothing stored is changed."""


@contextlib.contextmanager
def fail_cleanly(interrupted: str = ""):
    """AppError or a missing required value -> ``error: ...`` on stderr, exit 2. Ctrl-C -> ``interrupted``
    (what happened to the results) and exit 130, if given; otherwise the KeyboardInterrupt goes on."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        yield
    except AppError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except MissingMandatoryValue as e:  # e.g. store.path not given
        print(f"error: {getattr(e, 'full_key', '') or 'a required value'} must be given (e.g. store.path=PATH)",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if not interrupted:
            raise
        print(f"\ninterrupted: {interrupted}", file=sys.stderr)
        sys.exit(130)
