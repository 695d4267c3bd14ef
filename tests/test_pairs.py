"""RAW+JPEG pairs (issue 25): both files of a shot are indexed, and results show the shot once, as
its JPEG, with the RAW in `pair` (search.pairs). Fake encoder (mean colours); the RAW is a DNG of a
real photo (tests/raw_files.py), named as a camera names its RAW."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import fake_model
from tests.raw_files import FLICKR, flickr_photo, make_dng
from xmodal.cli.server.routes.shaping import hit_out
from xmodal.indexer import Indexer
from xmodal.search import SearchEngine
from xmodal.search.filters import SearchFilter

pytestmark = pytest.mark.skipif(not FLICKR.is_dir(), reason="needs ../shared/datasets/flickr8k-1k")
PHOTOS = [
    "172097783_292c5413d8.jpg",
    "177302997_5b2d770a0a.jpg",
    "182493240_40410254b0.jpg",
    "1884065356_c6c34b4568.jpg",
]


@pytest.fixture(scope="module")
def shoot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    card = root / "card"
    a, b, c, d = (flickr_photo(name) for name in PHOTOS)
    card.mkdir()
    a.save(card / "IMG_0001.JPG", "JPEG", quality=92)
    make_dng(card / "IMG_0001.CR2", a)  # the same shot as RAW (a DNG inside: content decides how it is read)
    b.save(card / "IMG_0002.JPG", "JPEG", quality=92)
    c.save(card / "IMG_0003.JPG", "JPEG", quality=92)
    make_dng(card / "raw" / "IMG_0003.CR2", c)  # another folder: not a pair
    make_dng(card / "IMG_0004.CR2", d)  # a RAW alone
    summary = Indexer(root / "idx", model=fake_model()).add_paths([card])
    assert (summary.new, summary.failed) == (6, 0), summary.failures
    return root


def test_a_pair_is_one_hit_shown_as_its_jpeg(shoot: Path) -> None:
    card = shoot / "card"
    with SearchEngine.open(shoot / "idx", model=fake_model()) as engine:
        hits = engine.search_image(card / "IMG_0001.JPG", k=10, rerank=False)
        paths = [h.path for h in hits]
        assert len(hits) == 5 and len(set(paths)) == 5  # six files, one shot folded
        assert str(card / "IMG_0001.CR2") not in paths
        first = hits[0]
        assert first.path == str(card / "IMG_0001.JPG") and first.pair == (str(card / "IMG_0001.CR2"),)
        assert first.as_dict()["pair"] == [str(card / "IMG_0001.CR2")]
        assert hit_out(first).pair == [str(card / "IMG_0001.CR2")]
        assert all(not h.pair for h in hits[1:])  # IMG_0003.JPG and raw/IMG_0003.CR2 are two folders
        assert "pair" not in hits[1].as_dict()
        # the RAW as the query: its shot's JPEG is the hit, not a second copy
        from_raw = engine.search_image(card / "IMG_0001.CR2", k=10, rerank=False)
        assert from_raw[0].path == str(card / "IMG_0001.JPG")
        assert [h.path for h in hits[:2]] == [h.path for h in engine.search_image(card / "IMG_0001.JPG", k=2)]
        # k hits when there are k shots: the list is filled past the folded copy
        assert len(engine.search_image(card / "IMG_0001.JPG", k=5, rerank=False)) == 5
        # "more like this" from the RAW never offers its own JPEG
        pair_raw = _id_of(engine, card / "IMG_0001.CR2")
        similar = engine.similar(pair_raw, k=10, rerank=False)
        assert str(card / "IMG_0001.JPG") not in [h.path for h in similar] and len(similar) == 4
        # filtered to RAW files only: the RAW alone, no JPEG to show
        only_raw = engine.search_image(
            card / "IMG_0001.JPG", k=10, rerank=False, filters=SearchFilter(extensions=(".cr2",))
        )
        assert [Path(h.path).name for h in only_raw][:1] == ["IMG_0001.CR2"] and not only_raw[0].pair


def _id_of(engine: SearchEngine, path: Path) -> int:
    from sqlalchemy import select

    from xmodal.indexer.store.schema import ImageRow

    with engine.store.metadata.session() as s:
        return int(s.scalar(select(ImageRow.id).where(ImageRow.path == str(path))))
