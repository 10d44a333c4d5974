"""The torch-free core the engine, the report and the dashboard share.

``labels`` (the 14 CheXpert labels), ``names`` (how heads, epsilons, directions and splits are
labelled and ordered), ``format`` (how percentages, lifts, AUROCs and risk levels read) and
``pools`` (the exact pool maths of Recall@k, MRR and the patient bootstrap). These modules import
only the standard library, numpy and scipy, so the dashboard can use them without loading torch,
open_clip, opacus, faiss or umap (a test checks the modules it loads).
"""
