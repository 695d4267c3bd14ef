"""Reading the text in a photo: RapidOCR's PP-OCR models (the `ocr` extra), run on onnxruntime.

Which models: the ones inside the installed `rapidocr` wheel, named here (`SHIPPED_MODELS`), never
RapidOCR's defaults, which name a model hub: every stage gets an explicit `model_path` to a file that
exists, and the recogniser's character list comes from its model file (or the dictionary file
shipped beside it), so nothing is ever downloaded. `shipped_models()` says which set the install
holds, or why there is none.

How a photo is read (`TextReader.read`), so that the common case, a photo without text, is cheap:

1. a look: the photo decoded small (JPEG draft mode; `OcrConfig.look_side` on its long side) and the
   detection model run on it alone. No text region: done, the photo has no text;
2. the regions of a photo with text are detected again, at most `OcrConfig.detect_side` on the
   long side (the look's boxes are too coarse to cut lines from), unless the look already saw the
   photo at its own size (a small photo, a small video frame): its boxes are then final;
3. each line is cut from the photo at the resolution it was taken at (at most
   `Limits.ocr_max_pixels`), turned upright (the angle classifier) and recognised (48 px high,
   padded to the widest line of its batch only); lines below
   `OcrConfig.min_score` are dropped. At most `Limits.ocr_max_boxes` regions are read, and a photo's
   reading stops after `Limits.ocr_seconds` with what it read so far.

Library manners: nothing is printed and no process-wide state changes (RapidOCR's own logger is
given the level in its own configuration, as RapidOCR does with every engine it builds).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from xmodal.indexer.errors import ImageReadError
from xmodal.indexer.extras import installed
from xmodal.indexer.images import decode_image
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "OCR_MODULES",
    "OCR_EXTRA_NOTE",
    "SHIPPED_MODELS",
    "ModelSet",
    "OcrConfig",
    "TextLine",
    "PhotoText",
    "TextReader",
    "ocr_unavailable",
    "reading_models",
    "shipped_models",
]

OCR_MODULES: tuple[str, ...] = ("rapidocr", "cv2", "onnxruntime")
OCR_EXTRA_NOTE = "text in photos is not read: that needs the ocr extra: pip install 'xmodal[ocr]'"
Status = Literal["text", "none", "failed"]


@dataclass(frozen=True)
class ModelSet:
    """One set of PP-OCR model files a rapidocr wheel ships in its `models/` folder."""

    name: str
    det: str
    rec: str
    cls: str
    keys: str | None = None  # the recogniser's dictionary, for models without it inside


# Newest first: rapidocr 3.10 ships PP-OCRv6 small; 3.4 to 3.9 ship PP-OCRv4 mobile (its
# dictionary beside it). Both read Chinese and English.
SHIPPED_MODELS: tuple[ModelSet, ...] = (
    ModelSet(
        "PP-OCRv6 small", "PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx", "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    ),
    ModelSet(
        "PP-OCRv4 mobile",
        "ch_PP-OCRv4_det_infer.onnx",
        "ch_PP-OCRv4_rec_infer.onnx",
        "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "ppocr_keys_v1.txt",
    ),
)


def ocr_unavailable() -> str | None:
    """Why text in photos cannot be read here (one line, with the pip line), or None when it can."""
    if not installed(OCR_MODULES):
        return OCR_EXTRA_NOTE
    found = shipped_models()
    return found if isinstance(found, str) else None


def shipped_models() -> tuple[ModelSet, Path] | str:
    """The model set the installed rapidocr wheel holds and its folder, or why there is none."""
    import importlib.util

    spec = importlib.util.find_spec("rapidocr")
    if spec is None or spec.origin is None:
        return OCR_EXTRA_NOTE
    folder = Path(spec.origin).parent / "models"
    for models in SHIPPED_MODELS:
        names = [models.det, models.rec, models.cls] + ([models.keys] if models.keys else [])
        if all((folder / name).is_file() for name in names):
            return models, folder
    return f"text in photos is not read: the installed rapidocr has none of the model files xmodal uses in {folder}"


def reading_models() -> str | None:
    """Which models read text here, as recorded with each reading: the set's name and a digest of
    its files' bytes ("PP-OCRv6 small sha256:…"), so that readings by other models (an upgraded
    rapidocr shipping new ones) are read again; None when none can be used here."""
    if not installed(OCR_MODULES):
        return None
    found = shipped_models()
    if isinstance(found, str):
        return None
    models, folder = found
    return _models_digest(models, folder)


@functools.lru_cache(maxsize=4)
def _models_digest(models: ModelSet, folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name in (models.det, models.rec, models.cls, models.keys):
        if name:
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return f"{models.name} sha256:{digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class OcrConfig:
    """How photos are read. Sides in pixels of the picture the detector sees."""

    look_side: int = 320  # the look that decides whether a photo has text
    # The second detection, on the regions with text: this long side, or half the region's own
    # size when that is larger (small text on a large page stays 7 px and more), at most
    # detect_max_side. The lines are then cut from the photo at its own resolution, so this only
    # has to find them: 640 found 475 of 476 words of separately rendered 1280-px screenshots and
    # receipts, 1280 all, at 0.6 of the speed; on 24 others, 512 found 969 of 972 words (640: 966)
    # in 9% less time (a 1024-px receipt is seen at 512 instead of 640; a 1280-px screen, at its half).
    detect_side: int = 512
    detect_max_side: int = 1280
    min_score: float = 0.5  # recognised lines less confident than this are dropped
    look_box_score: float = 0.5  # regions of the look less sure than this do not count as text
    use_angle: bool = True  # the angle classifier turns upside-down lines upright
    threads: int = 1  # onnxruntime threads per model (photos are read in parallel instead: `workers`)
    # Photos read at once by the run's second stage (threads sharing the models); 0: one per CPU, at most 4.
    workers: int = 0
    # The recogniser sees each line 48 px high and pads lines of a batch to the widest: RapidOCR's
    # default pads every line to at least 320 px, which costs a short word (a price) 3 times its width.
    rec_min_width: int = 48
    rec_batch: int = 16  # lines recognised at once

    @property
    def parallel(self) -> int:
        """Photos read at once (`workers`, or one per CPU, at most 4)."""
        import os

        return self.workers if self.workers > 0 else max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class TextLine:
    """One recognised line: its text, the recogniser's confidence and its box, four (x, y)
    corners as fractions of the photo's width and height (so any size of the photo can show it)."""

    text: str
    score: float
    box: tuple[tuple[float, float], ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "score": round(self.score, 4),
            "box": [[round(x, 5), round(y, 5)] for x, y in self.box],
        }


