"""The index as Model Context Protocol tools, for agents: search by text, similar items, item
lookup and index facts. `build_server` takes an open engine (no globals); `xmodal mcp` serves it
over stdio. Results carry ids, scores and paths, as `xmodal search --json` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

from xmodal.indexer.errors import XmodalError
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits
from xmodal.indexer.store.schema import ImageRow, TextRow
from xmodal.search.engine import SearchEngine

__all__ = ["HitOut", "ItemOut", "build_server", "lookup"]

Target = Literal["image", "text"]
T = TypeVar("T")


class HitOut(BaseModel):
    """One result: `path` is the photo or video (or the file a text came from); `text` only for
    texts; `time` only for videos: the moment (seconds) that matched."""

    id: int
    kind: Literal["image", "text", "video"]
    score: float
    path: str
    text: str | None = None
    copies: int = 0  # near-duplicates folded into this hit (collapse)
    time: float | None = None
    matched: list[str] = []  # parts of the query it satisfies: visual, text_in_photo, place, date, name


class ItemOut(BaseModel):
    id: int
    kind: Target
    path: str
    text: str | None = None
    width: int | None = None
    height: int | None = None
    taken_at: str | None = None


def _domain(call: Callable[[], T]) -> T:
    """Domain errors reach the agent as the tool's error message (other crashes stay generic)."""
    try:
        return call()
    except XmodalError as e:
        raise ToolError(str(e)) from e


def _hits(raw: list[Any]) -> list[HitOut]:
    return [HitOut(**h.as_dict()) for h in raw]


def lookup(engine: SearchEngine, item_id: int, kind: Target) -> ItemOut | None:
    """One row of the index, by id (the database is the source of truth; no vector is read)."""
    with engine.store.metadata.session() as s:
        if kind == "text":
            text = s.get(TextRow, item_id)
            return None if text is None else ItemOut(id=text.id, kind="text", path=text.source, text=text.text)
        image = s.get(ImageRow, item_id)
        if image is None:
            return None
        taken = image.taken_at.isoformat() if image.taken_at is not None else None
        return ItemOut(
            id=image.id, kind="image", path=image.path, width=image.width, height=image.height, taken_at=taken
        )


def _check_k(k: int, limits: Limits) -> None:
    if not 1 <= k <= limits.max_k:
        raise ToolError(f"k must be between 1 and {limits.max_k} (got {k})")


def _check_query(query: str, limits: Limits) -> None:
    if len(query) > limits.max_query_chars:
        raise ToolError(f"the query is longer than {limits.max_query_chars} characters ({len(query)}); shorten it")


def build_server(
    engine: SearchEngine, info: Callable[[], dict[str, object]], limits: Limits = DEFAULT_LIMITS
) -> MCPServer:
    """An MCP server over one open engine; `info` returns the index facts (as `xmodal info --json`);
    `k` and query lengths are bounded by `limits` (an agent gets a clear error beyond them)."""
    server = MCPServer(
        "xmodal",
        instructions=(
            "Cross-modal search over one index of photos (and optional texts). Search photos by "
            "describing them (in English or Chinese) or by the words written in them (in_photo), find items "
            "similar to an id, look an id up, read the index facts."
        ),
        log_level="WARNING",
    )

    @server.tool()
    def search(
        query: str = "", k: int = 10, target: Target = "image", in_photo: str = "", literal: bool = False
    ) -> list[HitOut]:
        """Find indexed photos (target "image") or texts (target "text") that match a description.
        A plain query is read for its dates, place, words in the photo and names ("dog on the beach
        in Lisbon last summer": only photos of Lisbon, last summer; see `understand`); `literal`
        searches the whole text as a description. Each hit says which parts it `matched`.
        `in_photo`: only photos whose written text (signs, receipts, screenshots) holds these words,
        one wrong character tolerated; without a query they come best text match first."""
        _check_k(k, limits)
        _check_query(query, limits)
        _check_query(in_photo, limits)
        if not query.strip() and not in_photo.strip():
            raise ToolError("give a query, in_photo, or both")
        words = in_photo if in_photo.strip() else None
        return _domain(
            lambda: _hits(
                engine.search(query if query.strip() else None, k=k, target=target, in_photo=words, literal=literal)
            )
        )

    @server.tool()
    def understand(query: str) -> dict[str, object]:
        """What `search` reads in a query: its visual description, dates (start and end, both
        included), place (one this index holds), words in the photo, file and folder names, and the
        words that looked like a date or place but are not one here. A Chinese description comes
        with the English it is read as (`read_as`, one entry per term; `reading`), the words neither
        the dictionary nor the model knows (in `not_understood`) and those read by their characters
        (`guessed`); a language not understood yet gets a `note`."""
        _check_query(query, limits)
        if not query.strip():
            raise ToolError("the query is empty")
        return _domain(lambda: engine.understand(query).as_dict())

    @server.tool()
    def similar(item_id: int, k: int = 10, kind: Target = "image") -> list[HitOut]:
        """Items most like the indexed item `item_id` ("more like this"), never the item itself."""
        _check_k(k, limits)
        return _domain(lambda: _hits(engine.similar(item_id, k=k, kind=kind)))

    @server.tool()
    def item(item_id: int, kind: Target = "image") -> ItemOut:
        """What the index holds about one item: its path, size and capture time (or its text)."""
        found = _domain(lambda: lookup(engine, item_id, kind))
        if found is None:
            raise ToolError(f"no {kind} with id {item_id} in this index")
        return found

    @server.tool()
    def index_info() -> dict[str, object]:
        """Counts, model, vector dimension and size of the index."""
        return _domain(info)

    return server
