"""Cohorts: the dataset adapters, the registry and validation (`check`).

The synthetic cohorts (the phantom generator, rendered releases) are made by the `synthetic`
package beside the engine; here they are read like any other dataset.

Every adapter turns a dataset on disk into the cohort table of docs/cohorts.md (`table.COLUMNS`).
"""
