"""PadChest findings -> the 14 CheXpert labels: plain data, explained in docs/label-mapping.md.

PadChest labels each study with findings from its own vocabulary (174 radiological findings,
differential diagnoses and a few report-level tags such as ``normal``, ``unchanged``,
``exclude``). A finding listed in `FINDING_LABELS` sets its CheXpert label to 1; every other
label stays missing (not mentioned), which is also what a blank means in CheXpert's own tables.
Findings not listed map to nothing; the study keeps them in its full finding set.

No Finding = 1 when the study lists ``normal`` and nothing else except `NO_FINDING_ALLOWED`
(tags that say nothing about pathology) and findings that map to Support Devices (CheXpert's
No Finding also allows devices).
"""

from __future__ import annotations

# PadChest finding (stripped, as spelled in the release) -> CheXpert label.
FINDING_LABELS: dict[str, str] = {
    # Enlarged Cardiomediastinum
    "mediastinal enlargement": "Enlarged Cardiomediastinum",
    "superior mediastinal enlargement": "Enlarged Cardiomediastinum",
    # Cardiomegaly
    "cardiomegaly": "Cardiomegaly",
    # Lung Opacity
    "infiltrates": "Lung Opacity",
    "alveolar pattern": "Lung Opacity",
    "interstitial pattern": "Lung Opacity",
    "reticular interstitial pattern": "Lung Opacity",
    "reticulonodular interstitial pattern": "Lung Opacity",
    "ground glass pattern": "Lung Opacity",
    "increased density": "Lung Opacity",
    "miliary opacities": "Lung Opacity",
    "pulmonary fibrosis": "Lung Opacity",
    "fibrotic band": "Lung Opacity",
    # Lung Lesion
    "nodule": "Lung Lesion",
    "multiple nodules": "Lung Lesion",
    "pulmonary mass": "Lung Lesion",
    "mass": "Lung Lesion",
    "lung metastasis": "Lung Lesion",
    "lepidic adenocarcinoma": "Lung Lesion",
    "lymphangitis carcinomatosa": "Lung Lesion",
    "cavitation": "Lung Lesion",
    "abscess": "Lung Lesion",
    # Edema
    "pulmonary edema": "Edema",
    "kerley lines": "Edema",
    "heart insufficiency": "Edema",
    "hilar congestion": "Edema",
    "vascular redistribution": "Edema",
    "central vascular redistribution": "Edema",
    "pulmonary venous hypertension": "Edema",
    # Consolidation
    "consolidation": "Consolidation",
    "air bronchogram": "Consolidation",
    # Pneumonia
    "pneumonia": "Pneumonia",
    "atypical pneumonia": "Pneumonia",
    # Atelectasis
    "atelectasis": "Atelectasis",
    "atelectasis basal": "Atelectasis",
    "laminar atelectasis": "Atelectasis",
    "lobar atelectasis": "Atelectasis",
    "segmental atelectasis": "Atelectasis",
    "round atelectasis": "Atelectasis",
    "total atelectasis": "Atelectasis",
    # Pneumothorax
    "pneumothorax": "Pneumothorax",
    "hydropneumothorax": "Pneumothorax",
    # Pleural Effusion
    "pleural effusion": "Pleural Effusion",
    "loculated pleural effusion": "Pleural Effusion",
    "loculated fissural effusion": "Pleural Effusion",
    "empyema": "Pleural Effusion",
    # Pleural Other
    "pleural thickening": "Pleural Other",
    "apical pleural thickening": "Pleural Other",
    "calcified pleural thickening": "Pleural Other",
    "pleural plaques": "Pleural Other",
    "calcified pleural plaques": "Pleural Other",
    "asbestosis signs": "Pleural Other",
    "pleural mass": "Pleural Other",
    # Fracture
    "fracture": "Fracture",
    "rib fracture": "Fracture",
    "callus rib fracture": "Fracture",
    "clavicle fracture": "Fracture",
    "humeral fracture": "Fracture",
    "vertebral fracture": "Fracture",
    "vertebral compression": "Fracture",
    "vertebral anterior compression": "Fracture",
    # Support Devices
    "NSG tube": "Support Devices",
    "endotracheal tube": "Support Devices",
    "tracheostomy tube": "Support Devices",
    "chest drain tube": "Support Devices",
    "gastrostomy tube": "Support Devices",
    "nephrostomy tube": "Support Devices",
    "ventriculoperitoneal drain tube": "Support Devices",
    "double J stent": "Support Devices",
    "catheter": "Support Devices",
    "central venous catheter": "Support Devices",
    "central venous catheter via jugular vein": "Support Devices",
    "central venous catheter via subclavian vein": "Support Devices",
    "central venous catheter via umbilical vein": "Support Devices",
    "reservoir central venous catheter": "Support Devices",
    "pacemaker": "Support Devices",
    "dual chamber device": "Support Devices",
    "single chamber device": "Support Devices",
    "electrical device": "Support Devices",
    "dai": "Support Devices",
    "artificial heart valve": "Support Devices",
    "artificial aortic heart valve": "Support Devices",
    "artificial mitral heart valve": "Support Devices",
    "aortic endoprosthesis": "Support Devices",
    "endoprosthesis": "Support Devices",
    "osteosynthesis material": "Support Devices",
    "humeral prosthesis": "Support Devices",
}

# The finding that makes a study normal, and the tags that may accompany it.
NORMAL = "normal"
NO_FINDING_ALLOWED: frozenset[str] = frozenset({"normal", "unchanged", "suboptimal study"})

# Report-level tags of the release (not findings): kept in the finding set, never mapped.
# ``exclude`` marks a report the release's labellers could not use; such a study keeps its
# report and gets every label missing.
TAGS: frozenset[str] = frozenset({"normal", "unchanged", "exclude", "suboptimal study"})
