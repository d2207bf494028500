"""datatransfer: measure how the source dataset of transfer learning shapes a model's behaviour on a target.

Flow (docs/architecture.md): config -> masks (which source classes each row trains on) -> rows (train, transfer,
evaluate one row) -> store (the Zarr store of rows) -> influence (estimators) -> report; launchers decide where
rows run.
"""

__version__ = "0.1.0"
