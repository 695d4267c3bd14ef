"""Text in photos, kept up: video frames read and found at their moment, `xmodal check` of the
readings and their text index (and its repair), readings by other models read again, and the
counts in `xmodal info` and GET /api/info.

The OCR models are the real ones (RapidOCR's wheel), the embedding model the deterministic fake;
readings that only the check needs are written through the store, as the text stage writes them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import text, update

from tests.backends import Backend
from tests.fakes import fake_model
from tests.rendered_text import flickr_photos, fonts_missing, render_photo
from xmodal.indexer import Indexer
from xmodal.indexer.photo_text import PhotoText, TextLine, ocr_unavailable, reading_models
from xmodal.indexer.store.checking import check_index
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.photo_texts import unread_count, write_readings
from xmodal.indexer.store.schema import ImageRow, PhotoTextRow
from xmodal.search import SearchEngine
from xmodal.search.stats import index_info


def _require_media() -> None:
    missing = fonts_missing()
    if missing:
        pytest.fail(f"missing {missing}: install the fonts of .ci/system-packages", pytrace=False)
    if ocr_unavailable():
        pytest.fail(f"{ocr_unavailable()} (the test extra includes it)", pytrace=False)


def _plain(folder: Path, count: int, start: int = 0) -> list[Path]:
    """Flickr photos without text, small (a look each), copied into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for photo in flickr_photos()[start : start + count]:
        target = folder / photo.name
        Image.open(photo).convert("RGB").resize((320, 240)).save(target, quality=85)
        out.append(target)
    return out


def _line(words: str) -> TextLine:
    return TextLine(words, 0.97, ((0.1, 0.1), (0.6, 0.1), (0.6, 0.2), (0.1, 0.2)))


@pytest.mark.slow
def test_a_video_is_found_by_the_text_of_a_frame_at_that_frame_s_time(tmp_path: Path) -> None:
    """A PyAV-made clip: a plain photo for 3 s, then a photo with words written on it for 3 s. The
    text stage reads its sampled frames; --in-photo finds the video at the moment of the words."""
    av = pytest.importorskip("av")  # the `video` extra (in the test extra)
    assert av is not None
    _require_media()
    from tests.videos import write_video

    photos = flickr_photos()
    made = render_photo(photos[5], ["QUOKKA", "MARMALADE"], tmp_path / "words.jpg", random.Random(3))
    plain = Image.open(photos[6]).convert("RGB")
    lib = tmp_path / "lib"
    write_video(lib / "clip.mp4", [plain, Image.open(made.path)], size=(640, 480))
    summary = Indexer(tmp_path / "idx", model=fake_model(), workers=1).add_paths([lib])
    assert summary.videos == 1 and summary.photo_text is not None
    assert summary.photo_text.frames == summary.frames >= 2 and summary.photo_text.failed == 0
    with SearchEngine.open(tmp_path / "idx", model=fake_model()) as engine:
        hits = engine.search(None, k=5, in_photo="quokka")
        assert [h.kind for h in hits] == ["video"] and hits[0].path.endswith("clip.mp4")
        assert hits[0].time is not None and 3.0 <= hits[0].time < 6.0
        assert engine.search(None, k=5, in_photo="marmelade")[0].time == hits[0].time  # one letter wrong
        readings = engine.photo_text(hits[0].id)
    assert [r["frame_time"] for r in readings] == sorted(r["frame_time"] for r in readings)
    assert all(r["frame_time"] is not None for r in readings) and len(readings) == summary.frames
    counts = index_info(tmp_path / "idx")["signals"]["photo_text"]  # type: ignore[index]
    assert counts["frames_read"] == summary.frames and counts["frames_with_text"] >= 1
    assert counts["photos_read"] == 0 and counts["to_read"] == 0
    assert check_index(tmp_path / "idx").ok
    again = Indexer(tmp_path / "idx", model=fake_model(), workers=1).add_paths([lib])
    assert again.photo_text is not None and again.photo_text.read == 0  # read once


def _index_with_readings(tmp_path: Path) -> tuple[Path, list[int]]:
    """Three plain photos embedded (no OCR run), two readings stored as the text stage stores them."""
    lib = tmp_path / "lib"
    _plain(lib, 3)
    index = tmp_path / "idx"
    Indexer(index, model=fake_model(), workers=1, read_text=False).add_paths([lib])
    store = IndexStore.open(index)
    try:
        with store.metadata.session() as s, s.begin():
            ids = sorted(s.scalars(ImageRow.__table__.select().with_only_columns(ImageRow.id)))
            write_readings(
                s,
                [
                    (ids[0], None, PhotoText("text", [_line("GRAND TOTAL 42.50")])),
                    (ids[1], None, PhotoText("none")),
                ],
                "PP-OCRv6 small sha256:0123456789abcdef",
            )
    finally:
        store.close()
    return index, ids


