"""`xmodal eval` (search.evaluation) with the fake encoder: undecodable photos, QB-Norm's bank policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.indexer.pairs import read_pairs
from xmodal.search.evaluation import BANK_POLICY, evaluate_pairs
from xmodal.search.rerank.pipeline import SecondStage


def _pairs_with_a_broken_photo(root: Path) -> Path:
    lines = []
    for name, rgb in COLOURS.items():
        make_image(root / f"{name}.png", rgb)
        lines.append({"image": f"{name}.png", "captions": [f"a {name} picture", f"something {name}"]})
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    lines.append({"image": "broken.jpg", "captions": ["a photo nobody can see"]})
    pairs = root / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(line) for line in lines))
    return pairs


def test_an_undecodable_photo_is_skipped_and_the_rest_evaluated(tmp_path: Path) -> None:
    """Bug 2: a KeyError traceback for the captions of a photo that failed to decode."""
    pairs = read_pairs(_pairs_with_a_broken_photo(tmp_path))
    result = evaluate_pairs(pairs, fake_model(), rerank=False)
    assert (result.images, result.captions) == (4, 8)  # the broken photo and its caption left out
    assert [Path(p).name for p, _ in result.skipped] == ["broken.jpg"] and result.skipped[0][1]
    assert result.text_to_image["recall@1"] == 100.0 and result.image_to_text["recall@1"] == 100.0
    assert result.as_dict()["skipped"][0]["path"].endswith("broken.jpg")


def test_cli_eval_warns_in_one_line_naming_the_photo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import xmodal.indexer.models.embedding as embedding

    monkeypatch.setattr(embedding, "load_model", lambda spec=None, device="auto": fake_model())
    from xmodal.cli.app import app

    pairs = _pairs_with_a_broken_photo(tmp_path)
    result = CliRunner().invoke(app, ["eval", str(pairs), "--json"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("xmodal: warning:")]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0]
    assert "Traceback" not in result.output
    assert json.loads(result.stdout)["images"] == 4


def test_the_held_out_image_to_text_bank_never_holds_the_queries_it_normalises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug 8: image→text QB-Norm used the evaluated photos themselves as its bank (transductive)."""
    photos = []
    rng = np.random.default_rng(0)
    for i in range(12):
        name = f"p{i:02d}.png"
        make_image(tmp_path / name, tuple(int(c) for c in rng.integers(0, 255, 3)))
        photos.append({"image": name, "captions": [f"photo number {i}", f"picture {i}"]})
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in photos))
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real_run = SecondStage.run

    def spying_run(self, candidates, target, options, query_kind, bank=None, *more):  # noqa: ANN001, ANN002, ANN202
        if target == "text" and bank is not None:
            seen.append((candidates.queries, bank))
        return real_run(self, candidates, target, options, query_kind, bank, *more)

    monkeypatch.setattr(SecondStage, "run", spying_run)
    result = evaluate_pairs(read_pairs(tmp_path / "pairs.jsonl"), fake_model())
    assert result.image_to_text_held_out is not None and set(result.image_to_text_held_out) == {
        "recall@1",
        "recall@5",
        "recall@10",
    }
    assert sum(len(q) for q, _ in seen) == 12  # every photo query went through a held-out bank once
    for queries, bank in seen:
        assert len(bank) > 0
        assert ((queries @ bank.T) < 0.9999).all()  # no query is in its own bank
    facts = result.as_dict()
    assert facts["qbnorm_bank"] == BANK_POLICY and "image_to_text_held_out" in facts
    assert (
        "image_to_text_held_out"
        not in evaluate_pairs(read_pairs(tmp_path / "pairs.jsonl"), fake_model(), rerank=False).as_dict()
    )
