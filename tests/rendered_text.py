"""Photos with words written on them, made at run time: real flickr photos (../shared) with words
rendered by Pillow in Debian's fonts (fonts-dejavu-core, fonts-noto-cjk; .ci/system-packages), in
several sizes, colours and angles; and a screenshot-like and a receipt-like picture.

Shared by tests/test_photo_text.py and benchmarks/bench_ocr.py. Nothing here is copied into the repo.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "FLICKR",
    "FONTS",
    "CJK_FONTS",
    "ENGLISH",
    "CHINESE",
    "Rendered",
    "fonts_missing",
    "flickr_photos",
    "render_photo",
    "rendered_photos",
    "screenshot",
    "receipt",
]

FLICKR = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "flickr8k-1k" / "images"
_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
_NOTO = Path("/usr/share/fonts/opentype/noto")
FONTS = [_DEJAVU / n for n in ("DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans.ttf")]
CJK_FONTS = [_NOTO / "NotoSansCJK-Regular.ttc", _NOTO / "NotoSerifCJK-Regular.ttc", _NOTO / "NotoSansCJK-Bold.ttc"]
# Words no flickr photo holds by chance.
ENGLISH = [
    "ZEPHYR",
    "QUOKKA",
    "MARMALADE",
    "Lavender",
    "BISCUIT",
    "Octavia",
    "PELICAN",
    "Juniper",
    "TANGERINE",
    "Walrus",
    "GLACIER",
    "Saffron",
]
CHINESE = ["北京大学", "欢迎光临", "咖啡馆", "火车站", "图书馆", "停车场", "春天来了", "新年快乐"]
# (fill, outline): light on dark outline, dark on light outline, and colours.
_COLOURS = [
    ((255, 255, 255), (0, 0, 0)),
    ((20, 20, 20), (255, 255, 255)),
    ((255, 220, 0), (40, 40, 40)),
    ((230, 40, 40), (255, 255, 255)),
]


def fonts_missing() -> list[str]:
    return [str(f) for f in [*FONTS, *CJK_FONTS] if not f.is_file()]


def flickr_photos() -> list[Path]:
    return sorted(FLICKR.glob("*.jpg"))


@dataclass(frozen=True)
class Rendered:
    path: Path
    words: tuple[str, ...]


def _canvas(photo: Path, long_side: int) -> Image.Image:
    im = Image.open(photo).convert("RGB")
    scale = long_side / max(im.size)
    return im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)


def _stamp(im: Image.Image, text: str, font: ImageFont.FreeTypeFont, colour: tuple, angle: float, at: tuple) -> None:
    """Draw `text` turned by `angle` degrees, its box's top left corner at `at`."""
    fill, outline = colour
    left, top, right, bottom = font.getbbox(text, stroke_width=2)
    layer = Image.new("RGBA", (right - left + 16, bottom - top + 16), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((8 - left, 8 - top), text, font=font, fill=fill, stroke_width=2, stroke_fill=outline)
    if angle:
        layer = layer.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    im.paste(layer, at, layer)


def render_photo(
    photo: Path, words: list[str], out: Path, rng: random.Random, long_side: int = 1024, cjk: bool = False
) -> Rendered:
    """The photo at `long_side`, with each word written once, one above the other."""
    im = _canvas(photo, long_side)
    y = 20
    band = (im.height - 40) // max(1, len(words))
    for word in words:
        font_path = rng.choice(CJK_FONTS if cjk else FONTS)
        size = rng.choice([30, 38, 48, 60])
        font = ImageFont.truetype(str(font_path), size)
        angle = rng.choice([0, 0, 6, -8, 12])
        width = font.getbbox(word)[2] + 40
        x = rng.randint(10, max(10, im.width - width - 30))
        _stamp(im, word, font, rng.choice(_COLOURS), angle, (x, y))
        y += band
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out, quality=92)
    return Rendered(out, tuple(words))


def rendered_photos(out: Path, photos: list[Path], seed: int = 0, per_photo: int = 2) -> list[Rendered]:
    """One rendered photo per given photo: English words on the first half, Chinese on the rest."""
    rng = random.Random(seed)
    made = []
    for n, photo in enumerate(photos):
        cjk = n >= len(photos) // 2
        pool = CHINESE if cjk else ENGLISH
        words = [pool[(n * per_photo + i) % len(pool)] for i in range(per_photo)]
        made.append(render_photo(photo, words, out / f"rendered_{n:03d}.jpg", rng, cjk=cjk))
    return made


def screenshot(out: Path, lines: list[str] | None = None, size: tuple[int, int] = (1280, 800)) -> Rendered:
    """A chat-like screen: a title bar and message bubbles with small text (16-18 px)."""
    lines = lines or [
        "Alice: are we still meeting at the harbour cafe?",
        "Bob: yes, table for four at seven thirty",
        "Alice: bring the tickets for the ferry",
        "Bob: booking reference KX7Q2 confirmed",
        "Alice: 明天见",
    ]
    im = Image.new("RGB", size, (236, 239, 244))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, size[0], 56), fill=(40, 60, 110))
    d.text((24, 16), "Messages", font=ImageFont.truetype(str(FONTS[0]), 22), fill=(255, 255, 255))
    y = 90
    for n, line in enumerate(lines):
        font = ImageFont.truetype(str(CJK_FONTS[0] if any(ord(c) > 0x2E80 for c in line) else FONTS[3]), 18)
        width = font.getbbox(line)[2]
        x = 40 if n % 2 == 0 else size[0] - width - 80
        d.rounded_rectangle(
            (x - 14, y - 10, x + width + 14, y + 34), 12, fill=(255, 255, 255) if n % 2 == 0 else (200, 225, 255)
        )
        d.text((x, y), line, font=font, fill=(30, 30, 30))
        y += 70
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out)
    return Rendered(out, tuple(lines))


def receipt(out: Path, items: list[tuple[str, str]] | None = None, total: str = "42.50") -> Rendered:
    """A till receipt photographed on a table: a narrow paper with a monospaced list and a total."""
    items = items or [
        ("BREAD", "3.20"),
        ("COFFEE BEANS", "12.90"),
        ("OLIVE OIL", "9.40"),
        ("APPLES", "4.60"),
        ("CHEESE", "12.40"),
    ]
    paper = Image.new("RGB", (520, 220 + 46 * len(items)), (250, 248, 240))
    d = ImageDraw.Draw(paper)
    mono = ImageFont.truetype(str(FONTS[2]), 26)
    d.text((150, 30), "CORNER PHARMACY", font=mono, fill=(20, 20, 20))
    y = 100
    for name, price in items:
        d.text((30, y), name, font=mono, fill=(30, 30, 30))
        d.text((400, y), price, font=mono, fill=(30, 30, 30))
        y += 46
    d.text((30, y + 20), "TOTAL", font=mono, fill=(0, 0, 0))
    d.text((400, y + 20), total, font=mono, fill=(0, 0, 0))
    table = Image.new("RGB", (900, paper.height + 160), (120, 90, 60))
    table.paste(paper.rotate(3, expand=True, fillcolor=(120, 90, 60)), (180, 60))
    out.parent.mkdir(parents=True, exist_ok=True)
    table.save(out, quality=90)
    return Rendered(out, ("CORNER PHARMACY", *[w for pair in items for w in pair], "TOTAL", total))