def test_check_finds_text_problems_and_repair_mends_them_losing_nothing(tmp_path: Path) -> None:
    index, ids = _index_with_readings(tmp_path)
    assert check_index(index).ok
    store = IndexStore.open(index)
    try:
        with store.metadata.session() as s, s.begin():
            write_readings(s, [(9999, None, PhotoText("text", [_line("ORPHAN WORDS")]))], "x")  # of no photo
            write_readings(s, [(ids[2], 12.0, PhotoText("none"))], "x")  # a frame of no video
            total = s.execute(text("SELECT id, text FROM photo_texts WHERE item_id = :i"), {"i": ids[0]}).one()
            # the text index loses a row behind the table's back, and a trigger is gone
            s.execute(
                text("INSERT INTO photo_texts_fts(photo_texts_fts, rowid, text) VALUES ('delete', :id, :t)"),
                {"id": total[0], "t": total[1]},
            )
            s.execute(text("DROP TRIGGER photo_texts_ai"))
    finally:
        store.close()
    found = check_index(index)
    assert not found.ok
    problems = " | ".join(found.text_problems)
    assert "photo_texts_ai is missing" in problems and "out of step" in problems
    assert "2 reading(s) of text belong to no photo or frame; check --repair drops them" in found.notes
    mended = check_index(index, repair=True)
    assert mended.ok and not any("reading(s) of text" in n for n in mended.notes), mended.problems
    store = IndexStore.open(index)
    try:
        with store.metadata.session() as s:  # the text index holds the row again
            match = "SELECT rowid FROM photo_texts_fts WHERE photo_texts_fts MATCH '\"grand total\"'"
            assert list(s.scalars(text(match))) == [total[0]]
    finally:
        store.close()
    assert any("rebuilt the text index" in a for a in mended.repaired)
    with SearchEngine.open(index, model=fake_model()) as engine:
        assert [h.id for h in engine.search(None, k=5, in_photo="grand totel")] == [ids[0]]  # found again
        assert engine.photo_text(ids[1])[0]["status"] == "none"  # kept
    store = IndexStore.open(index)
    try:
        with store.metadata.session() as s, s.begin():  # the trigger is back: a new reading is indexed
            write_readings(s, [(ids[2], None, PhotoText("text", [_line("PELICAN CROSSING")]))], "x")
    finally:
        store.close()
    with SearchEngine.open(index, model=fake_model()) as engine:
        assert [h.id for h in engine.search(None, k=5, in_photo="pelican")] == [ids[2]]
    assert check_index(index).ok


def test_check_of_readings_on_both_backends(tmp_path: Path, db_backend: Backend) -> None:
    """Unreadable rows and second readings of one photo: reported, and repair keeps the newest."""
    index, ids = _index_with_readings(tmp_path)
    store = IndexStore.open(index)
    try:
        with store.metadata.session() as s, s.begin():
            s.execute(update(PhotoTextRow).where(PhotoTextRow.item_id == ids[1]).values(lines="{not json"))
            s.execute(  # a second reading of photo 0 (as a crashed older xmodal could leave)
                PhotoTextRow.__table__.insert().values(
                    item_id=ids[0],
                    frame_time=None,
                    status="text",
                    reason=None,
                    engine="x",
                    text="GRAND TOTAL 42.90",
                    lines=json.dumps([_line("GRAND TOTAL 42.90").as_dict()]),
                    seconds=0.1,
                    read_at=s.execute(PhotoTextRow.__table__.select()).first().read_at,  # type: ignore[union-attr]
                )
            )
    finally:
        store.close()
    found = check_index(index)
    problems = " | ".join(found.text_problems)
    assert "unreadable" in problems and "replaced by a newer reading" in problems
    assert check_index(index, repair=True).ok
    with SearchEngine.open(index, model=fake_model()) as engine:
        assert [r["text"] for r in engine.photo_text(ids[0])] == ["GRAND TOTAL 42.90"]  # the newest
        assert engine.photo_text(ids[1]) == []  # read again by the next run
        assert [h.id for h in engine.search(None, k=3, in_photo="42.90")] == [ids[0]]


def test_readings_by_other_models_are_read_again_by_the_next_run(tmp_path: Path) -> None:
    """Each reading records the models that made it; readings by others stay searchable until the
    next run's text stage reads those photos again with the models here."""
    _require_media()
    lib = tmp_path / "lib"
    _plain(lib, 3, start=20)
    index = tmp_path / "idx"
    first = Indexer(index, model=fake_model(), workers=1).add_paths([lib])
    assert first.photo_text is not None and first.photo_text.read == 3
    current = reading_models()
    assert current is not None and current.startswith("PP-OCR") and " sha256:" in current
    store = IndexStore.open(index)
    try:
        with store.metadata.session() as s, s.begin():
            assert set(s.scalars(PhotoTextRow.__table__.select().with_only_columns(PhotoTextRow.engine))) == {current}
            one = min(s.scalars(ImageRow.__table__.select().with_only_columns(ImageRow.id)))
            write_readings(s, [(one, None, PhotoText("text", [_line("OLD MODEL WORDS")]))], "PP-OCRv4 mobile sha256:0")
            s.execute(update(PhotoTextRow).values(engine="PP-OCRv4 mobile sha256:0"))
            assert unread_count(s, current) == 3 and unread_count(s) == 0
    finally:
        store.close()
    assert index_info(index)["signals"]["photo_text"]["to_read"] == 3  # type: ignore[index]
    with SearchEngine.open(index, model=fake_model()) as engine:  # searchable until read again
        assert [h.id for h in engine.search(None, k=3, in_photo="old model words")] == [one]
    again = Indexer(index, model=fake_model(), workers=1).add_paths([lib])
    assert again.new == 0 and again.photo_text is not None and again.photo_text.read == 3
    assert index_info(index)["signals"]["photo_text"]["to_read"] == 0  # type: ignore[index]
    with SearchEngine.open(index, model=fake_model()) as engine:
        assert engine.search(None, k=3, in_photo="old model words") == []
        assert [r["engine"] for r in engine.photo_text(one)] == [current]
    third = Indexer(index, model=fake_model(), workers=1).add_paths([lib])
    assert third.photo_text is not None and third.photo_text.read == 0
