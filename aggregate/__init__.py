"""`python -m aggregate`: influences from a sweep store; `python -m aggregate.report`: the report.

Thin Hydra apps over datatransfer.aggregation and datatransfer.report (config: conf/aggregate.yaml)."""

from __future__ import annotations

import contextlib
import sys

from datatransfer.config import ConfigError
from datatransfer.estimators import EstimatorError
from datatransfer.store import StoreError


@contextlib.contextmanager
def fail_cleanly():
    """Expected problems (no store, bad value, too few rows) -> one line on stderr and exit status 2.
    (datatransfer.cli.fail_cleanly does the same but imports torch through the data module: slow to start.)"""
    try:
        yield
    except (ConfigError, StoreError, EstimatorError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was replaced (results are written to a temporary folder first)",
              file=sys.stderr)
        sys.exit(130)
