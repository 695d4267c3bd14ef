"""Reading the text in photos (issue 26): speed of the OCR stage and the share of words recovered.

    python benchmarks/bench_ocr.py [--photos 1000] [--rendered 60] [--heavy 12] [--workers 0] [--index-runs] [--json]

Rates are given by the wall clock, photos read --workers at once as the run's second stage reads
them (0: its default, one per CPU up to 4), and per CPU-second (each reading runs one onnxruntime
thread), since on a shared machine the wall clock measures the other jobs as much as this one.

1. the OCR stage alone (indexer.photo_text.TextReader, as the run's second stage calls it) on the
   first --photos flickr8k-1k photos (../shared; mostly without text): photos/s, and how many it
   found text in;
2. on --heavy text-heavy pictures (screenshot-like and receipt-like, tests/rendered_text.py):
   photos/s, and the share of their words found in the text read;
3. on --rendered flickr photos with two words rendered on each (several fonts, sizes, colours and
   angles; English on half, Chinese in Noto CJK on the other half): the share of rendered words
   found exactly in the text read (case and width folded), English and Chinese separately;
4. with --index-runs: `xmodal index` of the --photos photos into a fresh index, with and without
   `--no-ocr` (the offline default model, one run each, in a subprocess): wall time and the
   summary's stage times.

The rendered words are made here at run time; the photos are never modified. The models are loaded
before timing (the run loads them once too: its "text" time includes that load).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.rendered_text import (  # noqa: E402 - the repository's root first
    CHINESE,
    ENGLISH,
    flickr_photos,
    receipt,
    render_photo,
    screenshot,
)
from xmodal.indexer.photo_text import OcrConfig, TextReader  # noqa: E402
from xmodal.indexer.photo_text_stage import read_all  # noqa: E402
from xmodal.indexer.store.photo_texts import Unread  # noqa: E402
from xmodal.search.photo_text import normalise  # noqa: E402


def _rate(reader: TextReader, paths: list[Path], words: list[list[str]] | None = None) -> dict[str, float]:
    """photos/s by the wall clock (photos read `reader.config.parallel` at once, as the run's
    second stage reads them), and per CPU-second of this process (one onnxruntime thread per
    reading: on a machine shared with other jobs, what one free core would do). With `words`:
    the share of each picture's words found in its text."""
    clock, cpu = time.perf_counter(), time.process_time()
    results = [r for _, r in read_all(reader, [Unread(n, str(p)) for n, p in enumerate(paths)])]
    seconds, cpu_seconds = time.perf_counter() - clock, time.process_time() - cpu
    out: dict[str, float] = {
        "photos": len(paths),
        "workers": reader.config.parallel,
        "photos_per_second": round(len(paths) / seconds, 2),
        "photos_per_cpu_second": round(len(paths) / cpu_seconds, 2),
        "wall_seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "with_text": sum(r.status == "text" for r in results),
    }
    if words is not None:
        found = total = 0
        for result, expected in zip(results, words):
            text = normalise(result.text.replace("\n", " "))
            found += sum(normalise(w) in text for w in expected)
            total += len(expected)
        out["words_found"] = round(found / max(1, total), 4)
    return out


def _heavy(folder: Path, count: int) -> tuple[list[Path], list[list[str]]]:
    rng = random.Random(7)
    out, words_of = [], []
    words = ENGLISH + ["invoice", "meeting", "delivery", "ticket", "platform", "refund", "weekend"]
    for n in range(count):
        if n % 2:
            items = [(rng.choice(words).upper(), f"{rng.randint(1, 40)}.{rng.randint(0, 99):02d}") for _ in range(14)]
            made = receipt(folder / f"receipt_{n}.jpg", items=items)
        else:
            lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 8))) for _ in range(9)]
            lines[3] = "".join(rng.choice(CHINESE) for _ in range(2))
            made = screenshot(folder / f"screen_{n}.png", lines=lines, size=(1280, 800))
        out.append(made.path)
        words_of.append([w for line in made.words for w in line.split()])
    return out, words_of


def _recovery(reader: TextReader, folder: Path, photos: list[Path]) -> dict[str, dict[str, float]]:
    rng = random.Random(11)
    found = {"english": [0, 0], "chinese": [0, 0]}
    for n, photo in enumerate(photos):
        chinese = n % 2 == 1
        pool = CHINESE if chinese else ENGLISH
        words = rng.sample(pool, 2)
        made = render_photo(photo, words, folder / f"rendered_{n:03d}.jpg", rng, cjk=chinese)
        text = normalise(reader.read(made.path).text.replace("\n", " "))
        compact = text.replace(" ", "")
        key = "chinese" if chinese else "english"
        for word in made.words:
            found[key][1] += 1
            found[key][0] += normalise(word) in (compact if chinese else text)
    return {k: {"found": v[0], "words": v[1], "share": round(v[0] / max(1, v[1]), 4)} for k, v in found.items()}


def _index_run(photos: list[Path], no_ocr: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench_ocr_") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for p in photos:
            os.symlink(p, folder / p.name)
        args = [
            sys.executable,
            "-m",
            "xmodal.cli.app",
            "index",
            str(folder),
            "--index",
            str(Path(tmp) / "idx"),
            "--json",
        ]
        clock = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            args + (["--no-ocr"] if no_ocr else []),
            capture_output=True,
            text=True,
            env={**os.environ, "XMODAL_CACHE": str(Path(tmp) / "cache")},
        )
        wall = time.perf_counter() - clock
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        summary = json.loads(done.stdout)
    return {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "timings": summary["timings"],
        "photo_text": summary.get("photo_text"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--rendered", type=int, default=60)
    parser.add_argument("--heavy", type=int, default=12)
    parser.add_argument("--index-runs", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--workers", type=int, default=0, help="photos read at once (0: as the run does)")
    args = parser.parse_args()
    photos = flickr_photos()[: args.photos]
    reader = TextReader(OcrConfig(workers=args.workers))
    reader.read(photos[0])  # load the models outside the timings
    out: dict[str, object] = {"engine": reader.engine_name, "cpus": os.cpu_count()}
    out["flickr"] = flickr = _rate(reader, photos)
    if not args.json:
        print(f"flickr8k-1k: {json.dumps(flickr)}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="bench_ocr_media_"))
    try:
        heavy, heavy_words = _heavy(folder, args.heavy)
        out["text_heavy"] = heavy_rate = _rate(reader, heavy, heavy_words)
        if not args.json:
            print(f"text-heavy: {json.dumps(heavy_rate)}", flush=True)
        recovered = _recovery(reader, folder, flickr_photos()[-args.rendered :] if args.rendered > 0 else [])
        out["words_recovered"] = recovered
        if not args.json:
            for key, value in recovered.items():
                print(
                    f"words recovered exactly, {key}: {value['found']}/{value['words']} = {value['share']:.1%}",
                    flush=True,
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.index_runs:
        out["index_without_ocr"] = _index_run(photos, no_ocr=True)
        out["index_with_ocr"] = _index_run(photos, no_ocr=False)
        if not args.json:
            for key in ("index_without_ocr", "index_with_ocr"):
                print(f"{key}: {json.dumps(out[key])}", flush=True)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
