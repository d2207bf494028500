"""datatransfer: measure how the source dataset of transfer learning shapes a model's behaviour on a target.

Flow: masks.py (which source classes each row trains on) -> job.py (train, transfer, evaluate one row) ->
store.py (the Zarr store of rows) -> estimators (influences) -> report.
"""

__version__ = "0.1.0"
