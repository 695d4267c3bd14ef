"""Videos (issue 25): sampled frames are views of one item; a search finds the moment.

Videos are made at run time with PyAV (H.264 and HEVC) from flat colours (the fake encoder) and
from real flickr photos (the offline default model). Hostile videos end indexed (partially when
that is honest) or listed with a reason, and never hang a run.
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
from sqlalchemy import select
from typer.testing import CliRunner

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from tests.videos import FLICKR_IMAGES, write_audio_only, write_undecodable, write_video
from xmodal.indexer import Indexer
from xmodal.indexer.limits import Limits
from xmodal.indexer.store.checking import check_index
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import FrameRow, ImageRow
from xmodal.search.engine import SearchEngine
from xmodal.search.stats import failures, index_info

av = pytest.importorskip("av")  # the `video` extra (in the test extra)

RGB = [Image.new("RGB", (64, 48), COLOURS[name]) for name in ("red", "green", "blue")]


def _frames(index: Path) -> dict[int, list[float]]:
    store = IndexStore.open(index)
    try:
        with store.metadata.session() as s:
            rows = s.execute(select(FrameRow.item_id, FrameRow.time).order_by(FrameRow.time)).all()
    finally:
        store.close()
    out: dict[int, list[float]] = {}
    for row in rows:
        out.setdefault(row.item_id, []).append(row.time)
    return out


def _reasons(index: Path) -> dict[str, str]:
    return {Path(f["path"]).name: f["reason"] for f in failures(index)}


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_a_colour_query_finds_the_video_at_the_moment_that_shows_it(tmp_path: Path, codec: str) -> None:
    assert codec in av.codecs_available  # HEVC is in PyAV's wheels (libx265)
    lib = tmp_path / "lib"
    write_video(lib / "clip.mp4", RGB, codec=codec)
    make_image(lib / "yellow.jpg", COLOURS["yellow"])
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    assert (summary.new, summary.videos, summary.failed) == (2, 1, 0)
    assert 3 <= summary.frames <= 9
    with SearchEngine.open(tmp_path / "idx", model=fake_model()) as engine:
        hits = engine.search("green", k=2)
    assert hits[0].kind == "video" and hits[0].path.endswith("clip.mp4")
    assert hits[0].time is not None and 3.0 <= hits[0].time < 6.0
    assert hits[0].as_dict()["time"] == hits[0].time
    photo = next(h for h in hits if h.kind == "image") if len(hits) > 1 else None
    assert photo is None or photo.time is None
    facts = index_info(tmp_path / "idx")
    assert facts["signals"]["frames"] == {"videos": 1, "frames": summary.frames}
    assert check_index(tmp_path / "idx").ok


def test_more_like_this_from_a_video_moment_and_from_a_photo_to_a_moment(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    write_video(lib / "clip.mp4", RGB)
    make_image(lib / "blue.png", COLOURS["blue"])
    make_image(lib / "red.png", COLOURS["red"])
    Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    with SearchEngine.open(tmp_path / "idx", model=fake_model()) as engine:
        ids = {Path(h.path).name: h.id for h in engine.search("red", k=5)}
        from_photo = engine.similar(ids["blue.png"], k=3)
        assert from_photo[0].kind == "video" and 6.0 <= from_photo[0].time < 9.0  # the blue moment
        from_moment = engine.similar(ids["clip.mp4"], k=3, time=0.0)  # the red frame
        assert [Path(h.path).name for h in from_moment][0] == "red.png"
        assert all(h.id != ids["clip.mp4"] for h in from_moment)
        whole = engine.similar(ids["clip.mp4"], k=3)
        assert {Path(h.path).name for h in whole} == {"red.png", "blue.png"}


def test_unchanged_videos_are_not_decoded_again_moved_ones_keep_their_frames(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    write_video(lib / "clip.mp4", RGB)
    make_image(lib / "keep.jpg", COLOURS["red"])  # the folder stays online when the video leaves
    first = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    frames = _frames(tmp_path / "idx")
    again = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    assert (again.unchanged, again.videos, again.frames) == (2, 0, 0)
    assert "video_decode" not in again.timings
    (lib / "trips").mkdir()
    os.rename(lib / "clip.mp4", lib / "trips" / "renamed.mov")
    moved = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    assert (moved.moved, moved.videos) == (1, 0)
    assert _frames(tmp_path / "idx") == frames and [len(t) for t in frames.values()] == [first.frames]
    assert check_index(tmp_path / "idx").ok
    # changed: its frames are replaced in the same transaction as its row
    write_video(lib / "trips" / "renamed.mov", RGB[:1], seconds_each=1)
    changed = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    assert (changed.updated, changed.frames) == (1, 1)
    assert list(_frames(tmp_path / "idx").values()) == [[0.0]]
    # gone: its row and frames leave, the FAISS caches follow
    (lib / "trips" / "renamed.mov").unlink()
    gone = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    assert gone.removed == 1 and _frames(tmp_path / "idx") == {}
    report = check_index(tmp_path / "idx")
    assert report.ok, report.problems


def test_frames_on_both_backends(tmp_path: Path, db_backend) -> None:  # noqa: ANN001
    lib = tmp_path / "lib"
    write_video(lib / "clip.mp4", RGB, creation_time="2024-05-01T10:20:30.000000Z")
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    assert summary.frames >= 3
    store = IndexStore.open(tmp_path / "idx")
    try:
        with store.metadata.session() as s:
            video = s.scalars(select(ImageRow)).one()
            assert video.media == "video"
            assert str(video.taken_at) == "2024-05-01 10:20:30"  # the container's creation_time (UTC)
        assert len(store.vectors("frame")) == summary.frames
    finally:
        store.close()
    with SearchEngine.open(tmp_path / "idx", model=fake_model()) as engine:
        assert 6.0 <= engine.search("blue", k=1)[0].time < 9.0
    report = check_index(tmp_path / "idx")
    assert report.ok, report.problems


# --- hostile videos ------------------------------------------------------------------------------


def _truncated(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_hostile_videos_end_indexed_or_listed_with_a_reason(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    # truncated MP4: its index (moov) is at the end, so nothing can be found: listed
    _truncated(write_video(lib / "truncated.mp4", RGB), 0.5)
    # truncated Matroska: the frames before the cut are indexed, honestly partial
    _truncated(write_video(lib / "truncated.mkv", RGB * 3, gop=10), 0.55)
    (lib / "empty.mp4").write_bytes(b"")
    write_audio_only(lib / "audio.mp4")
    # a stream the decoder rejects: a well-formed Matroska file whose H.264 packets are noise
    write_undecodable(lib / "rejected.mkv")
    # a container the demuxer rejects: a Matroska header, then noise
    broken = write_video(lib / "broken.mkv", RGB)
    data = broken.read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, len(data) - 400, dtype=np.uint8).tobytes()
    broken.write_bytes(data[:400] + noise)
    # a .mp4 that is a JPEG: a photo
    Image.new("RGB", (64, 48), COLOURS["yellow"]).save(lib / "photo.mp4", format="JPEG")
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    reasons = _reasons(tmp_path / "idx")
    assert set(reasons) == {"truncated.mp4", "empty.mp4", "audio.mp4", "rejected.mkv", "broken.mkv"}, reasons
    assert reasons["truncated.mp4"].startswith("not a video the decoder reads: ")
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert reasons["audio.mp4"] == "no video stream (holds audio)"
    assert reasons["rejected.mkv"] == "the decoder rejects the video stream (h264): no frame decoded"
    assert reasons["broken.mkv"].startswith("not a video the decoder reads: ")
    assert summary.failed == 5 and summary.new == 2
    frames = _frames(tmp_path / "idx")
    assert len(frames) == 1
    (partial,) = frames.values()
    assert 1 <= len(partial) and max(partial) < 27 * 0.6  # only what lies before the cut
    with SearchEngine.open(tmp_path / "idx", model=fake_model()) as engine:
        hits = {Path(h.path).name: h for h in engine.search("yellow", k=5)}
    assert hits["photo.mp4"].kind == "image" and hits["photo.mp4"].time is None
    assert check_index(tmp_path / "idx").ok


@pytest.mark.slow
def test_an_8k_video_is_indexed_within_the_pixel_bound_and_refused_above_it(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    write_video(lib / "8k.mp4", RGB[1:2], seconds_each=0.2, fps=10, size=(7680, 4320))
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    assert (summary.videos, summary.frames) == (1, 1)
    small = Limits(max_pixels=20_000_000)
    refused = Indexer(tmp_path / "idx2", model=fake_model(), limits=small).add_paths([lib])
    assert refused.failed == 1
    assert "7680x4320 video frames exceed" in _reasons(tmp_path / "idx2")["8k.mp4"]


def test_an_hour_of_video_costs_a_bounded_number_of_frames_and_time(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    colours = [Image.new("RGB", (32, 32), (i * 37 % 256, i * 91 % 256, i * 53 % 256)) for i in range(60)]
    write_video(lib / "hour.mkv", colours, seconds_each=60, fps=1, size=(32, 32), gop=30)
    limits = Limits(video_max_frames=40)
    summary = Indexer(tmp_path / "idx", model=fake_model(), limits=limits).add_paths([lib])
    (times,) = _frames(tmp_path / "idx").values()
    assert summary.frames == len(times) <= 40
    assert times[-1] > 3000  # spread over the whole hour, not the first minutes
    # a time budget spent at once: decoding stops, the first frame is kept
    stalled = Limits(video_decode_seconds=0.0)
    cut = Indexer(tmp_path / "idx2", model=fake_model(), limits=stalled).add_paths([lib])
    assert (cut.videos, cut.frames) == (1, 1)


# --- the CLI, the extra, --no-video ----------------------------------------------------------------


def _cli_with_fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import xmodal.indexer.indexing as indexing
    from xmodal.indexer.models import embedding

    monkeypatch.setattr(embedding, "load_model", lambda spec=None, device="auto": fake_model())
    monkeypatch.setattr(indexing.Indexer, "_load", lambda self, store: fake_model())
    monkeypatch.setattr(indexing.Indexer, "_check_model", lambda self, store: store.check_model("fake-colour:test", 32))


def test_cli_shows_the_moment_and_no_video_skips_videos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xmodal.cli.app import app
    from xmodal.cli.output import hit_label
    from xmodal.search.hits import Hit

    _cli_with_fake_model(monkeypatch)
    lib = tmp_path / "lib"
    write_video(lib / "clip.mp4", RGB)
    make_image(lib / "red.jpg", COLOURS["red"])
    runner = CliRunner()
    skipped = runner.invoke(app, ["index", str(lib), "--no-video", "--index", str(tmp_path / "idx")])
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 file(s) of kinds xmodal does not read (.mp4 1)" in skipped.output
    assert "--no-video" in _reasons(tmp_path / "idx")["clip.mp4"]
    result = runner.invoke(app, ["index", str(lib), "--json", "--index", str(tmp_path / "idx")])
    assert json.loads(result.stdout)["videos"] == 1
    found = runner.invoke(
        app, ["search", "green", "--json", "--no-rerank", "-n", "1", "--index", str(tmp_path / "idx")]
    )
    assert found.exit_code == 0, found.output
    (hit,) = json.loads(found.stdout)
    assert hit["kind"] == "video" and 3.0 <= hit["time"] < 6.0
    assert hit_label(Hit(1, "video", 0.5, "/v/clip.mp4", time=83.4)) == "/v/clip.mp4 @ 1:23"
    assert hit_label(Hit(1, "video", 0.5, "/v/clip.mp4", time=3723.0)) == "/v/clip.mp4 @ 1:02:03"
    table = runner.invoke(app, ["search", "green", "--no-rerank", "-n", "1", "--index", str(tmp_path / "idx")])
    assert "clip.mp4 @ 0:0" in table.stdout
    info = json.loads(runner.invoke(app, ["info", "--json", "--index", str(tmp_path / "idx")]).stdout)
    assert info["signals"]["frames"]["videos"] == 1


@pytest.mark.slow
def test_without_the_video_extra_videos_are_listed_with_the_install_hint(tmp_path: Path) -> None:
    """A process where PyAV cannot be imported (as in an install without the extra)."""
    lib = tmp_path / "lib"
    write_video(lib / "clip.mp4", RGB)
    make_image(lib / "red.jpg", COLOURS["red"])
    script = f"""
