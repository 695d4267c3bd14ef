"""Text in photos (issue 26): read with the real RapidOCR models at indexing, searched with --in-photo.

Words are rendered on real flickr photos (tests/rendered_text.py: several fonts, sizes, colours and
angles; Chinese in Noto CJK), plus a screenshot-like and a receipt-like picture. The embedding
model is the deterministic fake (the OCR and the SQL text index are real); SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.backends import Backend
from tests.fakes import fake_model
from tests.rendered_text import (
    Rendered,
    flickr_photos,
    fonts_missing,
    receipt,
    rendered_photos,
    screenshot,
)
from xmodal.indexer import Indexer
from xmodal.indexer.limits import Limits
from xmodal.indexer.photo_text import OCR_EXTRA_NOTE, TextReader, ocr_unavailable
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import ImageRow
from xmodal.search import SearchEngine
from xmodal.search.filters import SearchFilter
from xmodal.search.photo_text import line_matches, query_words, word_score

_SETUP = "the fonts of .ci/system-packages (fonts-dejavu-core, fonts-noto-cjk)"
ROOT = Path(__file__).resolve().parents[1]


def _require_media() -> None:
    missing = fonts_missing()
    if missing:
        pytest.fail(f"missing {missing}: install {_SETUP}", pytrace=False)
    if ocr_unavailable():
        pytest.fail(f"{ocr_unavailable()} (the test extra includes it)", pytrace=False)


# --- the scoring, no model ------------------------------------------------------------------------
def test_words_match_exactly_or_with_one_wrong_character() -> None:
    assert query_words('Total: "42.50",  TOTAL') == ["total", "42.50"]  # folded, once each
    assert word_score("total", "grand total 42.50") == (1.0, "total")
    assert word_score("totel", "grand total 42.50") == (0.8, "total")  # one letter wrong
    assert word_score("tota", "grand total") == (1.0, "tota")  # a substring is found
    assert word_score("tetel", "grand total")[0] == 0.0  # two wrong: not found
    assert word_score("cat", "a cot")[0] == 0.0  # short words must be exact
    assert word_score("42.50", "total 42.5")[0] == pytest.approx(0.8)  # one missing character
    assert word_score("北京大学", "欢迎来到北京 大学")[0] == 1.0  # Chinese: spaces between characters ignored
    assert word_score("北京大字", "欢迎来到北京大学")[0] == pytest.approx(0.75)  # one character wrong
    assert word_score("咖啡", "咖啡馆")[0] == 1.0 and word_score("茶馆", "咖啡馆")[0] == 0.0
    assert line_matches(["GRAND TOTAL", "42.50", "thank you"], "total 42.5O") == [True, True, False]


@pytest.mark.slow
def test_without_the_extra_indexing_says_so_in_one_line(tmp_path: Path) -> None:
    """rapidocr blocked: the run indexes the photos, `xmodal index` prints one note with the pip
    line, `xmodal info` says that text in photos is not read; no traceback anywhere."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photos / "red.png")
    probe = (
        "import sys; sys.modules['rapidocr'] = None\n"
        "from tests.fakes import fake_model\n"
        "from xmodal.indexer import Indexer\n"
        f"s = Indexer({str(tmp_path / 'idx')!r}, model=fake_model(), workers=1).add_paths([{str(photos)!r}])\n"
        "print(s.new, s.photo_text.note)\n"
        "from xmodal.cli.app import main\n"
        f"sys.argv = ['xmodal', 'info', '--index', {str(tmp_path / 'idx')!r}]\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"1 {OCR_EXTRA_NOTE}" in done.stdout
    assert "text_in_photos: " + OCR_EXTRA_NOTE in done.stdout
    assert "pip install 'xmodal[ocr]'" in OCR_EXTRA_NOTE
    assert "Traceback" not in done.stderr + done.stdout


# --- reading, with the real models ----------------------------------------------------------------
@pytest.mark.slow
def test_the_shipped_models_read_with_no_network(tmp_path: Path) -> None:
    """In a process where every socket connection and every RapidOCR download fails, the reader
    loads the wheel's own model files (named by xmodal) and reads a rendered photo."""
    _require_media()
    shot = rendered_photos(tmp_path, flickr_photos()[40:41], per_photo=2)[0]
    probe = (
        "import socket, rapidocr.utils.download_file as d\n"
        "def refuse(*a, **k): raise RuntimeError('network used')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; d.DownloadFile.run = refuse\n"
        "from xmodal.indexer.photo_text import TextReader, shipped_models\n"
        "r = TextReader(); t = r.read(sys.argv[1])\n"
        "models, folder = shipped_models()\n"
        "print(json.dumps({'engine': r.engine_name, 'folder': str(folder), 'text': t.text, 'status': t.status}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import sys, json\n" + probe, str(shot.path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "no_proxy": "", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["status"] == "text" and all(w in out["text"] for w in shot.words), out
    assert out["engine"].startswith("PP-OCR") and " sha256:" in out["engine"]
    assert out["folder"].endswith(os.path.join("rapidocr", "models"))
    assert "network used" not in done.stderr


@pytest.mark.slow
def test_bad_input_is_bounded_and_never_raises(tmp_path: Path) -> None:
    """Huge (bounded by ocr_max_pixels), tiny, thousands of text boxes (ocr_max_boxes, ocr_seconds),
    a photo turned by 90°, and a file that is no picture: each comes back, in bounded time."""
    _require_media()
    from PIL import ImageDraw, ImageFont

    from tests.rendered_text import FONTS

    limits = Limits(ocr_max_pixels=2_000_000, ocr_max_boxes=40, ocr_seconds=8.0)
    reader = TextReader(limits=limits)
    huge = tmp_path / "huge.jpg"
    base = Image.open(flickr_photos()[5]).convert("RGB").resize((6000, 4000))
    ImageDraw.Draw(base).text((300, 300), "GLACIER", font=ImageFont.truetype(str(FONTS[0]), 400), fill=(255, 255, 0))
    base.save(huge, quality=85)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (3, 2), (255, 255, 255)).save(tiny)
    crowded = tmp_path / "crowded.png"
    page = Image.new("RGB", (2400, 2400), (255, 255, 255))
    draw, small = ImageDraw.Draw(page), ImageFont.truetype(str(FONTS[3]), 14)
    for row in range(80):
        for col in range(25):
            draw.text((10 + col * 95, 10 + row * 30), f"w{row}x{col}", font=small, fill=(0, 0, 0))
    page.save(crowded)
    turned = tmp_path / "turned.jpg"
    rendered = rendered_photos(tmp_path / "r", flickr_photos()[7:8], per_photo=2)[0]
    Image.open(rendered.path).rotate(90, expand=True).save(turned)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")

    results = {}
    for path in (huge, tiny, crowded, turned, broken):
        clock = time.perf_counter()
        results[path.name] = reader.read(path)
        assert time.perf_counter() - clock < limits.ocr_seconds + 15, path.name
    assert results["huge.jpg"].status == "text" and "GLACIER" in results["huge.jpg"].text
    assert results["tiny.png"].status == "none"
    crowded_result = results["crowded.png"]
    assert crowded_result.status == "text" and len(crowded_result.lines) <= 40
    assert crowded_result.reason and ("largest" in crowded_result.reason or "stopped" in crowded_result.reason)
    assert results["turned.jpg"].status in ("text", "none")  # read or not, never a failure
    assert results["broken.jpg"].status == "failed" and results["broken.jpg"].reason


# --- indexing and searching, both databases ------------------------------------------------------
def _media(root: Path) -> tuple[list[Rendered], list[Path], Rendered, Rendered]:
    photos = flickr_photos()
    rendered = rendered_photos(root, photos[200:216], seed=3, per_photo=2)
    plain = []
    for photo in photos[300:306]:  # photos without words written on them
        plain.append(root / f"plain_{photo.name}")
        shutil.copy(photo, plain[-1])
    return rendered, plain, screenshot(root / "screenshot.png"), receipt(root / "receipt.jpg")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Rendered], list[Path], Rendered, Rendered]:
    _require_media()
    return _media(tmp_path_factory.mktemp("photo_text") / "photos")


