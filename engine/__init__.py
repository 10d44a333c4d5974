"""Re-linkage audit engine for clinical vision-language models.

Stages (each a subpackage or module, in data-flow order): ``cohort`` -> ``models``/``embed`` ->
``attack`` -> ``dp`` -> ``umap`` -> ``report``; ``store`` is the DuckDB door they all write through.
"""

__version__ = "0.1.0"