@dataclass
class PhotoText:
    """What reading one photo gave: `status` "text" (lines found), "none" (no text) or "failed"
    (`reason` says why; lines read before a time limit are kept with status "text" and a reason)."""

    status: Status
    lines: list[TextLine] = field(default_factory=list)
    reason: str | None = None
    seconds: float = 0.0

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


class TextReader:
    """Reads the text in photos with the shipped PP-OCR models. Loads them on first use."""

    def __init__(self, config: OcrConfig | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.config = config or OcrConfig()
        self.limits = limits
        self._parts: tuple[Any, Any, Any] | None = None

    @property
    def engine_name(self) -> str:
        """The models that read (`reading_models`), recorded with each reading; "" without them."""
        return reading_models() or ""

    def load(self) -> None:
        """Load the models now (before reading from several threads; reading loads them otherwise)."""
        self._load()

    def _load(self) -> tuple[Any, Any, Any]:
        if self._parts is None:
            self._parts, _ = _shared_engine(self.config.threads, self.config.rec_min_width)
        return self._parts

    def read(self, path: Path | str) -> PhotoText:
        """The text in one photo file. Never raises for a bad file: status "failed" with the reason."""
        clock = time.perf_counter()
        try:
            look = decode_image(path, target_size=self.config.look_side, max_pixels=self.limits.max_pixels)
        except ImageReadError as e:
            return PhotoText("failed", reason=str(e), seconds=time.perf_counter() - clock)
        return self._read(lambda: _decode_bounded(path, self.limits), look.image, clock)

    def read_frame(self, path: Path | str, seconds: float) -> PhotoText:
        """The text in a video's frame at `seconds` (the keyframe at or before it, as sampled by
        indexer.videos), decoded again at full size. Never raises: status "failed" with the reason."""
        clock = time.perf_counter()
        try:
            from xmodal.indexer.videos import frame_at, video_support

            missing = video_support()
            if missing is not None:
                raise ImageReadError(missing)
            side = int(self.limits.ocr_max_pixels**0.5)
            image = frame_at(path, seconds, side, self.limits)
        except ImageReadError as e:
            return PhotoText("failed", reason=str(e), seconds=time.perf_counter() - clock)
        except Exception as e:  # noqa: BLE001 - a decoder failure fails this frame's reading only
            reason = f"frame not decoded: {type(e).__name__}: {e}"[:300]
            return PhotoText("failed", reason=reason, seconds=time.perf_counter() - clock)
        return self._read(lambda: _bounded(image, self.limits), image, clock)

    def read_image(self, image: Image.Image) -> PhotoText:
        """The text in a decoded picture (RGB)."""
        clock = time.perf_counter()
        return self._read(lambda: _bounded(image, self.limits), image, clock)

    def _read(self, full_picture, look_picture: Image.Image, clock: float) -> PhotoText:  # noqa: ANN001
        try:
            lines, reason = self._lines(full_picture, look_picture, clock)
        except MemoryError:
            return PhotoText("failed", reason="out of memory reading the text", seconds=time.perf_counter() - clock)
        except Exception as e:  # noqa: BLE001 - a model or decoder failure fails this photo's reading only
            return PhotoText(
                "failed", reason=f"text not read: {type(e).__name__}: {e}"[:300], seconds=time.perf_counter() - clock
            )
        status: Status = "text" if lines else ("failed" if reason else "none")
        return PhotoText(status, lines, reason, time.perf_counter() - clock)

    def _lines(self, full_picture, look_picture: Image.Image, clock: float) -> tuple[list[TextLine], str | None]:  # noqa: ANN001
        det, cls, rec = self._load()
        cfg = self.config
        look = _bgr(look_picture, cfg.look_side)
        boxes, scores = _detect(det, look)
        boxes = boxes[scores >= cfg.look_box_score]
        if len(boxes) == 0:
            return [], None
        full = _as_array(full_picture())  # RGB, at most limits.ocr_max_pixels
        height, width = full.shape[:2]
        scale = (width / look.shape[1], height / look.shape[0])
        if max(scale) <= 1.05:  # the look saw the photo at its own size (a small photo): its boxes are final
            boxes = boxes * np.array(scale, dtype=np.float32)
        else:
            # The look's boxes are too coarse to cut lines from: the regions around them are
            # detected again at the resolution the lines need (at most detect_side), and only those.
            found = [
                _detect_in(det, full, region, cfg.detect_side, cfg.detect_max_side)
                for region in _regions(boxes, scale, (width, height))
            ]
            boxes = np.concatenate(found) if found else np.zeros((0, 4, 2), dtype=np.float32)
        if len(boxes) == 0:
            return [], None
        boxes = boxes[_reading_order(boxes)]
        reason = None
        if len(boxes) > self.limits.ocr_max_boxes:  # the largest regions are the ones worth reading
            order = np.argsort(-_box_areas(boxes), kind="stable")[: self.limits.ocr_max_boxes]
            reason = f"only the {self.limits.ocr_max_boxes} largest of {len(boxes)} text regions were read"
            boxes = boxes[np.sort(order)]
        bgr = np.ascontiguousarray(full[:, :, ::-1])
        crops = [_crop(bgr, box) for box in boxes]
        # Lines go to the recogniser by shape (each batch is padded to its widest line), then
        # back into reading order.
        by_shape = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / max(1, crops[i].shape[0]))
        read: dict[int, TextLine] = {}
        step = cfg.rec_batch
        for start in range(0, len(by_shape), step):
            if time.perf_counter() - clock > self.limits.ocr_seconds:
                reason = f"reading stopped after {self.limits.ocr_seconds:g} s ({start} of {len(boxes)} regions read)"
                break
            chunk = by_shape[start : start + step]
            batch = [crops[i] for i in chunk]
            if cfg.use_angle:
                turned = cls(batch)
                batch = list(turned.img_list) if turned.img_list is not None else batch
            out = rec(_rec_input(batch))
            texts = out.txts or ()
            confidences = list(out.scores) if out.scores is not None else []
            for i, text, confidence in zip(chunk, texts, confidences):
                text = " ".join(str(text).split())
                if text and float(confidence) >= cfg.min_score:
                    corners = tuple((float(x) / width, float(y) / height) for x, y in boxes[i])
                    read[i] = TextLine(text, float(confidence), corners)
        lines = [read[i] for i in sorted(read)]
        return lines, reason


