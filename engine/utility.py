"""Utility and memorisation measures for retrained heads (docs/dp.md).

* `probe_auroc`: the 14-label linear probe. One logistic regression per label, fit on the
  train-split image embeddings and scored on the evaluation split; macro AUROC over the labels
  whose AUROC is computable, plus every label's AUROC. Applied to projected embeddings it is the
  utility of a set of heads; applied to the frozen backbone features it is the sanity line, which
  must not move with epsilon (stored with ``heads="backbone"`` by convention).
* `membership_signal`: how well the true-pair similarity separates training pairs (members) from
  held-out pairs (non-members): AUROC and TPR at 1% FPR of the similarity used as a membership
  score. The gap is memorisation, the part DP actually bounds.

Label policy of the probe (CheXpert values 1 / 0 / -1 / NaN): positive = 1; negative = 0 *or
missing* (a report that does not mention a finding is read as negative for it, the usual CheXpert
convention); uncertain (-1) rows are left out of that label's fit and score (they are neither, and
mapping them either way would bias the AUROC). A label counts in the macro only when both classes
are present among its train rows and among its evaluation rows; otherwise its AUROC is NaN.

Features are L2-normalised (the embedding space the attack sees), then standardised with the
train split's mean and deviation so one fixed regularisation strength suits every model. The
strength ``C`` and ``max_iter`` are fixed, not tuned on the evaluation split.

sklearn is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.core.labels import CHEXPERT_LABELS

log = logging.getLogger(__name__)

PROBE_C = 0.1
PROBE_MAX_ITER = 1000


@dataclass(frozen=True)
class ProbeResult:
    """Linear-probe AUROCs.

    Attributes:
        macro_auroc: Mean AUROC over `labels_used` (NaN when none is usable).
        per_label: AUROC of every label, NaN where not computable.
        labels_used: Labels in the macro (both classes in train and in eval).
        n_train: Rows each label was fit on (uncertain rows excluded).
        n_eval: Rows each label was scored on.
    """

    macro_auroc: float
    per_label: dict[str, float]
    labels_used: tuple[str, ...]
    n_train: dict[str, int]
    n_eval: dict[str, int]

    def rows(self) -> list[dict]:
        """``utility`` table rows (label, auroc): the 14 labels, then ``macro``."""
        out = [dict(label=name, auroc=value) for name, value in self.per_label.items()]
        out.append(dict(label="macro", auroc=self.macro_auroc))
        return out


@dataclass(frozen=True)
class MembershipResult:
    """Members vs non-members by true-pair similarity.

    Attributes:
        auroc: AUROC of the similarity as a membership score (0.5 = no signal).
        tpr_at_fpr: Largest true-positive rate among thresholds whose false-positive rate is at
            most `fpr`.
        fpr: The false-positive budget (0.01).
        n_members: Member scores given.
        n_nonmembers: Non-member scores given.
    """

    auroc: float
    tpr_at_fpr: float
    fpr: float
    n_members: int
    n_nonmembers: int


def label_matrix(frame, labels: Sequence[str] = CHEXPERT_LABELS) -> np.ndarray:
    """[n, L] float64 label values (1 / 0 / -1 / NaN) from a frame's label columns."""
    return frame.loc[:, list(labels)].to_numpy(dtype=np.float64, na_value=np.nan)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def probe_auroc(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    *,
    labels: Sequence[str] = CHEXPERT_LABELS,
    C: float = PROBE_C,
    max_iter: int = PROBE_MAX_ITER,
) -> ProbeResult:
    """Fit one logistic regression per label on train, score AUROC on eval.

    Args:
        train_features: [n, e] image embeddings (or backbone features) of the train split.
        train_labels: [n, L] label values 1 / 0 / -1 / NaN, columns in the order of `labels`.
        eval_features: [m, e] embeddings of the evaluation split.
        eval_labels: [m, L] label values.
        labels: Label names, one per column.
        C: Inverse regularisation strength of every regression.
        max_iter: Iteration cap of the lbfgs solver.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    train_labels = np.asarray(train_labels, dtype=np.float64)
    eval_labels = np.asarray(eval_labels, dtype=np.float64)
    if train_labels.shape != (len(train_features), len(labels)):
        raise ValueError(f"train labels have shape {train_labels.shape}, expected "
                         f"({len(train_features)}, {len(labels)})")
    if eval_labels.shape != (len(eval_features), len(labels)):
        raise ValueError(f"eval labels have shape {eval_labels.shape}, expected "
                         f"({len(eval_features)}, {len(labels)})")
    xtr = l2_normalize(train_features).astype(np.float64)
    xev = l2_normalize(eval_features).astype(np.float64)
    mean = xtr.mean(axis=0) if len(xtr) else 0.0
    std = xtr.std(axis=0) if len(xtr) else 1.0
    std = np.where(std > 1e-12, std, 1.0)
    xtr, xev = (xtr - mean) / std, (xev - mean) / std

    per_label, used, n_train, n_eval = {}, [], {}, {}
    for j, name in enumerate(labels):
        ytr, keep_tr = _binary(train_labels[:, j])
        yev, keep_ev = _binary(eval_labels[:, j])
        n_train[name], n_eval[name] = int(keep_tr.sum()), int(keep_ev.sum())
        if len(np.unique(ytr)) < 2 or len(np.unique(yev)) < 2:
            per_label[name] = math.nan
            continue
        clf = LogisticRegression(C=C, max_iter=max_iter)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(xtr[keep_tr], ytr)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            log.warning("probe for %s did not converge in %d iterations", name, max_iter)
        scores = clf.decision_function(xev[keep_ev])
        per_label[name] = float(roc_auc_score(yev, scores))
        used.append(name)
    macro = float(np.mean([per_label[name] for name in used])) if used else math.nan
    return ProbeResult(macro_auroc=macro, per_label=per_label, labels_used=tuple(used),
                       n_train=n_train, n_eval=n_eval)


def _binary(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 targets of the kept rows, keep mask): 1 -> 1, 0 or NaN -> 0, -1 -> left out."""
    keep = values != -1.0  # NaN != -1 is True: missing rows are kept, as negatives
    return (values[keep] == 1.0).astype(np.int64), keep


def pair_similarity(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """[n] cosine similarity of each row's image and text embedding (inputs need not be unit)."""
    a, b = l2_normalize(image_embeddings), l2_normalize(text_embeddings)
    if a.shape != b.shape:
        raise ValueError(f"image {a.shape} and text {b.shape} embeddings must be aligned")
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def membership_signal(
    member_scores: np.ndarray, nonmember_scores: np.ndarray, *, fpr: float = 0.01
) -> MembershipResult:
    """Membership AUROC and TPR at `fpr` of a score that is higher for members.

    Args:
        member_scores: [n] scores of training pairs (e.g. `pair_similarity` on the train split).
        nonmember_scores: [m] scores of held-out pairs.
        fpr: False-positive budget of the TPR figure.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    members = np.asarray(member_scores, dtype=np.float64)
    non = np.asarray(nonmember_scores, dtype=np.float64)
    if not len(members) or not len(non):
        return MembershipResult(math.nan, math.nan, fpr, len(members), len(non))
    y = np.r_[np.ones(len(members)), np.zeros(len(non))]
    s = np.r_[members, non]
    auroc = float(roc_auc_score(y, s))
    fprs, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    ok = fprs <= fpr + 1e-12
    tpr = float(tprs[ok].max()) if ok.any() else 0.0
    return MembershipResult(auroc, tpr, fpr, len(members), len(non))
