"""Re-linkage audit engine for clinical vision-language models.

Stages (each a subpackage or module, in data-flow order): ``cohort`` -> ``models``/``embed`` ->
``attack`` -> ``dp`` -> ``jointspace`` (UMAP) -> ``report``; ``store`` is the DuckDB door they all
write through, ``core`` the torch-free part (labels, names, number formats, exact pool maths) the
dashboard shares, and ``phantom`` the ladder of offline models trained on phantom data.
docs/README.md describes how the parts fit.
"""

__version__ = "0.1.0"
