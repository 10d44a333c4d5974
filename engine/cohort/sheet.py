"""Contact sheets: a grid of cohort images captioned with their view and report labels.

Meant for people checking what a cohort (the phantom generator's in particular) looks like: the
picked images cover as many different positive labels as the cohort has, and one normal study.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from engine.core.labels import CHEXPERT_LABELS
from engine.errors import EngineError
from engine.images import load_item_image

TILE = 256
_CAPTION_LINES = 4
_FONT_PX = 11
_FINDINGS = tuple(label for label in CHEXPERT_LABELS if label != "No Finding")


def _font(px: int):
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def caption(row: pd.Series) -> str:
    """``VIEW: label, label?, ...`` with uncertain labels marked ``?`` (``No Finding`` if so)."""
    parts = []
    for label in CHEXPERT_LABELS:
        value = row.get(label)
        if value is None or pd.isna(value):
            continue
        if value == 1.0:
            parts.append(label)
        elif value == -1.0:
            parts.append(f"{label}?")
    view = str(row.get("view") or "?")
    return f"{view}: " + (", ".join(parts) if parts else "(no positive labels)")


def pick_items(items: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` rows with varied findings: one per positive label first, one normal, then any.

    Frontal views are preferred; the choice is deterministic for a given ``seed``.
    """
    if items.empty or n <= 0:
        return items.iloc[:0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    shuffled = items.iloc[order]
    frontal = (shuffled["view"].isin(["PA", "AP"]) if "view" in shuffled
               else pd.Series(True, index=shuffled.index))
    pool = pd.concat([shuffled[frontal], shuffled[~frontal]])
    chosen: list = []
    used_studies: set = set()

    def take(mask: pd.Series) -> bool:
        for idx in pool.index[mask.reindex(pool.index, fill_value=False).to_numpy()]:
            study = pool.at[idx, "study_id"] if "study_id" in pool else idx
            if idx not in chosen and study not in used_studies:
                chosen.append(idx)
                used_studies.add(study)
                return True
        return False

    labels = [lab for lab in _FINDINGS if lab in pool]
    for i in rng.permutation(len(labels)):
        if len(chosen) >= n - 1:
            break
        take(pool[labels[i]] == 1.0)
    if "No Finding" in pool and len(chosen) < n:
        take(pool["No Finding"] == 1.0)
    # then studies with anything positive or uncertain, then the rest
    if labels:
        flagged = pool[labels].isin([1.0, -1.0]).any(axis=1)
        while len(chosen) < n and take(flagged):
            pass
    while len(chosen) < n and take(pd.Series(True, index=pool.index)):
        pass
    return pool.loc[chosen]


def _tile(root: Path, row: pd.Series, font) -> Image.Image:
    tile = Image.new("L", (TILE, TILE + _CAPTION_LINES * (_FONT_PX + 3) + 6), 0)
    try:
        img = load_item_image(root, str(row["image_path"]), "L")
        img.thumbnail((TILE, TILE))
        tile.paste(img, ((TILE - img.width) // 2, (TILE - img.height) // 2))
    except (OSError, ValueError, EngineError) as exc:
        ImageDraw.Draw(tile).text((8, TILE // 2), f"unreadable: {type(exc).__name__}",
                                  fill=200, font=font)
    draw = ImageDraw.Draw(tile)
    lines = textwrap.wrap(caption(row), 42)[:_CAPTION_LINES]
    for i, line in enumerate(lines):
        draw.text((4, TILE + 4 + i * (_FONT_PX + 3)), line, fill=255, font=font)
    return tile


def render_contact_sheet(items: pd.DataFrame, root: Path, out: Path, *, n: int = 16,
                         seed: int = 0) -> Path:
    """Write a PNG grid of ``n`` images of ``items`` (the cohort table) captioned with labels.

    Args:
        items: Cohort table (`engine.cohort.table.COLUMNS`); ``image_path`` relative to ``root``.
        root: Cohort root folder.
        out: PNG file to write (parent folders are created).
        n: Number of images (fewer if the cohort is smaller).
        seed: Which images are picked.

    Returns:
        ``out``.
    """
    picked = pick_items(items, n, seed)
    font = _font(_FONT_PX)
    tiles = [_tile(Path(root), row, font) for _, row in picked.iterrows()]
    count = max(1, len(tiles))
    cols = max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / cols)
    th = TILE + _CAPTION_LINES * (_FONT_PX + 3) + 6
    gap = 4
    sheet = Image.new("L", (cols * (TILE + gap) + gap, rows * (th + gap) + gap), 40)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet.paste(tile, (gap + c * (TILE + gap), gap + r * (th + gap)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out