def _part(engine: Any, name: str) -> Any:
    """RapidOCR's detector, classifier or recogniser (built eagerly before 3.5, on first use since)."""
    loader = getattr(engine, f"_load_{name}_model", None)
    return loader() if loader is not None else getattr(engine, f"text_{name}")


def _rec_input(crops: list[np.ndarray]) -> Any:
    from rapidocr.ch_ppocr_rec import TextRecInput

    return TextRecInput(img=crops)


def _decode_bounded(path: Path | str, limits: Limits) -> Image.Image:
    side = int((limits.ocr_max_pixels) ** 0.5)
    decoded = decode_image(path, target_size=side, max_pixels=limits.max_pixels)
    return _bounded(decoded.image, limits)


def _bounded(image: Image.Image, limits: Limits) -> Image.Image:
    from PIL import Image as PILImage

    image = image.convert("RGB") if image.mode != "RGB" else image
    pixels = image.width * image.height
    if pixels <= limits.ocr_max_pixels:
        return image
    scale = (limits.ocr_max_pixels / pixels) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, PILImage.Resampling.BILINEAR, reducing_gap=2.0)


def _as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)


def _resized(rgb: np.ndarray, side: int) -> np.ndarray:
    """A BGR copy whose long side is near `side`, both sides multiples of 32 (what the detector takes)."""
    import cv2

    height, width = rgb.shape[:2]
    scale = min(1.0, side / max(height, width))
    size = (max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)[:, :, ::-1])


