"""``register()``: store every schema in Hydra's ConfigStore and add this project's OmegaConf resolver.

Each Hydra app calls it once before ``@hydra.main`` runs (``compose()`` calls it too); importing the config package
registers nothing. The primary configs in conf/ select ``base_<app>``; each group's YAML files (conf/sweep/,
conf/row/, conf/launcher/, conf/estimator/) select ``base_<kind>`` of their group. Because every node is a
dataclass, an unknown key or a wrong type anywhere fails at compose time with a message naming the key.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from datatransfer.config.aggregate import ESTIMATOR_KINDS, AggregateConfig
from datatransfer.config.launchers import LAUNCHER_KINDS
from datatransfer.config.multirun import RESOLVER, multirun_subdir
from datatransfer.config.prepare import PrepareConfig
from datatransfer.config.resume import ResumeConfig
from datatransfer.config.status import StatusConfig
from datatransfer.config.sweep import ROW_KINDS, SWEEP_KINDS, Config
from datatransfer.config.verify import VerifyConfig


def register() -> None:
    """Idempotent: a second call stores the same nodes again."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)  # python -m launch, launch.add_targets (conf/config.yaml)
    cs.store(name="base_resume", node=ResumeConfig)  # launch.resume (conf/resume.yaml)
    cs.store(name="base_status", node=StatusConfig)  # launch.status (conf/status.yaml)
    cs.store(name="base_prepare", node=PrepareConfig)  # launch.prepare (conf/prepare.yaml)
    cs.store(name="base_verify", node=VerifyConfig)  # launch.verify (conf/verify.yaml)
    cs.store(name="base_aggregate", node=AggregateConfig)  # aggregate, aggregate.report (conf/aggregate.yaml)
    for kind, schema in SWEEP_KINDS.items():
        cs.store(group="sweep", name=f"base_{kind}", node=schema)
    for kind, (schema, _) in ROW_KINDS.items():
        cs.store(group="row", name=f"base_{kind}", node=schema)
    for kind, schema in LAUNCHER_KINDS.items():
        cs.store(group="launcher", name=f"base_{kind}", node=schema)
    for kind, schema in ESTIMATOR_KINDS.items():
        cs.store(group="estimator", name=f"base_{kind}", node=schema)
    OmegaConf.register_new_resolver(RESOLVER, multirun_subdir, replace=True)
