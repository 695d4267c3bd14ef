"""`xmodal mcp` driven by the Model Context Protocol's own client over stdio (a real subprocess)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

mcp = pytest.importorskip("mcp", reason="the MCP server needs the 'mcp' extra")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Three drawings indexed with the offline default through the library (exports included)."""
    from xmodal.indexer import Indexer, load_model

    root = tmp_path_factory.mktemp("mcp")
    photos = root / "photos"
    photos.mkdir()
    for name, colour in (("red", (210, 20, 20)), ("green", (20, 170, 40)), ("blue", (20, 40, 210))):
        im = Image.new("RGB", (200, 150), (245, 245, 240))
        ImageDraw.Draw(im).ellipse((50, 25, 150, 125), fill=colour)
        im.save(photos / f"{name}.png")
    saved = os.environ.get("XMODAL_CACHE")
    os.environ["XMODAL_CACHE"] = str(root / "cache")
    try:
        Indexer(root / "idx", model=load_model()).add_paths([photos])
    finally:
        if saved is None:
            os.environ.pop("XMODAL_CACHE", None)
        else:
            os.environ["XMODAL_CACHE"] = saved
    return root / "idx", photos, root / "cache"


async def _session(index: Path, cache: Path) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "xmodal.cli.app", "mcp", "--index", str(index)],
        env={"XMODAL_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    out: dict[str, Any] = {}
    async with Client(server, read_timeout_seconds=300) as client:
        out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
        found = await client.call_tool("search", {"query": "a red circle", "k": 3})
        out["search"] = found.structured_content["result"]
        chinese = await client.call_tool("search", {"query": "红色的圆圈", "k": 3})  # Chinese: "a red circle"
        out["chinese"] = chinese.structured_content["result"]
        out["read"] = (await client.call_tool("understand", {"query": '"红色的圆圈" - "蓝色"'})).structured_content
        first = out["search"][0]["id"]
        out["similar"] = (await client.call_tool("similar", {"item_id": first, "k": 2})).structured_content["result"]
        out["item"] = (await client.call_tool("item", {"item_id": first})).structured_content
        out["info"] = (await client.call_tool("index_info", {})).structured_content
        out["in_photo"] = (await client.call_tool("search", {"in_photo": "zebra crossing"})).structured_content
        out["nothing"] = (await client.call_tool("search", {})).is_error
        read = await client.call_tool("understand", {"query": "a red circle 2019"})
        out["understand"] = read.structured_content
        missing = await client.call_tool("item", {"item_id": 99999})
        out["missing"] = (missing.is_error, missing.content[0].text)
    return out


def test_mcp_tools_over_stdio(index: tuple[Path, Path, Path]) -> None:
    idx, photos, cache = index
    out = asyncio.run(asyncio.wait_for(_session(idx, cache), timeout=600))
    assert out["tools"] == ["index_info", "item", "search", "similar", "understand"]
    read = out["understand"]
    assert read["visual"] == "a red circle" and read["dates"]["start"] == "2019-01-01" and "red" in read["names"]
    assert out["search"][0]["matched"][0] == "visual"
    hits = out["search"]
    assert len(hits) == 3 and {"id", "kind", "score", "path"} <= set(hits[0])
    assert out["in_photo"]["result"] == [] and out["nothing"]  # drawings hold no text; no query is an error
    assert all(h["kind"] == "image" and Path(h["path"]).parent == photos for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    # a Chinese query is searched (the drawings are too alike in the text space to test its ranking here:
    # tests/test_chinese.py does that on photos)
    assert len(out["chinese"]) == 3 and all(Path(h["path"]).parent == photos for h in out["chinese"])
    # a Chinese query's reading is part of what `understand` says (one explanation, each term read)
    assert out["read"]["read_as"] == [
        {"text": "红色的圆圈", "english": "red circle"},
        {"text": "蓝色", "english": "blue"},
    ]
    assert len(out["similar"]) == 2 and hits[0]["id"] not in {h["id"] for h in out["similar"]}
    assert out["item"]["id"] == hits[0]["id"] and out["item"]["path"] == hits[0]["path"] and out["item"]["width"] == 200
    info = out["info"]
    assert info["images"] == 3 and info["model"] == "xmodal-lite" and info["dim"] > 0
    assert out["missing"][0] is True and "no image with id 99999" in out["missing"][1]