def _bgr(image: Image.Image, side: int) -> np.ndarray:
    return _resized(_as_array(image), side)


def _detect(det: Any, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (n, 4, 2) in the picture's pixels, their scores)."""
    out = det(bgr)
    if out.boxes is None or len(out.boxes) == 0:
        return np.zeros((0, 4, 2), dtype=np.float32), np.zeros(0, dtype=np.float32)
    boxes = np.asarray(out.boxes, dtype=np.float32).reshape(-1, 4, 2)
    scores = np.asarray(out.scores if out.scores is not None else [1.0] * len(boxes), dtype=np.float32)
    return boxes, scores


def _regions(boxes: np.ndarray, scale: tuple[float, float], size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Rectangles (x0, y0, x1, y1) of the photo around the look's boxes (in the look's pixels,
    `scale` to the photo's), padded by a line's height, overlapping ones merged. Regions covering
    most of the photo become the whole photo."""
    width, height = size
    rects = []
    for box in boxes:
        xs, ys = box[:, 0] * scale[0], box[:, 1] * scale[1]
        pad = max(16.0, float(ys.max() - ys.min()))
        rects.append(
            [
                max(0.0, xs.min() - pad),
                max(0.0, ys.min() - pad),
                min(width, xs.max() + pad),
                min(height, ys.max() + pad),
            ]
        )
    merged = True
    while merged and len(rects) > 1:
        merged = False
        for i in range(len(rects)):
            for j in range(i + 1, len(rects)):
                a, b = rects[i], rects[j]
                if a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]:
                    rects[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del rects[j]
                    merged = True
                    break
            if merged:
                break
    area = sum((r[2] - r[0]) * (r[3] - r[1]) for r in rects)
    if area > 0.6 * width * height:
        return [(0, 0, width, height)]
    return [(int(r[0]), int(r[1]), int(np.ceil(r[2])), int(np.ceil(r[3]))) for r in rects]


def _detect_in(det: Any, rgb: np.ndarray, region: tuple[int, int, int, int], side: int, max_side: int) -> np.ndarray:
    """Text boxes inside one region of the photo, in the photo's pixels: the region seen at `side`
    on its long side, or half its own size when larger, at most `max_side`, never enlarged."""
    x0, y0, x1, y1 = region
    part = rgb[y0:y1, x0:x1]
    if part.shape[0] < 4 or part.shape[1] < 4:
        return np.zeros((0, 4, 2), dtype=np.float32)
    long = max(part.shape[:2])
    seen = _resized(part, min(long, max_side, max(side, (long + 1) // 2)))
    boxes, _ = _detect(det, seen)
    boxes[:, :, 0] = boxes[:, :, 0] * (part.shape[1] / seen.shape[1]) + x0
    boxes[:, :, 1] = boxes[:, :, 1] * (part.shape[0] / seen.shape[0]) + y0
    return boxes


def _reading_order(boxes: np.ndarray) -> np.ndarray:
    """Indices of the boxes line by line, top to bottom, each line left to right: a box is on a
    line when its centre lies within half a line's height of the line followed along the slope of
    its first box (a slanted receipt's price stays beside its item)."""
    centre = boxes.mean(axis=1)
    heights = np.linalg.norm(boxes[:, 3] - boxes[:, 0], axis=1)
    run = boxes[:, 1, 0] - boxes[:, 0, 0]
    slopes = np.where(np.abs(run) > 1e-3, (boxes[:, 1, 1] - boxes[:, 0, 1]) / np.where(run == 0, 1, run), 0.0)
    lines: list[list[int]] = []
    for i in np.argsort(centre[:, 1], kind="stable"):
        for line in lines[-3:]:
            first = line[0]
            expected = centre[first, 1] + slopes[first] * (centre[i, 0] - centre[first, 0])
            if abs(centre[i, 1] - expected) < 0.5 * min(heights[first], heights[i]):
                line.append(int(i))
                break
        else:
            lines.append([int(i)])
    return np.array([i for line in lines for i in sorted(line, key=lambda j: centre[j, 0])], dtype=np.int64)


def _box_areas(boxes: np.ndarray) -> np.ndarray:
    a = np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1)
    b = np.linalg.norm(boxes[:, 3] - boxes[:, 0], axis=1)
    return a * b


def _crop(bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The region of a four-corner box, straightened (a perspective warp); a tall region (vertical
    text, or a line in a photo turned by 90°) is turned to lie flat."""
    import cv2

    pts = box.astype(np.float32)
    width = int(max(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[3])))
    height = int(max(np.linalg.norm(pts[0] - pts[3]), np.linalg.norm(pts[1] - pts[2])))
    width, height = max(width, 2), max(height, 2)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(pts, target)
    crop = cv2.warpPerspective(bgr, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if height / width >= 1.5:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


@functools.lru_cache(maxsize=4)
def _shared_engine(threads: int, rec_min_width: int = 48) -> tuple[tuple[Any, Any, Any], str]:
    """The PP-OCR models loaded once per process and settings (0.8 s a load; onnxruntime's
    sessions, and RapidOCR's parts around them, may be shared by threads), as (detector,
    classifier, recogniser) and the engine's name."""
    found = shipped_models()
    if isinstance(found, str):
        raise RuntimeError(found)
    models, folder = found
    from rapidocr import RapidOCR

    params: dict[str, object] = {
        "Global.log_level": "error",
        "Det.model_path": str(folder / models.det),
        "Rec.model_path": str(folder / models.rec),
        "Cls.model_path": str(folder / models.cls),
        # the detector sees the picture at the size given: never scaled up (a multiple of 32)
        "Det.limit_type": "min",
        "Det.limit_side_len": 32,
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        "Rec.rec_img_shape": [3, 48, max(8, int(rec_min_width))],
        # two lines a call: larger batches cost more per line here (one thread per reading; 6, the
        # default, was 12-15% slower on separately rendered screenshots and receipts)
        "Rec.rec_batch_num": 2,
    }
    if models.keys:
        params["Rec.rec_keys_path"] = str(folder / models.keys)
    # rapidocr 3.4 to 3.9 look up a font for drawing results (never done here) on every
    # recognition and download one unless given a path: a path stops that.
    params["Global.font_path"] = str(folder)
    engine = RapidOCR(params=params)
    parts = (_part(engine, "det"), _part(engine, "cls"), _part(engine, "rec"))
    return parts, _models_digest(models, folder)
