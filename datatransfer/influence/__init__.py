"""Influences from a sweep store: estimators (``estimators.py``), convergence diagnostics (``diagnostics.py``), block
reading (``blocks.py``), aggregation into the influence store (``aggregate.py``) and its reader (``reader.py``)."""