import sys
sys.modules["av"] = None  # `import av` fails as it does without the extra
from tests.fakes import fake_model
from xmodal.indexer import Indexer
s = Indexer({str(tmp_path / "idx")!r}, model=fake_model()).add_paths([{str(lib)!r}])
print(s.new, s.failed, s.videos_need_extra)
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1"]
    assert _reasons(tmp_path / "idx") == {"clip.mp4": "videos need the video extra: pip install 'xmodal[video]'"}


# --- a real model: the moment of a real photo ------------------------------------------------------


@pytest.fixture(scope="module")
def real_model():  # noqa: ANN201
    from xmodal.indexer import load_model

    return load_model()


@pytest.mark.slow
@pytest.mark.skipif(not FLICKR_IMAGES.is_dir(), reason="needs ../shared/datasets/flickr8k-1k")
@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_a_query_describing_the_second_photo_finds_the_video_at_that_photo(
    tmp_path: Path,
    codec: str,
    real_model,  # noqa: ANN001
) -> None:
    names = ["1000268201_693b08cb0e.jpg", "101654506_8eb26cfb60.jpg", "1075716537_62105738b4.jpg"]
    photos = [Image.open(FLICKR_IMAGES / n) for n in names]  # stairs, a dog in the snow, a bicycle race
    lib = tmp_path / "lib"
    write_video(lib / "holiday.mp4", photos, seconds_each=3, codec=codec, size=(480, 320))
    others = sorted(p for p in FLICKR_IMAGES.iterdir() if p.name not in names)[:6]
    for other in others:
        shutil.copy(other, lib / other.name)  # at run time, into the test's own folder
    summary = Indexer(tmp_path / "idx", model=real_model, prepare_search=False).add_paths([lib])
    assert summary.videos == 1 and summary.failed == 0
    with SearchEngine(IndexStore.open(tmp_path / "idx"), real_model) as engine:
        hits = engine.search("a dog running through the snow", k=3)
    assert hits[0].kind == "video" and hits[0].path.endswith("holiday.mp4"), hits
    assert 3.0 <= hits[0].time < 6.0


