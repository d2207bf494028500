"""The arithmetic of :func:`estimators.welch` in one compiled pass over the U x K entries (numpy needs a dozen
passes with temporaries; this is the same IEEE operations in the same order, so the same bits)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, error_model="numpy")
def welch_into(s_in, s_in_sq, total, total_sq, n_in, rows, infl, se):
    """Fill ``infl`` and ``se`` (U, K); see :func:`estimators.welch` for the formulas."""
    units, cols = s_in.shape
    for u in range(units):
        n1 = np.float64(n_in[u])
        n0 = rows - n1
        r1 = 1.0 / n1
        r0 = 1.0 / n0
        w1 = r1 / (n1 - 1)
        w0 = r0 / (n0 - 1)
        undefined = n1 < 2 or n0 < 2
        for k in range(cols):
            a = s_in[u, k]
            a2 = s_in_sq[u, k]
            b = total[k] - a
            b2 = total_sq[k] - a2
            infl[u, k] = a * r1 - b * r0
            v1 = a2 - a * a * r1
            v0 = b2 - b * b * r0
            # rounding can make a zero sum of squares slightly negative; not max(): NaN stays NaN, as in np.maximum
            if v1 < 0.0:  # noqa: PLR1730
                v1 = 0.0
            if v0 < 0.0:  # noqa: PLR1730
                v0 = 0.0
            se[u, k] = np.nan if undefined else np.sqrt(v1 * w1 + v0 * w0)
