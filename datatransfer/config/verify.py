"""The schema of `python -m launch.verify` (conf/verify.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from datatransfer.config.resume import StorePathConfig


@dataclass
class VerifySettings:
    # Clear the completion flags of the damaged rows (and rewrite masks that differ from the sweep's config), so
    # that `python -m launch`, `launch.resume` or `launch.add_targets` computes those rows again.
    invalidate: bool = False


@dataclass
class VerifyConfig:
    """`python -m launch.verify store.path=PATH [verify.invalidate=true]`: datatransfer/store/verify.py."""

    store: StorePathConfig = field(default_factory=StorePathConfig)
    verify: VerifySettings = field(default_factory=VerifySettings)
