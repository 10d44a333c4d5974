"""Re-linkage audit engine for clinical vision-language models.

Stages (each a subpackage or module, in data-flow order): ``cohort`` -> ``models``/``embed`` ->
``attack`` -> ``dp`` -> ``jointspace`` (UMAP) -> ``report``; ``store`` is the DuckDB door they all
write through, and ``core`` the torch-free part (labels, names, number formats, exact pool maths)
the dashboard shares. The synthetic data and the phantom ladder of offline models live in the
`synthetic` package beside this one, which the audit library never imports. docs/README.md
describes how the parts fit.
"""

__version__ = "0.1.0"
