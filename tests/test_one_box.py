"""One search box over a real index (issue 27, items 2 and 4): photos made here with EXIF dates and
GPS of a few cities (real flickr8k-1k content), rendered text and a named folder; the real offline
model, facts, OCR and planner. "Today" is fixed so relative dates are reproducible. Searches run the
first stage only: the second stage's first run builds its query bank (minutes on a busy machine),
and the planner acts before it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.facts_photos import CITIES, FLICKR_IMAGES, Shot, exif_photo
from xmodal.search import SearchEngine

pytestmark = pytest.mark.slow  # indexes a dozen photos with the real model and OCR

TODAY = date(2026, 12, 7)
WHERE = {name: coords for name, (coords, _, _) in CITIES.items()} | {"Nice": (43.6961, 7.2719)}
# file: (flickr photo, city, EXIF time)
PHOTOS = {
    "lisbon/img_0001.jpg": ("1024138940_f1fefbdce1.jpg", "Lisbon", "2026:07:10 11:00:00"),
    "lisbon/img_0002.jpg": ("1057251835_6ded4ada9c.jpg", "Lisbon", "2025:07:10 11:00:00"),
    "tokyo/img_0003.jpg": ("1067790824_f3cc97239b.jpg", "Tokyo", "2026:07:15 11:00:00"),
    "lisbon/img_0004.jpg": ("10815824_2997e03d76.jpg", "Lisbon", "2026:08:02 11:00:00"),
    "tokyo/img_0005.jpg": ("101654506_8eb26cfb60.jpg", "Tokyo", "2025:07:20 11:00:00"),
    "tokyo/img_0006.jpg": ("1094462889_f9966dafa6.jpg", "Tokyo", "2019:02:01 11:00:00"),
    "paris/img_0007.jpg": ("1075716537_62105738b4.jpg", "Paris", "2022:04:10 11:00:00"),
    "nice/img_0008.jpg": ("109202756_b97fcdc62c.jpg", "Nice", "2019:06:01 11:00:00"),
    "lisbon/img_0009.jpg": ("110595925_f3395c8bd6.jpg", "Lisbon", "2022:05:20 11:00:00"),
    "anna-birthday/party.jpg": ("1271210445_7f7ecf3791.jpg", "Paris", "2024:02:02 11:00:00"),
}
SIGNS = {
    "signs/img_0011.jpg": ("PHARMACY", "Lisbon", "2023:06:10 11:00:00"),
    "signs/img_0012.jpg": ("OPEN", "Tokyo", "2023:06:11 11:00:00"),
}


def _sign(path: Path, word: str, city: str, taken: str) -> None:
    """A sign: the word in large black letters on white, saved with the shot's EXIF."""
    exif_photo(path, Shot(taken=taken, where=WHERE[city]), size=(8, 8))
    picture = Image.new("RGB", (480, 240), (255, 255, 255))
    ImageDraw.Draw(picture).text((30, 70), word, fill=(0, 0, 0), font=ImageFont.load_default(size=72))
    with Image.open(path) as shot:
        exif = shot.getexif()
    picture.save(path, format="JPEG", exif=exif, quality=90)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    if not FLICKR_IMAGES.is_dir():
        pytest.skip("flickr8k-1k is not in ../shared")
    from xmodal.indexer import Indexer

    root = tmp_path_factory.mktemp("one-box")
    names = sorted(p.name for p in FLICKR_IMAGES.glob("*.jpg"))
    for file, (flickr, city, taken) in PHOTOS.items():
        exif_photo(root / "photos" / file, Shot(taken=taken, where=WHERE[city]), names.index(flickr), (320, 240))
    for file, (word, city, taken) in SIGNS.items():
        _sign(root / "photos" / file, word, city, taken)
    summary = Indexer(root / "index").add_paths([root / "photos"])
    assert summary.new == len(PHOTOS) + len(SIGNS)
    with SearchEngine.open(root / "index") as eng:
        yield eng


def _files(hits) -> list[str]:  # noqa: ANN001
    return [str(Path(h.path).relative_to(Path(h.path).parents[1])) for h in hits]


def _search(engine: SearchEngine, query: str, k: int = 20) -> tuple[list[str], list]:
    understood = engine.understand(query, today=TODAY)
    hits = engine.search(understood, k=k, rerank=False)
    return _files(hits), hits


def test_the_index_knows_its_places(engine: SearchEngine) -> None:
    names = {p.name for p in engine.known_places()}
    assert {"Lisbon", "Tokyo", "Paris", "Nice", "Portugal", "Japan"} <= names


def test_place_and_date_return_exactly_the_photos_that_satisfy_them(engine: SearchEngine) -> None:
    files, hits = _search(engine, "dog on the beach in Lisbon last summer")
    assert files == ["lisbon/img_0001.jpg", "lisbon/img_0004.jpg"]  # the dog first
    assert hits[0].matched == ["visual", "place", "date"]
    files, _ = _search(engine, "a dog at the beach 2026")
    assert set(files) == {"lisbon/img_0001.jpg", "tokyo/img_0003.jpg", "lisbon/img_0004.jpg"}
    assert files[-1] == "lisbon/img_0004.jpg"
    files, hits = _search(engine, "Tokyo 2019")
    assert files == ["tokyo/img_0006.jpg"] and hits[0].matched == ["place", "date"]
    files, _ = _search(engine, "bicycle between March and May 2022")
    assert set(files) == {"paris/img_0007.jpg", "lisbon/img_0009.jpg"}
    files, _ = _search(engine, "bicycle in Portugal")  # a country holds its cities
    assert files[0] == "lisbon/img_0009.jpg" and all(f.startswith(("lisbon/", "signs/img_0011")) for f in files)


