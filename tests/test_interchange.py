"""Embeddings in and out in clip-retrieval's layout: a round trip gives the same search results, and
folders with wrong vectors are refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from tests.fakes import FAKE_DIM, fake_model  # noqa: E402
from xmodal.indexer import Indexer, TextIndexer  # noqa: E402
from xmodal.indexer.errors import InvalidInputError, ModelMismatchError  # noqa: E402
from xmodal.indexer.interchange import export_embeddings, import_embeddings  # noqa: E402
from xmodal.indexer.store.index_store import IndexStore  # noqa: E402
from xmodal.indexer.store.schema import ImageRow, TextRow  # noqa: E402
from xmodal.search import SearchEngine  # noqa: E402

SPEC = "fake-colour:test"
QUERIES = ["red", "green", "blue", "yellow", "red blue"]


def _results(index_dir: Path) -> dict[str, list[tuple[str, float]]]:
    engine = SearchEngine.open(index_dir, model=fake_model())
    try:
        images = {q: [(h.path, round(h.score, 5)) for h in engine.search_text(q, k=10, rerank=False)] for q in QUERIES}
        texts = {
            q: [(h.path, round(h.score, 5)) for h in engine.search_text(q, k=10, target="text", rerank=False)]
            for q in QUERIES
        }
    finally:
        engine.close()
    return {"images": images, "texts": texts}  # type: ignore[dict-item]


def _rows(index_dir: Path) -> dict[str, tuple]:
    store = IndexStore.open(index_dir)
    try:
        with store.metadata.session() as s:
            return {
                r.path: (r.vector, r.size, r.mtime_ns, r.width, r.height, r.content_hash) for r in s.query(ImageRow)
            }
    finally:
        store.close()


@pytest.fixture
def indexed(tmp_path: Path, photo_dir: Path) -> Path:
    index_dir = tmp_path / "idx"
    Indexer(index_dir, model=fake_model()).add_paths([photo_dir])
    captions = tmp_path / "captions.txt"
    captions.write_text("a red car\na green field\nthe blue sea\n")
    TextIndexer(index_dir, model=fake_model()).add_files([captions])
    return index_dir


def test_round_trip_gives_the_same_rows_and_results(tmp_path: Path, indexed: Path) -> None:
    out = tmp_path / "export"
    summary = export_embeddings(out, indexed)
    assert (summary.images, summary.texts) == (4, 3)
    assert np.load(out / "img_emb" / "img_emb_0.npy").shape == (4, FAKE_DIM)
    assert "image_path" in pq.read_table(out / "metadata" / "metadata_0.parquet").column_names
    assert (
        pq.read_table(out / "texts" / "metadata" / "metadata_0.parquet").column("caption").to_pylist()[0] == "a red car"
    )

    fresh = tmp_path / "fresh"
    imported = import_embeddings(out, SPEC, FAKE_DIM, fresh)
    assert (imported.images, imported.texts, imported.missing_files) == (4, 3, 0)
    assert _rows(fresh) == _rows(indexed)
    assert _results(fresh) == _results(indexed)
    # the imported rows are the index's own: a run over the folder finds nothing to embed
    again = Indexer(fresh, model=fake_model()).add_paths([Path(p).parent for p in _rows(fresh)][:1])
    assert again.embedded == 0
    # importing twice replaces, never duplicates
    import_embeddings(out, SPEC, FAKE_DIM, fresh)
    store = IndexStore.open(fresh)
    try:
        assert (store.metadata.count(ImageRow), store.metadata.count(TextRow)) == (4, 3)
    finally:
        store.close()


def test_float16_clip_retrieval_folder_imports(tmp_path: Path, photo_dir: Path) -> None:
    """A folder as clip-retrieval writes it: float16 vectors, image_path only, relative paths."""
    paths = sorted(p for p in photo_dir.rglob("*") if p.is_file())
    vectors = fake_model().embed_images([__import__("PIL.Image").Image.open(p) for p in paths])
    folder = tmp_path / "cr"
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    np.save(folder / "img_emb" / "img_emb_0.npy", vectors.astype(np.float16))
    pq.write_table(
        pa.table({"image_path": [str(p.relative_to(photo_dir)) for p in paths]}),
        folder / "metadata" / "metadata_0.parquet",
    )
    summary = import_embeddings(folder, SPEC, FAKE_DIM, tmp_path / "idx", image_root=photo_dir)
    assert (summary.images, summary.missing_files) == (len(paths), 0)
    engine = SearchEngine.open(tmp_path / "idx", model=fake_model())
    try:
        assert Path(engine.search_text("red", k=1, rerank=False)[0].path).name == "red.jpg"
    finally:
        engine.close()


def _folder(tmp_path: Path, vectors: np.ndarray, rows: int, column: str = "image_path") -> Path:
    folder = tmp_path / "bad"
    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(exist_ok=True)
    np.save(folder / "img_emb" / "img_emb_0.npy", vectors)
    pq.write_table(pa.table({column: [f"/x/{i}.jpg" for i in range(rows)]}), folder / "metadata" / "metadata_0.parquet")
    return folder


def _unit(n: int, dim: int) -> np.ndarray:
    v = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("vectors", "rows", "column", "message"),
    [
        (_unit(3, FAKE_DIM + 1), 3, "image_path", "33-d vectors but the model makes 32-d"),
        (_unit(3, FAKE_DIM) * 2, 3, "image_path", "not L2-normalised"),
        (_unit(3, FAKE_DIM), 4, "image_path", "has 3 vectors but its metadata has 4 rows"),
        (_unit(3, FAKE_DIM), 3, "url", "no 'image_path' column"),
        (np.full((3, FAKE_DIM), np.nan, np.float32), 3, "image_path", "NaN"),
    ],
)
def test_bad_folders_are_refused_before_writing(
    tmp_path: Path, vectors: np.ndarray, rows: int, column: str, message: str
) -> None:
    folder = _folder(tmp_path, vectors, rows, column)
    with pytest.raises(InvalidInputError, match=message):
        import_embeddings(folder, SPEC, FAKE_DIM, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()  # refused before the index was even created


def test_another_models_vectors_are_refused(tmp_path: Path, indexed: Path) -> None:
    folder = _folder(tmp_path, _unit(2, FAKE_DIM), 2)
    with pytest.raises(ModelMismatchError):
        import_embeddings(folder, "ViT-B-32:openai", FAKE_DIM, indexed)


def test_cli_export_and_its_errors(tmp_path: Path, indexed: Path) -> None:
    from typer.testing import CliRunner

    from xmodal.cli.app import app

    runner = CliRunner()
    result = runner.invoke(
        app, ["export", "--format", "clip-retrieval", str(tmp_path / "out"), "--index", str(indexed)]
    )
    assert result.exit_code == 0, result.output
    assert "exported 4 image and 3 text vectors" in result.output
    result = runner.invoke(app, ["export", "--format", "hdf5", str(tmp_path / "out2"), "--index", str(indexed)])
    assert result.exit_code == 2 and "unknown --format 'hdf5'" in result.output
    result = runner.invoke(
        app, ["import", str(tmp_path / "nowhere"), "--model", "xmodal-lite", "--index", str(tmp_path / "i2")]
    )
    assert result.exit_code == 2


def _facts(index_dir: Path) -> dict[str, tuple]:
    from xmodal.indexer.store.schema import FactsRow

    store = IndexStore.open(index_dir)
    try:
        with store.metadata.session() as s:
            paths = dict(s.execute(select(ImageRow.id, ImageRow.path)).all())
            return {
                paths[r.image_id]: (
                    r.taken_at,
                    r.taken_offset,
                    r.taken_source,
                    r.city,
                    r.country,
                    r.camera_model,
                    r.words,
                )
                for r in s.scalars(select(FactsRow))
            }
    finally:
        store.close()


def test_facts_travel_with_an_export_to_a_machine_without_the_photos(tmp_path: Path) -> None:
    """Dates, places and cameras come along: an import where the photos are not finds them by place."""
    import shutil

    from tests.facts_photos import CITIES, Shot, exif_photo

    root = tmp_path / "photos"
    exif_photo(
        root / "Lisbon 2025" / "beach.jpg",
        Shot("2025:06:14 18:30:05", "+01:00", CITIES["Lisbon"][0], "Canon", "Canon EOS 5D"),
    )
    exif_photo(root / "Japan" / "night.jpg", Shot("2019:11:03 22:15:00", "+09:00", CITIES["Tokyo"][0]), source=1)
    exif_photo(root / "misc" / "plain.jpg", Shot(), source=2)
    Indexer(tmp_path / "idx", model=fake_model()).add_paths([root])
    want = _facts(tmp_path / "idx")
    assert len(want) == 3 and want[str(root / "Lisbon 2025" / "beach.jpg")][3:5] == ("Lisbon", "Portugal")

    export_embeddings(tmp_path / "export", tmp_path / "idx")
    columns = pq.read_table(tmp_path / "export" / "metadata" / "metadata_0.parquet").column_names
    assert {"facts_taken_at", "facts_city", "facts_camera_model", "facts_words"} <= set(columns)
    shutil.rmtree(root)  # the importing machine does not have the photos
    assert import_embeddings(tmp_path / "export", SPEC, FAKE_DIM, tmp_path / "fresh").images == 3
    assert _facts(tmp_path / "fresh") == want
    with SearchEngine.open(tmp_path / "fresh", model=fake_model()) as engine:
        hits = engine.search("a photo", k=10, rerank=False, place="Japan")
        assert [Path(h.path).name for h in hits] == ["night.jpg"]


def test_a_clip_retrieval_folder_without_facts_imports_without_them(tmp_path: Path, indexed: Path) -> None:
    """Folders of other tools have no facts columns: the rows come in, their facts come from the files later."""
    out = tmp_path / "export"
    export_embeddings(out, indexed)
    meta = pq.read_table(out / "metadata" / "metadata_0.parquet")
    pq.write_table(
        meta.select([c for c in meta.column_names if not c.startswith("facts_")]),
        out / "metadata" / "metadata_0.parquet",
    )
    import_embeddings(out, SPEC, FAKE_DIM, tmp_path / "fresh")
    assert _facts(tmp_path / "fresh") == {}
    Indexer(tmp_path / "fresh", model=fake_model()).add_paths([Path(p).parent for p in _rows(indexed)])
    assert set(_facts(tmp_path / "fresh")) == set(_rows(indexed))
