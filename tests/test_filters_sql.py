"""Search filters run as SQL, with the same results on SQLite and PostgreSQL: folder names with
LIKE wildcards (`%`, `_`), quotes, other case or bytes that are not UTF-8; extensions; dates
(EXIF else mtime); size."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from tests.backends import Backend
from tests.conftest import make_image
from tests.fakes import fake_model
from xmodal.indexer import Indexer
from xmodal.search import SearchEngine
from xmodal.search.filters import SearchFilter, parse_date

FOLDERS = [
    "50%_off",
    "50XYoff",
    "a_b",
    "aXb",
    'it\'s "quoted"',
    "Case",
    "case",
    "back\\slash",
    "plain",
    "caf\udce9 (not UTF-8)",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i, folder in enumerate(FOLDERS):
        make_image(root / folder / f"p{i}.jpg", (20 * i, 100, 200 - 10 * i), size=(64 + i, 48))
        make_image(root / folder / "deeper" / f"q{i}.PNG", (200 - 10 * i, 30, 20 * i), size=(32, 32))
    make_image(root / "50%_offside.jpg", (1, 2, 3))  # shares the folder's name as a prefix, not a folder
    # mtimes: the first folders' photos from 2020, the rest from 2024 (no EXIF dates here)
    for i, folder in enumerate(FOLDERS):
        when = datetime(2020, 6, 1, 12) if i < 3 else datetime(2024, 6, 1, 12)
        for f in (root / folder).rglob("*.*"):
            os.utime(f, (when.timestamp(), when.timestamp()))
    return root


def _paths(engine: SearchEngine, flt: SearchFilter) -> set[str]:
    with engine.store.metadata.session() as s:
        ids = flt.allowed_ids(s, "image")
    hits = engine.search_text("red", k=100, filters=flt, rerank=False)
    assert len(hits) == len(ids)
    return {str(Path(h.path).relative_to(engine.store.directory.parent / "photos")) for h in hits}


def test_filters_give_the_same_results_on_each_backend(tmp_path: Path, tree: Path, db_backend: Backend) -> None:
    Indexer(tmp_path / "idx", model=fake_model()).add_paths([tree])
    with SearchEngine.open(tmp_path / "idx", model=fake_model()) as engine:
        for i, folder in enumerate(FOLDERS):
            assert _paths(engine, SearchFilter(under=tree / folder)) == {
                f"{folder}/p{i}.jpg",
                f"{folder}/deeper/q{i}.PNG",
            }, folder
        assert _paths(engine, SearchFilter(under=tree / "50%_off" / "deeper")) == {"50%_off/deeper/q0.PNG"}
        assert _paths(engine, SearchFilter(under=tree / "50%_offside.jpg")) == {"50%_offside.jpg"}  # a file
        assert _paths(engine, SearchFilter(under=tree / "5")) == set()  # not a prefix match
        assert len(_paths(engine, SearchFilter(under=tree))) == 2 * len(FOLDERS) + 1

        pngs = _paths(engine, SearchFilter(extensions=("png",)))
        assert pngs == _paths(engine, SearchFilter(extensions=(".PNG",))) and len(pngs) == len(FOLDERS)
        assert _paths(engine, SearchFilter(extensions=("_PG",))) == set()  # `_` is not a wildcard

        old = _paths(engine, SearchFilter(before=datetime(2021, 1, 1)))
        assert old == {p for p in _paths(engine, SearchFilter(under=tree)) if p.split("/")[0] in FOLDERS[:3]}
        new = _paths(engine, SearchFilter(after=datetime(2021, 1, 1)))
        assert len(new) == 2 * (len(FOLDERS) - 3) + 1  # + the undated file of today
        exact = datetime(2020, 6, 1, 12)
        # half-open: `after` included, `before` excluded, so a moment is on exactly one side
        assert _paths(engine, SearchFilter(after=exact, before=datetime(2020, 6, 1, 12, 0, 1))) == old
        assert _paths(engine, SearchFilter(after=exact, before=exact)) == set()
        assert _paths(engine, SearchFilter(before=exact)) == set()
        assert _paths(engine, SearchFilter(after=exact, before=datetime(2020, 6, 1, 11, 59))) == set()
        # a year, a month, a day each mean the whole period (issue 24: today's month and day were filled in)
        periods = [("2020", "2021"), ("2020-06", "2020-07"), ("June 2020", "July 2020"), ("2020-06-01", "2020-06-02")]
        for after, before in periods:
            period = SearchFilter(after=parse_date(after), before=parse_date(before))
            assert _paths(engine, period) == old, (after, before)
        assert _paths(engine, SearchFilter(after=parse_date("2020-07"), before=parse_date("2024"))) == set()
        # bounds no file can have (year 1, year 9999) do not overflow the 64-bit mtime column
        everything = _paths(engine, SearchFilter(under=tree))
        assert _paths(engine, SearchFilter(after=datetime(1, 1, 1), before=datetime(9999, 12, 31))) == everything

        wide = _paths(engine, SearchFilter(min_width=66))
        assert wide == {f"{f}/p{i}.jpg" for i, f in enumerate(FOLDERS) if 64 + i >= 66}
        both = _paths(engine, SearchFilter(under=tree / "a_b", min_width=60, extensions=("jpg",)))
        assert both == {"a_b/p2.jpg"}
