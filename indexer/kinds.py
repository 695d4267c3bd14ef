"""What a file is, decided by its first bytes, not its name: picture, camera RAW, video or other.

A `.NEF` that is a TIFF inside is a picture; a `.jpg` that is an MP4 is a video. The scan asks
only about files whose name does not settle it cheaply (RAW and video extensions, odd or no
extension); names that are plainly not media (`.txt`, `.xmp`, `.json`, …) are never opened, so a
scan of a big tree stays one stat per file. Pictures are then decoded by Pillow, which itself
recognises formats by content; camera RAW by LibRaw (indexer.raw); video is reported as not read.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import IO, Literal

from xmodal.indexer.paths import OPEN_NONBLOCK

__all__ = [
    "Kind",
    "sniff",
    "kind_of_header",
    "NOT_MEDIA_EXTENSIONS",
    "RAW_EXTENSIONS",
    "HEADER_BYTES",
    "is_raw_tiff",
    "is_camera_raw",
    "UNREAD_PREFIX",
    "unread_reason",
]

UNREAD_PREFIX = "not read by xmodal: "  # how a skipped file's reason starts in the failures table

Kind = Literal["picture", "heif", "raw", "video"]
HEADER_BYTES = 512  # one read; two MPEG-TS packets fit

# Files kept beside photos that are never media: not opened by the scan.
NOT_MEDIA_EXTENSIONS = frozenset(
    {
        ".txt", ".md", ".xmp", ".json", ".xml", ".csv", ".tsv", ".yaml", ".yml", ".ini", ".cfg", ".log",
        ".html", ".htm", ".css", ".js", ".py", ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx",
        ".zip", ".gz", ".tar", ".7z", ".rar", ".db", ".sqlite", ".thm", ".pp3", ".dop", ".aae", ".lrv",
        ".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".srt", ".sub", ".exe", ".dll", ".so", ".o",
        ".faiss", ".parquet", ".npy", ".pkl", ".ds_store", ".lnk", ".url", ".torrent", ".part", ".tmp",
    }
)  # fmt: skip

# Camera RAW extensions: opened to tell their kind (a `.NEF` may be a TIFF, a `.CR2` a JPEG).
RAW_EXTENSIONS = frozenset(
    {
        ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".dng", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf",
        ".pef", ".srw", ".x3f", ".3fr", ".fff", ".erf", ".kdc", ".dcr", ".mrw", ".raw", ".rwl", ".iiq",
        ".mef", ".mos", ".cap", ".bay",
    }
)  # fmt: skip

# ISO base media (`ftyp` box) brands: HEIF/AVIF stills and camera RAW; any other brand is a video.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis", b"mif2"}
_RAW_BRANDS = {b"crx "}  # Canon CR3
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}


def kind_of_header(head: bytes) -> Kind | None:
    """The kind the first bytes of a file announce, None when they announce none we know."""
    if head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n") or head[:6] in (b"GIF87a", b"GIF89a"):
        return "picture"
    if head.startswith(b"BM") and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "picture"  # "BM" and a known DIB header size: not any text that starts with "BM"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "picture"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR") or head[:4] == b"IIU\x00" or head[8:10] == b"CR":
        return "raw"  # Olympus ORF, Panasonic RW2, Canon CR2 (TIFF-like, read only by RAW decoders)
    if head[:4] == b"II*\x00" and head[8:12] == b"IIII":
        return "raw"  # Phase One IIQ: a TIFF whose first image is a dummy, its raw header at byte 8
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "picture"  # TIFF; a TIFF-based RAW (NEF, DNG, ARW) is told apart once opened: is_raw_tiff
    if head.startswith((b"FUJIFILMCCD-RAW", b"FOVb", b"\x00MRM")) or head[6:14] == b"HEAPCCDR":
        return "raw"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "heif"
        return "raw" if brand in _RAW_BRANDS else "video"
    if head.startswith((b"\x1a\x45\xdf\xa3", b"FLV\x01", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "video"  # Matroska/WebM, Flash, MPEG program stream
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "video"  # ASF/WMV
    if len(head) > 196 and (head[0] == head[188] == 0x47 or head[4] == head[196] == 0x47):
        return "video"  # MPEG transport stream (.ts; .mts/.m2ts with a 4-byte timecode): a sync byte a packet
    return None


def sniff(path: Path | str) -> Kind | None:
    """The kind of the file at path by its first bytes; None when unknown or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | OPEN_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        return kind_of_header(os.read(fd, HEADER_BYTES))
    except OSError:
        return None
    finally:
        os.close(fd)


def unread_reason(kind: str, extension: str) -> str:
    """The recorded reason for a file of a kind xmodal does not read yet (camera RAW, video)."""
    return f"{UNREAD_PREFIX}{kind} ({extension or 'no extension'}); convert it to JPEG, PNG or TIFF to index it"


# TIFF tags that only camera RAW files carry in their first directory.
_SUBFILE_TYPE, _SUB_IFDS, _DNG_VERSION, _PHOTOMETRIC = 254, 330, 50706, 262
_CFA, _LINEAR_RAW = 32803, 34892  # photometric interpretations of sensor data
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")


def is_raw_tiff(tags: object) -> bool:
    """A TIFF-based camera RAW (NEF, DNG, ARW, …) by its first directory's tags (Pillow's
    `im.tag_v2`): a DNG version, raw sub-directories, sensor data, or a first image that is a thumbnail."""
    get = getattr(tags, "get", None)
    if get is None:
        return False
    return (
        get(_DNG_VERSION) is not None
        or get(_SUB_IFDS) is not None
        or get(_SUBFILE_TYPE) == 1
        or get(_PHOTOMETRIC) in (_CFA, _LINEAR_RAW)
    )


def is_camera_raw(fp: IO[bytes]) -> bool:
    """Whether the file is a camera RAW by its content: a RAW magic (CR2, CR3, ORF, RW2, RAF, …), or
    a TIFF whose first directory says RAW (read with Pillow's TIFF directory reader, nothing
    decoded: Pillow refuses to open some DNGs at all). The file position is restored."""
    start = fp.tell()
    try:
        head = fp.read(HEADER_BYTES)
        kind = kind_of_header(head)
        if kind == "raw":
            return True
        if kind != "picture" or head[:4] not in _TIFF_MAGICS:
            return False
        from PIL import TiffImagePlugin

        tags = TiffImagePlugin.ImageFileDirectory_v2(head[:8])
        fp.seek(start + tags.next)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of a damaged directory; the decoder gives the reason
            tags.load(fp)
        return is_raw_tiff(tags)
    except Exception:  # noqa: BLE001 - an unreadable directory: not a RAW we can tell
        return False
    finally:
        fp.seek(start)
