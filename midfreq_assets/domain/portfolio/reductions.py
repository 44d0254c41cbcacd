"""numpy reductions without ``ndarray.sum``/``any``/``all``'s Python wrappers, for per-step paths.

``x.sum()`` is ``np.add.reduce(x)`` behind two Python calls (the same result, bit for bit); on the
backtest's per-step path (tens of reductions a step, 364 steps a point, hundreds of points a grid)
the wrappers were a measurable share. 1-D arrays only (``and_reduce``/``or_reduce`` reduce axis 0,
where ``np.all``/``np.any`` reduce every axis)."""

from __future__ import annotations

import numpy as np

add_reduce = np.add.reduce
and_reduce = np.logical_and.reduce
or_reduce = np.logical_or.reduce
