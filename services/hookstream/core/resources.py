"""Where the schema folder (Avro `.avsc` files and the event-type catalog) lives."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# Built wheels carry `schemas/` inside the package (hatch force-include in pyproject.toml).
_PACKAGED = "_schemas"
# A source checkout or editable install has no `_schemas`; the repo root holds `schemas/`.
_REPO_SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def schemas_dir(override: Path | None = None) -> Path:
    """The schema folder: `override` if given, else the packaged copy, else the repo's."""
    if override is not None:
        return _existing_dir(override)
    packaged = files("hookstream") / _PACKAGED
    # Only a real filesystem path is usable by callers that glob and open files.
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return _existing_dir(_REPO_SCHEMAS)


def _existing_dir(path: Path) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"schema folder not found: {path}")
    return path
