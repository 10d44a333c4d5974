"""``render.json``: what a rendered cohort says about itself (settings, counts, findings drawn).

The synthetic package's renderer (`synthetic.render`) writes it next to the images;
`cohort check` reads it here, so the audit side reads a rendered cohort's record without
importing the synthetic package.
"""

from __future__ import annotations

import json
from pathlib import Path

SIDECAR = "render.json"


def read_sidecar(root: Path) -> dict | None:
    """The ``render.json`` of a rendered cohort, or None when ``root`` is not one."""
    try:
        return json.loads((Path(root) / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
