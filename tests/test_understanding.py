"""The one-box planner (issue 27, items 2 and 4): what a plain query is read as, against a fixed
"today", and the real dateparser and CC-CEDICT; no index needed."""

from __future__ import annotations

from datetime import date

import pytest

from xmodal.search.understanding import QueryPlanner, Understood

TODAY = date(2026, 12, 7)
PLACES = ["Lisbon", "Tokyo", "Nice", "Paris", "New York", "Portugal", "Reading"]


@pytest.fixture(scope="module")
def planner() -> QueryPlanner:
    return QueryPlanner(places=PLACES, today=TODAY)


def _read(planner: QueryPlanner, query: str) -> Understood:
    return planner.understand(query)


@pytest.mark.parametrize(
    ("query", "start", "end", "visual"),
    [
        ("dog 2019", "2019-01-01", "2019-12-31", "dog"),
        ("June 2023 birthday cake", "2023-06-01", "2023-06-30", "birthday cake"),
        ("kids at the park yesterday", "2026-12-06", "2026-12-06", "kids at the park"),
        ("snow last winter", "2025-12-01", "2026-02-28", "snow"),
        ("a beach last summer", "2026-06-01", "2026-08-31", "a beach"),
        ("sunset in summer 2019", "2019-06-01", "2019-08-31", "sunset"),
        ("between March and May 2022 at the lake", "2022-03-01", "2022-05-31", "the lake"),
        ("from 2019 to 2021 horses", "2019-01-01", "2021-12-31", "horses"),
        ("children since 2020", "2020-01-01", "2026-12-07", "children"),
        ("a dog 3 days ago", "2026-12-04", "2026-12-04", "a dog"),
        ("last week", "2026-11-30", "2026-12-06", None),
        ("taken on 5 June 2021", "2021-06-05", "2021-06-05", None),
        ("dog 2021-06-05", "2021-06-05", "2021-06-05", "dog"),
        ("sunset at the sea in May", "2026-05-01", "2026-05-31", "sunset at the sea"),
    ],
)
def test_english_dates_against_a_fixed_today(
    planner: QueryPlanner, query: str, start: str, end: str, visual: str | None
) -> None:
    u = _read(planner, query)
    assert u.dates is not None, query
    assert (u.dates.start.isoformat(), u.dates.end.isoformat()) == (start, end)
    assert u.visual == visual


@pytest.mark.parametrize(
    ("query", "start", "end", "visual"),
    [
        ("2019年的海边", "2019-01-01", "2019-12-31", "海边"),
        ("去年夏天的狗", "2025-06-01", "2025-08-31", "狗"),
        ("昨天的狗", "2026-12-06", "2026-12-06", "狗"),
        ("2022年3月到5月的海边", "2022-03-01", "2022-05-31", "海边"),
        ("上个月的猫", "2026-11-01", "2026-11-30", "猫"),
        ("2019年6月", "2019-06-01", "2019-06-30", None),
    ],
)
def test_chinese_dates(planner: QueryPlanner, query: str, start: str, end: str, visual: str | None) -> None:
    u = _read(planner, query)
    assert u.dates is not None, query
    assert (u.dates.start.isoformat(), u.dates.end.isoformat()) == (start, end)
    assert u.visual == visual


@pytest.mark.parametrize(
    "query",
    ["2 dogs playing in the snow", "a man may fall", "a summer day", "spring flowers", "1000 lanterns", "4 kids"],
)
def test_numbers_and_look_words_are_not_dates(planner: QueryPlanner, query: str) -> None:
    u = _read(planner, query)
    assert u.dates is None and u.visual == query and u.parts == ["visual"]


def test_relative_dates_follow_today() -> None:
    spring = QueryPlanner(today=date(2026, 4, 10))
    assert str(spring.understand("last summer").dates) == "2025-06-01…2025-08-31"  # this summer has not ended
    assert str(spring.understand("yesterday").dates) == "2026-04-09"
    assert str(spring.understand("去年夏天").dates) == "2025-06-01…2025-08-31"
    assert str(spring.understand("last summer", today=date(2026, 9, 1)).dates) == "2026-06-01…2026-08-31"


