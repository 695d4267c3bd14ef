"""Human-readable output of hits."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from xmodal.search.hits import Hit


def print_hits(hits: Sequence[Hit]) -> None:
    console = Console()
    if not hits:
        console.print("no hits")
        return
    if not console.is_terminal:  # piped: one hit per line, never folded
        for rank, hit in enumerate(hits, 1):
            label = hit.text if hit.kind == "text" and hit.text else hit.path
            print(f"{rank:>4}  {hit.score:6.3f}  {label}")
        return
    table = Table(show_edge=False, box=None)
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("text" if hits[0].kind == "text" else "path", overflow="fold")
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.text if hit.kind == "text" and hit.text else hit.path)
    console.print(table)
