"""The phantom ladder: the offline default models, trained by the engine on a phantom cohort.

The phantom cohort itself comes from `synthetic.cohort`; this package trains a ladder of small
open_clip models on it (`ladder`: specialisation emulated by in-domain training budget) and gauges
each rung's held-out re-linkage while it trains (`calibration`, which uses the audit's own exact
pool maths in `engine.core.pools`). The rungs are saved as ``local-dir:`` folders and registered
in the ``models`` table, so every later stage loads them like any real model through
`engine.models`. The dependency runs one way: this package uses `engine.models`, `engine.cohort`
and `engine.embed`; none of those imports it.

Importing this package loads neither torch nor open_clip; training does.
"""