def test_places_of_the_index_only(planner: QueryPlanner) -> None:
    u = _read(planner, "dog on the beach in Lisbon last summer")
    assert (u.visual, u.place, u.place_text) == ("dog on the beach", "Lisbon", "in Lisbon")
    assert str(u.dates) == "2026-06-01…2026-08-31"
    assert u.line() == 'searching "dog on the beach" · Lisbon · 2026-06-01…2026-08-31'
    assert _read(planner, "lisbon tram").place == "Lisbon"  # no everyday word is spelled so
    assert _read(planner, "new york in winter 2019").place == "New York"
    u = _read(planner, "dog in Atlantis")  # not a place of this index: said, and left in the look
    assert u.place is None and u.visual == "dog in Atlantis" and u.not_understood == ("Atlantis",)
    assert QueryPlanner(today=TODAY).understand("sunset in Lisbon").place is None  # an index without places


@pytest.mark.parametrize("query", ["a nice view", "Nice view", "in nice weather", "reading a book", "A nice view"])
def test_a_common_word_is_not_a_town(planner: QueryPlanner, query: str) -> None:
    u = _read(planner, query)
    assert u.place is None and u.visual == query


@pytest.mark.parametrize(("query", "visual"), [("sunset in Nice", "sunset"), ("Nice 2019", None), ("Nice", None)])
def test_a_common_word_written_as_a_name_is_the_town(planner: QueryPlanner, query: str, visual: str | None) -> None:
    u = _read(planner, query)
    assert u.place == "Nice" and u.visual == visual


def test_chinese_place_names_through_the_dictionary(planner: QueryPlanner) -> None:
    u = _read(planner, "去年夏天在东京的照片")
    assert (u.place, u.place_text, u.visual) == ("Tokyo", "东京", None)
    assert str(u.dates) == "2025-06-01…2025-08-31"
    u = _read(planner, "巴黎的狗")
    assert (u.place, u.visual) == ("Paris", "狗")


def test_quoted_words_are_words_in_the_photo(planner: QueryPlanner) -> None:
    u = _read(planner, 'a shop sign saying "OPEN"')
    assert (u.visual, u.in_photo, u.quoted) == ("a shop sign saying", ("OPEN",), ("OPEN",))
    u = _read(planner, '"golden retriever"')  # a quoted query alone is still its look
    assert u.visual == '"golden retriever"' and u.in_photo == ("golden retriever",)


def test_words_in_photos_and_names_come_from_the_index() -> None:
    planner = QueryPlanner(
        today=TODAY,
        photo_words=lambda words: {w for w in words if w in {"pharmacy"}},
        name_words=lambda words: {w for w in words if w in {"anna", "birthday"}},
    )
    u = planner.understand("the receipt from the pharmacy")
    assert u.in_photo == ("pharmacy",) and u.visual == "the receipt from the pharmacy" and u.quoted == ()
    u = planner.understand("anna birthday cake")
    assert u.names == ("anna", "birthday") and u.parts == ["visual", "name"]


def test_combined_queries_keep_their_terms(planner: QueryPlanner) -> None:
    from xmodal.search.query import parse_query

    u = _read(planner, '"dog on the beach in Lisbon last summer" - "snow"')
    assert u.place == "Lisbon" and str(u.dates) == "2026-06-01…2026-08-31" and u.in_photo == ()
    assert [(t.weight, t.value) for t in parse_query(u.visual or "")] == [(1.0, "dog on the beach"), (-1.0, "snow")]
    u = _read(planner, '"dog" - "snow in Lisbon"')  # a negative term is never a filter
    assert u.place is None and u.visual == '"dog" - "snow in Lisbon"'
    u = _read(planner, '"dog" + 2:"beach"')
    assert u.parts == ["visual"] and u.visual == '"dog" + 2:"beach"'


def test_parts_can_be_ignored(planner: QueryPlanner) -> None:
    u = planner.understand("dog in Lisbon 2019", ignore=("place",))
    assert u.place is None and u.visual == "dog in Lisbon" and u.dates is not None
    u = planner.understand("dog in Lisbon 2019", ignore=("place", "date"))
    assert u.visual == "dog in Lisbon 2019" and u.parts == ["visual"]


def test_as_dict_is_json_ready(planner: QueryPlanner) -> None:
    import json

    out = _read(planner, "dog in Tokyo 2019").as_dict()
    assert json.loads(json.dumps(out))["dates"] == {"start": "2019-01-01", "end": "2019-12-31", "text": "2019"}
    assert out["place"] == "Tokyo" and out["parts"] == ["visual", "place", "date"]
