"""Sentences in any script: where they end in Latin, Chinese, Japanese and mixed text, the
``corpus.sentence_split`` rule, the units built from them and the tokens that end them."""
from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from sslab import corpus, pipeline, prepared, synthetic, tokenizer
from sslab.config import ConfigError, CorpusConfig, SyntheticConfig, TokenizerConfig, load
from sslab.objectives.denoise import sentence_order
from sslab.rng import RowRandom
from sslab.sentences import ends_sentence, split_sentences

from learning import numpy_rows

OLD_BREAK = re.compile(r"(?<=[.!?])\s+")  # the Latin-only rule before CJK support


@pytest.fixture(scope="module")
def zh_texts():
    return synthetic.generate(SyntheticConfig(language="zh", num_docs=200), 0, 200)["text"]


@pytest.fixture(scope="module")
def zh_tok(zh_texts):
    tok = tokenizer.train_tokenizer(TokenizerConfig(vocab_size=800), zh_texts, 512)
    return tok, tokenizer.vocab_of(tok)


# ---------------------------------------------------------------- splitting text


@pytest.mark.parametrize("text, expected", [
    ("今天天气很好。我们去公园吧！你觉得呢？", ["今天天气很好。", "我们去公园吧！", "你觉得呢？"]),
    ("今天天气很好。 我们去公园吧！  你觉得呢？", ["今天天气很好。", "我们去公园吧！", "你觉得呢？"]),
    ("第一条；第二条；第三条。", ["第一条；", "第二条；", "第三条。"]),
    ("真的吗？！是的。。。好吧", ["真的吗？！", "是的。。。", "好吧"]),
    ("我想……算了。", ["我想……", "算了。"]),
    ("全角句号．下一句．圆周率约为３．１４。", ["全角句号．", "下一句．", "圆周率约为３．１４。"]),
])
def test_chinese_text_splits_after_each_sentence_mark_with_or_without_spaces(text, expected):
    assert split_sentences(text) == expected
    assert split_sentences(text, "cjk") == expected


def test_japanese_text_splits_as_a_reader_would():
    text = "今日は晴れです。散歩に行きましょう！駅はどこですか？ここです｡"
    assert split_sentences(text) == ["今日は晴れです。", "散歩に行きましょう！", "駅はどこですか？", "ここです｡"]


def test_mixed_chinese_and_english_text_splits_in_both_scripts():
    text = "我喜欢Python 3.12。It is a great language. 你呢？I think so! 好的。"
    assert split_sentences(text) == ["我喜欢Python 3.12。", "It is a great language.", "你呢？", "I think so!", "好的。"]
    # Each script's own rule finds only its own sentences.
    assert split_sentences(text, "latin") == ["我喜欢Python 3.12。It is a great language.", "你呢？I think so!", "好的。"]
    assert split_sentences(text, "cjk") == ["我喜欢Python 3.12。", "It is a great language. 你呢？",
                                            "I think so! 好的。"]


@pytest.mark.parametrize("text, expected", [
    ("他说：“你好！”然后走了。", ["他说：“你好！”", "然后走了。"]),
    ("她问：「行吗？」我说：「行。」", ["她问：「行吗？」", "我说：「行。」"]),
    ("（注：见上文。）下一句。", ["（注：见上文。）", "下一句。"]),
    ("书名是《活着。》好书！", ["书名是《活着。》", "好书！"]),
    ('他说："好的。"然后走了。', ['他说："好的。"', "然后走了。"]),
    ('文件已保存。"main.py" 已更新。', ["文件已保存。", '"main.py" 已更新。']),  # a straight quote opening
])
def test_a_closing_quote_or_bracket_after_the_mark_stays_with_its_sentence(text, expected):
    assert split_sentences(text) == expected


def test_a_stray_mark_or_a_list_number_is_no_sentence_of_its_own():
    assert split_sentences("；忽略这个设定。下一句。 。") == ["；忽略这个设定。", "下一句。 。"]
    assert split_sentences("。。。") == ["。。。"]
    assert split_sentences("3. 现在请移动光标。 4. 重复步骤。") == ["3. 现在请移动光标。", "4. 重复步骤。"]
    assert split_sentences("1. Install it. 2. Run it. Total: 3. 4.") == ["1. Install it.", "2. Run it.", "Total: 3. 4."]


