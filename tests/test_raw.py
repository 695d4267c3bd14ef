"""Camera RAW photos are indexed like any photo (issue 25): DNGs made at run time from real flickr
photos (tests/raw_files.py: a Bayer mosaic LibRaw demosaics, with or without an embedded preview),
found by a query describing the photo; orientation; hostile RAWs; decode workers forked from a
process that had used LibRaw's OpenMP."""

from __future__ import annotations

import csv
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from tests.raw_files import FLICKR, flickr_photo, make_dng
from xmodal.indexer import Indexer
from xmodal.indexer.errors import ImageReadError
from xmodal.indexer.images import decode_image
from xmodal.indexer.limits import Limits
from xmodal.indexer.raw import decode_raw
from xmodal.indexer.scanning import FoundFile, scan_paths
from xmodal.indexer.store.schema import ImageRow
from xmodal.search import SearchEngine

pytestmark = pytest.mark.skipif(not FLICKR.is_dir(), reason="needs ../shared/datasets/flickr8k-1k")

# Test-split photos whose first caption finds them first among these 24 as JPEGs (the default model).
WAKEBOARD = "172097783_292c5413d8.jpg"  # "A boy is wakeboarding on a lake with one hand ."
CAROUSEL = "177302997_5b2d770a0a.jpg"  # "A child holding on to the bar while riding a horse on a carousel ride ."
MOUNTAIN = "182493240_40410254b0.jpg"  # "Two men raise their arms atop a snowy mountain ."


def _captions() -> dict[str, str]:
    first: dict[str, str] = {}
    for row in csv.DictReader(open(FLICKR / "captions.txt", newline="")):
        first.setdefault(row["image"], row["caption"])
    return first


def _test_photos(n: int) -> list[str]:
    with open(FLICKR / "split.csv", newline="") as f:
        test = sorted(r["image"] for r in csv.DictReader(f) if r["split"] == "test")
    big = []
    for name in test:
        with Image.open(FLICKR / "images" / name) as im:
            if min(im.size) >= 300:
                big.append(name)
        if len(big) == n:
            return big
    return big


def _similarity(a: Image.Image, b: Image.Image) -> float:
    """Correlation of two pictures' grey levels at a common small size (1: the same picture)."""
    x = np.asarray(a.convert("L").resize((32, 32)), dtype=np.float64).ravel()
    y = np.asarray(b.convert("L").resize((32, 32)), dtype=np.float64).ravel()
    return float(np.corrcoef(x, y)[0, 1])


