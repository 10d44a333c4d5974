"""The exact pool maths now live in `engine.core.pools` (torch-free, shared with the dashboard).

Re-exported here so ``from engine.attack import pools`` keeps working.
"""

from engine.core.pools import (  # noqa: F401
    bootstrap_mean_ci,
    expected_rank,
    hypergeom_cdf,
    recall_at_k,
    recall_at_k_by_ties,
    recall_at_k_full,
    recall_where_eligible,
    reciprocal_rank,
)