@pytest.mark.slow
def test_in_photo_finds_the_written_words(
    media: tuple[list[Rendered], list[Path], Rendered, Rendered], db_backend: Backend, tmp_path: Path
) -> None:
    rendered, plain, shot, till = media
    folder = tmp_path / "photos"  # a copy: this test changes a photo
    shutil.copytree(rendered[0].path.parent, folder)
    plain = [folder / p.name for p in plain]
    index = tmp_path / "idx"
    summary = Indexer(index, model=fake_model(), db_url=db_backend.url, workers=1).add_paths([folder])
    assert summary.photo_text is not None and summary.photo_text.read == summary.new == len(rendered) + len(plain) + 2
    assert summary.photo_text.with_text >= len(rendered) + 2 and summary.photo_text.failed == 0
    plain_names = {p.name for p in plain}
    with SearchEngine(IndexStore.open(index, db_backend.url), model=fake_model()) as engine:
        found = exact = 0
        total = 0
        for photo in rendered:
            for word in photo.words:
                total += 1
                hits = engine.search(None, k=5, in_photo=word)
                names = [Path(h.path).name for h in hits]
                assert not plain_names & set(names), word
                if photo.path.name in names:
                    found += 1
                    exact += names[0] == photo.path.name or hits[0].score == hits[names.index(photo.path.name)].score
                # one character wrong (a middle one) still finds it
                typo = word[: len(word) // 2] + ("X" if word.isascii() else "口") + word[len(word) // 2 + 1 :]
                if len(word) >= 3 and photo.path.name in names:
                    assert photo.path.name in [Path(h.path).name for h in engine.search(None, k=5, in_photo=typo)], typo
        assert found >= 0.85 * total and exact >= 0.85 * total, (found, exact, total)

        # screenshot and receipt: a phrase, a number, Chinese, best match first
        assert Path(engine.search(None, in_photo="booking reference KX7Q2")[0].path).name == "screenshot.png"
        assert Path(engine.search(None, in_photo="明天见")[0].path).name == "screenshot.png"
        top = engine.search(None, in_photo="total 42.50")
        assert Path(top[0].path).name == "receipt.jpg" and top[0].score > 1.0  # every word, and the phrase
        assert Path(engine.search(None, in_photo="corner pharmacy")[0].path).name == "receipt.jpg"
        assert engine.search(None, in_photo="zebra crossing") == []

        # with the filters, and with a visual query
        assert engine.search(None, in_photo="total", filters=SearchFilter(extensions=("png",))) == []
        assert [
            Path(h.path).name
            for h in engine.search(None, in_photo="pharmacy", filters=SearchFilter(extensions=("jpg",)))
        ] == ["receipt.jpg"]
        word = rendered[0].words[0]
        both = engine.search("red", k=10, in_photo=word)
        assert both and {Path(h.path).name for h in both} <= {p.path.name for p in rendered if word in p.words}

        # the signal for the planner: any word, scored
        scores = engine.text_matches(["pharmacy", "walrus", "nothing-here"])
        receipt_id = engine.search(None, in_photo="pharmacy")[0].id
        assert receipt_id in scores and 0 < scores[receipt_id] <= 1.1

        # the stored lines: words, confidence, boxes as fractions
        readings = engine.photo_text(receipt_id)
        assert readings[0]["status"] == "text" and readings[0]["frame_time"] is None
        line = readings[0]["lines"][0]
        assert 0 < line["score"] <= 1 and len(line["box"]) == 4 and all(0 <= v <= 1 for p in line["box"] for v in p)

    # a second run reads nothing again; a changed photo is read again
    again = Indexer(index, model=fake_model(), db_url=db_backend.url, workers=1).add_paths([folder])
    assert again.photo_text is not None and again.photo_text.read == 0
    target = plain[0]
    shutil.copy(rendered[1].path, target)
    os.utime(target, (time.time() + 5, time.time() + 5))
    third = Indexer(index, model=fake_model(), db_url=db_backend.url, workers=1).add_paths([folder])
    assert third.updated == 1 and third.photo_text is not None and third.photo_text.read == 1
    with SearchEngine.open(index, db_url=db_backend.url) as engine:
        names = [Path(h.path).name for h in engine.search(None, in_photo=rendered[1].words[0])]
        assert target.name in names


@pytest.mark.slow
def test_a_failure_to_read_is_recorded_and_the_photo_stays(tmp_path: Path) -> None:
    """Embedded first (--no-ocr), then the file disappears: the text stage records the failure with
    its reason, the photo stays indexed and searchable; --no-ocr reads nothing."""
    _require_media()
    folder = tmp_path / "photos"
    made = rendered_photos(folder, flickr_photos()[50:52], per_photo=1)
    index = tmp_path / "idx"
    first = Indexer(index, model=fake_model(), workers=1, read_text=False).add_paths([folder])
    assert first.new == 2 and first.photo_text is None
    from xmodal.indexer.photo_text_stage import read_unread_photos

    moved = made[0].path.with_suffix(".away")
    made[0].path.rename(moved)
    store = IndexStore.open(index)
    try:
        stage = read_unread_photos(store, TextReader())
    finally:
        store.close()
    assert stage.read == 2 and stage.failed == 1 and stage.with_text == 1
    with SearchEngine(IndexStore.open(index), model=fake_model()) as engine:
        assert engine.store.metadata.count(ImageRow) == 2
        ids = [h.id for h in engine.search("red", k=5)]
        failed = [r for i in ids for r in engine.photo_text(i) if r["status"] == "failed"]
        assert len(failed) == 1 and "no such file" in failed[0]["reason"].lower()


@pytest.mark.slow
def test_cli_http_export_and_info(media: tuple[list[Rendered], list[Path], Rendered, Rendered], tmp_path: Path) -> None:
    """`xmodal search --in-photo`, `xmodal info`, `xmodal export` and GET /api/search?in_photo=, with
    the real default model, as a user runs them."""
    rendered, plain, shot, till = media
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in [till.path, shot.path, rendered[0].path, *plain[:2]]:
        shutil.copy(path, folder / path.name)
    index = tmp_path / "idx"
    env = {**os.environ, "XMODAL_CACHE": str(tmp_path / "cache")}

    def xmodal(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "xmodal.cli.app", *args], capture_output=True, text=True, timeout=600, env=env
        )

    done = xmodal("index", str(folder), "--index", str(index))
    assert done.returncode == 0, done.stderr
    read_line = next(line for line in done.stdout.splitlines() if line.startswith("text in photos: read 5, with text"))
    with_text = int(read_line.split("with text ")[1].split(",")[0])
    assert with_text >= 3
    done = xmodal("search", "--in-photo", "total 42.5O", "--index", str(index), "--json")
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert [Path(h["path"]).name for h in hits] == ["receipt.jpg"]
    done = xmodal("search", "a receipt on a table", "--in-photo", "pharmacy", "--index", str(index), "--json")
    assert [Path(h["path"]).name for h in json.loads(done.stdout)] == ["receipt.jpg"]
    info = json.loads(xmodal("info", "--index", str(index), "--json").stdout)
    assert info["signals"]["photo_text"] == {
        "photos_read": 5,
        "photos_with_text": with_text,
        "text_failures": 0,
        "frames_read": 0,
        "frames_with_text": 0,
        "to_read": 0,
    }
    assert info["text_in_photos"].startswith("read at indexing")
    assert xmodal("search", "--index", str(index)).returncode == 2  # nothing asked

    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    done = xmodal("export", str(tmp_path / "out"), "--index", str(index))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "out" / "metadata" / "metadata_0.parquet").to_pydict()
    texts = dict(zip((Path(p).name for p in table["image_path"]), table["photo_text"]))
    assert "42.50" in texts["receipt.jpg"] and texts[plain[0].name] is not None

    from fastapi.testclient import TestClient

    from xmodal.cli.server import ServerSettings, create_app

    app = create_app(
        SearchEngine.open(index),
        ServerSettings(thumbnail_dir=tmp_path / "thumbs", refresh_interval=0.0),
        close_engine=True,
    )
    with TestClient(app, base_url="http://127.0.0.1") as client:
        counts = client.get("/api/info").json()["signals"]["photo_text"]
        assert (counts["photos_read"], counts["photos_with_text"]) == (5, with_text)
        body = client.get("/api/search", params={"in_photo": "corner pharmacy"}).json()
        assert [h["name"] for h in body["hits"]] == ["receipt.jpg"]
        both = client.get("/api/search", params={"in_photo": "pharmacy", "q": "red"}).json()
        assert [h["name"] for h in both["hits"]] == ["receipt.jpg"]
        assert client.get("/api/search", params={"in_photo": " "}).status_code == 400
        assert client.get("/api/search", params={"in_photo": "x", "target": "text"}).status_code == 400
        item = body["hits"][0]["id"]
        text = client.get(f"/api/items/{item}/text", params={"in_photo": "total"}).json()
        marked = [line["text"] for line in text["readings"][0]["lines"] if line["match"]]
        assert marked and all("total" in m.lower() for m in marked)
        assert client.get("/api/items/999999/text").status_code == 404
        page = client.get("/", params={"in_photo": "pharmacy"}).text
        assert "receipt.jpg" in page and "photo_text.js" in page


def test_vectors_untouched_by_the_text_stage(tmp_path: Path) -> None:
    """Plain colour pictures: the stage reads them (no text) and leaves the vectors as they were."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        Image.new("RGB", (120, 90), colour).save(folder / f"{name}.png")
    if ocr_unavailable():
        pytest.fail(str(ocr_unavailable()), pytrace=False)
    summary = Indexer(tmp_path / "idx", model=fake_model(), workers=1).add_paths([folder])
    assert summary.photo_text is not None and (summary.photo_text.read, summary.photo_text.with_text) == (2, 0)
    with SearchEngine.open(tmp_path / "idx") as engine:
        vectors = engine.vectors([1, 2])
        assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        assert engine.search(None, in_photo="anything") == []
        assert engine.photo_text(1)[0]["status"] == "none"
