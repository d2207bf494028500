"""What computes a row. A row kind (config group ``row``) is a class with ``runnable(row)`` and
``run(row, mask, checkpoint) -> Row``; the worker (``worker.py``) picks one and writes what it returns.

- ``trained`` (``trained.py``): train a source model on the mask's classes, transfer, evaluate;
- ``planted`` (``planted.py``): outputs from a known linear model, no training (a ground truth, a cluster check);
- rows of targets added later (``saved_backbone.py``): transfer each row's saved source model.

A new row kind: copy ``planted.py`` (the smallest), add its schema to the ``row`` group (datatransfer/config,
conf/row/) and its class to ``ROW_KINDS``.
"""

from __future__ import annotations

from typing import Optional, Sequence


def make_rows(cfg, rt, store, added_targets: Optional[Sequence[str]] = None):
    """The row computer of ``cfg.row.kind`` for ``store`` (or, with ``added_targets``, of those targets)."""
    from datatransfer.rows.planted import PlantedRows
    from datatransfer.rows.saved_backbone import SavedBackboneRows
    from datatransfer.rows.trained import TrainedRows

    target_index = {t: i for i, t in enumerate(store.all_targets)}
    if added_targets:
        return SavedBackboneRows(cfg, rt, target_index, str(store.path))
    if cfg.row.kind == "planted":
        return PlantedRows(cfg)
    backbone_store = str(store.path) if cfg.store.get("save_backbones") else None
    return TrainedRows(cfg, rt, target_index, backbone_store)

