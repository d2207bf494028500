"""The Slurm array task: a submitit Checkpointable that runs its rows into the store through ``rows.worker.run_rows``.

Preemption and time limits: Slurm sends the requeue signal (USR2, ``launcher.signal_delay_s`` before the limit);
submitit calls :meth:`RowsTask.checkpoint` and requeues the job. Nothing has to be saved at that moment: the
running row's training state (model, optimizer, epoch, RNG) is saved under ``<store>/checkpoints/`` at every epoch
end, completed rows are in the store. On restart the same task skips its completed rows, resumes the interrupted
row from its checkpoint, and the checkpoint is deleted once the row is complete.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from submitit.helpers import Checkpointable, DelayedSubmission


def load_config(path: str | Path) -> Any:
    """The submission's resolved config (``<store>/submissions/<id>/config.json``), typed by the schema again."""
    from datatransfer.config import structured

    return structured(json.loads(Path(path).read_text()))


log = logging.getLogger(__name__)


class RowsTask(Checkpointable):
    """Runs ``rows`` (skipping completed ones) with the config saved at ``config_path``."""

    def __init__(self, config_path: str, rows: Sequence[int], added_targets: Sequence[str] = ()):
        self.config_path = str(config_path)
        self.rows: List[int] = [int(r) for r in rows]
        self.added_targets: List[str] = list(added_targets)

    def __call__(self) -> Dict[str, Any]:
        from datatransfer.rows.worker import run_rows
        from datatransfer.store import layout
        from datatransfer.train.checkpoint import RowCheckpoint

        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # into the task's log
        cfg = load_config(self.config_path)
        store = str(cfg.store.path)
        rows = self.rows
        for r in rows:
            state = RowCheckpoint(layout.checkpoint(store, r)).load()
            if state is not None:
                log.info(f"row {r}: resuming from its checkpoint after epoch {state['epoch']}")
        start = time.perf_counter()

        def done(row: int, stats: dict) -> None:
            log.info(f"row {row} complete ({stats.get('total_seconds', float('nan')):.1f} s)")

        ran = run_rows(cfg, store, rows, on_row=done, added_targets=self.added_targets)
        log.info(f"{ran} rows run, {len(rows) - ran} already complete, in {time.perf_counter() - start:.1f} s")
        return {"rows": self.rows, "ran": ran}

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """On the requeue signal: requeue this same task (its state is on disk already, see the module doc)."""
        log.info(f"requeue signal: requeuing rows {self.rows[0]}..{self.rows[-1]}")
        return DelayedSubmission(self, *args, **kwargs)
