"""Models: the registry of names (`registry`), loading from a spec offline (`loading`), the
backbone / head split (`split`), the phantom ladder (`ladder`) and its quick calibration
(`calibration`).

Importing this package loads neither torch nor open_clip; `loading`, `split` and `ladder` do.
"""
