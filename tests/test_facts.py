"""Facts of every photo (indexer.facts): EXIF dates with offsets, GPS named offline, the camera and
the names, stored on SQLite and PostgreSQL; the place filter inside the search; date filters on
the facts' time; known places and the timeline; facts filled for an older index without
embedding anything again; moves and removals keep them in step."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from tests.backends import Backend
from tests.facts_photos import CITIES, Shot, exif_photo
from tests.fakes import fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.errors import InvalidQueryError
from xmodal.indexer.facts import FACTS_VERSION, name_words, read_facts
from xmodal.indexer.places import gazetteer
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import FactsRow, ImageRow
from xmodal.search import SearchEngine
from xmodal.search.filters import SearchFilter, parse_date
from xmodal.search.stats import index_info

# name: (shot, folder); the folder names become words too
SHOTS = {
    "lisbon_beach": (
        Shot("2025:06:14 18:30:05", "+01:00", CITIES["Lisbon"][0], "Canon", "Canon EOS 5D"),
        "Lisbon 2025",
    ),
    "lisbon_tram": (Shot("2025:07:02 09:10:00", "+01:00", CITIES["Lisbon"][0], "Apple", "iPhone 15"), "Lisbon 2025"),
    "porto_bridge": (Shot("2025:07:20 20:00:00", "+01:00", CITIES["Porto"][0]), "Portugal"),
    "tokyo_night": (Shot("2019:11:03 22:15:00", "+09:00", CITIES["Tokyo"][0], "SONY", "ILCE-7M3"), "Japan"),
    "paris_tower": (Shot("2023:04:01 12:00:00", None, CITIES["Paris"][0]), "France"),
    "sydney_harbour": (Shot("2024:12:31 23:59:00", "+11:00", CITIES["Sydney"][0]), "Australia"),
    "no_gps": (Shot("2025:06:30 08:00:00", "-04:00"), "misc"),
    "no_exif": (Shot(), "misc"),
}
NO_EXIF_MTIME = datetime(2021, 3, 5, 10, 0, 0)


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i, (name, (shot, folder)) in enumerate(SHOTS.items()):
        exif_photo(root / folder / f"{name}.jpg", shot, source=i)
    stamp = NO_EXIF_MTIME.timestamp()
    os.utime(root / "misc" / "no_exif.jpg", (stamp, stamp))
    return root


def _names(hits) -> set[str]:  # noqa: ANN001
    return {Path(h.path).stem for h in hits}


def test_read_facts_from_exif(tmp_path: Path) -> None:
    shot, _ = SHOTS["lisbon_beach"]
    facts = read_facts(exif_photo(tmp_path / "Holidays" / "beachDay" / "IMG_0042.jpg", shot))
    assert facts.taken_at == datetime(2025, 6, 14, 18, 30, 5)
    assert (facts.taken_offset, facts.taken_source) == (60, "exif")
    assert facts.latitude == pytest.approx(38.7110, abs=1e-4) and facts.longitude == pytest.approx(-9.1366, abs=1e-4)
    assert (facts.city, facts.region, facts.country, facts.country_code) == ("Lisbon", "Lisbon", "Portugal", "PT")
    assert facts.camera == "Canon EOS 5D"
    assert facts.words.split()[-3:] == ["beach", "day", "0042"] and "holidays" in facts.words.split()
    west = read_facts(exif_photo(tmp_path / "w.jpg", Shot("2024:01:02 03:04:05", "-05:30")))
    assert west.taken_offset == -330 and west.city is None and west.latitude is None


def test_read_facts_from_a_heic_header(tmp_path: Path) -> None:
    import pillow_heif
    from PIL import Image

    shot = Shot("2022:02:02 10:00:00", "+09:00", CITIES["Tokyo"][0], "Apple", "iPhone 12")
    jpeg = exif_photo(tmp_path / "a.jpg", shot)
    with Image.open(jpeg) as im:
        pillow_heif.from_pillow(im).save(tmp_path / "IMG_0001.heic", exif=im.info["exif"])
    facts = read_facts(tmp_path / "IMG_0001.heic")
    assert (facts.taken_at, facts.taken_offset, facts.taken_source) == (datetime(2022, 2, 2, 10), 540, "exif")
    assert (facts.city, facts.country, facts.camera) == ("Tokyo", "Japan", "Apple iPhone 12")


def test_without_exif_the_file_time_or_the_decoders_time(tmp_path: Path) -> None:
    path = exif_photo(tmp_path / "plain.jpg", Shot())
    stamp = NO_EXIF_MTIME.timestamp()
    os.utime(path, (stamp, stamp))
    facts = read_facts(path)
    assert (facts.taken_at, facts.taken_source) == (NO_EXIF_MTIME, "file")
    # the hook for other decoders (a video's QuickTime creation time): used when EXIF has no date
    given = read_facts(path, container_time=datetime(2020, 1, 1, 12))
    assert (given.taken_at, given.taken_source) == (datetime(2020, 1, 1, 12), "metadata")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert read_facts(garbage).taken_source == "file"  # never raises
    assert read_facts(tmp_path / "gone.jpg").taken_at is None


def test_name_words() -> None:
    assert name_words("/home/me/Pictures/Lisbon 2025/beach_day/IMG_0042.JPG") == "pictures lisbon 2025 beach day 0042"
    assert name_words("/p/東京/夜景.jpg") == "p 東京 夜景"


def test_gazetteer_names_the_city_not_a_district() -> None:
    places = gazetteer()
    for name, ((lat, lon), region, country) in CITIES.items():
        place = places.place(lat, lon)
        assert place is not None and place.country == country and place.region == region, name
    assert places.place(35.6595, 139.7005).city == "Tokyo"  # Shibuya: the city, not the block
    assert places.place(48.80, 2.13).city == "Versailles"  # a town beside Paris keeps its name
    assert places.place(0.0, -30.0) is None  # the middle of the Atlantic


def test_facts_place_and_date_filters_on_each_backend(tmp_path: Path, library: Path, db_backend: Backend) -> None:
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths([library])
    assert summary.new == len(SHOTS) and "facts" in summary.timings
    with SearchEngine.open(tmp_path / "idx", model=fake_model()) as engine:
        assert engine.store.metadata.backend == db_backend.name

        def search(**kw: object) -> set[str]:
            return _names(engine.search("a photo", k=50, rerank=False, **kw))  # type: ignore[arg-type]

        assert search(place="Lisbon") == {"lisbon_beach", "lisbon_tram"}
        assert search(place="  portugal ") == {"lisbon_beach", "lisbon_tram", "porto_bridge"}
        assert search(place="Japan") == {"tokyo_night"}
        assert search(place="Île-de-France") == {"paris_tower"}
        assert search(place="Nice") == set()
        # dates read the facts' time: the camera's wall clock, as the EXIF says it
        june_2025 = SearchFilter(after=parse_date("2025-06"), before=parse_date("2025-07"))
        assert search(filters=june_2025) == {"lisbon_beach", "no_gps"}
        assert search(filters=june_2025, place="Portugal") == {"lisbon_beach"}
        summer = SearchFilter(after=parse_date("2025-06"), before=parse_date("2025-09"))
        assert search(filters=summer, place="Portugal") == {"lisbon_beach", "lisbon_tram", "porto_bridge"}
        assert search(filters=SearchFilter(after=parse_date("2021-03-05"), before=parse_date("2021-03-06"))) == {
            "no_exif"
        }
        with pytest.raises(InvalidQueryError, match="place"):
            engine.search("a photo", target="text", place="Lisbon")

        places = {(p.name, p.level): p for p in engine.known_places()}
        assert places[("Portugal", "country")].count == 3
        assert places[("Lisbon", "city")].count == 2 and places[("Lisbon", "city")].within == "Portugal"
        assert places[("Tokyo", "region")].count == 1
        assert engine.known_places() is engine.known_places()  # cached until the facts change

        page = engine.timeline(months=3, per_month=1)
        assert [(m.month, m.count) for m in page.months] == [("2025-07", 2), ("2025-06", 2), ("2024-12", 1)]
        assert page.next_cursor == "2024-12" and len(page.months[0].ids) == 1
        rest = engine.timeline(cursor=page.next_cursor, months=10)
        assert [m.month for m in rest.months] == ["2023-04", "2021-03", "2019-11"] and rest.next_cursor is None
        assert {len(m.ids) for m in rest.months} == {1}

        with engine.store.metadata.session() as s:
            tokyo = s.scalar(select(ImageRow.id).where(ImageRow.path.like("%tokyo_night%")))
        facts = engine.facts(int(tokyo))
        assert facts is not None and facts.taken_offset == 540 and facts.camera == "SONY ILCE-7M3"

    info = index_info(tmp_path / "idx")
    counts = info["signals"]["facts"]  # type: ignore[index]
    assert counts["photos"] == counts["dated"] == len(SHOTS)
    assert counts["placed"] == 6 and counts["dated_by_exif"] == 7 and counts["dated_by_file"] == 1


def test_older_index_gets_facts_without_embedding_again(tmp_path: Path, library: Path) -> None:
    Indexer(tmp_path / "idx", model=fake_model()).add_paths([library])
    store = IndexStore.open(tmp_path / "idx")
    try:
        generation = store.metadata.generation("image")
        with store.metadata.session() as s, s.begin():  # as an index made before facts (revision 0004)
            s.execute(delete(FactsRow))
    finally:
        store.close()
    assert index_info(tmp_path / "idx")["signals"]["facts"]["photos"] == 0  # type: ignore[index]
    model = fake_model()
    calls = []
    embed = model.embed_pixels_for_index
    model.embed_pixels_for_index = lambda pixels: calls.append(1) or embed(pixels)  # type: ignore[method-assign]
    summary = Indexer(tmp_path / "idx", model=model).add_paths([library])
    assert summary.embedded == 0 and not calls and summary.unchanged == len(SHOTS)
    assert summary.facts_filled == len(SHOTS) and summary.as_dict()["facts_filled"] == len(SHOTS)
    store = IndexStore.open(tmp_path / "idx")
    try:
        assert store.metadata.generation("image") == generation  # the vectors' caches have nothing to catch up
        with store.metadata.session() as s:
            rows = list(s.scalars(select(FactsRow)))
    finally:
        store.close()
    assert len(rows) == len(SHOTS) and {r.version for r in rows} == {FACTS_VERSION}
    assert sorted(r.city for r in rows if r.city) == ["Lisbon", "Lisbon", "Paris", "Porto", "Sydney", "Tokyo"]


def test_moves_and_removals_keep_facts_in_step(tmp_path: Path, library: Path) -> None:
    Indexer(tmp_path / "idx", model=fake_model()).add_paths([library])
    (library / "misc" / "no_gps.jpg").rename(library / "misc" / "Rainy Morning.jpg")
    (library / "Japan" / "tokyo_night.jpg").unlink()
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths([library])
    assert (summary.moved, summary.removed) == (1, 1)
    store = IndexStore.open(tmp_path / "idx")
    try:
        with store.metadata.session() as s:
            joined = select(ImageRow.path, FactsRow.words).join(FactsRow, FactsRow.image_id == ImageRow.id)
            words = {path: text for path, text in s.execute(joined)}
            count = len(list(s.scalars(select(FactsRow.image_id))))
    finally:
        store.close()
    assert count == len(SHOTS) - 1  # the removed photo's facts went with it
    assert words[str(library / "misc" / "Rainy Morning.jpg")].endswith("photos misc rainy morning")


def test_cli_places_timeline_info_and_place_option(tmp_path: Path, library: Path) -> None:
    import json

    from typer.testing import CliRunner

    from xmodal.cli.app import app

    Indexer(tmp_path / "idx", model=fake_model()).add_paths([library])
    runner = CliRunner()
    index = ["--index", str(tmp_path / "idx")]
    places = json.loads(runner.invoke(app, ["places", "--json", *index]).output)
    assert {"name": "Portugal", "level": "country", "count": 3, "within": None} == places[0]
    listed = runner.invoke(app, ["places", *index]).output.splitlines()
    assert any(line.split() == ["2", "city", "Lisbon", "(Portugal)"] for line in listed), listed
    months = json.loads(runner.invoke(app, ["timeline", "--json", "--months", "2", *index]).output)
    assert months == {
        "months": [{"month": "2025-07", "count": 2}, {"month": "2025-06", "count": 2}],
        "next_cursor": "2025-06",
        "undated": 0,
    }
    bad = runner.invoke(app, ["timeline", "--before", "June", *index])
    assert bad.exit_code == 2 and bad.output.startswith("xmodal: error: a month must be written YYYY-MM")
    info = runner.invoke(app, ["info", *index]).output
    assert "facts photos 8, dated 8, placed 6" in info and "dated by exif 7, dated by file 1" in info
    refused = runner.invoke(app, ["search", "a photo", "--place", "Lisbon", "--target", "text", *index])
    assert refused.exit_code == 2 and "--place filter photos only" in refused.output
