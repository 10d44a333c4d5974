#!/usr/bin/env bash
# Regenerate docs/report_html.png and docs/report_pdf-*.png: the audit report of the showcase
# database (tests/report_fixtures.py: seeded, synthetic, a six-epsilon DP grid and a transfer
# cohort), rendered by headless Chromium (HTML) and pdftoppm (PDF). Needs chromium and
# poppler-utils; the report itself needs neither.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf cache/showcase
PYTHONPATH=.:tests "$PY" tests/report_fixtures.py cache/showcase >/dev/null
"$PY" - <<'PYEOF'
from pathlib import Path
from engine.report import write_report
paths = write_report(Path("cache/showcase/results.duckdb"), model="ladder-2-specialist",
                     cohort="phantom-test", out=Path("cache/showcase/report"))
print("\n".join(str(p) for p in paths.values()))
PYEOF
html="$(pwd)/cache/showcase/report/ladder-2-specialist__phantom-test.html"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot=docs/report_html.png \
  --window-size=1200,2400 "file://$html" 2>/dev/null
# The rest of the page, in 2400-pixel slices (docs/report_html-2.png, ...), to show the figures.
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --screenshot=cache/showcase/report/html_full.png --window-size=1200,14000 "file://$html" 2>/dev/null
rm -f docs/report_html-*.png
"$PY" - <<'PYEOF'
from PIL import Image
import numpy as np
page = Image.open("cache/showcase/report/html_full.png").convert("RGB")
pixels = np.asarray(page)
rows = np.where((pixels[:, 600] != pixels[-1, 600]).any(axis=1))[0]
end = int(rows.max()) + 40 if len(rows) else page.height
for i, top in enumerate(range(2400, end, 2400), start=2):
    page.crop((0, top, page.width, min(top + 2400, end))).save(f"docs/report_html-{i}.png")
PYEOF
rm -f docs/report_pdf-*.png
pdftoppm -png -r 50 cache/showcase/report/ladder-2-specialist__phantom-test.pdf docs/report_pdf
ls docs/report_html*.png docs/report_pdf-*.png