def test_latin_text_splits_as_before_cjk_support():
    texts = list(synthetic.generate(SyntheticConfig(), 0, 200)["text"]) + [
        "Hello world. Second one!  Third? yes", "Pi is 3.14, e.g. roughly. Wait... what?", "no break.here", "One."]
    for text in texts:
        old = [s for s in OLD_BREAK.split(text) if s]
        assert split_sentences(text) == old
        assert split_sentences(text, "latin") == old


def test_a_regular_expression_rule_ends_a_sentence_at_each_match():
    assert split_sentences("a; b;c", r";") == ["a;", "b;", "c"]
    assert split_sentences("一行\n二行\n\n三行", r"\n+") == ["一行", "二行", "三行"]
    assert split_sentences("Der Hund. Die Katze", r"(?<=\.)\s") == ["Der Hund.", "Die Katze"]


def test_the_rule_is_a_config_field_a_named_rule_or_a_regex():
    assert CorpusConfig().sentence_split == "auto"
    assert load(overrides=["corpus.sentence_split=cjk"]).corpus.sentence_split == "cjk"
    assert load(overrides=["corpus.sentence_split=[;；]"]).corpus.sentence_split == "[;；]"


@pytest.mark.parametrize("rule, why", [("([.", "not a regular expression"), (r"\s*", "matches the empty string")])
def test_a_bad_rule_is_refused_in_one_line_naming_the_value(rule, why):
    with pytest.raises(ConfigError) as info:
        load(overrides=[f"corpus.sentence_split={rule}"])
    message = str(info.value)
    assert message.startswith(f"corpus.sentence_split={rule!r} is invalid") and why in message, message
    assert "auto, latin, cjk" in message and "\n" not in message


# ---------------------------------------------------------------- units built from sentences


def segments(tok, rows, side: str) -> list[str]:
    return [tok.decode(ids[:n]).replace(" ", "") for ids, n in zip(rows[side], rows[f"{side}_len"])]


def units(zh_tok, texts, unit: str, rule: str = "auto", seq_len: int = 128) -> dict[str, np.ndarray]:
    tok, vocab = zh_tok
    step = pipeline.Tokenize(tok.backend_tokenizer.to_str(), seq_len, vocab.cls_id, vocab.sep_id, vocab.pad_id,
                             unit, sentence_split=rule)
    return numpy_rows(step({"text": np.asarray(texts, dtype=object)}))


def test_pairs_of_chinese_documents_are_cut_at_sentence_ends(zh_tok, zh_texts):
    rows = units(zh_tok, zh_texts, "pairs")
    assert len(rows["a"]) >= 2 * len(zh_texts)  # several segments, so several pairs, per document
    starts, ends = tuple(synthetic.ZH_MARKERS.values()), ("。", "！", "？")
    for text in segments(zh_tok[0], rows, "a") + segments(zh_tok[0], rows, "b"):
        assert text.startswith(starts) and text.endswith(ends), text
    # Without CJK marks a Chinese document is one long sentence, cut wherever a segment is full.
    latin = segments(zh_tok[0], units(zh_tok, zh_texts, "pairs", "latin"), "a")
    assert sum(not t.endswith(ends) for t in latin) > len(latin) / 2


def test_sentence_rows_of_a_chinese_document_are_its_sentences(zh_tok, zh_texts):
    rows = units(zh_tok, zh_texts[:20], "sentences")
    expected = [s for text in zh_texts[:20] for s in split_sentences(text)]
    assert len(expected) == 20 * SyntheticConfig().sentences_per_doc
    assert segments(zh_tok[0], rows, "a") == expected


