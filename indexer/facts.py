"""Facts of every photo and video: when it was taken, where, with which camera, and its names as words.

Read from the file's header (EXIF through Pillow, never a pixel decoded) and its path:

* **when** (`taken_at`, the wall-clock time the camera showed, and `taken_offset`, its minutes east
  of UTC when known) with the source used (`taken_source`): EXIF DateTimeOriginal with
  OffsetTimeOriginal (`"exif"`), else DateTimeDigitized (`"exif_digitized"`), else the IFD0 DateTime
  (`"exif_modified"`, the time the file was last edited by the camera or a program); else the time
  the decoder of the file's kind read (a video's QuickTime creation time: `"video"`; another
  container's: `"metadata"`), passed in as `container_time`; else the file's modification time as
  local time (`"file"`);
* **where**: EXIF GPS as latitude and longitude, named offline by indexer.places (city, region,
  country);
* **the camera**: EXIF Make and Model;
* **names**: the file's name and its folders' names as lower-case words (`words`).

`FACTS_VERSION` says which reader wrote a row: rows of an older one are read again by the next run
(`Indexer` fills them without embedding anything again). The facts live in their own table
(`facts`, one row per photo, revision 0005), so writing them never moves the photos' vectors on.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePath
from typing import IO, Literal

from PIL import Image, UnidentifiedImageError
from sqlalchemy import case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from xmodal.indexer.kinds import HEADER_BYTES, kind_of_header
from xmodal.indexer.paths import OPEN_NONBLOCK
from xmodal.indexer.places import gazetteer
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import FactsRow, ImageRow

__all__ = [
    "FACTS_VERSION",
    "TakenSource",
    "Facts",
    "FactsSignal",
    "read_facts",
    "name_words",
    "write_facts",
    "rename_facts",
    "stale_facts",
]

# Bump when the reader changes what it stores: the next run reads every photo's facts again.
FACTS_VERSION = 1

TakenSource = Literal["exif", "exif_digitized", "exif_modified", "video", "metadata", "file"]

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_MAKE, _MODEL, _DATETIME, _OFFSET_TIME = 271, 272, 306, 36880
_ORIGINAL, _DIGITIZED, _OFFSET_ORIGINAL, _OFFSET_DIGITIZED = 36867, 36868, 36881, 36882
_SUBSEC_ORIGINAL, _SUBSEC_DIGITIZED = 37521, 37522
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")
_WORD = re.compile(r"[^\W_]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
# Names cameras and phones give every file: no word of what the photo is.
_CAMERA_WORDS = frozenset({"img", "dsc", "dscn", "dscf", "pxl", "mvimg", "vid", "mov", "dcim", "photo", "image"})
_FOLDERS_KEPT = 3  # the nearest folders name a photo; the ones above are the user's home and drives
_MAX_TEXT = 200  # characters of a camera's make or model kept


@dataclass(frozen=True)
class Facts:
    """One file's facts (see the module's docstring); None where the file does not say."""

    taken_at: datetime | None
    taken_offset: int | None
    taken_source: TakenSource
    latitude: float | None = None
    longitude: float | None = None
    city: str | None = None
    region: str | None = None
    country: str | None = None
    country_code: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    words: str = ""

    @property
    def camera(self) -> str | None:
        """Make and model as people say it ("Canon EOS 5D", not "Canon Canon EOS 5D")."""
        make, model = self.camera_make or "", self.camera_model or ""
        if make and model.lower().startswith(make.split()[0].lower()):
            return model
        return " ".join(p for p in (make, model) if p) or None

    def as_row(self, image_id: int) -> dict[str, object]:
        return {"image_id": image_id, "version": FACTS_VERSION, **asdict(self)}


def name_words(path: str | PurePath) -> str:
    """The file's name and its nearest folders' names as lower-case words, camelCase and
    snake_case split, camera prefixes (IMG, DSC, PXL) left out: ".../Lisbon 2025/beach_day/IMG_0042.jpg"
    gives "lisbon 2025 beach day 0042"."""
    pure = PurePath(path)
    parts = [*pure.parent.parts[-_FOLDERS_KEPT:], pure.stem]
    words: list[str] = []
    for part in parts:
        for word in _WORD.findall(_CAMEL.sub(" ", part)):
            word = word.lower()
            if word not in _CAMERA_WORDS and word not in words:
                words.append(word)
    return " ".join(words)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = " ".join(value.replace("\x00", " ").split())
    return cleaned[:_MAX_TEXT] or None


def _exif_time(value: object, subsec: object = None) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        moment = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # "0000:00:00 00:00:00" and other placeholders
    digits = "".join(ch for ch in (_text(subsec) or "") if ch.isdigit())[:6]
    return moment.replace(microsecond=int(digits.ljust(6, "0"))) if digits else moment


def _offset_minutes(value: object) -> int | None:
    match = _OFFSET.match(_text(value) or "")
    if not match:
        return None
    sign, hours, minutes = match.groups()
    total = int(hours) * 60 + int(minutes)
    return (-total if sign == "-" else total) if total <= 14 * 60 else None


def _degrees(value: object, ref: object) -> float | None:
    try:
        d, m, s = (float(x) for x in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    degrees = d + m / 60 + s / 3600
    if (_text(ref) or "").upper() in ("S", "W"):
        degrees = -degrees
    return degrees if degrees == degrees else None


def _exif_of(fp: IO[bytes]) -> Image.Exif | None:
    """The file's EXIF from its header: Pillow's formats opened lazily (no pixel decoded), HEIF
    through pillow-heif's header reader; None for anything else (videos, unknown kinds)."""
    head = fp.read(HEADER_BYTES)
    kind = kind_of_header(head)
    if kind == "video":  # not offered to Pillow: failing to identify one loads every Pillow plugin
        return None
    fp.seek(0)
    try:
        with warnings.catch_warnings():
            # a header over Pillow's own pixel limit: its warning is not ours to show (nothing is decoded)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                return im.getexif()
    except UnidentifiedImageError:
        pass
    if kind != "heif":
        return None
    try:
        import pillow_heif
    except ImportError:
        return None
    fp.seek(0)
    raw = pillow_heif.open_heif(fp).info.get("exif")
    if not raw:
        return None
    exif = Image.Exif()
    exif.load(raw)
    return exif


