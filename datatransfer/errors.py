"""Every expected error class, and the one wrapper through which the command-line apps report them.

Imports nothing heavy (no torch), so every app, fast or slow to start, shares it.
"""

from __future__ import annotations

import contextlib
import logging
import sys

log = logging.getLogger(__name__)


class AppError(Exception):
    """A problem the user can fix (bad value, missing file, refused store, Slurm not answering). The apps print its
    message on one line and exit with status 2; nothing stored is changed."""


class ConfigError(AppError, ValueError):
    """A config value that composes (right key, right type) but cannot be run."""


class DataError(AppError, FileNotFoundError):
    """A data file or a dataset inside it that is not there; the message names it."""


class StoreError(AppError, RuntimeError):
    """A store that cannot be created or opened as asked; the message names the problem."""


class AggregationError(StoreError):
    """A store whose rows cannot give the influences asked for (no completed rows, NaN outputs, ...)."""


class EstimatorError(AppError, ValueError):
    """The rows given cannot support the estimate asked for (e.g. a unit never left out); the message says why."""


class SlurmError(AppError, RuntimeError):
    """Slurm could not be asked or refused a request; the message says what to do."""


class WorkerError(AppError, RuntimeError):
    """Rows whose worker process died or raised; the message lists them. The other rows are kept (completed ones
    are in the store): rerunning the same command retries the failed rows."""


class InjectedFault(RuntimeError):
    """Raised for rows listed in launch.fail_rows (tests make tasks fail with it)."""


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
