"""Models: the registry of names (`registry`), loading from a spec offline (`loading`) and the
backbone / head split (`split`). The phantom ladder that trains the offline default models lives
with the phantom data, in `synthetic.ladder`.

Importing this package loads neither torch nor open_clip; `loading` and `split` do.
"""
