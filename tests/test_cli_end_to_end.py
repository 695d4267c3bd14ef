"""The CLI end to end, in real subprocesses with the offline default model."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow

FLICKR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "flickr8k-1k"


def xmodal(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "xmodal.cli.app", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    photos = root / "photos"
    (photos / "trip").mkdir(parents=True)
    for i, colour in enumerate([(220, 30, 30), (30, 160, 40), (30, 40, 220)]):
        im = Image.new("RGB", (200, 150), (250, 250, 245))
        ImageDraw.Draw(im).ellipse((50, 25, 150, 125), fill=colour)
        im.save(photos / ("trip" if i else ".") / f"drawing{i}.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[36867] = "2020:01:02 03:04:05"
    Image.new("RGB", (90, 60), (120, 120, 120)).save(photos / "rotated.jpg", exif=exif.tobytes())
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    index = root / "index"
    result = xmodal("index", str(photos), "--index", str(index), "--json")
    summary = json.loads(result.stdout)
    assert (summary["new"], summary["failed"]) == (4, 1)
    return photos, index


def test_search_json_and_table(indexed: tuple[Path, Path]) -> None:
    photos, index = indexed
    hits = json.loads(xmodal("search", "a red circle", "--index", str(index), "--json", "-n", "3").stdout)
    assert len(hits) == 3 and {"path", "score", "kind", "id"} <= set(hits[0])
    assert all(h["kind"] == "image" and Path(h["path"]).exists() for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    table = xmodal("search", "a red circle", "--index", str(index), "-n", "2").stdout
    assert table.count(str(photos)) == 2


def test_search_by_image_finds_itself_first(indexed: tuple[Path, Path]) -> None:
    photos, index = indexed
    query = photos / "trip" / "drawing2.png"
    hits = json.loads(xmodal("search", "--image", str(query), "--index", str(index), "--json").stdout)
    assert hits[0]["path"] == str(query) and hits[0]["score"] > 0.99


def test_info_and_errors(indexed: tuple[Path, Path]) -> None:
    _, index = indexed
    facts = json.loads(xmodal("info", "--index", str(index), "--json").stdout)
    assert facts["images"] == 4 and facts["texts"] == 0 and facts["errors"] == 1
    assert facts["model"] == "xmodal-lite" and facts["dim"] > 0 and facts["size_bytes"] > 0
    errors = json.loads(xmodal("info", "--errors", "--json", "--index", str(index)).stdout)
    assert [Path(e["path"]).name for e in errors] == ["broken.jpg"] and errors[0]["reason"]


def test_second_run_is_incremental_and_env_var_names_the_index(indexed: tuple[Path, Path]) -> None:
    photos, index = indexed
    summary = json.loads(xmodal("index", str(photos), "--json", env={"XMODAL_INDEX": str(index)}).stdout)
    assert (summary["new"], summary["unchanged"]) == (0, 4)


def test_text_corpus_and_image_to_text(indexed: tuple[Path, Path], tmp_path: Path) -> None:
    photos, index = indexed
    corpus = tmp_path / "labels.txt"
    corpus.write_text("a red ball\na green leaf\na blue circle\n")
    xmodal("index-text", str(corpus), "--index", str(index))
    hits = json.loads(
        xmodal(
            "search", "--image", str(photos / "drawing0.png"), "--target", "text", "--index", str(index), "--json"
        ).stdout
    )
    assert len(hits) == 3 and all(h["kind"] == "text" and h["text"] for h in hits)


def test_model_mismatch_and_missing_index(indexed: tuple[Path, Path], tmp_path: Path) -> None:
    _, index = indexed
    result = xmodal("search", "x", "--index", str(index), "--model", "ViT-B-32:openai", check=False)
    assert result.returncode == 5 and result.stderr.startswith("xmodal: error:")
    result = xmodal("search", "x", "--index", str(tmp_path / "nothing"), check=False)
    assert result.returncode == 4 and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not FLICKR.is_dir(), reason="needs ../shared/datasets/flickr8k-1k")
def test_offline_default_finds_dogs(tmp_path: Path) -> None:
    """Meaningful results: on 60 real test photos, "a dog" brings photos whose captions say dog."""
    split = {r["image"]: r["split"] for r in csv.DictReader(open(FLICKR / "split.csv"))}
    captions: dict[str, list[str]] = {}
    for row in csv.DictReader(open(FLICKR / "captions.txt")):
        captions.setdefault(row["image"], []).append(row["caption"].lower())
    chosen = sorted(name for name, part in split.items() if part == "test")[:60]
    index = tmp_path / "index"
    xmodal("index", *[str(FLICKR / "images" / name) for name in chosen], "--index", str(index))
    hits = json.loads(xmodal("search", "a dog", "--index", str(index), "--json", "-n", "5").stdout)
    dogs = sum(any("dog" in c for c in captions[Path(h["path"]).name]) for h in hits)
    baseline = sum(any("dog" in c for c in captions[name]) for name in chosen) / len(chosen)
    assert dogs >= 3, (dogs, baseline)  # chance would give about 1 of 5 here
