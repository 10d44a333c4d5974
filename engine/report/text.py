"""How numbers and labels read in the report (the document, HTML and PDF call them as ``fmt.*``).

They are the engine's shared formats (`engine.core.format`, `engine.core.names`), the same ones
the dashboard shows, so a figure reads alike on a page and in the report.
"""

from __future__ import annotations

from engine.core.decision import heads_name  # noqa: F401  (starts and attackers named)
from engine.core.format import (  # noqa: F401
    NA,
    auroc,
    finite,
    general,
    integer,
    percent,
    percent_range,
    points,
    reduction,
    risk_level,
    scientific,
    times,
    times_range,
)
from engine.core.names import DIRECTION_NAMES, SPLIT_NAMES, heads_short  # noqa: F401
