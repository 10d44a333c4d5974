"""The `dp` stage: DP-SGD retraining of the projection heads, with its accounting (docs/dp.md).

Modules: `groups` (keyed-hash patient groups), `losses` (in-group and public-negative InfoNCE),
`training` (the Opacus trainer), `accounting` (epsilon / delta, PRV -> RDP fallback, patient-level
conversion), `stage` (the epsilon sweep into DuckDB and cache/). Utility (the linear probe and the
membership signal) lives in `engine.utility`. Importing this package imports neither torch nor
opacus; the submodules that need them import them inside their functions.
"""
