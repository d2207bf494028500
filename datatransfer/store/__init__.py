"""The sweep store: its arrays and row protocol (``sweep_store.py``), its format and what defines it (``spec.py``),
creating or reopening it from a config (``open.py``), targets added later (``added_targets.py``), row claims (one live
writer per row: ``claims.py``), per-row provenance (``provenance.py``), damage-tolerant reads (``integrity.py``) of
chunk files read straight by the arrays' own codecs (``chunk_files.py``), its size on disk (``size.py``),
``launch.verify``'s checks and repair (``verify.py``), a file lock for short critical sections (``lock.py``), and
``layout.py``, the one module that knows every path inside a store folder."""
