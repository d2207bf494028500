"""The report's wording and HTML pieces shared by its sections and its page."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

MODE_TEXT = {
    "fixed": "fixed-feature transfer (source backbone frozen, new linear head)",
    "full": "full-network transfer (every weight fine-tuned)",
}
KIND_TEXT = {
    "softmax_gt": "probability of the true class (p_y)",
    "gt_logit": "logit of the true class (z_y)",
    "raw_margin": "logit margin (z_y minus the largest other logit)",
    "softmax_margin": "probability margin (p_y minus the largest other probability)",
    "is_correct": "correctness (1 if predicted right, else 0)",
}


def esc(s: Any) -> str:
    """``s`` as text safe inside HTML."""
    return html.escape(str(s))


def figure_html(path: Path, title: str, text: str, csvs: Sequence[str] = ()) -> str:
    """A figure (linked to its PNG) with its caption: bold title, explanation, links to its CSVs."""
    links = " ".join(f'<a href="{esc(c)}">{esc(c)}</a>' for c in csvs)
    return (f'<figure><figcaption><b>{esc(title)}.</b> {text}'
            + (f" Data: {links}." if links else "")
            + f'</figcaption><a href="{esc(path.name)}"><img src="{esc(path.name)}" alt="{esc(title)}"></a></figure>')