def test_tokenize_splits_by_the_configured_rule(zh_tok, zh_texts):
    class Docs:  # what pipeline.tokenize asks of a Ray Dataset, run in this process
        def map_batches(self, fn, fn_kwargs, **_):
            return numpy_rows(fn({"text": np.asarray(zh_texts[:20], dtype=object)}, **fn_kwargs))

    tok, vocab = zh_tok
    counts = {}
    for rule in ("auto", "latin"):
        cfg = load(overrides=[f"corpus.sentence_split={rule}", "train.seq_len=128"])
        counts[rule] = len(pipeline.tokenize(Docs(), tok.backend_tokenizer.to_str(), cfg, vocab, "sentences")["a"])
    assert counts["auto"] == 20 * SyntheticConfig().sentences_per_doc
    assert counts["latin"] < 20 * 3  # a document is one sentence, cut into a few 126-token rows


def test_the_rule_is_part_of_the_prepared_data_key_of_units_built_from_sentences():
    def key(unit, eval_unit, rule):
        return prepared.data_key("corpus", '{"tok": 1}', 128, unit, eval_unit, sentence_split=rule)

    assert key("pairs", None, "auto") != key("pairs", None, "latin")
    assert key("packed", "halves", "auto") != key("packed", "halves", "cjk")
    assert key("packed", None, "auto") == key("packed", None, "latin")  # packed rows have no sentences
    # Nor does the rule decide the documents, so the corpus (and the tokenizer trained on it) stays.
    assert corpus.fingerprint(CorpusConfig(sentence_split="cjk")) == corpus.fingerprint(CorpusConfig())
    zh = CorpusConfig(synthetic=SyntheticConfig(language="zh"))
    assert corpus.fingerprint(zh) != corpus.fingerprint(CorpusConfig())


# ---------------------------------------------------------------- tokens that end a sentence


@pytest.mark.parametrize("piece, ends", [(".", True), ("?!", True), ("。", True), ("！”", True), ("……", True),
                                         ("；", True), ("，", False), ("、", False), ("word", False), ("", False)])
def test_ends_sentence_knows_latin_and_cjk_marks(piece, ends):
    assert ends_sentence(piece) is ends


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_vocab_of_marks_chinese_sentence_ends(kind, zh_texts):
    tok = tokenizer.train_tokenizer(TokenizerConfig(kind=kind, vocab_size=800), zh_texts, 512)
    vocab = tokenizer.vocab_of(tok)
    marked = {tok.decode([int(i)]).strip() for i in np.flatnonzero(vocab.sentence_end)}
    assert {"。", "！", "？"} <= marked
    assert "，" not in marked and not vocab.sentence_end[list(vocab.special_ids)].any()
    assert len(marked) <= 8  # punctuation only: 。！？ and, for byte-level BPE, its alphabet's . ! ?


def test_denoise_permutes_whole_chinese_sentences(zh_tok, zh_texts):
    tok, vocab = zh_tok
    ids = tok(list(zh_texts[:8]), add_special_tokens=False)["input_ids"]
    body = np.array([(doc + [vocab.sep_id] * 400)[:400] for doc in ids])
    order = sentence_order(body, RowRandom(0, 0, np.arange(len(body), dtype=np.uint64)), vocab)
    for row, perm, text in zip(body, order, zh_texts[:8]):
        doc = row[:list(row).index(vocab.sep_id)]
        permuted = tok.decode(row[perm][:len(doc)]).replace(" ", "")
        assert sorted(split_sentences(permuted)) == sorted(split_sentences(text))
    assert any(tok.decode(row[perm]) != tok.decode(row) for row, perm in zip(body, order))


def test_a_run_of_end_marks_ends_one_sentence(zh_tok):
    tok, vocab = zh_tok
    ids = tok("天地吗？！山水。。。花草。", add_special_tokens=False)["input_ids"]
    body = np.array([ids + [vocab.sep_id]] * 64)
    order = sentence_order(body, RowRandom(0, 0, np.arange(64, dtype=np.uint64)), vocab)
    seen = {tok.decode(row[perm]).replace(" ", "").removesuffix("[SEP]") for row, perm in zip(body, order)}
    assert seen == {"".join(p) for p in itertools.permutations(["天地吗？！", "山水。。。", "花草。"])}