@pytest.mark.slow
def test_a_query_describing_the_photo_finds_its_dng(tmp_path: Path) -> None:
    """24 real photos, three of them only as DNGs (one with its preview, one turned on the sensor):
    each DNG is found first by its photo's caption, with the offline default model."""
    root = tmp_path / "shoot"
    root.mkdir()
    raws = {
        WAKEBOARD: make_dng(root / "IMG_0001.DNG", flickr_photo(WAKEBOARD), preview=True),
        CAROUSEL: make_dng(root / "IMG_0002.dng", flickr_photo(CAROUSEL), orientation=6),
        MOUNTAIN: make_dng(root / "IMG_0003.dng", flickr_photo(MOUNTAIN), taken="2024:07:14 10:11:12"),
    }
    for name in _test_photos(24):
        if name not in raws:
            (root / name).write_bytes((FLICKR / "images" / name).read_bytes())
    summary = Indexer(tmp_path / "idx").add_paths([root])
    assert (summary.new, summary.failed) == (24, 0), summary.failures
    captions = _captions()
    with SearchEngine.open(tmp_path / "idx") as engine:
        for name, dng in raws.items():
            hits = engine.search_text(captions[name], k=3)
            assert hits[0].path == str(dng), (captions[name], [h.path for h in hits])
        with engine.store.metadata.session() as s:
            facts = {Path(r.path).name: (r.width, r.height, r.taken_at) for r in s.scalars(select(ImageRow))}
    width, height = flickr_photo(CAROUSEL).size
    assert facts["IMG_0002.dng"][:2] == (width // 2 * 2, height // 2 * 2)  # upright, as the photo
    assert str(facts["IMG_0003.dng"][2]) == "2024-07-14 10:11:12"  # the RAW's own date


@pytest.mark.parametrize("orientation", [6, 8, 3])
@pytest.mark.parametrize("preview", [False, True])
def test_orientation_is_applied_to_the_demosaic_and_to_the_preview(
    tmp_path: Path, orientation: int, preview: bool
) -> None:
    photo = flickr_photo(CAROUSEL)  # a portrait, 375x500: a quarter turn shows in the size
    dng = make_dng(tmp_path / "turned.dng", photo, orientation=orientation, preview=preview)
    raw = decode_raw(dng.read_bytes(), 224)
    assert raw.source == ("preview" if preview else "demosaic")
    assert (raw.width, raw.height) == (photo.width // 2 * 2, photo.height // 2 * 2)
    assert raw.image.width < raw.image.height  # a portrait again
    upright = _similarity(raw.image, photo)
    assert upright > 0.9, upright
    for turn in (Image.Transpose.ROTATE_180, Image.Transpose.FLIP_LEFT_RIGHT):
        assert _similarity(raw.image, photo.transpose(turn)) < upright - 0.2
    decoded = decode_image(dng, 224)  # the indexing path gives the same
    assert (decoded.width, decoded.height) == (raw.width, raw.height)
    assert _similarity(decoded.image, photo) > 0.9


def test_the_preview_is_used_when_large_enough_else_the_sensor_data(tmp_path: Path) -> None:
    photo = flickr_photo(WAKEBOARD)  # 464x500
    with_preview = make_dng(tmp_path / "preview.dng", photo, preview=True)
    small_preview = make_dng(tmp_path / "thumb.dng", photo, preview=(160, 120))
    without = make_dng(tmp_path / "bare.dng", photo)
    assert decode_raw(with_preview.read_bytes(), 224).source == "preview"  # short side 464 >= 224
    assert decode_raw(with_preview.read_bytes(), 480).source == "demosaic"  # asked for more than it has
    assert decode_raw(small_preview.read_bytes(), 224).source == "demosaic"  # a 160x120 thumbnail is too small
    assert decode_raw(without.read_bytes(), 224).source == "demosaic"
    pictures = [decode_image(p, 224).image for p in (with_preview, small_preview, without)]
    for picture in pictures:
        assert min(picture.size) >= 224 and _similarity(picture, photo) > 0.95
    # the indexing run embeds them alike (the fake model: mean colours) and finds all three
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths([tmp_path])
    assert (summary.new, summary.failed) == (3, 0)


def test_hostile_raw_files_fail_alone_with_a_reason(tmp_path: Path) -> None:
    root = tmp_path / "hostile"
    good = make_dng(root / "good.dng", flickr_photo(MOUNTAIN))
    data = good.read_bytes()
    (root / "truncated.dng").write_bytes(data[: len(data) // 3])
    (root / "header-only.dng").write_bytes(data[:600])
    make_image(root / "IMG_9.CR2", COLOURS["red"], fmt="JPEG")  # a .cr2 that is a JPEG is a JPEG
    make_image(root / "tiff.NEF", COLOURS["blue"], fmt="TIFF")  # a .nef that is a plain TIFF is a TIFF
    (root / "empty.nef").write_bytes(b"")
    (root / "junk.cr3").write_bytes(b"\x00\x00\x00\x18ftypcrx " + bytes(range(256)) * 8)  # CR3 brand, no boxes
    (root / "fuji.raf").write_bytes(b"FUJIFILMCCD-RAW 0201FF383501" + b"\x00" * 300)
    # a DNG that declares 16000 x 16000 pixels (256 MP) and holds a few bytes
    huge = bytearray(data)
    at = huge.find((256).to_bytes(2, "little") + (4).to_bytes(2, "little"))  # the ImageWidth entry (LONG)
    assert at > 0
    huge[at + 8 : at + 12] = (16_000).to_bytes(4, "little")
    huge[at + 20 : at + 24] = (16_000).to_bytes(4, "little")  # ImageLength follows
    (root / "huge.dng").write_bytes(bytes(huge[:4096]))
    found = {f.path.name for f in scan_paths([root]) if isinstance(f, FoundFile)}
    assert found == {p.name for p in root.iterdir()}  # every one goes to a decoder, none is skipped by name
    summary = Indexer(tmp_path / "idx", model=fake_model(), workers=2).add_paths([root])
    reasons = {Path(path).name: reason for path, reason in summary.failures}
    assert summary.new == 3, reasons  # good.dng, IMG_9.CR2, tiff.NEF
    assert set(reasons) == {"truncated.dng", "header-only.dng", "empty.nef", "junk.cr3", "fuji.raf", "huge.dng"}
    assert reasons["empty.nef"] == "empty file (0 bytes)"
    assert reasons["huge.dng"].startswith("image too large: 16000x16000"), reasons["huge.dng"]
    for name in ("truncated.dng", "header-only.dng"):
        assert "camera RAW" in reasons[name] or "LibRaw" in reasons[name], reasons[name]
    for name in ("junk.cr3", "fuji.raf"):
        assert reasons[name].startswith("not a camera RAW LibRaw reads"), reasons[name]


def test_raw_magics_of_real_files() -> None:
    """First bytes as real cameras write them (checked on exiftool's stripped samples by hand)."""
    from xmodal.indexer.kinds import kind_of_header

    assert kind_of_header(b"II*\x00\x08\x0a\x00\x00IIIICwaRX\x06") == "raw"  # Phase One IIQ
    assert kind_of_header(b"II*\x00\x10\x00\x00\x00CR\x02\x00") == "raw"  # Canon CR2
    assert kind_of_header(b"FUJIFILMCCD-RAW 0201FF383501") == "raw"
    assert kind_of_header(b"IIU\x00\x18\x00\x00\x00") == "raw"  # Panasonic RW2
    assert kind_of_header(b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01") == "raw"  # Canon CR3


def test_the_bounds_of_a_raw_decode(tmp_path: Path) -> None:
    dng = make_dng(tmp_path / "a.dng", flickr_photo(MOUNTAIN))
    with pytest.raises(ImageReadError, match="exceeds the cap of 1000"):
        decode_image(dng, max_pixels=1000)  # from the header, before unpacking
    with pytest.raises(ImageReadError, match="camera RAW file too large"):
        decode_image(dng, limits=Limits(max_raw_bytes=10_000))
    with pytest.raises(ImageReadError, match="over the limit of 0 s"):
        decode_image(dng, limits=Limits(decode_seconds=0))  # checked between LibRaw's stages
    assert decode_image(dng).width == 500


_FORKED_RUN = """
import io
import sys
from pathlib import Path
import rawpy
from tests.fakes import fake_model
from xmodal.indexer import Indexer
root = Path(sys.argv[1])
raw = rawpy.RawPy()  # this process runs LibRaw's OpenMP first (a full demosaic), then forks the workers
raw.open_buffer(io.BytesIO((root / "IMG_0.dng").read_bytes()))
raw.postprocess()
raw.close()
summary = Indexer(root.parent / "idx", model=fake_model(), workers=2, start_method="fork").add_paths([root])
print(summary.new, summary.failed)
"""


@pytest.mark.slow
@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_forked_decode_workers_do_not_deadlock_in_libraw(tmp_path: Path) -> None:
    """GNU OpenMP hangs in a child forked from a process that had used it (as a server that made RAW
    thumbnails, then indexes): the workers run LibRaw on one thread (indexer.raw.single_threaded_libraw).
    Without that, this run hangs (checked by hand: the timeout below fires)."""
    root = tmp_path / "raws"
    for i, name in enumerate(_test_photos(4)):
        make_dng(root / f"IMG_{i}.dng", flickr_photo(name))
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _FORKED_RUN, str(root)], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["4", "0"]


@pytest.mark.slow
@pytest.mark.ray
def test_the_ray_path_reads_raw_as_the_local_run_does(tmp_path: Path) -> None:
    """`--ray` decodes with the local pipeline's own function: the same rows and vectors for DNGs."""
    ray = pytest.importorskip("ray")
    import os
    import shutil
    import tempfile

    from xmodal.indexer.distributed import RayOptions
    from xmodal.indexer.store.index_store import IndexStore
    from xmodal.indexer.store.schema import blob_to_vector

    root = tmp_path / "raws"
    for i, name in enumerate(_test_photos(3)):
        make_dng(root / f"IMG_{i}.dng", flickr_photo(name), orientation=6 if i == 1 else 1, preview=i == 2)
    (root / "broken.nef").write_bytes(b"II*\x00" + b"\x00" * 100)

    def rows(index: Path) -> dict[str, tuple]:
        store = IndexStore.open(index)
        try:
            with store.metadata.session() as s:
                return {
                    Path(r.path).name: (r.width, r.height, r.taken_at, blob_to_vector(r.vector).copy())
                    for r in s.scalars(select(ImageRow))
                }
        finally:
            store.close()

    local = Indexer(tmp_path / "local", model=fake_model(), batch_size=2).add_paths([root])
    temp = tempfile.mkdtemp(prefix="xr", dir="/tmp")  # Ray's sockets need a short path
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        remote = Indexer(tmp_path / "ray", model=fake_model(), batch_size=2, ray=RayOptions(decode_batch=2))
        summary = remote.add_paths([root])
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert (summary.new, summary.failed) == (local.new, local.failed) == (3, 1)
    assert dict(summary.failures).keys() == dict(local.failures).keys()
    want, got = rows(tmp_path / "local"), rows(tmp_path / "ray")
    assert want.keys() == got.keys()
    for name, facts in want.items():
        assert got[name][:3] == facts[:3], name
        np.testing.assert_allclose(got[name][3], facts[3], atol=1e-5, err_msg=name)


def test_the_watcher_indexes_a_raw_as_it_arrives(tmp_path: Path) -> None:
    """A camera card copied in: the watcher's run reads the RAW with the same decode as `xmodal index`."""
    import time

    from xmodal.indexer.watching import FolderWatcher

    photos = tmp_path / "photos"
    make_image(photos / "red.jpg", COLOURS["red"])
    indexer = Indexer(tmp_path / "index", model=fake_model(), workers=1)
    errors: list[BaseException] = []
    watcher = FolderWatcher(indexer, [photos], debounce=0.3, max_delay=3.0, on_error=errors.append)
    assert watcher.start() is not None
    try:
        make_dng(tmp_path / "staging" / "IMG_0001.CR2", flickr_photo(MOUNTAIN))
        (tmp_path / "staging" / "IMG_0001.CR2").rename(photos / "IMG_0001.CR2")  # arrives whole
        deadline = time.monotonic() + 20
        while True:
            with SearchEngine.open(tmp_path / "index", model=fake_model()) as engine:
                names = {Path(h.path).name for h in engine.search_text("anything", k=10, rerank=False)}
            if "IMG_0001.CR2" in names or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        watcher.stop()
    assert not errors, errors
    assert names == {"red.jpg", "IMG_0001.CR2"}
    local = decode_image(photos / "IMG_0001.CR2")
    with SearchEngine.open(tmp_path / "index", model=fake_model()) as engine, engine.store.metadata.session() as s:
        row = s.scalars(select(ImageRow).where(ImageRow.path == str(photos / "IMG_0001.CR2"))).one()
    assert (row.width, row.height) == (local.width, local.height)
