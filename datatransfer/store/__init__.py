"""The sweep store: its arrays and row protocol (``sweep_store.py``), what defines it (``spec.py``), creating or
reopening it from a config (``open.py``), targets added later (``added_targets.py``), damage-tolerant reads
(``integrity.py``), and ``layout.py``, the one module that knows every path inside a store folder."""
