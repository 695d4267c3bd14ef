"""Hostile files through a whole index run (fake encoder): the run goes on, each failure is
recorded with a reason, and valid odd images are indexed."""

from __future__ import annotations

import io
import os
import random
import resource
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import xmodal.indexer.decode_pool as decode_pool_mod
from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.scanning import FoundFile, SkippedFile
from xmodal.indexer.sources import FolderWalk, Source
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import ImageRow
from xmodal.search.stats import failures

RED, GREEN, BLUE = COLOURS["red"], COLOURS["green"], COLOURS["blue"]


def _index(index_dir: Path, *paths: Path | str, **kwargs: object):
    return Indexer(index_dir, model=fake_model(), batch_size=4, **kwargs).add_paths(paths)


class _WalkThen:
    """A source of the run (indexer.sources): a folder walk that changes the files once it has found them."""

    names_files = False

    def __init__(self, root: Path, after: Callable[[], None]) -> None:
        self.roots = (root,)
        self.after = after

    def __iter__(self) -> Iterator[FoundFile | SkippedFile]:
        items = list(FolderWalk(self.roots))
        self.after()
        return iter(items)


def _index_from(index_dir: Path, source: Source):
    return Indexer(index_dir, model=fake_model(), batch_size=4).add_from(source)


def _rows(index_dir: Path) -> dict[str, ImageRow]:
    store = IndexStore.open(index_dir)
    try:
        return {r.path: r for r in store.metadata.image_rows_under([], with_vectors=True)}
    finally:
        store.close()


def _colour_of(row: ImageRow) -> np.ndarray:
    """The fake encoder's vector starts with the mean colour - 0.4 (before normalisation)."""
    v = np.frombuffer(row.vector, dtype="<f4")
    return v[:3] / np.linalg.norm(v[:3])


def _expected_direction(rgb: tuple[int, int, int]) -> np.ndarray:
    v = np.array(rgb, dtype=np.float32) / 255.0 - 0.4
    return v / np.linalg.norm(v)


