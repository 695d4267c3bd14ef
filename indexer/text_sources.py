"""Reading text corpora: plain text (one item per line), CSV (a column), JSONL (a field)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from xmodal.indexer.errors import InvalidInputError

__all__ = ["read_text_items"]


def read_text_items(path: Path | str, column: str | None = None, field: str | None = None) -> list[str]:
    """Items of one file, by extension: .csv needs `column`, .jsonl needs `field`, else one per line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"text file '{path}' not found")
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if suffix == ".csv":
                reader = csv.DictReader(f)
                name = column or (reader.fieldnames[0] if reader.fieldnames else None)
                if not name or name not in (reader.fieldnames or []):
                    raise InvalidInputError(
                        f"{path}: no column '{column}' (columns: {', '.join(reader.fieldnames or [])})"
                    )
                items = [(row.get(name) or "").strip() for row in reader]
            elif suffix == ".jsonl":
                if not field:
                    raise InvalidInputError(f"{path}: JSONL needs --field NAME")
                items = []
                for line_no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InvalidInputError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
                    value = row.get(field) if isinstance(row, dict) else None
                    if not isinstance(value, str):
                        raise InvalidInputError(f"{path}:{line_no}: no text field '{field}'")
                    items.append(value.strip())
            else:
                items = [line.strip() for line in f]
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [item for item in items if item]
