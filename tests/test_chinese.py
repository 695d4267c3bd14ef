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


def test_latin_languages_other_than_english_get_a_note_by_their_function_words() -> None:
    from xmodal.indexer.models.chinese import latin_language

    assert latin_language("un perro en la playa") == "Spanish"
    assert latin_language("le chien sur la plage") == "French"
    assert latin_language("der Hund mit dem Ball") == "German"
    # English, names and single words stay English (nothing to go on)
    for text in ("a dog on the beach", "La Jolla beach at night", "Robert de Niro in a car", "perro", "los angeles"):
        assert latin_language(text) is None, text
    seen = understand("un perro en la playa")
    assert seen.language == "other" and seen.note is not None and "Spanish" in seen.note


def test_a_combined_query_says_how_each_term_is_read() -> None:
    from xmodal.search.query import how_read

    assert how_read('"狗" - "雪"') == 'reading "狗" as "dog", "雪" as "snow"'
    assert how_read('"a dog" - "snow"') is None
    assert how_read("海辺の犬") == "note: Japanese kana is not understood yet: only English and Chinese are"
    # characters beyond the basic plane are Chinese too, and reported when unknown, not dropped
    assert how_read("𠀋狗") == 'reading "𠀋狗" as "dog"; not understood: 𠀋'


def test_the_planners_understood_carries_the_reading() -> None:
    """One explanation of a query: Understood says how each Chinese term is read, the words not
    understood, the words read by their characters and a language note (search.understanding)."""
    from xmodal.search.understanding import Understood, read_language, read_literally

    combined = read_literally('"狗" - "雪"')
    assert combined.read_as == (("狗", "dog"), ("雪", "snow")) and combined.reading is None
    assert combined.line() == 'searching "狗" - "雪", reading "狗" as "dog", "雪" as "snow"' and combined.explained
    unknown = read_literally("𠀋狗")
    assert unknown.reading == "dog" and unknown.not_understood == ("𠀋",)
    assert unknown.line() == 'searching "𠀋狗", read as "dog"; not understood: 𠀋'
    assert "read by their characters: 奥利" in read_literally("奥利奥饼干").line()
    kana = read_literally("海辺の犬")
    assert kana.note == "Japanese kana is not understood yet: only English and Chinese are" and not kana.read_as
    assert kana.line().endswith("; note: Japanese kana is not understood yet: only English and Chinese are")
    assert not read_literally("a dog on the beach").explained  # English says nothing more
    planned = read_language(Understood(query="东京的狗", visual="狗", place="Tokyo", not_understood=("昨日",)))
    assert planned.line() == 'searching "狗", read as "dog" · Tokyo; not understood: 昨日'
    assert planned.as_dict()["read_as"] == [{"text": "狗", "english": "dog"}]


def test_names_the_dictionary_lacks_are_reported_as_read_by_their_characters() -> None:
    seen = understand("奥利奥饼干")  # Oreo cookies: jieba cuts 奥利, which CC-CEDICT does not have
    assert seen.guessed_words and "奥" in seen.guessed_words[0] and "biscuit" in (seen.english or "")
    assert understand("小女孩").guessed_words == ()  # 小 + 女孩: words, not a guess


def test_a_plain_modifier_stays_before_its_noun_a_clause_goes_after() -> None:
    assert understand_chinese("红色的圆圈")[0] == "red circle"
    assert understand_chinese("草地上的狗")[0] == "dog on lawn"


@pytest.mark.slow
def test_chinese_labels_tag_as_their_english_twins(model) -> None:
    from xmodal.search.tagging import label_vectors

    assert np.allclose(label_vectors(model, ["狗", "海滩"]), label_vectors(model, ["dog", "beach"]), atol=1e-6)


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


@pytest.mark.slow
def test_every_command_reads_chinese(test_photos, tmp_path) -> None:
    """index-text, image -> text, a combined query's reading line, eval on Chinese pairs and tag with
    Chinese labels, through the real CLI in subprocesses (the script decides; there is no --lang)."""
    import csv
    import json
    import os
    import shutil
    import subprocess
    import sys

    def xmodal(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "xmodal.cli.app", *args], capture_output=True, text=True, timeout=600, env=os.environ
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return done

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in test_photos:
        if p.name in QUERIES:
            shutil.copy(p, photos / p.name)
    index = str(tmp_path / "idx")
    xmodal("index", str(photos), "--index", index)
    (tmp_path / "zh.txt").write_text("\n".join(QUERIES.values()) + "\n", encoding="utf-8")
    xmodal("index-text", str(tmp_path / "zh.txt"), "--index", index)
    found = xmodal(
        "search", "--image", str(photos / "124195430_d14028660f.jpg"), "--target", "text", "-n", "1", "--index", index
    )
    assert "海滩上的两匹马" in found.stdout  # two horses on a beach: image -> its Chinese caption

    combined = xmodal("search", '"狗" - "雪"', "-n", "3", "--index", index)
    assert 'xmodal: searching "狗" - "雪", reading "狗" as "dog", "雪" as "snow"' in combined.stderr
    assert "1094462889_f9966dafa6.jpg" not in combined.stdout  # the brown dog in the snow

    with open(tmp_path / "pairs.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("image", "caption"), *QUERIES.items()])
    evaluated = json.loads(xmodal("eval", str(tmp_path / "pairs.csv"), "--image-root", str(photos), "--json").stdout)
    assert evaluated["images"] == 10 and evaluated["captions"] == 10
    assert evaluated["text_to_image"]["recall@1"] >= 60  # as test_chinese_queries_find_their_test_photo, pool 10

    tagged = json.loads(
        xmodal("tag", str(photos / "124195430_d14028660f.jpg"), "--labels", "马,猫,汽车", "--json").stdout
    )
    assert tagged[0]["labels"][0]["label"] == "马"  # horses
