"""Radiology reports for phantom studies, and the labels a CheXbert-style labeller would give them.

A report describes only part of its study's truth (`findings.Finding`): each finding is mentioned
with a probability that grows with its size and importance, with or without its laterality, size
and location; some mentions are hedged ("may represent", "cannot be excluded") and some uncertain
mentions have no finding behind them at all; negations ("no pleural effusion") are written only
for findings that are truly absent. With a prior study the reader compares ("the right effusion
has increased", "interval removal of the endotracheal tube"). Normal studies get one of a few
near-identical templates, as in real archives.

Every sentence carries the labels it expresses, so the report's labels follow the CheXpert
mention rules exactly: per label, positive if any sentence is positive, else uncertain if any is
uncertain, else negative if any is negative, else not mentioned (None). ``No Finding`` is 1 when
no label other than Support Devices is positive or uncertain, else None. The labels cover the
FINDINGS and IMPRESSION sections (the parts a labeller is run on).

Two writing styles: site ``A`` (MIMIC-CXR: ``FINAL REPORT`` header, upper-case section labels
with a leading space, ``___`` redactions, wrapped lines) and site ``B`` (CheXpert Plus /
Stanford: ``NARRATIVE:``, ``CLINICAL HISTORY:``, numbered impressions, structured findings,
``SUMMARY:`` codes, and the FINDINGS section often absent).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np

from engine.core.labels import CHEXPERT_LABELS
from synthetic.cohort.courses import StudyPlan
from synthetic.cohort.findings import DEVICE_KINDS, SEVERITY_WORD, Finding

POS, NEG, UNC = 1.0, 0.0, -1.0


@dataclass(frozen=True)
class Report:
    """A written report.

    Attributes:
        text: The full report text as stored in the dataset.
        sections: Section name (lower case, e.g. ``findings``, ``impression``) -> its text,
            without the heading; absent sections are absent keys.
        labels: The 14 CheXpert labels of the report text: 1.0, 0.0, -1.0 or None.
    """

    text: str
    sections: dict[str, str]
    labels: dict[str, float | None]


@dataclass
class _Sentence:
    text: str
    labels: dict[str, float] = field(default_factory=dict)
    group: str = ""  # lines, lungs, pleura, heart, bones (for structured site-B findings)


_GROUP_OF_LABEL = {
    "Pneumothorax": "pleura",
    "Pleural Effusion": "pleura",
    "Pleural Other": "pleura",
    "Consolidation": "lungs",
    "Edema": "lungs",
    "Lung Opacity": "lungs",
    "Pneumonia": "lungs",
    "Cardiomegaly": "heart",
    "Enlarged Cardiomediastinum": "heart",
    "Fracture": "bones",
}
_STRUCTURED_HEADS = (
    ("lines", "LINES/TUBES"),
    ("lungs", "LUNGS"),
    ("pleura", "PLEURA"),
    ("heart", "HEART AND MEDIASTINUM"),
    ("bones", "BONES"),
)


def _group_of(sentence: _Sentence) -> str:
    if sentence.group:
        return sentence.group
    for label in sentence.labels:
        if label in _GROUP_OF_LABEL:
            return _GROUP_OF_LABEL[label]
    return "lines" if "removal" in sentence.text else "lungs"


@dataclass
class _Mention:
    """One finding as the reader writes it: a findings sentence and an impression phrase."""

    finding: _Sentence
    impression: _Sentence
    priority: int  # lower is more important for the impression
    group: str  # lines, lungs, pleura, heart, bones


def aggregate_labels(sentences: list[_Sentence]) -> dict[str, float | None]:
    """CheXpert aggregation over sentences (see the module docstring)."""
    out: dict[str, float | None] = {}
    for label in CHEXPERT_LABELS:
        if label == "No Finding":
            continue
        values = [s.labels[label] for s in sentences if label in s.labels]
        if POS in values:
            out[label] = POS
        elif UNC in values:
            out[label] = UNC
        elif NEG in values:
            out[label] = NEG
        else:
            out[label] = None
    abnormal = any(out[label] in (POS, UNC) for label in out if label != "Support Devices")
    out["No Finding"] = None if abnormal else POS
    return {label: out[label] for label in CHEXPERT_LABELS}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _tidy(text: str) -> str:
    return " ".join(text.split()).replace(" ,", ",").replace(" .", ".")


class _Reader:
    """One radiologist writing one report: a generator and a style."""

    def __init__(self, rng: np.random.Generator, site: str) -> None:
        self.rng = rng
        self.site = site

    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def pick(self, options, weights=None):
        if weights is None:
            return options[int(self.rng.integers(0, len(options)))]
        w = np.asarray(weights, dtype=np.float64)
        return options[int(self.rng.choice(len(options), p=w / w.sum()))]

    # words ------------------------------------------------------------------
    def side_word(self, side: str, show: bool) -> str:
        if not show or not side:
            return ""
        return side

    def location(self, side: str, zone: str, show_side: bool) -> str:
        s = self.side_word(side, show_side)
        if side == "bilateral":
            return (
                self.pick(["bibasilar", "bilateral basilar", "both lung bases"])
                if zone in ("base", "lower")
                else "bilateral"
            )
        if zone == "middle":
            return (
                self.pick(["right middle lobe", "right middle lobe", "right mid lung"])
                if show_side
                else "middle lobe"
            )
        if zone == "lingula":
            return self.pick(["lingula", "lingular", "left mid lung"]) if show_side else "lingula"
        if zone == "retrocardiac":
            return self.pick(["left retrocardiac", "retrocardiac"])
        if zone == "lower":
            return _tidy(
                self.pick([f"{s} lower lobe", f"{s} base", f"{s} lung base", f"{s} lower lung"])
            )
        if zone == "upper":
            return _tidy(self.pick([f"{s} upper lobe", f"{s} upper lung", f"{s} upper zone"]))
        if zone == "base":
            return _tidy(self.pick([f"{s} base", f"{s} basilar", f"{s} lung base"]))
        if zone == "apex":
            return _tidy(f"{s} apical")
        if zone == "lateral":
            return _tidy(f"{s} lateral")
        return _tidy(s)

    # devices ------------------------------------------------------------------
    def tip(self, zone: str) -> str:
        return {
            "svc": self.pick(["the mid SVC", "the SVC", "the superior vena cava", "the lower SVC"]),
            "cavoatrial": self.pick(
                ["the cavoatrial junction", "the cavoatrial junction", "the cavo-atrial junction"]
            ),
            "right_atrium": self.pick(
                ["the right atrium", "the proximal right atrium", "the right atrium"]
            ),
        }.get(zone, "the SVC")

    def device(self, f: Finding, prior: Finding | None, show_side: bool) -> _Mention:
        sd = {"Support Devices": POS}
        side = self.side_word(f.side, show_side)
        placed = prior is None and self.p(0.3)
        pre = "Interval placement of " if placed else ""
        k = f.kind
        if k == "ett":
            cm = f.detail[0]
            cm_s = f"{cm:g}"
            if cm < 2.0:
                text = self.pick(
                    [
                        f"Endotracheal tube tip is {cm_s} cm above the carina; recommend withdrawal by 2 cm.",
                        f"The endotracheal tube terminates low, {cm_s} cm above the carina.",
                    ]
                )
                imp = f"Low endotracheal tube, {cm_s} cm above the carina."
                prio = 1
            else:
                text = self.pick(
                    [
                        f"Endotracheal tube terminates {cm_s} cm above the carina.",
                        f"The ET tube tip is {cm_s} cm above the carina.",
                        "Endotracheal tube is in standard position.",
                        f"ETT in place with tip {cm_s} cm from the carina.",
                    ],
                    [3, 2, 2, 1],
                )
                if prior is not None and prior.detail != f.detail and self.p(0.6):
                    verb = "advanced" if prior.detail[0] > cm else "withdrawn"
                    text = f"The endotracheal tube has been {verb} and now terminates {cm_s} cm above the carina."
                imp = self.pick(
                    [
                        "Endotracheal tube in appropriate position.",
                        f"ETT {cm_s} cm above the carina.",
                    ]
                )
                prio = 5
            if placed:
                text = (
                    f"Interval placement of an endotracheal tube, tip {cm_s} cm above the carina."
                )
            return _Mention(_Sentence(text, sd), _Sentence(imp, sd), prio, "lines")
        if k == "enteric_tube":
            name = self.pick(
                ["enteric tube", "nasogastric tube", "orogastric tube", "feeding tube"],
                [3, 3, 1, 1],
            )
            if f.zone == "esophagus":
                text = f"The {name} tip is in the distal esophagus; recommend advancing by at least 10 cm."
                imp = f"{_cap(name)} tip in the distal esophagus, should be advanced."
                prio = 1
            elif f.zone == "duodenum":
                text = f"The {name} courses below the diaphragm with tip in the duodenum."
                imp = f"{_cap(name)} tip in the duodenum."
                prio = 6
            else:
                text = self.pick(
                    [
                        f"{pre}{name} courses below the diaphragm with tip in the stomach.",
                        f"{pre}{name} terminates in the stomach.",
                        f"{pre}{name} is seen coursing into the stomach, side port beyond the GE junction.",
                    ]
                )
                imp = f"{_cap(name)} in the stomach."
                prio = 6
            return _Mention(_Sentence(_cap(text), sd), _Sentence(imp, sd), prio, "lines")
        if k in ("central_line", "picc", "port"):
            tip = self.tip(f.zone)
            if k == "central_line":
                vein = f.detail[0] if f.detail else "internal jugular"
                name = self.pick(
                    [
                        f"{side} {vein} central venous catheter",
                        f"{side} {vein} line",
                        f"{side}-sided central line",
                    ]
                    if side
                    else ["central venous catheter", "central line"]
                )
            elif k == "picc":
                name = self.pick(
                    [f"{side} PICC", f"{side} upper extremity PICC line", f"{side}-sided PICC"]
                    if side
                    else ["PICC line", "PICC"]
                )
            else:
                name = self.pick(
                    [f"{side} chest wall port", f"{side}-sided Port-A-Cath", f"{side} chest port"]
                    if side
                    else ["chest port", "Port-A-Cath"]
                )
            name = _tidy(name)
            if prior is not None and prior.zone != f.zone and self.p(0.6):
                text = f"The {name} has been repositioned, now terminating in {tip}."
            else:
                text = self.pick(
                    [
                        f"{pre}{name} terminates in {tip}.",
                        f"{pre}{name} with tip in {tip}.",
                        f"{pre}{name} tip projects over {tip}.",
                    ]
                )
            prio = 3 if f.zone == "right_atrium" else 6
            imp = f"{_cap(name)} tip in {tip}."
            return _Mention(
                _Sentence(_cap(_tidy(text)), sd), _Sentence(_tidy(imp), sd), prio, "lines"
            )
        if k == "pacemaker":
            leads, icd = (f.detail + (2, False))[:2] if f.detail else (2, False)
            dev = "ICD" if icd and self.p(0.7) else "pacemaker"
            chambers = "dual-chamber " if leads == 2 and self.p(0.5) else ""
            lead_text = (
                "leads in the right atrium and right ventricle"
                if leads == 2
                else "a single lead in the right ventricle"
            )
            text = self.pick(
                [
                    f"{side}-sided {chambers}{dev} with {lead_text}.",
                    f"{side} chest wall {chambers}{dev} is unchanged, {lead_text}.",
                    f"{chambers}{dev} device in place with {lead_text}.",
                ]
                if side
                else [f"{chambers}{dev} with {lead_text}.", f"{chambers}{dev} device in place."]
            )
            return _Mention(
                _Sentence(_cap(_tidy(text)), sd),
                _Sentence(_cap(_tidy(f"{side} {dev} in place.")), sd),
                8,
                "lines",
            )
        if k == "sternotomy":
            text = self.pick(
                [
                    "Median sternotomy wires are intact.",
                    "The patient is status post median sternotomy.",
                    "Sternotomy wires are noted.",
                    "Intact median sternotomy wires and mediastinal clips.",
                ]
            )
            return _Mention(
                _Sentence(text, sd), _Sentence("Status post median sternotomy.", sd), 9, "lines"
            )
        if k == "chest_tube":
            where = "apex" if f.zone == "apex" else "base"
            text = self.pick(
                [
                    f"{pre}{side} chest tube with tip at the {side} {where}.",
                    f"{side}-sided chest tube in place, tip near the {where}.",
                    f"{pre}{side} pigtail catheter projects over the {side} {where}.",
                ]
            )
            return _Mention(
                _Sentence(_cap(_tidy(text)), sd),
                _Sentence(_cap(_tidy(f"{side} chest tube in place.")), sd),
                4,
                "lines",
            )
        raise ValueError(k)

    # findings -------------------------------------------------------------------
    def finding(
        self,
        f: Finding,
        prior: Finding | None,
        *,
        certain: bool,
        show_side: bool,
        show_size: bool,
        show_loc: bool,
    ) -> _Mention:
        k = f.kind
        side = self.side_word(f.side, show_side)
        size = SEVERITY_WORD.get(f.severity, "") if show_size else ""
        change = ""
        if prior is not None and prior.severity != f.severity and self.p(0.7):
            change = "increased" if f.severity > prior.severity else "decreased"
        elif prior is not None and self.p(0.5):
            change = "unchanged"

        if k == "effusion":
            if size == "small" and self.p(0.25):
                size = "trace" if self.p(0.4) else "small"
            lab = {"Pleural Effusion": POS if certain else UNC}
            noun = _tidy(f"{size} {side} pleural effusion")
            if not certain:
                text = self.pick(
                    [
                        f"Blunting of the {side} costophrenic angle may reflect a small pleural effusion.",
                        f"Possible small {side} pleural effusion.",
                        f"A small {side} pleural effusion cannot be excluded.",
                    ]
                )
                return _Mention(
                    _Sentence(_cap(_tidy(text)), lab),
                    _Sentence(_cap(_tidy(f"possible small {side} effusion.")), lab),
                    5,
                    "pleura",
                )
            if change == "unchanged":
                text = self.pick(
                    [f"Unchanged {noun}.", f"Stable {noun}.", f"The {noun} is unchanged."]
                )
            elif change:
                text = self.pick(
                    [
                        f"The {side} pleural effusion has {change}, now {SEVERITY_WORD[f.severity]}.",
                        f"Interval {'increase' if change == 'increased' else 'decrease'} in the {side} pleural effusion.",
                    ]
                )
            else:
                text = self.pick(
                    [
                        f"There is a {noun}.",
                        f"{_cap(noun)}.",
                        f"{_cap(noun)} is present.",
                        f"{_cap(noun)} with adjacent atelectasis."
                        if f.severity >= 2 and self.p(0.2)
                        else f"{_cap(noun)}.",
                    ]
                )
            imp = (
                noun
                if not change
                else (
                    f"{'increasing' if change == 'increased' else 'decreasing' if change == 'decreased' else 'stable'} {noun}"
                )
            )
            labels = dict(lab)
            if "atelectasis" in text:
                labels["Atelectasis"] = POS
            return _Mention(
                _Sentence(_cap(_tidy(text)), labels),
                _Sentence(_cap(_tidy(imp)) + ".", lab),
                3 if f.severity >= 2 else 5,
                "pleura",
            )

        if k == "pneumothorax":
            where = {"apex": "apical", "lateral": "lateral"}.get(f.zone, "") if show_loc else ""
            if f.severity == 1 and self.p(0.3):
                size = "tiny" if show_size else ""
            noun = _tidy(f"{size} {side} {where} pneumothorax")
            if not certain:
                lab = {"Pneumothorax": UNC}
                text = self.pick(
                    [
                        f"Subtle lucency at the {side} apex may represent a small pneumothorax.",
                        f"Possible tiny {side} apical pneumothorax.",
                        f"A small {side} pneumothorax cannot be excluded.",
                    ]
                )
                return _Mention(
                    _Sentence(_cap(_tidy(text)), lab),
                    _Sentence(_cap(_tidy(f"possible small {side} pneumothorax.")), lab),
                    2,
                    "pleura",
                )
            lab = {"Pneumothorax": POS}
            if change == "decreased":
                text = f"The {side} pneumothorax has decreased in size, now {size or 'small'}."
            elif change == "unchanged":
                text = f"Unchanged {noun}."
            else:
                text = self.pick(
                    [
                        f"There is a {noun}.",
                        f"{_cap(noun)}.",
                        f"{_cap(noun)}, with the pleural line visible along the {side} {'apex' if f.zone == 'apex' else 'lateral chest wall'}.",
                    ]
                )
            imp = self.pick([f"{noun}.", f"{noun}. No evidence of tension."])
            return _Mention(
                _Sentence(_cap(_tidy(text)), lab), _Sentence(_cap(_tidy(imp)), lab), 0, "pleura"
            )

        if k in ("consolidation", "pneumonia", "opacity"):
            loc = self.location(f.side, f.zone, show_side) if show_loc else _tidy(f"{side}")
            if k == "consolidation":
                lab = {"Consolidation": POS if certain else UNC}
                bronch = (
                    " with air bronchograms" if "bronchograms" in f.detail and self.p(0.6) else ""
                )
                if certain:
                    text = self.pick(
                        [
                            f"Consolidation in the {loc}{bronch}.",
                            f"Dense {loc} consolidation{bronch}.",
                            f"There is focal consolidation at the {loc}{bronch}.",
                        ]
                    )
                else:
                    text = self.pick(
                        [
                            f"Possible consolidation in the {loc}.",
                            f"Increased density at the {loc}, consolidation cannot be excluded.",
                        ]
                    )
                if change == "decreased" and certain:
                    text = f"Improving {loc} consolidation."
                imp_lab = dict(lab)
                if certain and self.p(0.45):
                    imp = f"{loc} consolidation, concerning for pneumonia."
                    imp_lab["Pneumonia"] = UNC
                else:
                    imp = f"{loc} consolidation." if certain else f"possible {loc} consolidation."
                return _Mention(
                    _Sentence(_cap(_tidy(text)), lab),
                    _Sentence(_cap(_tidy(imp)), imp_lab),
                    1,
                    "lungs",
                )
            if k == "pneumonia":
                if certain:
                    lab = {"Pneumonia": POS, "Lung Opacity": POS}
                    text = self.pick(
                        [
                            f"Airspace opacity in the {loc} compatible with pneumonia.",
                            f"Patchy opacities in the {loc} consistent with pneumonia.",
                            f"{_cap(loc)} opacity, consistent with pneumonia.",
                        ]
                    )
                    imp = self.pick(
                        [f"{loc} pneumonia.", f"findings consistent with {loc} pneumonia."]
                    )
                    if change == "decreased":
                        text = f"Improving {loc} opacity compatible with resolving pneumonia."
                        imp = f"improving {loc} pneumonia."
                    elif change == "increased":
                        text = f"Worsening {loc} opacity consistent with progressing pneumonia."
                        imp = f"worsening {loc} pneumonia."
                else:
                    lab = {"Pneumonia": UNC, "Lung Opacity": POS}
                    text = self.pick(
                        [
                            f"{_cap(loc)} opacity concerning for pneumonia.",
                            f"Patchy {loc} opacity, possibly early pneumonia.",
                            f"Opacity at the {loc} may represent atelectasis, though infection cannot be excluded.",
                        ]
                    )
                    if "atelectasis" in text:
                        lab["Atelectasis"] = UNC
                    imp = self.pick(
                        [
                            f"{loc} opacity, concerning for pneumonia.",
                            f"pneumonia cannot be excluded at the {loc}.",
                        ]
                    )
                return _Mention(
                    _Sentence(_cap(_tidy(text)), lab), _Sentence(_cap(_tidy(imp)), lab), 1, "lungs"
                )
            lab = {"Lung Opacity": POS}
            text = self.pick(
                [
                    f"Patchy opacity in the {loc}.",
                    f"Hazy {loc} opacity.",
                    f"Ill-defined opacity at the {loc}.",
                ]
            )
            if not certain:
                text = f"Hazy {loc} opacity may reflect atelectasis or aspiration."
                lab = {"Lung Opacity": POS, "Atelectasis": UNC}
            return _Mention(
                _Sentence(_cap(_tidy(text)), lab),
                _Sentence(_cap(_tidy(f"{loc} opacity.")), lab),
                3,
                "lungs",
            )

        if k == "atelectasis":
            loc = self.location(f.side, f.zone, show_side) if show_loc else ""
            if f.zone == "retrocardiac":
                lab = {
                    "Lung Opacity": POS,
                    "Atelectasis": UNC if not certain or self.p(0.5) else POS,
                }
                text = (
                    self.pick(
                        [
                            "Left retrocardiac opacity, likely atelectasis.",
                            "Retrocardiac opacity likely reflects atelectasis.",
                        ]
                    )
                    if lab["Atelectasis"] == UNC
                    else "Left retrocardiac atelectasis."
                )
                return _Mention(_Sentence(text, lab), _Sentence(text, lab), 6, "lungs")
            kind = (
                self.pick(["", "linear ", "plate-like ", "subsegmental "])
                if f.severity == 1
                else self.pick(["", "", "moderate "])
            )
            if certain:
                lab = {"Atelectasis": POS}
                text = self.pick(
                    [
                        f"{kind}{loc} atelectasis.",
                        f"{kind}atelectasis at the {loc}.",
                        f"Streaky {loc} opacities likely reflect atelectasis.",
                    ]
                )
                if "likely" in text:
                    lab = {"Atelectasis": UNC, "Lung Opacity": POS}
            else:
                lab = {"Atelectasis": UNC}
                text = self.pick(
                    [
                        f"Minimal {loc} atelectasis is possible.",
                        f"{loc} opacity may represent atelectasis.",
                    ]
                )
                if "opacity" in text:
                    lab["Lung Opacity"] = POS
            if f.severity >= 2 and self.p(0.4):
                text = text[:-1] + " with associated volume loss."
            return _Mention(
                _Sentence(_cap(_tidy(text)), lab), _Sentence(_cap(_tidy(text)), lab), 6, "lungs"
            )

        if k == "edema":
            if f.severity == 1:
                if self.p(0.5):
                    lab = {"Edema": UNC}
                    text = self.pick(
                        [
                            "Mild pulmonary vascular congestion.",
                            "Mild vascular engorgement, possibly early edema.",
                        ]
                    )
                else:
                    lab = {"Edema": POS}
                    text = self.pick(
                        ["Mild interstitial pulmonary edema.", "Mild pulmonary edema."]
                    )
            else:
                lab = {"Edema": POS if certain else UNC}
                word = "moderate" if f.severity == 2 else self.pick(["severe", "marked"])
                if certain:
                    text = self.pick(
                        [
                            f"{_cap(word)} pulmonary edema.",
                            f"Perihilar haziness and vascular indistinctness consistent with {word} pulmonary edema.",
                            f"Bilateral perihilar opacities consistent with {word} pulmonary edema.",
                        ]
                    )
                    if "opacities" in text:
                        lab["Lung Opacity"] = POS
                else:
                    text = "Perihilar haziness may represent pulmonary edema."
            if change and change != "unchanged" and lab["Edema"] == POS:
                text = (
                    f"Pulmonary edema has {'worsened' if change == 'increased' else 'improved'}. "
                    + text
                )
            return _Mention(
                _Sentence(_tidy(text), lab), _Sentence(_tidy(text.split(". ")[-1]), lab), 2, "lungs"
            )

        if k == "cardiomegaly":
            lab = {"Cardiomegaly": POS}
            if f.severity == 1:
                opts = [
                    "Mild cardiomegaly.",
                    "The heart is mildly enlarged.",
                    "Heart size is mildly enlarged.",
                ]
                if not certain:
                    opts = ["Heart size is borderline enlarged.", "Possible mild cardiomegaly."]
                    lab = {"Cardiomegaly": UNC}
            elif f.severity == 2:
                opts = [
                    "Moderate cardiomegaly.",
                    "The heart is moderately enlarged.",
                    "Moderate enlargement of the cardiac silhouette.",
                ]
            else:
                opts = [
                    "Severe cardiomegaly.",
                    "The heart is markedly enlarged.",
                    "Massive enlargement of the cardiac silhouette.",
                ]
            text = self.pick(opts)
            if change == "unchanged" and certain:
                text = (
                    "Stable " + text[0].lower() + text[1:]
                    if text.startswith(("Mild", "Moderate", "Severe"))
                    else text
                )
            return _Mention(_Sentence(text, lab), _Sentence(text, lab), 7, "heart")

        if k == "widened_mediastinum":
            if certain:
                lab = {"Enlarged Cardiomediastinum": POS}
                text = self.pick(
                    [
                        "The mediastinum is widened.",
                        "Widened mediastinum.",
                        "Mediastinal widening, which may reflect lymphadenopathy.",
                        "The cardiomediastinal silhouette is enlarged.",
                    ]
                )
            else:
                lab = {"Enlarged Cardiomediastinum": UNC}
                text = "Apparent widening of the mediastinum may be due to technique."
            return _Mention(_Sentence(text, lab), _Sentence(text, lab), 4, "heart")

        if k in ("nodule", "mass"):
            x, y, size_cm = f.detail[:3]
            loc = self.location(f.side, f.zone, show_side) if show_loc else ""
            sz = f"{size_cm:.1f} cm " if show_size else ""
            lab = {"Lung Lesion": POS if certain else UNC}
            if k == "mass":
                text = self.pick(
                    [
                        f"{sz}mass in the {loc}.",
                        f"Lobulated {sz}{loc} mass.",
                        f"There is a {sz}{loc} mass, concerning for malignancy.",
                    ]
                )
                if change == "increased" or (prior is not None and prior.detail[2] < size_cm - 0.3):
                    text = f"The {loc} mass has increased in size, now {size_cm:.1f} cm."
                imp = f"{loc} mass."
                prio = 1
            else:
                if certain:
                    text = self.pick(
                        [
                            f"{sz}nodule in the {loc}.",
                            f"A {sz}nodular opacity projects over the {loc}.",
                            f"Round {sz}{loc} nodule.",
                        ]
                    )
                    if "opacity" in text:
                        lab["Lung Opacity"] = POS
                    if prior is not None and self.p(0.5):
                        text = f"Unchanged {sz}{loc} nodule."
                else:
                    text = self.pick(
                        [
                            f"Possible {loc} nodule; recommend CT for further evaluation.",
                            f"A {loc} nodular density may represent a nipple shadow; a nodule cannot be excluded.",
                        ]
                    )
                imp = f"{loc} nodule." if certain else f"possible {loc} nodule, CT recommended."
                prio = 4
            return _Mention(
                _Sentence(_cap(_tidy(text)), lab), _Sentence(_cap(_tidy(imp)), lab), prio, "lungs"
            )

        if k in ("pleural_thickening", "pleural_plaques"):
            lab = {"Pleural Other": POS if certain else UNC}
            where = "apical" if f.zone == "apex" else "lateral"
            if k == "pleural_plaques":
                text = self.pick(
                    [
                        f"{'Bilateral' if f.side == 'bilateral' else _cap(side)} calcified pleural plaques, consistent with prior asbestos exposure.",
                        f"Calcified pleural plaques {'bilaterally' if f.side == 'bilateral' else 'on the ' + (side or 'one') + ' side'}.",
                    ]
                )
            elif certain:
                text = self.pick(
                    [
                        f"{side} {where} pleural thickening.",
                        f"Pleural thickening along the {side} {where} chest wall.",
                    ]
                )
            else:
                text = f"Blunting of the {side} costophrenic angle may reflect pleural thickening."
            return _Mention(
                _Sentence(_cap(_tidy(text)), lab), _Sentence(_cap(_tidy(text)), lab), 8, "pleura"
            )

        if k == "rib_fracture":
            rib, _s, healed = f.detail
            ordinal = {1: "1st", 2: "2nd", 3: "3rd"}.get(rib, f"{rib}th")
            where = f.zone if show_loc else ""
            lab = {"Fracture": POS if certain else UNC}
            if healed:
                lab = {"Fracture": POS}
                text = self.pick(
                    [
                        f"Old healed {side} rib fracture.",
                        f"Healed {side} {ordinal} rib fracture deformity.",
                        f"Chronic-appearing {side} {where} rib fracture.",
                    ]
                )
                prio = 9
            elif certain:
                text = self.pick(
                    [
                        f"Acute fracture of the {side} {where} {ordinal} rib.",
                        f"Displaced fracture of the {side} {ordinal} rib.",
                        f"{side} {ordinal} rib fracture.",
                    ]
                )
                prio = 2
            else:
                text = f"Possible nondisplaced fracture of the {side} {ordinal} rib."
                prio = 3
            return _Mention(
                _Sentence(_cap(_tidy(text)), lab), _Sentence(_cap(_tidy(text)), lab), prio, "bones"
            )
        raise ValueError(k)


# --------------------------------------------------------------------------- policy

_P_MENTION = {
    "ett": 0.9,
    "enteric_tube": 0.8,
    "central_line": 0.85,
    "picc": 0.8,
    "port": 0.7,
    "pacemaker": 0.8,
    "sternotomy": 0.55,
    "chest_tube": 0.9,
    "pneumothorax": 0.97,
    "consolidation": 0.9,
    "pneumonia": 0.92,
    "opacity": 0.8,
    "atelectasis": 0.7,
    "edema": 0.88,
    "cardiomegaly": 0.8,
    "widened_mediastinum": 0.75,
    "nodule": 0.7,
    "mass": 0.95,
    "pleural_thickening": 0.55,
    "pleural_plaques": 0.7,
    "rib_fracture": 0.75,
    "effusion": 0.85,
}
_P_HEDGE = {
    "pneumothorax": 0.12,
    "consolidation": 0.15,
    "pneumonia": 0.45,
    "opacity": 0.15,
    "atelectasis": 0.25,
    "edema": 0.12,
    "cardiomegaly": 0.15,
    "widened_mediastinum": 0.25,
    "nodule": 0.2,
    "mass": 0.0,
    "pleural_thickening": 0.25,
    "pleural_plaques": 0.0,
    "rib_fracture": 0.15,
    "effusion": 0.2,
}
_DEVICE_NAMES = {
    "ett": "endotracheal tube",
    "enteric_tube": "enteric tube",
    "central_line": "central venous catheter",
    "picc": "PICC line",
    "port": "chest port",
    "pacemaker": "pacemaker",
    "chest_tube": "chest tube",
}


def _mention_probability(f: Finding) -> float:
    p = _P_MENTION[f.kind]
    if f.kind in ("effusion", "atelectasis", "cardiomegaly", "nodule", "edema"):
        p = min(0.98, p + 0.1 * (f.severity - 1))
    if f.kind == "rib_fracture" and f.detail[2]:
        p = 0.45
    return p


# normal-study sentences: (text, labels); sentences that negate a truly present finding are dropped
_NORMAL_FINDINGS_A = (
    (
        3,
        ("The lungs are clear without focal consolidation.", {"Consolidation": NEG}),
        (
            "No pleural effusion or pneumothorax is seen.",
            {"Pleural Effusion": NEG, "Pneumothorax": NEG},
        ),
        (
            "The cardiac and mediastinal silhouettes are unremarkable.",
            {"Cardiomegaly": NEG, "Enlarged Cardiomediastinum": NEG},
        ),
    ),
    (
        3,
        ("{views} of the chest provided.", {}),
        (
            "There is no focal consolidation, effusion, or pneumothorax.",
            {"Consolidation": NEG, "Pleural Effusion": NEG, "Pneumothorax": NEG},
        ),
        ("The cardiomediastinal silhouette is normal.", {"Enlarged Cardiomediastinum": NEG}),
        ("Imaged osseous structures are intact.", {"Fracture": NEG}),
        ("No free air below the right hemidiaphragm is seen.", {}),
    ),
    (
        2,
        ("Heart size is normal.", {"Cardiomegaly": NEG}),
        ("The mediastinal and hilar contours are normal.", {"Enlarged Cardiomediastinum": NEG}),
        ("The pulmonary vasculature is normal.", {"Edema": NEG}),
        ("Lungs are clear.", {}),
        (
            "No pleural effusion or pneumothorax is seen.",
            {"Pleural Effusion": NEG, "Pneumothorax": NEG},
        ),
        ("There are no acute osseous abnormalities.", {"Fracture": NEG}),
    ),
    (
        1,
        ("Lungs are clear.", {}),
        ("Heart size normal.", {"Cardiomegaly": NEG}),
        ("No effusion or pneumothorax.", {"Pleural Effusion": NEG, "Pneumothorax": NEG}),
    ),
)
_NORMAL_IMPRESSION_A = (
    (9, "No acute cardiopulmonary process.", {}),
    (5, "No acute intrathoracic process.", {}),
    (3, "No acute cardiopulmonary abnormality.", {}),
    (1, "Normal chest radiograph.", {}),
    (1, "No evidence of pneumonia.", {"Pneumonia": NEG}),
)
_NORMAL_FINDINGS_B = (
    (
        3,
        ("The lungs are clear.", {}),
        ("No pleural effusion or pneumothorax.", {"Pleural Effusion": NEG, "Pneumothorax": NEG}),
        (
            "The cardiomediastinal silhouette is within normal limits.",
            {"Enlarged Cardiomediastinum": NEG},
        ),
    ),
    (
        2,
        ("LINES/TUBES: None.", {}),
        ("LUNGS: Clear.", {}),
        ("PLEURA: No effusion or pneumothorax.", {"Pleural Effusion": NEG, "Pneumothorax": NEG}),
        (
            "HEART AND MEDIASTINUM: Normal cardiac size and mediastinal contours.",
            {"Cardiomegaly": NEG, "Enlarged Cardiomediastinum": NEG},
        ),
        ("BONES: Intact.", {"Fracture": NEG}),
    ),
)
_NORMAL_IMPRESSION_B = (
    (6, "No acute cardiopulmonary abnormality.", {}),
    (3, "No radiographic evidence of acute cardiopulmonary disease.", {}),
    (2, "Normal radiographs of the chest.", {}),
    (1, "Clear lungs. No evidence of pneumonia.", {"Pneumonia": NEG}),
)
_NEGATIVES = (  # (probability, sentence, labels) for abnormal studies, if truly absent
    (0.55, "No pneumothorax.", {"Pneumothorax": NEG}),
    (0.45, "No pleural effusion.", {"Pleural Effusion": NEG}),
    (0.35, "No focal consolidation.", {"Consolidation": NEG}),
    (0.35, "Heart size is normal.", {"Cardiomegaly": NEG}),
    (0.2, "No pulmonary edema.", {"Edema": NEG}),
    (0.15, "No acute osseous abnormality.", {"Fracture": NEG}),
)


def _truth_labels(findings: tuple[Finding, ...]) -> set[str]:
    labels = {f.label for f in findings}
    if any(f.kind == "pneumonia" for f in findings):
        labels |= {"Lung Opacity", "Consolidation"}
    if any(f.kind in ("consolidation", "edema", "atelectasis", "nodule", "mass") for f in findings):
        labels.add("Lung Opacity")
    return labels


def _compatible(labels: dict[str, float], present: set[str]) -> bool:
    return not any(v == NEG and label in present for label, v in labels.items())


def _wrap_mimic(text: str) -> str:
    return "\n".join(" " + line for line in textwrap.wrap(text, 76)) if text else ""


def write_report(
    study: StudyPlan,
    prior: StudyPlan | None,
    *,
    sex: str,
    age: int,
    site: str,
    rng: np.random.Generator,
) -> Report:
    """Write the report of ``study`` (with ``prior`` the patient's previous study, if any)."""
    reader = _Reader(rng, site)
    truth = study.findings
    present = _truth_labels(truth)
    prior_by_key = {f.key: f for f in prior.findings} if prior is not None else {}
    mentions: list[_Mention] = []

    for f in truth:
        if (
            f.kind == "effusion"
            and f.side == "left"
            and any(g.kind == "effusion" and g.side == "right" for g in truth)
        ):
            continue  # both sides are described together below
        if not reader.p(_mention_probability(f)):
            continue
        show_side = reader.p(0.85)
        if f.kind in DEVICE_KINDS:
            mentions.append(reader.device(f, prior_by_key.get(f.key), show_side))
            continue
        certain = not reader.p(_P_HEDGE[f.kind])
        if (
            f.kind == "effusion"
            and f.side == "right"
            and any(g.kind == "effusion" and g.side == "left" for g in truth)
        ):
            mentions.append(_bilateral_effusions(reader, truth, certain))
            continue
        mentions.append(
            reader.finding(
                f,
                prior_by_key.get(f.key),
                certain=certain,
                show_side=show_side,
                show_size=reader.p(0.7),
                show_loc=reader.p(0.8),
            )
        )

    # comparisons: what went away since the prior
    extra: list[_Sentence] = []
    if prior is not None:
        now = {f.key for f in truth}
        for f in prior.findings:
            if f.key in now or not reader.p(0.5):
                continue
            if f.kind in _DEVICE_NAMES:
                extra.append(_Sentence(f"Interval removal of the {_DEVICE_NAMES[f.kind]}."))
            elif f.kind in ("effusion", "pneumothorax", "pneumonia", "consolidation", "edema"):
                what = {
                    "effusion": "pleural effusion",
                    "pneumothorax": "pneumothorax",
                    "pneumonia": "opacity",
                    "consolidation": "consolidation",
                    "edema": "pulmonary edema",
                }[f.kind]
                label = {
                    "effusion": "Pleural Effusion",
                    "pneumothorax": "Pneumothorax",
                    "pneumonia": "Lung Opacity",
                    "consolidation": "Consolidation",
                    "edema": "Edema",
                }[f.kind]
                side = f.side if f.side in ("right", "left") else ""
                extra.append(
                    _Sentence(
                        _tidy(f"Interval resolution of the previously seen {side} {what}."),
                        {label: NEG},
                    )
                )

    # reader uncertainty with nothing behind it
    if not present & {"Pneumonia", "Consolidation", "Lung Opacity", "Atelectasis"} and reader.p(
        0.02
    ):
        side = reader.pick(["right", "left"])
        lab = {"Lung Opacity": POS, "Atelectasis": UNC, "Pneumonia": UNC}
        s = _Sentence(
            f"Streaky opacity at the {side} base, likely atelectasis; early pneumonia cannot be excluded.",
            lab,
        )
        mentions.append(
            _Mention(
                s,
                _Sentence(f"Possible early pneumonia at the {side} base.", {"Pneumonia": UNC}),
                3,
                "lungs",
            )
        )
    elif "Pleural Effusion" not in present and reader.p(0.01):
        side = reader.pick(["right", "left"])
        s = _Sentence(f"Possible trace {side} pleural effusion.", {"Pleural Effusion": UNC})
        mentions.append(_Mention(s, s, 6, "pleura"))

    abnormal = [m for m in mentions if m.group != "lines"] + extra
    devices = [m for m in mentions if m.group == "lines"]
    findings_sents: list[_Sentence] = []
    impression_sents: list[_Sentence] = []
    views = (
        "PA and lateral views"
        if study.lateral
        else ("Portable AP view" if study.view == "AP" else "PA view")
    )

    # instance detail the image shows and no label carries: depth of inspiration, projection
    volume = _volume_sentence(reader, study)
    if not abnormal:
        # normal: near-identical templates (+ devices, if any were mentioned)
        table = _NORMAL_FINDINGS_A if site == "A" else _NORMAL_FINDINGS_B
        template = reader.pick([t[1:] for t in table], [t[0] for t in table])
        findings_sents += [m.finding for m in devices]
        for text, labels in template:
            if text.startswith("LINES/TUBES") and devices:
                continue
            if _compatible(labels, present):
                findings_sents.append(_Sentence(text.format(views=views), dict(labels)))
        if volume is not None:
            findings_sents.insert(min(1, len(findings_sents)), volume)
        imp_table = _NORMAL_IMPRESSION_A if site == "A" else _NORMAL_IMPRESSION_B
        w, text, labels = reader.pick(list(imp_table), [t[0] for t in imp_table])
        if _compatible(labels, present):
            impression_sents.append(_Sentence(text, dict(labels)))
        else:
            impression_sents.append(_Sentence("No acute cardiopulmonary process."))
        if devices and reader.p(0.5):
            impression_sents.append(reader.pick([m.impression for m in devices]))
    else:
        order = {"lines": 0, "lungs": 1, "pleura": 2, "heart": 3, "bones": 4}
        body = sorted(mentions, key=lambda m: order[m.group])
        if site == "A" and reader.p(0.3):
            findings_sents.append(_Sentence(f"{views} of the chest provided."))
        for m in body:
            m.finding.group = m.group
        if volume is not None:
            findings_sents.append(volume)
        findings_sents += [m.finding for m in body] + extra
        for prob, text, labels in _NEGATIVES:
            if (
                _compatible(labels, present)
                and not any(set(labels) & set(s.labels) for s in findings_sents)
                and reader.p(prob)
            ):
                findings_sents.append(_Sentence(text, dict(labels)))
        ranked = sorted([m for m in mentions], key=lambda m: m.priority)
        k = int(reader.pick([1, 2, 3, 4], [3, 4, 3, 1]))
        top = [m for m in ranked if m.group != "lines" or m.priority <= 3][:k]
        dev_top = [m for m in ranked if m.group == "lines" and m.priority > 3]
        if dev_top and reader.p(0.45):
            top.append(
                dev_top[0]
                if reader.p(0.6)
                else _Mention(
                    _Sentence(""),
                    _Sentence(
                        reader.pick(
                            ["Lines and tubes in standard position.", "Support devices as above."]
                        ),
                        {"Support Devices": POS},
                    ),
                    9,
                    "lines",
                )
            )
        if all(m.priority >= 7 for m in top if m.group != "lines"):
            impression_sents.append(_Sentence("No acute cardiopulmonary process."))
        impression_sents += [m.impression for m in top]
        if not top and extra:
            impression_sents += extra[:1]

    return _assemble(
        reader,
        study,
        prior,
        sex=sex,
        age=age,
        site=site,
        findings=findings_sents,
        impression=impression_sents,
    )


def _volume_sentence(reader: _Reader, study: StudyPlan) -> _Sentence | None:
    """Lung volumes and projection as the reader describes them (no label), or None.

    Shallow and deep inspiration are drawn (`anatomy.Pose.inspiration`), and so is the portable
    AP projection, so these words are detail both the image and the report carry.
    """
    if study.inspiration < -0.35 and reader.p(0.75):
        return _Sentence(
            reader.pick(
                [
                    "Low lung volumes.",
                    "Lung volumes are low.",
                    "Low lung volumes with bronchovascular crowding.",
                ]
            )
        )
    if study.inspiration > 0.55 and reader.p(0.6):
        return _Sentence(
            reader.pick(
                [
                    "The lungs are well expanded.",
                    "Lungs are well inflated.",
                    "The lungs are hyperexpanded.",
                ]
            )
        )
    if study.view == "AP" and reader.p(0.5):
        return _Sentence(
            "Supine portable AP view."
            if study.supine
            else reader.pick(["Portable upright AP view.", "Single portable AP view."])
        )
    return None


def _bilateral_effusions(reader: _Reader, truth: tuple[Finding, ...], certain: bool) -> _Mention:
    sev = {f.side: f.severity for f in truth if f.kind == "effusion"}
    lab = {"Pleural Effusion": POS if certain else UNC}
    if not certain:
        s = _Sentence("Possible small bilateral pleural effusions.", lab)
        return _Mention(s, s, 5, "pleura")
    if sev["right"] == sev["left"]:
        text = reader.pick(
            [
                f"{_cap(SEVERITY_WORD[sev['right']])} bilateral pleural effusions.",
                "Bilateral pleural effusions.",
                f"{_cap(SEVERITY_WORD[sev['right']])} bilateral effusions.",
            ]
        )
    else:
        big = "right" if sev["right"] > sev["left"] else "left"
        text = reader.pick(
            [
                f"Bilateral pleural effusions, larger on the {big}.",
                f"{_cap(SEVERITY_WORD[sev['right']])} right and {SEVERITY_WORD[sev['left']]} left pleural effusions.",
            ]
        )
    s = _Sentence(text, lab)
    return _Mention(s, _Sentence(_cap(text), lab), 3, "pleura")


def _assemble(
    reader: _Reader,
    study: StudyPlan,
    prior: StudyPlan | None,
    *,
    sex: str,
    age: int,
    site: str,
    findings: list[_Sentence],
    impression: list[_Sentence],
) -> Report:
    if site == "B":
        return _assemble_b(reader, study, prior, sex, age, findings, impression)
    return _assemble_a(reader, study, prior, sex, findings, impression)


def _text(sentences: list[_Sentence]) -> str:
    return _tidy(" ".join(s.text for s in sentences if s.text))


def _assemble_a(reader, study, prior, sex, findings, impression) -> Report:
    find_text, imp_text = _text(findings), _text(impression)
    woman = sex == "F"
    who = reader.pick(
        [
            f"___ year old {'woman' if woman else 'man'}",
            f"___{'F' if woman else 'M'}",
            f"___-year-old {'female' if woman else 'male'}",
        ]
    )
    indication = reader.pick(
        [
            f"{who} with {study.indication}",
            f"{who} with {study.indication}  // ?{study.indication}",
            f"History: {who} with {study.indication}",
        ],
        [4, 1, 1],
    )
    if study.view == "AP":
        exam = "CHEST (PORTABLE AP)"
        technique = reader.pick(
            [
                "Portable AP chest radiograph.",
                "Single frontal view of the chest.",
                "AP portable upright view of the chest."
                if not study.supine
                else "Supine AP view of the chest.",
            ]
        )
    else:
        exam = "CHEST (PA AND LAT)" if study.lateral else "CHEST (PA)"
        technique = "Chest PA and lateral" if study.lateral else "Chest PA"
    comparison = (
        reader.pick(["___", "___.", "Chest radiograph from ___", "Prior study from ___."])
        if prior is not None
        else reader.pick(["None.", "None available.", "None"])
    )
    sections = {
        "examination": exam,
        "indication": indication,
        "technique": technique,
        "comparison": comparison,
    }
    include_findings = bool(find_text) and reader.p(0.9)
    include_impression = bool(imp_text) and (reader.p(0.95) or not include_findings)
    if not include_findings and not include_impression:
        include_findings = True
    written: list[_Sentence] = []
    if include_findings:
        sections["findings"] = find_text
        written += findings
    if include_impression:
        sections["impression"] = imp_text
        written += impression
    lines = ["                                 FINAL REPORT"]
    for key, label in (
        ("examination", "EXAMINATION"),
        ("indication", "INDICATION"),
        ("technique", "TECHNIQUE"),
        ("comparison", "COMPARISON"),
    ):
        lines += [f" {label}:  {sections[key]}", " "]
    for key, label in (("findings", "FINDINGS"), ("impression", "IMPRESSION")):
        if key in sections:
            lines += [f" {label}: ", " ", _wrap_mimic(sections[key]), " "]
    text = "\n".join(lines).rstrip() + "\n"
    # the labeller sees only what was written
    return Report(text=text, sections=sections, labels=aggregate_labels(written))


def _assemble_b(reader, study, prior, sex, age, findings, impression) -> Report:
    find_text = _text(findings)
    if find_text and not find_text.startswith("LINES/TUBES") and reader.p(0.5):
        # Stanford-style structured findings: one line per organ system
        parts = []
        for group, head in _STRUCTURED_HEADS:
            text = _text([s for s in findings if _group_of(s) == group])
            if text:
                parts.append(f"{head}: {text}")
            elif group in ("lines", "bones") and reader.p(0.5):
                parts.append(f"{head}: {'None.' if group == 'lines' else 'Unremarkable.'}")
        find_text = "\n".join(parts)
    numbered = [s.text for s in impression if s.text]
    if len(numbered) > 1 or reader.p(0.7):
        imp_text = "\n".join(f"{i}. {t}" for i, t in enumerate(numbered, 1))
    else:
        imp_text = " ".join(numbered)
    gender = "female" if sex == "F" else "male"
    if study.view == "AP":
        narrative = reader.pick(
            ["PORTABLE CHEST, 1 VIEW", "XR CHEST 1 VIEW AP PORTABLE", "CHEST, SINGLE VIEW PORTABLE"]
        )
    else:
        narrative = "XR CHEST 2 VIEWS PA AND LATERAL" if study.lateral else "XR CHEST 1 VIEW PA"
    sections: dict[str, str] = {"narrative": narrative}
    history_key = "clinical_history" if reader.p(0.6) else "history"
    sections[history_key] = f"{age}-year-old {gender} with {study.indication}."
    sections["comparison"] = (
        reader.pick(
            [
                "Prior chest radiograph.",
                "Chest radiograph from prior visit.",
                "Multiple prior radiographs.",
            ]
        )
        if prior is not None
        else reader.pick(["None.", "No prior studies available."])
    )
    if reader.p(0.4):
        sections["technique"] = (
            "Single portable AP view of the chest."
            if study.view == "AP"
            else (
                "PA and lateral views of the chest."
                if study.lateral
                else "Single PA view of the chest."
            )
        )
    if reader.p(0.1):
        sections["procedure_comments"] = (
            "Exam performed at bedside." if study.view == "AP" else "Exam performed in department."
        )
    # CheXpert Plus is impression-heavy: most reports have no FINDINGS section
    written = list(impression)
    if find_text and reader.p(0.45):
        sections["findings"] = find_text
        written += findings
    sections["impression"] = imp_text
    labels = aggregate_labels(written)
    if reader.p(0.5):
        sections["end_of_impression"] = (
            "I have personally reviewed the images for this examination and agreed with the report transcribed above."
        )
    normal = labels["No Finding"] == POS
    sections["summary"] = reader.pick(
        ["1-NORMAL"]
        if normal
        else [
            "2-ABNORMAL, NOT IMPORTANT",
            "3-ABNORMAL, PREVIOUSLY REPORTED",
            "4-POSSIBLE SIGNIFICANT ABNORMALITY",
        ]
    )
    heads = (
        ("narrative", "NARRATIVE"),
        ("clinical_history", "CLINICAL HISTORY"),
        ("history", "HISTORY"),
        ("comparison", "COMPARISON"),
        ("technique", "TECHNIQUE"),
        ("procedure_comments", "PROCEDURE COMMENTS"),
        ("findings", "FINDINGS"),
        ("impression", "IMPRESSION"),
        ("end_of_impression", "END OF IMPRESSION"),
        ("summary", "SUMMARY"),
    )
    parts = []
    for key, head in heads:
        if key in sections:
            sep = "\n" if key in ("narrative", "findings", "impression", "summary") else " "
            parts.append(f"{head}:{sep}{sections[key]}")
    return Report(text="\n\n".join(parts) + "\n", sections=sections, labels=labels)
