"""Where the real release files that a registry package ships are found on this machine.

The PyPI package ``torchxrayvision`` carries, in its ``data/`` folder, the real PadChest labels
table and the Indiana University / OpenI report archive (no images). The folder is found with
`importlib.util.find_spec`, which locates the package without importing it (importing it would
load torch). Nothing here copies those files anywhere: callers read them where they lie.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engine.errors import CohortError

PACKAGE = "torchxrayvision"
PADCHEST_TABLE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
OPENI_REPORTS = "NLMCXR_reports.tgz"


def package_data_dir() -> Path | None:
    """The ``data/`` folder of the installed ``torchxrayvision`` package, or None."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def _require(name: str) -> Path:
    folder = package_data_dir()
    if folder is None:
        raise CohortError(
            f"package {PACKAGE!r} is not installed; install it with "
            f"`pip install --no-deps -r requirements-data.txt` to read its {name}"
        )
    path = folder / name
    if not path.is_file():
        raise CohortError(f"{path}: not found in the installed {PACKAGE} package")
    return path


def padchest_table() -> Path:
    """Path of the real PadChest labels table (gzipped CSV) in the installed package."""
    return _require(PADCHEST_TABLE)


def openi_reports() -> Path:
    """Path of the real OpenI report archive ``NLMCXR_reports.tgz`` in the installed package."""
    return _require(OPENI_REPORTS)
