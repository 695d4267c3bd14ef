"""Chinese queries in the offline model's space (issue 29): the real dictionary, segmenter and
shipped correction; the real offline model where a test embeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal.indexer.models.chinese import chinese_path, language_of, understand, understand_chinese

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flickr8k-1k"
if not DATA.is_dir():
    DATA = Path("/work/shared/datasets/flickr8k-1k")

# Test photos (never fitted on: the student and the head saw train photos only), each with a
# Chinese query of our own that describes it.
QUERIES = {
    "102351840_323e3de834.jpg": "在冰上钻洞的男人",
    "107318069_e9f2ef32de.jpg": "夜晚的热气球",
    "1094462889_f9966dafa6.jpg": "雪地里的棕色狗",
    "1087539207_9f77ab3aaf.jpg": "田野里坐在拖拉机上的孩子们",
    "111766423_4522d36e56.jpg": "在人手上吃东西的鸟",
    "124195430_d14028660f.jpg": "海滩上的两匹马",
    "1251558317_4ef844b775.jpg": "坐在警察摩托车上的女人和孩子",
    "1141718391_24164bf1b1.jpg": "走过吊桥的男人和女人",
    "1236951314_0308dc4138.jpg": "跳进游泳池的男孩",
    "116409198_0fe0c94f3b.jpg": "雪地里帐篷旁边的男人",
}


@pytest.fixture(scope="module")
def model():
    from xmodal.indexer import load_model

    return load_model()


@pytest.fixture(scope="module")
def test_photos() -> list[Path]:
    import csv

    if not DATA.is_dir():
        pytest.skip("flickr8k-1k is not in ../shared")
    with open(DATA / "split.csv", encoding="utf-8") as f:
        names = sorted(r["image"] for r in csv.DictReader(f) if r["split"] == "test")[:40]
    assert set(QUERIES) <= set(names)
    return [DATA / "images" / n for n in names]


def test_the_script_decides_the_language() -> None:
    assert language_of("a dog at the seaside") == "english"
    assert language_of("海边的狗") == "chinese"
    assert language_of("golden retriever 在海边") == "chinese"
    assert language_of("海辺の犬") == "other"  # kana: Japanese, even with kanji
    assert language_of("바닷가의 개") == "other"
    assert language_of("собака на пляже") == "other"


def test_the_correction_applies_only_in_the_space_it_was_fitted_in() -> None:
    from xmodal.indexer.models.chinese import corrected_for

    assert corrected_for("xmodal-lite") and corrected_for("xmodal-lite-duo")  # MiniLM text space, shipped heads
    assert not corrected_for("ViT-B-32:laion2b_s34b_b79k")  # another text tower: the translation alone
    assert not corrected_for("xmodal-lite+/tmp/own_head.pt")  # a head of one's own may move the text space


def test_traditional_reads_as_simplified() -> None:
    assert understand_chinese("兩隻狗在海邊") == understand_chinese("两只狗在海边")
    assert understand_chinese("騎腳踏車的男人")[0] == understand_chinese("骑自行车的男人")[0]


def test_senses_fit_photo_captions_and_word_order_follows_english() -> None:
    english, unknown = understand_chinese("两只狗在马路上奔跑")
    assert english.split()[:2] == ["two", "dog"]  # a measure word is not "only"
    assert "street" in english or "road" in english  # 马路 is not "horse road"
    assert unknown == ()
    assert understand_chinese("草地上的狗")[0] == "dog on lawn"


def test_mixed_query_keeps_its_english_words() -> None:
    english, unknown = understand_chinese("golden retriever 在海边")
    assert english.startswith("golden retriever") and "beach" in english and unknown == ()


def test_words_nobody_knows_are_reported_not_dropped_silently() -> None:
    seen = understand("在海边的龘龘")
    assert seen.language == "chinese" and seen.unknown_words == ("龘", "龘")
    assert "beach" in (seen.english or "")


def test_other_languages_get_one_line_saying_so() -> None:
    for text, script in (("海辺の犬", "Japanese kana"), ("바닷가의 개", "Korean hangul"), ("собака", "Cyrillic")):
        seen = understand(text)
        assert seen.language == "other" and seen.note is not None and script in seen.note
    assert understand("a dog").note is None


@pytest.mark.slow
def test_english_vectors_are_unchanged_and_rows_keep_their_order(model) -> None:
    english = ["a dog at the seaside", "a red car"]
    alone = model.embed_texts(english)
    mixed = model.embed_texts([english[0], "海边的狗", english[1]])
    assert np.array_equal(mixed[[0, 2]], alone)
    assert np.allclose(mixed[1], model.embed_texts(["海边的狗"])[0], atol=1e-6)
    assert abs(float(np.linalg.norm(mixed[1])) - 1) < 1e-5


@pytest.mark.slow
def test_chinese_queries_find_their_test_photo(model, test_photos) -> None:
    photos = model.embed_images([Image.open(p) for p in test_photos])
    names = [p.name for p in test_photos]
    queries = model.embed_texts(list(QUERIES.values()))
    order = np.argsort(-(queries @ photos.T), axis=1)
    ranks = [names.index(n) for n in QUERIES]
    positions = [int(np.flatnonzero(row == r)[0]) for row, r in zip(order, ranks)]
    # pool: 40 test photos. Not every query: 在人手上吃东西的鸟 (a bird eating from a hand) reads
    # "... eat person bird" (东西's senses) and ranks its photo 16th.
    assert np.median(positions) < 2 and sum(p < 5 for p in positions) >= 8, positions
    assert chinese_path().student is not None  # the trained correction is in use


@pytest.mark.slow
def test_the_exported_query_encoder_embeds_chinese_as_the_model_does(model) -> None:
    from xmodal.indexer.models.query_encoders import QueryTextEncoder, export_text_encoder

    sidecar = export_text_encoder(model)
    assert sidecar is not None
    light = QueryTextEncoder(sidecar)
    texts = ["海边的狗", "a dog", "golden retriever 在海边"]
    assert np.allclose(light.embed_texts(texts), model.embed_texts(texts), atol=1e-4)


@pytest.mark.slow
def test_search_with_chinese_and_combined_queries(model, test_photos, tmp_path) -> None:
    import shutil

    from xmodal.indexer import Indexer
    from xmodal.search import SearchEngine

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in test_photos[:20]:
        shutil.copy(p, photos / p.name)
    Indexer(tmp_path / "idx", model=model).add_paths([photos])
    with SearchEngine.open(tmp_path / "idx", model=model) as engine:
        hits = engine.search("雪地里的棕色狗", k=3)
        assert "1094462889_f9966dafa6.jpg" in [Path(h.path).name for h in hits]
        plain = [Path(h.path).name for h in engine.search('"狗"', k=20)]
        without_snow = [Path(h.path).name for h in engine.search('"狗" - "雪"', k=20)]
        snowy_dog = "1094462889_f9966dafa6.jpg"
        assert without_snow.index(snowy_dog) > plain.index(snowy_dog)


def test_the_chinese_path_leaves_the_process_alone() -> None:
    """Segmenter, converter and dictionary load without touching environment or logging."""
    import logging
    import os

    from xmodal.indexer.models.chinese.translation import Translator

    env, root = dict(os.environ), logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    Translator().translate("兩隻狗在海邊")
    assert dict(os.environ) == env and root.level == level and root.handlers == handlers
