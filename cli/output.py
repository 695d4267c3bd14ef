"""Human-readable output of hits."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from xmodal.search.hits import Hit

__all__ = ["print_hits"]


def _label(hit: Hit) -> str:
    """The text, or the path; a RAW+JPEG pair's other files after it: `IMG_1.JPG (+ IMG_1.CR2)`."""
    if hit.kind == "text" and hit.text:
        return hit.text
    if hit.pair:
        return f"{hit.path} (+ {', '.join(os.path.basename(p) for p in hit.pair)})"
    return hit.path


def print_hits(hits: Sequence[Hit]) -> None:
    """A table of hits; a `copies` column when near-duplicates were folded (--collapse)."""
    console = Console()
    if not hits:
        console.print("no hits")
        return
    folded = any(hit.copies for hit in hits)
    if not console.is_terminal:  # piped: one hit per line, never folded
        for rank, hit in enumerate(hits, 1):
            label = _label(hit)
            copies = f"  +{hit.copies:<3}" if folded else ""
            print(f"{rank:>4}  {hit.score:6.3f}{copies}  {label}")
        return
    table = Table(show_edge=False, box=None)
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    if folded:
        table.add_column("copies", justify="right")
    table.add_column("text" if hits[0].kind == "text" else "path", overflow="fold")
    for rank, hit in enumerate(hits, 1):
        label = _label(hit)
        cells = [str(rank), f"{hit.score:.3f}", *([str(hit.copies)] if folded else []), label]
        table.add_row(*cells)
    console.print(table)
