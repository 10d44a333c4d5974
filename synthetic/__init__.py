"""The synthetic world: data and models made here, beside the audit library (`engine`).

* `synthetic.cohort`: the phantom cohort generator (synthetic radiographs with generated
  reports, in the MIMIC-CXR-JPG and CheXpert Plus layouts; docs/phantom.md).
* `synthetic.render`: rendered cohorts (a public release's real reports with synthetic
  radiographs drawn from their findings, in the release's own layout).
* `synthetic.ladder`: the phantom ladder (small open_clip models trained on a phantom cohort,
  the offline default models).

The dependency runs one way: this package uses the engine (its cohort adapters, models, embed
stage and exact pool maths), and the audit library never imports it. Only the command-line
handlers of the synthetic product import it, lazily: `cohort generate` and `cohort render`,
`models train-ladder`, `demo` and `study` (tests/test_structure.py checks this).
"""