def _file_time(mtime_ns: int) -> tuple[datetime, int | None]:
    local = datetime.fromtimestamp(mtime_ns / 1e9).astimezone()
    offset = local.utcoffset()
    return local.replace(tzinfo=None), int(offset.total_seconds() // 60) if offset is not None else None


def _container_time(moment: datetime) -> tuple[datetime, int | None]:
    """A decoder's time: an aware one (QuickTime stores UTC) shown as the machine's local time."""
    if moment.tzinfo is None:
        return moment, None
    local = moment.astimezone()
    offset = local.utcoffset() or timedelta(0)
    return local.replace(tzinfo=None), int(offset.total_seconds() // 60)


def read_facts(
    path: str | Path, mtime_ns: int | None = None, container_time: datetime | None = None, *, places: bool = True
) -> Facts:
    """The facts of one file (see the module's docstring). Never raises for a file that cannot be
    read or has no EXIF: the facts are then the file time and the names.

    container_time: the time the decoder of the file's kind read from it (a video's creation time,
    filled by that decoder), used when the file has no EXIF date. places: name GPS coordinates."""
    exif: Image.Exif | None = None
    try:
        fd = os.open(path, os.O_RDONLY | OPEN_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fp:
            if mtime_ns is None:
                mtime_ns = os.fstat(fp.fileno()).st_mtime_ns
            exif = _exif_of(fp)
    except Exception:  # unreadable, vanished, a header Pillow rejects: the file time stands
        exif = None
    taken: datetime | None = None
    offset: int | None = None
    source: TakenSource = "file"
    gps: dict = {}
    make = model = None
    if exif is not None:
        try:
            sub = exif.get_ifd(_EXIF_IFD)
            for tag, offset_tag, subsec_tag, name in (
                (_ORIGINAL, _OFFSET_ORIGINAL, _SUBSEC_ORIGINAL, "exif"),
                (_DIGITIZED, _OFFSET_DIGITIZED, _SUBSEC_DIGITIZED, "exif_digitized"),
            ):
                taken = _exif_time(sub.get(tag), sub.get(subsec_tag))
                if taken is not None:
                    offset, source = _offset_minutes(sub.get(offset_tag)), name  # type: ignore[assignment]
                    break
            if taken is None:
                taken = _exif_time(exif.get(_DATETIME))
                if taken is not None:
                    offset, source = _offset_minutes(sub.get(_OFFSET_TIME)), "exif_modified"
            gps = dict(exif.get_ifd(_GPS_IFD))
            make, model = _text(exif.get(_MAKE)), _text(exif.get(_MODEL))
        except Exception:  # a malformed EXIF block is not a reason to lose the rest
            pass
    if taken is None and container_time is not None:
        taken, offset = _container_time(container_time)
        source = "video" if _is_video(path) else "metadata"
    if taken is None and mtime_ns is not None:
        taken, offset = _file_time(mtime_ns)
        source = "file"
    lat = _degrees(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF))
    lon = _degrees(gps.get(_GPS_LON), gps.get(_GPS_LON_REF))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        lat = lon = None  # 0,0 is what a phone without a fix writes
    place = gazetteer().place(lat, lon) if places and lat is not None and lon is not None else None
    return Facts(
        taken_at=taken,
        taken_offset=offset,
        taken_source=source,
        latitude=lat,
        longitude=lon,
        city=place.city if place else None,
        region=place.region if place else None,
        country=place.country if place else None,
        country_code=place.country_code if place else None,
        camera_make=make,
        camera_model=model,
        words=name_words(path),
    )


def _is_video(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return kind_of_header(f.read(HEADER_BYTES)) == "video"
    except OSError:
        return False


# --- SQL (inside the caller's transaction) ------------------------------------------------------
def write_facts(session: Session, rows: Sequence[tuple[int, Facts]]) -> None:
    """Store the facts of photos (image id, facts), replacing what they had."""
    if not rows:
        return
    ids = [image_id for image_id, _ in rows]
    for start in range(0, len(ids), 500):
        session.execute(delete(FactsRow).where(FactsRow.image_id.in_(ids[start : start + 500])))
    session.execute(insert(FactsRow), [facts.as_row(image_id) for image_id, facts in rows])


def rename_facts(session: Session, moves: Iterable[tuple[int, str]]) -> None:
    """Photos moved (image id, new path): their names' words follow."""
    values = [{"image_id": image_id, "words": name_words(path)} for image_id, path in moves]
    for value in values:
        session.execute(update(FactsRow).where(FactsRow.image_id == value["image_id"]).values(words=value["words"]))


def stale_facts(session: Session) -> list[tuple[int, str, int, datetime | None]]:
    """Photos without facts, or with facts of an older reader: (id, path, mtime_ns, taken_at)."""
    stmt = (
        select(ImageRow.id, ImageRow.path, ImageRow.mtime_ns, ImageRow.taken_at)
        .outerjoin(FactsRow, FactsRow.image_id == ImageRow.id)
        .where(or_(FactsRow.image_id.is_(None), FactsRow.version < FACTS_VERSION))
        .order_by(ImageRow.id)
    )
    return [(int(r[0]), r[1], int(r[2]), r[3]) for r in session.execute(stmt)]


def _orphans(session: Session) -> list[int]:
    """Facts rows whose photo is gone (only a write outside xmodal leaves them)."""
    stmt = select(FactsRow.image_id).outerjoin(ImageRow, ImageRow.id == FactsRow.image_id).where(ImageRow.id.is_(None))
    return [int(i) for i in session.scalars(stmt)]


# --- the signal: `check` and `info` -------------------------------------------------------------
class FactsSignal:
    """Facts as a per-item signal (indexer.signals): written by the run itself (`Indexer`, from
    each file's header, never from the model's output), so the write hooks do nothing here; `info`
    counts them and `check` notes photos still without facts (the next run fills them)."""

    name = "facts"

    def stale_ids(self, store: IndexStore) -> set[int]:
        return set()  # never embedded again for facts: the run fills them on its own

    def row_values(self, computed: object, position: int) -> dict[str, object]:
        return {}

    def after_commit(self, store: IndexStore, ids: object, replaced: object, computed: object) -> None:
        return None

    def forget(self, store: IndexStore, ids: object) -> None:
        return None  # deleted with their photos' rows (MetadataStore.delete_ids)

    def inspect(self, store: IndexStore, report: object) -> None:
        """Notes only: photos still without facts (the next run fills them), facts of no photo
        (`check --repair` drops them)."""
        with store.metadata.session() as s:
            missing = len(stale_facts(s))
            orphans = len(_orphans(s))
        notes = getattr(report, "notes", None)
        if not isinstance(notes, list):
            return
        if missing:
            notes.append(f"{missing} photo(s) without facts (date, place, camera) yet; the next index run fills them")
        if orphans:
            notes.append(f"{orphans} row(s) of facts belong to no photo; check --repair drops them")

    def rebuild(self, store: IndexStore) -> list[str]:
        with store.metadata.session() as s, s.begin():
            orphans = _orphans(s)
            for start in range(0, len(orphans), 500):
                s.execute(delete(FactsRow).where(FactsRow.image_id.in_(orphans[start : start + 500])))
        return [f"dropped the facts of {len(orphans)} photo(s) no longer indexed"] if orphans else []

    def info(self, store: IndexStore) -> dict[str, int]:
        """Photos with facts, dated by each source, and placed (a city, region or country)."""
        with store.metadata.session() as s:
            counted = s.execute(
                select(
                    func.count(),
                    func.count(FactsRow.taken_at),
                    func.count(case((or_(FactsRow.country.is_not(None), FactsRow.region.is_not(None)), 1))),
                    func.count(FactsRow.latitude),
                    func.count(FactsRow.camera_model),
                ).select_from(FactsRow)
            ).one()
            by_source = dict(
                s.execute(
                    select(FactsRow.taken_source, func.count())
                    .where(FactsRow.taken_at.is_not(None))
                    .group_by(FactsRow.taken_source)
                ).all()
            )
        out = {
            "photos": int(counted[0]),
            "dated": int(counted[1]),
            "placed": int(counted[2]),
            "with_gps": int(counted[3]),
            "with_camera": int(counted[4]),
        }
        out.update({f"dated_by_{source}": int(n) for source, n in sorted(by_source.items())})
        return out