# --- the HTTP API and the gallery's pieces -----------------------------------------------------------


def test_http_hits_carry_the_moment_and_the_frame_thumbnail_and_file_are_served(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from tests.serving import Library, make_app

    photos = tmp_path / "photos"
    write_video(photos / "clip.mp4", RGB)
    make_image(photos / "red.jpg", COLOURS["red"])
    Indexer(tmp_path / "index", model=fake_model(), workers=1).add_paths([photos])
    library = Library(photos, tmp_path / "index", tmp_path / "cache")
    with TestClient(make_app(library), base_url="http://127.0.0.1") as client:
        body = client.get("/api/search", params={"q": "blue", "limit": 1, "rerank": "false"}).json()
        (hit,) = body["hits"]
        assert hit["kind"] == "video" and 6.0 <= hit["time"] < 9.0
        assert hit["thumbnail"] == f"/api/items/{hit['id']}/thumbnail?t={hit['time']:g}"
        assert hit["url"] == f"/api/items/{hit['id']}/file#t={hit['time']:g}"
        thumb = client.get(hit["thumbnail"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        import io

        frame = Image.open(io.BytesIO(thumb.content)).convert("RGB")
        assert frame.getpixel((frame.width // 2, frame.height // 2))[2] > 150  # the blue segment's frame
        again = client.get(hit["thumbnail"], headers={"if-none-match": thumb.headers["etag"]})
        assert again.status_code == 304  # cached like photo thumbnails
        red = client.get(f"/api/items/{hit['id']}/thumbnail", params={"t": 0}).content
        assert red != thumb.content
        played = client.get(f"/api/items/{hit['id']}/file")
        assert played.status_code == 200 and played.headers["content-type"] == "video/mp4"
        assert played.content == (photos / "clip.mp4").read_bytes()
        item = client.get(f"/api/items/{hit['id']}").json()
        assert item["kind"] == "video"
        similar = client.get(f"/api/items/{hit['id']}/similar", params={"limit": 1}).json()
        assert similar["hits"][0]["name"] == "red.jpg"


@pytest.mark.slow
def test_the_watcher_indexes_a_video_as_a_local_run_does(tmp_path: Path) -> None:
    from xmodal.indexer.watching import FolderWatcher, WatchRun

    photos = tmp_path / "photos"
    make_image(photos / "red.jpg", COLOURS["red"])
    indexer = Indexer(tmp_path / "watched", model=fake_model(), workers=1)
    runs: list[WatchRun] = []
    errors: list[BaseException] = []
    watcher = FolderWatcher(indexer, [photos], debounce=0.3, max_delay=3.0, on_run=runs.append, on_error=errors.append)
    watcher.start()
    try:
        made = write_video(tmp_path / "outside" / "clip.mp4", RGB)
        os.rename(made, photos / "clip.mp4")  # appears whole, as a finished copy does
        deadline = time.monotonic() + 30
        while not any(r.summary.videos for r in runs):
            assert time.monotonic() < deadline, "the watcher did not index the video"
            time.sleep(0.1)
    finally:
        watcher.stop()
    assert not errors, errors
    Indexer(tmp_path / "local", model=fake_model(), workers=1).add_paths([photos])
    watched, local = _frames(tmp_path / "watched"), _frames(tmp_path / "local")
    assert list(watched.values()) == list(local.values()) and len(next(iter(local.values()))) >= 3
    for index in (tmp_path / "watched", tmp_path / "local"):
        with SearchEngine.open(index, model=fake_model()) as engine:
            assert 3.0 <= engine.search("green", k=1)[0].time < 6.0


def test_a_listing_names_videos_as_the_scan_finds_them(tmp_path: Path) -> None:
    from xmodal.indexer.listing import read_listing

    lib = tmp_path / "lib"
    write_video(lib / "clip.mov", RGB)
    make_image(lib / "red.jpg", COLOURS["red"])
    listing = tmp_path / "list.txt"
    listing.write_text(f"{lib / 'clip.mov'}\n{lib / 'red.jpg'}\n")
    media = {Path(f.path).name: getattr(f, "media", None) for f in read_listing(listing)}
    assert media == {"clip.mov": "video", "red.jpg": "photo"}
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib], listing=read_listing(listing))
    assert (summary.new, summary.videos) == (2, 1)


def test_check_covers_the_frames_and_repair_mends_them(tmp_path: Path) -> None:
    from sqlalchemy import delete

    lib = tmp_path / "lib"
    write_video(lib / "clip.mp4", RGB)
    Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    (tmp_path / "idx" / "frames.faiss").unlink()  # a cache lost: rebuilt from SQL, a note only
    assert check_index(tmp_path / "idx").ok
    store = IndexStore.open(tmp_path / "idx")
    try:
        with store.metadata.engine.begin() as connection:  # a row deleted behind xmodal's back
            connection.execute(delete(ImageRow))
    finally:
        store.close()
    report = check_index(tmp_path / "idx")
    assert not report.ok and any("of no video" in v for v in report.vectors_without_row)
    repaired = check_index(tmp_path / "idx", repair=True)
    assert repaired.ok, repaired.problems
    assert any("frame(s) of no video" in action for action in repaired.repaired)
    assert _frames(tmp_path / "idx") == {}
