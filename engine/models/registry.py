"""The model registry: ``registry.toml`` in this package, mirrored into the ``models`` table.

``--model`` takes a registered name (the file, then the ``models`` table) or a raw spec; a raw
spec is its own name. This module needs neither torch nor open_clip.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine import store
from engine.errors import ConfigError

log = logging.getLogger(__name__)

REGISTRY_FILE = Path(__file__).with_name("registry.toml")


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes:
        name: Name used on the command line and in the results tables.
        spec: What open_clip loads (``{cache}`` already replaced by the cache folder).
        specialization: Order on the specialisation axis (0 = least in-domain), or None.
        description: One line for people.
    """

    name: str
    spec: str
    specialization: int | None = None
    description: str = ""


def read_registry(cache: Path, path: Path = REGISTRY_FILE) -> list[ModelEntry]:
    """Read the registry file, with ``{cache}`` in specs replaced by the absolute cache folder.

    Raises:
        ConfigError: the file is not valid TOML, or an entry lacks ``name`` / ``spec`` or repeats
            a name.
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the model registry ({exc})") from exc
    cache_text = str(Path(cache).resolve())
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    for i, row in enumerate(data.get("model", []), start=1):
        if "name" not in row or "spec" not in row:
            raise ConfigError(f"{path}: [[model]] entry {i} needs `name` and `spec`")
        if row["name"] in seen:
            raise ConfigError(f"{path}: model name {row['name']!r} appears twice")
        seen.add(row["name"])
        spec = str(row["spec"]).replace("{cache}", cache_text)
        spec_level = row.get("specialization")
        entries.append(
            ModelEntry(
                name=str(row["name"]),
                spec=spec,
                specialization=None if spec_level is None else int(spec_level),
                description=str(row.get("description", "")),
            )
        )
    return entries


def resolve_model(name_or_spec: str, *, cache: Path, db: Path | None = None) -> ModelEntry:
    """Turn a ``--model`` value into a `ModelEntry`.

    Lookup order: the registry file, then the ``models`` table of `db` (models registered by
    earlier runs), else the value is taken as a raw spec and is its own name.
    """
    for entry in read_registry(cache):
        if entry.name == name_or_spec:
            return entry
    if db is not None and Path(db).exists():
        con = store.connect_read(db)
        try:
            rows = con.execute(
                "SELECT model, spec, specialization, description FROM models WHERE model = ?",
                [name_or_spec],
            ).fetchall()
        finally:
            con.close()
        if rows:
            model, spec, level, description = rows[0]
            return ModelEntry(model, spec, None if level is None else int(level), description or "")
    return ModelEntry(name=name_or_spec, spec=name_or_spec)


def register_models(db: Path, entries: list[ModelEntry]) -> int:
    """Upsert rows of the ``models`` table in one transaction; returns the number written."""
    with store.connect_write(db) as con, store.transaction(con):
        return upsert_models(con, entries)


def upsert_models(con, entries: list[ModelEntry]) -> int:
    """Replace the ``models`` rows of `entries` on an open write connection (in its transaction)."""
    for entry in entries:
        frame = pd.DataFrame(
            {
                "model": [entry.name],
                "spec": [entry.spec],
                "specialization": pd.array([entry.specialization], dtype="Int32"),
                "description": [entry.description],
            }
        )
        store.replace_rows(con, "models", frame, model=entry.name)
    return len(entries)


def ensure_models(con, entries: list[ModelEntry]) -> int:
    """Insert ``models`` rows for entries not registered yet (keeps existing descriptions)."""
    added = 0
    for entry in entries:
        if not con.execute("SELECT 1 FROM models WHERE model = ?", [entry.name]).fetchall():
            upsert_models(con, [entry])
            added += 1
    return added


def read_models_table(db: Path) -> pd.DataFrame:
    """The ``models`` table (empty frame when the database does not exist yet)."""
    if not Path(db).exists():
        return pd.DataFrame(columns=["model", "spec", "specialization", "description"])
    con = store.connect_read(db)
    try:
        return con.execute("SELECT * FROM models ORDER BY specialization NULLS LAST, model").df()
    finally:
        con.close()


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def storage_key(name: str) -> str:
    """A folder-safe key for a model or cohort name (raw specs contain ':' and '/').

    Names that are already safe are kept; others are slugged and suffixed with a short hash so
    two different names never share a folder.
    """
    slug = _SAFE.sub("_", name).strip("._") or "model"
    if slug == name:
        return name
    return f"{slug[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
