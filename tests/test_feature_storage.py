"""Lean storage (issue 12): tower features as block-quantised int8, migration 0004 re-encoding older
indexes (and back), and `xmodal info` saying what each stored part costs per photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from tests.legacy_schema import make_legacy_index
from xmodal.indexer import Indexer
from xmodal.indexer.store.feature_codec import MAGIC, decode_features, encode_features, encoded_size
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.migrations import HEAD, alembic_config


def _tower_like(rows: int, seed: int = 0) -> np.ndarray:
    """Like the offline towers' features: 1280 non-negative pooled values, then a unit 384-d vector."""
    rng = np.random.default_rng(seed)
    pooled = np.abs(rng.normal(0.3, 0.6, size=(rows, 1280))) * (rng.random((rows, 1280)) < 0.7)
    prior = rng.normal(size=(rows, 384))
    prior /= np.linalg.norm(prior, axis=1, keepdims=True)
    return np.concatenate([pooled, prior], axis=1).astype(np.float32)


def test_codec_round_trips_within_half_a_step_per_block() -> None:
    x = _tower_like(3)
    for row in x:
        blob = encode_features(row)
        assert blob[:4] == MAGIC and len(blob) == encoded_size(len(row)) == 8 + 52 * 34 < row.size * 2
        back = decode_features(blob)
        step = np.repeat(np.abs(row.reshape(-1, 32)).max(1) / 127, 32)
        assert back.dtype == np.float32 and back.shape == row.shape
        assert np.all(np.abs(back - row) <= 0.5 * step * 1.01 + 1e-3 * step)
    # the small ConSE values keep their own scale: relative error stays small there too
    prior, back = x[0, 1280:], decode_features(encode_features(x[0]))[1280:]
    assert np.linalg.norm(back - prior) / np.linalg.norm(prior) < 0.01


@pytest.mark.parametrize("n", [1, 31, 33, 100])
def test_codec_pads_odd_lengths_and_keeps_zero_blocks(n: int) -> None:
    row = np.zeros(n, np.float32)
    row[0] = 2.5
    back = decode_features(encode_features(row))
    assert back.shape == (n,) and back[0] == pytest.approx(2.5, rel=1e-3) and not back[1:].any()


def test_float16_blobs_of_older_indexes_still_decode() -> None:
    row = _tower_like(1)[0]
    old = np.asarray(row, "<f2").tobytes()
    assert np.allclose(decode_features(old), row, atol=2e-3)


def _legacy_with_features(tmp_path: Path) -> tuple[Path, str, dict[int, np.ndarray]]:
    model = fake_model()
    vectors = {}
    for name, colour in COLOURS.items():
        path = make_image(tmp_path / "photos" / f"{name}.png", colour)
        vectors[str(path)] = model.embed_images([Image.open(path)])[0]
    index_dir = tmp_path / "idx"
    url = make_legacy_index(index_dir, None, vectors, str(model.spec), model.dim)
    features = dict(enumerate(_tower_like(len(vectors), seed=5), start=1))
    engine = create_engine(url)
    with engine.begin() as connection:  # as the previous release stored them: float16
        for row_id, row in features.items():
            connection.execute(
                text("UPDATE images SET features = :f WHERE id = :i"),
                {"f": np.asarray(row, "<f2").tobytes(), "i": row_id},
            )
    engine.dispose()
    return index_dir, url, features


def _blobs(url: str) -> dict[int, bytes]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                int(i): bytes(b)
                for i, b in connection.execute(text("SELECT id, features FROM images WHERE features IS NOT NULL"))
            }
    finally:
        engine.dispose()


def test_migration_0004_quantises_stored_features_and_reverses(tmp_path: Path) -> None:
    from alembic import command

    index_dir, url, features = _legacy_with_features(tmp_path)
    store = IndexStore.open(index_dir)  # upgrades to HEAD
    try:
        assert store.metadata.schema_change.after == HEAD
        read = store.metadata.tower_features(list(features))
        assert set(read) == set(features)
        for row_id, row in features.items():
            assert np.allclose(read[row_id], row, atol=0.02)
        blobs = _blobs(url)
        assert all(b[:4] == MAGIC and len(b) == encoded_size(1664) for b in blobs.values())
        with store.metadata.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0003")
        blobs = _blobs(url)
        assert all(len(b) == 1664 * 2 and b[:4] != MAGIC for b in blobs.values())
        for row_id, row in features.items():
            assert np.allclose(np.frombuffer(blobs[row_id], "<f2"), row, atol=0.03)
    finally:
        store.close()


def test_info_says_what_each_part_costs_per_photo(tmp_path: Path, photo_dir: Path) -> None:
    from xmodal.cli.app import app
    from xmodal.search.stats import index_info

    index_dir = tmp_path / "idx"
    Indexer(index_dir, model=fake_model()).add_paths([photo_dir])
    facts = index_info(index_dir)
    parts = facts["bytes_per_photo"]
    assert isinstance(parts, dict) and facts["images"] == 4
    assert parts["vector"] == fake_model().dim * 4 and parts["tower_features"] == 0  # the fake model keeps none
    assert parts["total"] == round(facts["size_bytes"] / 4)
    assert parts["faiss_cache"] + parts["vector"] + parts["other"] == pytest.approx(parts["total"], abs=2)
    out = CliRunner().invoke(app, ["info", "--index", str(index_dir)])
    assert out.exit_code == 0 and "bytes_per_photo: vector 128, tower features 0" in out.output
    as_json = json.loads(CliRunner().invoke(app, ["info", "--index", str(index_dir), "--json"]).output)
    assert as_json["bytes_per_photo"] == parts