def test_chinese_dates_and_places(engine: SearchEngine) -> None:
    understood = engine.understand("去年夏天在东京的照片", today=TODAY)
    assert (understood.place, str(understood.dates)) == ("Tokyo", "2025-06-01…2025-08-31")
    assert _files(engine.search(understood, rerank=False)) == ["tokyo/img_0005.jpg"]
    understood = engine.understand("东京的狗", today=TODAY)
    assert understood.place == "Tokyo" and understood.reading == "dog"
    files = _files(engine.search(understood, rerank=False))
    assert set(files[:2]) == {"tokyo/img_0003.jpg", "tokyo/img_0005.jpg"}  # the two dogs of Tokyo
    assert all(f.startswith(("tokyo/", "signs/img_0012")) for f in files)


def test_a_nice_view_is_not_nice(engine: SearchEngine) -> None:
    assert engine.understand("a nice view", today=TODAY).place is None
    assert len(engine.search("a nice view", k=20, rerank=False)) == len(PHOTOS) + len(SIGNS)
    assert _files(engine.search(engine.understand("horse in Nice", today=TODAY), rerank=False)) == ["nice/img_0008.jpg"]


def test_a_query_with_no_place_or_date_works_as_before(engine: SearchEngine) -> None:
    for query in ("a dog running on the beach", "two horses", '"a dog" - "snow"'):
        understood = engine.understand(query, today=TODAY)
        assert understood.parts == ["visual"] and understood.visual == query
        read = engine.search(understood, k=8, rerank=False)
        literal = engine.search(query, k=8, literal=True, rerank=False)
        assert [(h.id, round(h.score, 5)) for h in read] == [(h.id, round(h.score, 5)) for h in literal]
        assert all(h.matched == ["visual"] for h in read)


def test_words_in_the_photo_and_names_are_fused(engine: SearchEngine) -> None:
    understood = engine.understand('a shop sign "PHARMACY"', today=TODAY)
    assert understood.in_photo == ("PHARMACY",)
    hits = engine.search(understood, rerank=False)
    assert _files(hits)[0] == "signs/img_0011.jpg" and "text_in_photo" in hits[0].matched
    understood = engine.understand("the door that says open", today=TODAY)
    assert "open" in understood.in_photo  # a word the photos' text has
    assert _files(engine.search(understood, rerank=False))[0] == "signs/img_0012.jpg"
    understood = engine.understand("anna birthday", today=TODAY)
    assert "anna" in understood.names
    hits = engine.search(understood, rerank=False)
    assert _files(hits)[0] == "anna-birthday/party.jpg" and "name" in hits[0].matched


def test_http_returns_what_it_understood(engine: SearchEngine, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from xmodal.cli.server.app import create_app
    from xmodal.cli.server.settings import ServerSettings

    app = create_app(
        SearchEngine.open(engine.store.directory),
        ServerSettings(thumbnail_dir=tmp_path / "thumbnails", refresh_interval=0.0),  # type: ignore[call-arg]
        close_engine=True,
    )
    with TestClient(app, base_url="http://127.0.0.1") as client:
        plain = {"rerank": "false"}  # the second stage's first run builds its query bank: minutes here
        body = client.get("/api/search", params={"q": "bicycle in Lisbon 2022", **plain}).json()
        assert body["understood"]["place"] == "Lisbon" and body["understood"]["visual"] == "bicycle"
        assert body["understood"]["dates"] == {"start": "2022-01-01", "end": "2022-12-31", "text": "2022"}
        assert [h["name"] for h in body["hits"]] == ["img_0009.jpg"]
        assert body["hits"][0]["matched"] == ["visual", "place", "date"]
        body = client.get("/api/search", params={"q": "bicycle in Lisbon 2022", "ignore": "place", **plain}).json()
        assert body["understood"]["place"] is None and {h["name"] for h in body["hits"]} == {
            "img_0007.jpg",
            "img_0009.jpg",
        }
        body = client.get("/api/search", params={"q": "bicycle in Lisbon 2022", "literal": "true", **plain}).json()
        understood = body["understood"]  # literal: the words are searched as they are, nothing taken out
        assert understood["literal"] is True and understood["place"] is None and understood["dates"] is None
        assert len(body["hits"]) == len(PHOTOS) + len(SIGNS)
        assert client.get("/api/search", params={"q": "dog", "ignore": "colour", **plain}).status_code == 422


def test_cli_says_what_it_understood(engine: SearchEngine) -> None:
    import json
    import subprocess
    import sys

    def xmodal(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "xmodal.cli.app", "search", *args, "--index", str(engine.store.directory)]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)

    result = xmodal("bicycle in Lisbon 2022", "--json", "--no-rerank")
    assert result.stderr.strip() == 'xmodal: searching "bicycle" · Lisbon · 2022-01-01…2022-12-31'
    hits = json.loads(result.stdout)
    assert [Path(h["path"]).name for h in hits] == ["img_0009.jpg"] and hits[0]["matched"][0] == "visual"
    result = xmodal("bicycle in Lisbon 2022", "--json", "--literal", "--no-rerank")
    assert result.stderr == "" and len(json.loads(result.stdout)) == 10  # -n 10: every photo may come
    result = xmodal("东京的狗", "-n", "3", "--no-rerank")
    assert result.stderr.strip().startswith('xmodal: searching "狗", read as "dog" · Tokyo')
