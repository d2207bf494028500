"""Counterfactual experiments: act on an influence store (docs/counterfactual.md).

- ``plan.py``: what a ``sweep=counterfactual`` store is created with (keep-masks, per-row metadata, the influence
  store's identity), read once from the influence store;
- ``results.py``: reading such a store back: accuracy per row, summaries with intervals, the best k;
- ``figures.py``: accuracy against k (the paper's Fig. 2a);
- ``examples.py``: debugged examples (the paper's Fig. 6 right and Appendix E.4);
- ``analyse.py``: ``python -m aggregate.counterfactual``'s one call.
"""
