"""The 14 CheXpert labels, in the order of the cohort table's columns.

Label values follow the CheXpert convention: 1 positive, 0 negative, -1 uncertain, missing (NaN)
when the report does not mention the finding.
"""

from __future__ import annotations

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
