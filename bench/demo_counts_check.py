"""Check: the torch rank counter equals the previous numpy counter on a real demo database.

For every (model, cohort) with stored embeddings, both splits and both directions, the counts of
`engine.attack.ranks.count_ranks` (torch) are compared with `tests/_ranks_numpy.count_ranks_numpy`
(the numpy counter the torch path replaced). Near-ties within float rounding (|s - s_true| <
1e-6) may fall either way between BLAS libraries; the script reports exact equality and, for any
query that differs, whether its true score has such a near-tie.

    .venv/bin/python bench/demo_counts_check.py --db cache/relink.duckdb --cache cache
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _ranks_numpy import count_ranks_numpy  # noqa: E402

from engine import audit, store  # noqa: E402
from engine.attack.ranks import count_ranks  # noqa: E402
from engine.attack.stage import label_keys  # noqa: E402

FIELDS = ("n_greater", "n_tied", "n_matched", "n_matched_greater", "n_matched_tied")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=ROOT / "cache" / "relink.duckdb")
    parser.add_argument("--cache", type=Path, default=ROOT / "cache")
    args = parser.parse_args()
    # The pools the attack ranked: the splits stored for the original heads, with their sizes (an
    # external cohort is one held-out pool of all its pairs, `audit.evaluation_items`).
    stored = store.read_df(args.db, "SELECT model, cohort, split, max(n_queries) AS n "
                                    "FROM shown_relink_metrics WHERE heads = 'original' "
                                    "AND negatives = 'random' GROUP BY ALL ORDER BY 1, 2, 3")
    total = differing = 0
    for (model, cohort), splits in stored.groupby(["model", "cohort"], sort=True):
        inputs = audit.load_inputs(args.db, args.cache, model, cohort)
        items = audit.evaluation_items(inputs.items, external="train" not in set(splits["split"]))
        img = np.asarray(inputs.embeddings.image_embeddings, np.float32)
        txt = np.asarray(inputs.embeddings.text_embeddings, np.float32)
        keys = label_keys(items)
        for split, n_stored in splits[["split", "n"]].itertuples(index=False):
            mask = (items["split"] == split).to_numpy()
            if mask.sum() != n_stored:
                raise SystemExit(f"{model} / {cohort} / {split}: {mask.sum()} pairs here, "
                                 f"{n_stored} queries stored: not the pool the attack ranked")
            pats = items.loc[mask, "patient_id"].to_numpy(dtype=object)
            for name, q, c in (("image_to_report", img[mask], txt[mask]),
                               ("report_to_image", txt[mask], img[mask])):
                new = count_ranks(q, c, label_keys=keys[mask], patients=pats)
                old = count_ranks_numpy(q, c, label_keys=keys[mask], patients=pats)
                diff = np.zeros(len(q), dtype=bool)
                for f in FIELDS:
                    diff |= getattr(new, f) != old[f]
                # where they differ: is there a distractor within float rounding of the true score?
                s = q[diff] @ c.T
                near = (np.abs(s - s[np.arange(len(s)), np.flatnonzero(diff)][:, None]) < 1e-6)
                explained = int((near.sum(axis=1) > 1).sum())
                total += len(q)
                differing += int(diff.sum()) - explained
                print(f"{model} / {cohort} / {split} / {name}: {len(q)} queries, "
                      f"{int(diff.sum())} differ ({explained} of them at a near-tie)")
    print(f"all: {total} queries, {differing} differ beyond near-ties")
    return 0 if differing == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
