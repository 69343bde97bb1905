"""How the CLI prints: aligned tables and field lists for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

MAX_CELL = 60


def cell(value: Any, limit: int = MAX_CELL) -> str:
    """A value as one short table cell: no newlines, long text cut with an ellipsis."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list | tuple):
        text = ",".join(str(item) for item in value) or "-"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    text = " ".join(text.split())
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cells = [[cell(value) for value in row] for row in rows]
    if not cells:
        print("(none)", file=out)
        return
    widths = [max(len(header), *(len(row[i]) for row in cells)) for i, header in enumerate(headers)]
    for row in [list(headers), *cells]:
        print(
            "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )


def fields(pairs: Iterable[tuple[str, Any]], out: TextIO | None = None) -> None:
    """`name  value` lines, names aligned; values are never cut."""
    out = out or sys.stdout
    shown = [(name, cell(value, limit=0)) for name, value in pairs]
    width = max((len(name) for name, _ in shown), default=0)
    for name, value in shown:
        print(f"{name.ljust(width)}  {value}", file=out)


def as_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out or sys.stdout)
