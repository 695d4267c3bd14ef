"""Text corpora, image→text search, pairs formats and recall@K, with the fake encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.pairs import read_pairs
from xmodal.indexer.text_indexing import TextIndexer
from xmodal.search import SearchEngine
from xmodal.search.evaluation import evaluate_pairs, recall_at_k


def test_index_text_and_search_both_ways(tmp_path: Path, photo_dir: Path) -> None:
    Indexer(tmp_path / "idx", model=fake_model()).add_paths([photo_dir])
    corpus = tmp_path / "tags.txt"
    corpus.write_text("red\ngreen\n\nblue\n")
    summary = TextIndexer(tmp_path / "idx", model=fake_model()).add_files([corpus])
    assert (summary.new, summary.unchanged) == (3, 0)
    engine = SearchEngine.open(tmp_path / "idx", model=fake_model())
    hit = engine.search_image(photo_dir / "red.jpg", k=1, target="text")[0]
    assert (hit.kind, hit.text) == ("text", "red")
    assert engine.search_text("blue", k=1, target="text")[0].text == "blue"
    # re-running is incremental: one line gone, one added
    corpus.write_text("red\ngreen\nyellow\n")
    summary = TextIndexer(tmp_path / "idx", model=fake_model()).add_files([corpus])
    assert (summary.new, summary.unchanged, summary.removed) == (1, 2, 1)


def test_csv_and_jsonl_corpora(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("sku,description\n1,red shoe\n2,green hat\n")
    (tmp_path / "p.jsonl").write_text('{"t": "blue car"}\n{"t": "yellow cab"}\n')
    indexer = TextIndexer(tmp_path / "idx", model=fake_model())
    assert indexer.add_files([tmp_path / "p.csv"], column="description").new == 2
    assert indexer.add_files([tmp_path / "p.jsonl"], field="t").new == 2
    with pytest.raises(InvalidInputError, match="no column 'nope'"):
        indexer.add_files([tmp_path / "p.csv"], column="nope")


def test_recall_matches_naive_oracle() -> None:
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(50)[:10] for _ in range(40)])
    relevant = [{int(rng.integers(0, 50))} for _ in range(40)]
    got = recall_at_k(ranked, relevant, ks=(1, 5, 10))
    for k in (1, 5, 10):
        expected = 100.0 * np.mean([any(r in rel for r in row[:k]) for row, rel in zip(ranked, relevant)])
        assert got[f"recall@{k}"] == pytest.approx(expected, abs=0.01)


def _captioned_photos(root: Path) -> list[tuple[str, list[str]]]:
    out = []
    for name, rgb in COLOURS.items():
        make_image(root / f"{name}.png", rgb)
        out.append((f"{name}.png", [f"a {name} picture", f"something {name}"]))
    return out


def test_pairs_formats_agree_and_eval_is_perfect_on_separable_data(tmp_path: Path) -> None:
    photos = _captioned_photos(tmp_path)
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps({"image": n, "captions": c}) for n, c in photos))
    (tmp_path / "pairs.csv").write_text("image,caption\n" + "".join(f"{n},{c}\n" for n, cs in photos for c in cs))
    coco = {
        "images": [{"id": i, "file_name": n} for i, (n, _) in enumerate(photos)],
        "annotations": [{"image_id": i, "caption": c} for i, (_, cs) in enumerate(photos) for c in cs],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    sets = [
        read_pairs(tmp_path / "pairs.jsonl"),
        read_pairs(tmp_path / "pairs.csv", tmp_path),
        read_pairs(tmp_path / "coco.json", tmp_path),
    ]
    assert sets[0] == sets[1] == sets[2]
    result = evaluate_pairs(sets[0], fake_model(), rerank=False)
    assert (result.images, result.captions) == (4, 8)
    assert result.text_to_image["recall@1"] == 100.0 and result.image_to_text["recall@1"] == 100.0


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.jsonl", '{"image": "x.png", "captions": ["a"]}\n', "not found"),
        ("bad2.jsonl", "{not json\n", "bad2.jsonl:1: not valid JSON"),
        ("bad3.jsonl", '{"image": "red.png", "captions": []}\n', "non-empty list"),
        ("bad.csv", "image,caption\nred.png\n", "bad.csv:2: expected 'image,caption'"),
        ("bad2.csv", "foo,bar\n", "header"),
        ("bad.json", '{"images": []}', "not a COCO captions file"),
    ],
)
def test_malformed_pairs_name_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    _captioned_photos(tmp_path)
    (tmp_path / name).write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        read_pairs(tmp_path / name)


@pytest.mark.slow
def test_train_head_is_deterministic_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from xmodal.indexer.models.embedding import EmbeddingModel
    from xmodal.indexer.models.head import ProjectionHead
    from xmodal.search.training.head import ENSEMBLE_MEMBERS, train_projection_head

    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path / "cache"))
    photos = _captioned_photos(tmp_path)
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps({"image": n, "captions": c}) for n, c in photos))
    pairs = read_pairs(tmp_path / "pairs.jsonl")
    losses: list[tuple[int, float]] = []
    first = train_projection_head(
        fake_model(), pairs, tmp_path / "a.pt", epochs=3, seed=7, on_epoch=lambda e, loss: losses.append((e, loss))
    )
    second = train_projection_head(fake_model(), pairs, tmp_path / "b.pt", epochs=3, seed=7)
    # the saved head is an ensemble whose members count epochs on
    assert [e for e, _ in losses] == list(range(3 * ENSEMBLE_MEMBERS)) and all(np.isfinite([x for _, x in losses]))
    a, b = ProjectionHead.load(str(first.path)), ProjectionHead.load(str(second.path))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert list((tmp_path / "cache" / "features").glob("*.pt"))  # tower features were cached
    tuned = EmbeddingModel(fake_model().spec, fake_model().towers, a.eval())
    vectors = tuned.embed_texts(["red", "blue"])
    assert vectors.shape == (2, a.embed_dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
