"""Cohorts: the phantom generator (`synth`), the dataset adapters and validation (`check`).

Every adapter turns a dataset on disk into the cohort table of docs/cohorts.md (`table.COLUMNS`).
"""
