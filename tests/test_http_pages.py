"""Issue 24 over HTTP: following `next_cursor` with --diverse, a floor and duplicates folded gives one
list, without repeats or gaps, and every hit of every page scores at least the floor."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.serving import build_library, make_app


@pytest.mark.parametrize(
    "params",
    [
        {"diverse": 0.6, "candidates": 8},
        {"diverse": 0.4, "candidates": 8, "collapse": 0.999, "min_score": "auto"},
        {"diverse": 0.7, "min_score": 0.3},
    ],
)
def test_pages_followed_by_cursor_are_one_list(tmp_path: Path, params: dict[str, object]) -> None:
    library = build_library(tmp_path, extra=40)
    with TestClient(make_app(library), base_url="http://127.0.0.1") as client:
        whole = client.get("/api/search", params={"q": "red", "limit": 60, **params}).json()["hits"]
        seen: list[int] = []
        cursor = None
        while True:
            page = {"q": "red", "limit": 7, **params, **({"cursor": cursor} if cursor else {})}
            body = client.get("/api/search", params=page).json()
            seen += [h["id"] for h in body["hits"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert seen == [h["id"] for h in whole] and len(set(seen)) == len(seen)
    if isinstance(params.get("min_score"), float):
        assert all(h["score"] >= params["min_score"] for h in whole)
