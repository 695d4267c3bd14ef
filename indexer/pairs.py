"""Image–caption pairs for training and evaluation: JSONL, CSV and COCO captions JSON."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from xmodal.indexer.errors import InvalidInputError

__all__ = ["CaptionedImage", "read_pairs"]


@dataclass(frozen=True)
class CaptionedImage:
    image: Path
    captions: tuple[str, ...]


def _check(image: Path, where: str) -> Path:
    if not image.is_file():
        raise InvalidInputError(f"{where}: image '{image}' not found")
    return image


def _read_jsonl(path: Path) -> list[CaptionedImage]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInputError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("image"), str):
                raise InvalidInputError(f'{where}: expected {{"image": path, "captions": [...]}}')
            captions = row.get("captions", row.get("caption"))
            if isinstance(captions, str):
                captions = [captions]
            if (
                not isinstance(captions, list)
                or not captions
                or not all(isinstance(c, str) and c.strip() for c in captions)
            ):
                raise InvalidInputError(f"{where}: 'captions' must be a non-empty list of texts")
            out.append(CaptionedImage(_check(path.parent / row["image"], where), tuple(c.strip() for c in captions)))
    return out


def _read_csv(path: Path, image_root: Path) -> list[CaptionedImage]:
    grouped: dict[Path, list[str]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
            raise InvalidInputError(f"{path}:1: expected a header 'image,caption'")
        for line_no, row in enumerate(reader, 2):
            if not row:
                continue
            where = f"{path}:{line_no}"
            if len(row) < 2 or not row[0].strip() or not ",".join(row[1:]).strip():
                raise InvalidInputError(f"{where}: expected 'image,caption'")
            image = image_root / row[0].strip()
            if image not in grouped:
                _check(image, where)
            grouped.setdefault(image, []).append(",".join(row[1:]).strip())
    return [CaptionedImage(image, tuple(caps)) for image, caps in grouped.items()]


def _read_coco(path: Path, image_root: Path) -> list[CaptionedImage]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {img["id"]: img["file_name"] for img in data["images"]}
        grouped: dict[int, list[str]] = {}
        for ann in data["annotations"]:
            grouped.setdefault(ann["image_id"], []).append(str(ann["caption"]).strip())
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InvalidInputError(f"{path}: not a COCO captions file ({type(e).__name__}: {e})") from None
    out = []
    for image_id, captions in grouped.items():
        if image_id not in files:
            raise InvalidInputError(f"{path}: annotation for unknown image id {image_id}")
        out.append(
            CaptionedImage(_check(image_root / files[image_id], f"{path}: image id {image_id}"), tuple(captions))
        )
    return out


def read_pairs(path: Path | str, image_root: Path | str | None = None) -> list[CaptionedImage]:
    """Read pairs by file type: .jsonl, .csv (needs image_root, default the file's folder), COCO .json."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"pairs file '{path}' not found")
    root = Path(image_root) if image_root else path.parent
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        pairs = _read_jsonl(path)
    elif suffix == ".csv":
        pairs = _read_csv(path, root)
    elif suffix == ".json":
        pairs = _read_coco(path, root)
    else:
        raise InvalidInputError(f"{path}: unknown pairs format '{suffix}' (use .jsonl, .csv or COCO .json)")
    if not pairs:
        raise InvalidInputError(f"{path}: no image–caption pairs")
    return pairs
