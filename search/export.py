"""Hits for other tools: CSV, a folder of symlinks, an HTML contact sheet with thumbnails."""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

from xmodal.indexer.errors import ImageReadError, InvalidQueryError
from xmodal.indexer.images import decode_image
from xmodal.search.hits import Hit

__all__ = ["hits_to_csv", "link_hits", "write_contact_sheet"]


def hits_to_csv(hits: Sequence[Hit]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "score", "kind", "id", "path", "text"])
    for rank, hit in enumerate(hits, 1):
        writer.writerow([rank, f"{hit.score:.6f}", hit.kind, hit.id, hit.path, hit.text or ""])
    return out.getvalue()


def link_hits(hits: Sequence[Hit], folder: Path) -> list[Path]:
    """Symlinks named by rank to each image hit (`01_beach.jpg`), so a file browser shows the results."""
    folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        raise InvalidQueryError(f"--links '{folder}' is not a folder")
    links = []
    width = max(2, len(str(len(hits))))
    for rank, hit in enumerate((h for h in hits if h.kind in ("image", "video")), 1):
        link = folder / f"{rank:0{width}d}_{Path(hit.path).name}"
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(hit.path, link)
        links.append(link)
    return links


def _thumbnail(path: str, size: int = 240) -> str | None:
    try:
        image = decode_image(Path(path), target_size=size).image
    except ImageReadError:
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode()


def write_contact_sheet(hits: Sequence[Hit], out: Path, title: str) -> Path:
    """One self-contained HTML file: thumbnails (embedded), scores and paths."""
    cells = []
    for rank, hit in enumerate(hits, 1):
        label = html.escape(hit.text if hit.kind == "text" and hit.text else hit.path)
        thumb = _thumbnail(hit.path) if hit.kind == "image" else None
        picture = (
            f'<img src="data:image/jpeg;base64,{thumb}" alt="">' if thumb else '<div class="missing">no preview</div>'
        )
        cells.append(
            f"<figure>{picture}<figcaption><b>{rank}</b> · {hit.score:.3f}<br>"
            f"<span>{label}</span></figcaption></figure>"
        )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}}main{{display:flex;flex-wrap:wrap;gap:12px}}
figure{{width:240px;margin:0}}img{{max-width:240px;max-height:240px}}figcaption{{font-size:12px;word-break:break-all}}
.missing{{width:240px;height:160px;background:#eee}}</style></head>
<body><h1>{html.escape(title)}</h1><main>{"".join(cells)}</main></body></html>"""
    out.write_text(page, encoding="utf-8")
    return out