def _jpeg_bytes(colour=RED, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    im = Image.new("RGB", size, colour)
    im.paste((0, 0, 0), (0, 0, size[0] // 2, size[1] // 2))  # some detail, so the scan data is not trivial
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _bomb_png(path: Path, side: int = 40_000) -> Path:
    """A real 1-bit 40000x40000 PNG: a few hundred KB on disk, 1.6 gigapixels decoded."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    block = row * 500
    body = b"".join(comp.compress(block) for _ in range(side // 500)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _failure_reasons(summary) -> dict[str, str]:
    return {Path(p).name: reason for p, reason in summary.failures}


@pytest.fixture
def hostile_dir(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    make_image(root / "good.jpg", RED)
    # broken files
    data = _jpeg_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    rng = random.Random(7)
    for i in range(2, 400):  # the markers and tables: no decoder accepts this
        corrupt[i] = rng.randrange(256)
    (root / "corrupt.jpg").write_bytes(bytes(corrupt))
    (root / "zero.jpg").write_bytes(b"")
    (root / "random.jpg").write_bytes(random.Random(1).randbytes(5000))
    (root / "text.png").write_text("this is not a picture\n" * 20)
    _bomb_png(root / "bomb.png")
    # valid but odd
    make_image(root / "dir.jpg" / "inside.png", GREEN)  # a folder named like a photo
    Image.new("RGB", (40, 40), BLUE).convert("CMYK").save(root / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((30, 30), 40000, dtype=np.uint16)).save(root / "grey16.png")
    Image.new("RGB", (30, 30), GREEN).convert("P").save(root / "palette.png")
    Image.new("LA", (30, 30), (90, 255)).save(root / "la.png")
    Image.new("RGBA", (30, 30), (*BLUE, 255)).save(root / "rgba.png")
    frames = [Image.new("RGB", (24, 24), c) for c in (RED, BLUE, GREEN)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    frames[1].save(
        root / "anim.webp", save_all=True, append_images=[frames[0], frames[2]], duration=80, loop=0, lossless=True
    )
    rotated = Image.new("RGB", (60, 20), GREEN)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(root / "rotated.jpg", exif=exif.tobytes(), quality=95)
    # links and special files
    os.symlink(root / "nowhere.jpg", root / "broken-link.jpg")
    os.symlink(root / "loop-b.jpg", root / "loop-a.jpg")
    os.symlink(root / "loop-a.jpg", root / "loop-b.jpg")
    os.symlink(root, root / "dir.jpg" / "up")  # a link back up the tree
    os.mkfifo(root / "pipe.jpg")
    # a non-UTF-8 name (a Latin-1 'é'), a valid photo
    with open(os.fsencode(root) + b"/caf\xe9.png", "wb") as f:
        Image.new("RGB", (20, 20), BLUE).save(f, format="PNG")
    return root


class _FifoGuard:
    """Unblocks a reader stuck opening a FIFO (so a regression fails instead of hanging)."""

    def __init__(self, fifo: Path, after: float = 20.0) -> None:
        self.fifo, self.fired = fifo, False
        self._timer = threading.Timer(after, self._unblock)

    def _unblock(self) -> None:
        self.fired = True
        for _ in range(50):
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                time.sleep(0.1)

    def __enter__(self) -> _FifoGuard:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


@pytest.mark.slow
def test_hostile_folder_run_goes_on(tmp_path: Path, hostile_dir: Path) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with _FifoGuard(hostile_dir / "pipe.jpg") as guard:
        summary = _index(tmp_path / "idx", hostile_dir)
    assert not guard.fired, "opening the FIFO blocked the run"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300, f"the decompression bomb grew memory by {grown_mb:.0f} MB"

    reasons = _failure_reasons(summary)
    assert set(reasons) == {
        "truncated.jpg",
        "corrupt.jpg",
        "zero.jpg",
        "random.jpg",
        "text.png",
        "bomb.png",
        "broken-link.jpg",
        "loop-a.jpg",
        "loop-b.jpg",
        "pipe.jpg",
    }, reasons
    assert "truncated" in reasons["truncated.jpg"]
    assert "empty" in reasons["zero.jpg"]
    assert "not a recognised image" in reasons["random.jpg"] and "not a recognised image" in reasons["text.png"]
    assert "too large" in reasons["bomb.png"]
    assert "broken symbolic link" in reasons["broken-link.jpg"]
    assert "symbolic links" in reasons["loop-a.jpg"]
    assert "FIFO" in reasons["pipe.jpg"]
    assert all(reason and "\n" not in reason for reason in reasons.values())

    rows = _rows(tmp_path / "idx")
    names = {Path(p).name for p in rows}
    assert names == {
        "good.jpg",
        "inside.png",
        "cmyk.jpg",
        "grey16.png",
        "palette.png",
        "la.png",
        "rgba.png",
        "anim.gif",
        "anim.webp",
        "rotated.jpg",
        "caf\udce9.png",
    }
    assert summary.new == len(rows) and summary.failed == len(reasons)
    by_name = {Path(p).name: r for p, r in rows.items()}
    # odd modes decode to their real colours; animations use their first frame
    for name, colour in [
        ("cmyk.jpg", BLUE),
        ("palette.png", GREEN),
        ("rgba.png", BLUE),
        ("anim.gif", RED),
        ("anim.webp", BLUE),
        ("good.jpg", RED),
    ]:
        assert np.dot(_colour_of(by_name[name]), _expected_direction(colour)) > 0.97, name
    assert (by_name["rotated.jpg"].width, by_name["rotated.jpg"].height) == (20, 60)  # EXIF rotation applied
    # the non-UTF-8 name round-trips to the same bytes on disk
    odd = next(p for p in rows if p.endswith(".png") and "caf" in p)
    assert os.fsencode(odd) == os.fsencode(hostile_dir) + b"/caf\xe9.png" and os.path.exists(odd)

    # `xmodal info --errors` reads the same list, with reasons
    recorded = {Path(f["path"]).name: f["reason"] for f in failures(tmp_path / "idx")}
    assert recorded == reasons

    # a second run: nothing new, the same failures, nothing blocked
    with _FifoGuard(hostile_dir / "pipe.jpg") as guard:
        again = _index(tmp_path / "idx", hostile_dir)
    assert not guard.fired
    assert (again.new, again.unchanged, again.failed) == (0, len(rows), len(reasons))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod 000 files; covered by the monkeypatched test below")
def test_unreadable_file_is_recorded(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_image(root / "ok.jpg", RED)
    locked = make_image(root / "locked.jpg", GREEN)
    locked.chmod(0)
    try:
        summary = _index(tmp_path / "idx", root)
    finally:
        locked.chmod(0o644)
    assert summary.new == 1
    assert "permission denied" in _failure_reasons(summary)["locked.jpg"].lower()


def test_permission_denied_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root chmod 000 does not stop reads, so the refusal is simulated at open()."""
    root = tmp_path / "photos"
    make_image(root / "ok.jpg", RED)
    make_image(root / "locked.jpg", GREEN)
    real_open = os.open

    def guarded_open(path, flags, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if os.fsdecode(path).endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    summary = _index(tmp_path / "idx", root)
    monkeypatch.undo()
    assert summary.new == 1
    assert "permission denied" in _failure_reasons(summary)["locked.jpg"].lower()


def test_non_utf8_folder_and_bytes_root(tmp_path: Path, db_backend) -> None:  # noqa: ANN001 - names round-trip on both databases
    base = os.fsencode(tmp_path)
    folder = base + b"/\xff\xfeweird"
    os.makedirs(folder)
    for name, colour in [(b"a\x80.jpg", RED), (b"b\xe9.png", GREEN)]:
        with open(folder + b"/" + name, "wb") as f:
            Image.new("RGB", (16, 16), colour).save(f, format="JPEG" if name.endswith(b".jpg") else "PNG")
    summary = _index(tmp_path / "idx", os.fsdecode(folder))
    assert (summary.new, summary.failed) == (2, 0)
    rows = _rows(tmp_path / "idx")
    assert {os.fsencode(p) for p in rows} == {folder + b"/a\x80.jpg", folder + b"/b\xe9.png"}
    again = _index(tmp_path / "idx", os.fsdecode(folder))
    assert (again.new, again.unchanged) == (0, 2)


def test_file_vanishing_between_scan_and_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "photos"
    for i in range(6):
        make_image(root / f"p{i}.jpg", (40 * i, 100, 200 - 30 * i))
    summary = _index_from(tmp_path / "idx", _WalkThen(root, (root / "p2.jpg").unlink))  # gone before it is hashed
    assert summary.new == 5
    assert "p2.jpg" in _failure_reasons(summary)

    # a changed file that vanishes between the scan and the decode
    target = root / "p4.jpg"
    make_image(target, BLUE, size=(70, 50))
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    real_decode = decode_pool_mod.decode_image

    def vanish_then_decode(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(path).name == "p4.jpg" and Path(path).exists():
            Path(path).unlink()
        return real_decode(path, *args, **kwargs)

    monkeypatch.setattr(decode_pool_mod, "decode_image", vanish_then_decode)
    summary = _index(tmp_path / "idx", root)
    reasons = _failure_reasons(summary)
    assert "vanished" in reasons["p4.jpg"] or "no such file" in reasons["p4.jpg"].lower()
    assert {Path(p).name for p in _rows(tmp_path / "idx")} == {"p0.jpg", "p1.jpg", "p3.jpg", "p5.jpg"}
    from xmodal.indexer.store.checking import check_index

    assert check_index(tmp_path / "idx").ok


def test_file_replaced_by_fifo_after_scan_does_not_block(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_image(root / "a.jpg", RED)
    make_image(root / "b.jpg", GREEN)

    def swap() -> None:
        (root / "b.jpg").unlink()
        os.mkfifo(root / "b.jpg")

    with _FifoGuard(root / "b.jpg", after=15) as guard:
        summary = _index_from(tmp_path / "idx", _WalkThen(root, swap))
    assert not guard.fired, "a FIFO swapped in after the scan blocked the run"
    assert summary.new == 1 and "b.jpg" in _failure_reasons(summary)


def test_file_changing_while_read_heals_on_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "photos"
    make_image(root / "a.jpg", RED)
    target = make_image(root / "b.png", RED)
    real_decode = decode_pool_mod.decode_image
    changed = []

    def change_then_decode(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(path).name == "b.png" and not changed:
            changed.append(True)
            make_image(target, BLUE, size=(90, 90))  # rewritten while the run reads it
            os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
        return real_decode(path, *args, **kwargs)

    monkeypatch.setattr(decode_pool_mod, "decode_image", change_then_decode)
    first = _index(tmp_path / "idx", root)
    assert first.new + first.failed == 2
    monkeypatch.setattr(decode_pool_mod, "decode_image", real_decode)
    _index(tmp_path / "idx", root)
    rows = {Path(p).name: r for p, r in _rows(tmp_path / "idx").items()}
    # after the next run the row describes the file as it is now
    st = target.stat()
    assert (rows["b.png"].size, rows["b.png"].mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert np.dot(_colour_of(rows["b.png"]), _expected_direction(BLUE)) > 0.97
    assert (rows["b.png"].width, rows["b.png"].height) == (90, 90)


def test_hostile_root_arguments(tmp_path: Path) -> None:
    """Roots that are not folders: a missing path, a FIFO, a broken link, a folder named x.jpg."""
    make_image(tmp_path / "x.jpg" / "in.png", GREEN)
    os.mkfifo(tmp_path / "fifo.jpg")
    os.symlink(tmp_path / "gone", tmp_path / "dangling.jpg")
    with _FifoGuard(tmp_path / "fifo.jpg") as guard:
        summary = _index(
            tmp_path / "idx", tmp_path / "missing", tmp_path / "fifo.jpg", tmp_path / "dangling.jpg", tmp_path / "x.jpg"
        )
    assert not guard.fired
    assert summary.new == 1
    assert set(_failure_reasons(summary)) == {"missing", "fifo.jpg", "dangling.jpg"}


def test_bytes_root_path_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_image(root / "a.jpg", RED)
    summary = _index(tmp_path / "idx", os.fsencode(root))  # type: ignore[arg-type]
    assert summary.new == 1
