"""The re-linkage attack (docs/metrics.md): true-report ranks, exact pool metrics, top-k lists.

``pools`` holds the pure maths (exact expected Recall@k over random pools, MRR, bootstrap);
``ranks`` turns embeddings into the per-query counts those formulas need.
"""
