"""Training, readable top to bottom: ``loop.py`` (runtime, minibatch loop, evaluation), ``schedules.py``,
``source.py`` (a source model on a mask's classes), ``transfer.py`` (fixed-feature and full), ``models.py``,
``checkpoint.py`` (per-row training state) and ``backbones.py`` (saved source models). Knows nothing of stores
or launchers: callers hand it a recipe section, a dataset reader and a ``Runtime``."""
