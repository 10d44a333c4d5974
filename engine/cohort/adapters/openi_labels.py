"""IU X-ray / OpenI MeSH tags -> the 14 CheXpert labels: plain data, see docs/label-mapping.md.

A MeSH major tag is ``term/qualifier/...`` (``Opacity/lung/base/left/mild``,
``Cardiomegaly/borderline``); the Kaggle copy's ``Problems`` column lists the terms alone. A rule
``(term, qualifier, label)`` fires when the tag's term equals `term` (case-insensitive) and,
when `qualifier` is not empty, one of its qualifiers equals `qualifier`. A fired rule sets its
label to 1; labels no rule fires for stay missing. A report whose major tag is ``normal`` gets
No Finding = 1 and nothing else.
"""

from __future__ import annotations

NORMAL = "normal"

# (MeSH term, required qualifier or "", CheXpert label), lower case.
MESH_RULES: tuple[tuple[str, str, str], ...] = (
    ("mediastinum", "enlarged", "Enlarged Cardiomediastinum"),
    ("cardiomegaly", "", "Cardiomegaly"),
    ("cardiac shadow", "enlarged", "Cardiomegaly"),
    ("opacity", "", "Lung Opacity"),
    ("airspace disease", "", "Lung Opacity"),
    ("infiltrate", "", "Lung Opacity"),
    ("density", "", "Lung Opacity"),
    ("lung diseases, interstitial", "", "Lung Opacity"),
    ("pulmonary fibrosis", "", "Lung Opacity"),
    ("cicatrix", "lung", "Lung Opacity"),
    ("nodule", "", "Lung Lesion"),
    ("mass", "", "Lung Lesion"),
    ("cavitation", "", "Lung Lesion"),
    ("pulmonary edema", "", "Edema"),
    ("pulmonary congestion", "", "Edema"),
    ("heart failure", "", "Edema"),
    ("consolidation", "", "Consolidation"),
    ("pneumonia", "", "Pneumonia"),
    ("pulmonary atelectasis", "", "Atelectasis"),
    ("pneumothorax", "", "Pneumothorax"),
    ("hydropneumothorax", "", "Pneumothorax"),
    ("hemopneumothorax", "", "Pneumothorax"),
    ("pleural effusion", "", "Pleural Effusion"),
    ("hydropneumothorax", "", "Pleural Effusion"),
    ("hemothorax", "", "Pleural Effusion"),
    ("hemopneumothorax", "", "Pleural Effusion"),
    ("thickening", "pleura", "Pleural Other"),
    ("fractures, bone", "", "Fracture"),
    ("catheters, indwelling", "", "Support Devices"),
    ("implanted medical device", "", "Support Devices"),
    ("medical device", "", "Support Devices"),
    ("surgical instruments", "", "Support Devices"),
    ("tube, inserted", "", "Support Devices"),
    ("stents", "", "Support Devices"),
)

# Qualifier vocabularies for splitting a tag into term / location / laterality / severity.
LATERALITY: frozenset[str] = frozenset({"left", "right", "bilateral"})
SEVERITY: frozenset[str] = frozenset({"mild", "moderate", "severe", "small", "large", "borderline"})
# Descriptive qualifiers (shape, extent, state); any other qualifier is read as a location.
ATTRIBUTES: frozenset[str] = frozenset({
    "abnormal", "acute", "blunted", "chronic", "degenerative", "diffuse", "elevated", "enlarged",
    "flattened", "focal", "healed", "hyperdistention", "hypoinflation", "interstitial",
    "irregular", "multilobar", "multiple", "obscured", "patchy", "prominent", "reticular",
    "round", "scattered", "streaky", "tortuous",
})
