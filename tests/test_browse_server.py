"""Browsing before searching over HTTP: /api/timeline (months newest first, paged by cursor),
/api/places, the place filter of /api/search and the batch search, and a photo's facts in
/api/items/{id}; photos made with EXIF dates, offsets, GPS of real cities and cameras."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.facts_photos import CITIES, Shot, exif_photo
from tests.fakes import fake_model
from tests.serving import Library, make_app
from xmodal.indexer.indexing import Indexer

BASE = "http://127.0.0.1"

# name: (shot, folder)
SHOTS = {
    "tram": (Shot("2025:07:02 09:10:00", "+01:00", CITIES["Lisbon"][0], "Apple", "iPhone 15"), "Lisbon"),
    "beach": (Shot("2025:06:14 18:30:05", "+01:00", CITIES["Lisbon"][0]), "Lisbon"),
    "bridge": (Shot("2025:06:20 20:00:00", "+01:00", CITIES["Porto"][0]), "Porto"),
    "temple": (Shot("2019:11:03 22:15:00", "+09:00", CITIES["Tokyo"][0], "SONY", "ILCE-7M3"), "Japan"),
    "harbour": (Shot("2024:12:31 23:59:00", "+11:00", CITIES["Sydney"][0]), "Sydney"),
    "kitchen": (Shot("2023:04:01 12:00:00"), "home"),
    "undated": (Shot(), "home"),
}


def build_facts_library(root: Path) -> Library:
    photos = root / "photos"
    for i, (name, (shot, folder)) in enumerate(SHOTS.items()):
        exif_photo(photos / folder / f"{name}.jpg", shot, source=10 + i)
    stamp = datetime(2018, 5, 1, 12).timestamp()
    os.utime(photos / "home" / "undated.jpg", (stamp, stamp))
    index = root / "index"
    Indexer(index, model=fake_model(), workers=1).add_paths([photos])
    return Library(photos, index, root / "cache")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    return build_facts_library(tmp_path_factory.mktemp("facts-server"))


@pytest.fixture(scope="module")
def client(library: Library):  # noqa: ANN201
    with TestClient(make_app(library), base_url=BASE) as c:
        yield c


def _names(hits: list[dict]) -> set[str]:
    return {Path(h["path"]).stem for h in hits}


def test_places_with_levels_and_counts(client: TestClient) -> None:
    body = client.get("/api/places").json()
    places = {(p["name"], p["level"]): p for p in body["places"]}
    assert places[("Portugal", "country")]["count"] == 3
    assert places[("Lisbon", "city")] == {"name": "Lisbon", "level": "city", "count": 2, "within": "Portugal"}
    assert places[("Tokyo", "city")]["within"] == "Japan"
    assert body["places"][0]["name"] == "Portugal"  # most photos first


def test_timeline_months_newest_first_paged_by_cursor(client: TestClient, library: Library) -> None:
    first = client.get("/api/timeline", params={"months": 2, "per_month": 1}).json()
    assert [(m["month"], m["count"]) for m in first["months"]] == [("2025-07", 1), ("2025-06", 2)]
    assert first["next_cursor"] == "2025-06" and first["undated"] == 0
    june = first["months"][1]["items"]
    assert len(june) == 1 and june[0]["thumbnail"] == f"/api/items/{june[0]['id']}/thumbnail"
    ids = library.ids()
    assert june[0]["id"] == ids["bridge.jpg"]  # the month's newest first
    months, cursor = [], None
    while True:
        page = client.get("/api/timeline", params={"months": 2, **({"cursor": cursor} if cursor else {})}).json()
        months += [m["month"] for m in page["months"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert months == ["2025-07", "2025-06", "2024-12", "2023-04", "2019-11", "2018-05"]
    assert client.get("/api/timeline", params={"cursor": "June"}).status_code == 400
    assert client.get("/api/timeline", params={"months": 0}).status_code == 422


def test_place_filter_in_search_and_batch(client: TestClient) -> None:
    def names(**params: object) -> set[str]:
        response = client.get("/api/search", params={"q": "a photo", "limit": 50, **params})
        assert response.status_code == 200, response.text
        return _names(response.json()["hits"])

    assert names(place="lisbon") == {"tram", "beach"}
    assert names(place="Portugal", after="2025-06", before="2025-07") == {"beach", "bridge"}
    assert names(place="Atlantis") == set()
    assert client.get("/api/search", params={"q": "x", "place": "Lisbon", "target": "text"}).status_code == 400
    batch = client.post("/api/search/batch", json={"queries": ["a photo"], "limit": 50, "place": "Japan"}).json()
    assert len(batch["results"][0]["ids"]) == 1
    page = client.get("/", params={"q": "a photo", "place": "Tokyo"})
    assert page.status_code == 200 and "temple.jpg" in page.text and "tram.jpg" not in page.text


def test_item_shows_its_facts(client: TestClient, library: Library) -> None:
    ids = library.ids()
    facts = client.get(f"/api/items/{ids['temple.jpg']}").json()["facts"]
    assert facts["taken_at"] == "2019-11-03T22:15:00" and facts["taken_offset"] == 540
    assert facts["taken_source"] == "exif" and facts["camera"] == "SONY ILCE-7M3"
    place = (facts["city"], facts["region"], facts["country"], facts["country_code"])
    assert place == ("Tokyo", "Tokyo", "Japan", "JP")
    assert facts["latitude"] == pytest.approx(35.6595, abs=1e-4)
    assert "japan" in facts["words"].split() and "temple" in facts["words"].split()
    plain = client.get(f"/api/items/{ids['undated.jpg']}").json()["facts"]
    assert plain["taken_source"] == "file" and plain["taken_at"].startswith("2018-05-01T12:00")
    assert plain["city"] is None and plain["camera"] is None
