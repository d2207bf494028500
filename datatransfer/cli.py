"""What the Hydra apps share: turning the library's expected errors into a message and a non-zero exit."""

from __future__ import annotations

import contextlib
import sys

from .config import ConfigError
from .data import DataError
from .store import StoreError


@contextlib.contextmanager
def fail_cleanly():
    try:
        yield
    except (ConfigError, DataError, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
