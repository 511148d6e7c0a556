"""The synthetic corpus is deterministic and has structure a model can learn."""
import collections
import math
import re

import numpy as np
import pytest

from sslab import pipeline, synthetic, tokenizer
from sslab.config import SyntheticConfig, TokenizerConfig
from sslab.sentences import split_sentences


@pytest.fixture(scope="module")
def corpus():
    """A train and a held-out slice of the default corpus."""
    cfg = SyntheticConfig()
    return synthetic.generate(cfg, 0, 1500), synthetic.generate(cfg, 1500, 1900)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in text.split(".") if s.strip()]


def test_same_seed_gives_the_same_documents_and_another_seed_others():
    a = synthetic.generate(SyntheticConfig(seed=3), 0, 50)
    assert a == synthetic.generate(SyntheticConfig(seed=3), 0, 50)
    b = synthetic.generate(SyntheticConfig(seed=4), 0, 50)
    assert len(set(a["text"]) & set(b["text"])) == 0


def test_a_document_depends_only_on_its_index():
    cfg = SyntheticConfig(seed=7)
    whole = synthetic.generate(cfg, 0, 40)
    part = synthetic.generate(cfg, 25, 40)
    assert part["text"] == whole["text"][25:]
    assert part["label"] == whole["label"][25:]


def test_documents_are_single_lines_of_lowercase_words_with_topic_labels():
    cfg = SyntheticConfig(num_topics=5, sentences_per_doc=4)
    docs = synthetic.generate(cfg, 0, 300)
    assert set(docs["label"]) == {f"topic_{t:02d}" for t in range(5)}
    for text in docs["text"]:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*\.( [a-z]+( [a-z]+)*\.)*", text), text
        assert len(sentences(text)) == 4


def test_discourse_markers_open_sentences_in_order(corpus):
    expected = synthetic.markers(SyntheticConfig().sentences_per_doc)
    assert expected[0] == "first" and expected[-1] == "finally"
    for text in corpus[0]["text"][:200]:
        assert [s.split()[0] for s in sentences(text)] == expected


def test_the_entity_named_in_the_first_sentence_recurs(corpus):
    recurs = 0
    for text in corpus[0]["text"]:
        first, *rest = sentences(text)
        name = first.split()[first.split().index("called") + 1]
        recurs += any(name in s.split() for s in rest)
    assert recurs / len(corpus[0]["text"]) > 0.9


def test_subject_and_verb_agree_in_number(corpus):
    # "because it is" follows singular subjects, "because they are" plural ones; the
    # vocabulary's verb forms differ by a final "s" (singular), as in English.
    lex = synthetic.lexicon(0, SyntheticConfig().num_topics)
    verbs = {v for t in lex.topics for v in t.verbs}
    checked = 0
    for text in corpus[0]["text"][:300]:
        for s in sentences(text):
            words = s.split()
            if "because" not in words:
                continue
            verb = next(w for w in words if w in verbs or (w.endswith("s") and w[:-1] in verbs))
            plural = words[words.index("because") + 1] == "they"
            assert (verb in verbs) == plural, s
            checked += 1
    assert checked > 100


def _tokens(text: str) -> list[str]:
    return ["<s>"] + text.replace(".", " .").split()


def test_a_bigram_model_beats_a_unigram_model_on_held_out_text(corpus):
    train, held_out = corpus
    uni, bi, ctx = collections.Counter(), collections.Counter(), collections.Counter()
    for text in train["text"]:
        w = _tokens(text)
        uni.update(w[1:])
        bi.update(zip(w, w[1:]))
        ctx.update(w[:-1])
    total, vocab = sum(uni.values()), len(uni) + 1

    def p_uni(w):
        return (uni[w] + 1) / (total + vocab)

    def p_bi(a, b):
        return 0.9 * (bi[(a, b)] / ctx[a] if ctx[a] else 0.0) + 0.1 * p_uni(b)

    pairs = [(a, b) for text in held_out["text"] for a, b in zip(_tokens(text), _tokens(text)[1:])]
    ppl_uni = math.exp(-sum(math.log(p_uni(b)) for _, b in pairs) / len(pairs))
    ppl_bi = math.exp(-sum(math.log(p_bi(a, b)) for a, b in pairs) / len(pairs))
    assert ppl_bi < 0.4 * ppl_uni, (ppl_bi, ppl_uni)


def test_a_bag_of_words_probe_recovers_topics(corpus):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    train, held_out = corpus
    vec = CountVectorizer()
    probe = LogisticRegression(max_iter=1000).fit(vec.fit_transform(train["text"][:600]), train["label"][:600])
    accuracy = probe.score(vec.transform(held_out["text"]), held_out["label"])
    assert accuracy > 0.9  # chance is 1 / 8


def test_read_synthetic_is_the_generated_corpus(ray_cluster):
    cfg = SyntheticConfig(num_docs=300, seed=5)
    ds = synthetic.read_synthetic(cfg)
    rows = ds.take_all()
    assert set(ds.columns()) == {"text", "label"}
    expected = synthetic.generate(cfg, 0, 300)
    assert sorted((r["text"], r["label"]) for r in rows) == sorted(zip(expected["text"], expected["label"]))


# ---------------------------------------------------------------- language: zh

ZH = SyntheticConfig(language="zh", num_topics=5)
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def zh_corpus():
    return synthetic.generate(ZH, 0, 1500), synthetic.generate(ZH, 1500, 1900)


def test_english_stays_the_default_language():
    assert SyntheticConfig().language == "en"
    assert synthetic.generate(SyntheticConfig(), 0, 20) == synthetic.generate(SyntheticConfig(language="en"), 0, 20)


def test_a_chinese_corpus_is_deterministic_per_seed_and_index():
    a = synthetic.generate(SyntheticConfig(language="zh", seed=3), 0, 50)
    assert a == synthetic.generate(SyntheticConfig(language="zh", seed=3), 0, 50)
    assert synthetic.generate(SyntheticConfig(language="zh", seed=3), 30, 50)["text"] == a["text"][30:]
    b = synthetic.generate(SyntheticConfig(language="zh", seed=4), 0, 50)
    assert not set(a["text"]) & set(b["text"])


def test_chinese_documents_are_chinese_characters_without_spaces(zh_corpus):
    text = "".join(zh_corpus[0]["text"])
    assert " " not in text and not re.search(r"[A-Za-z0-9]", text)
    assert len(CJK.findall(text)) / len(text) > 0.85
    assert set(re.sub(r"[\u4e00-\u9fff]", "", text)) == {"。", "！", "？", "，"}


def test_chinese_words_have_two_to_four_characters_and_belong_to_topics():
    lex = synthetic.lexicon(ZH.seed, ZH.num_topics, "zh")
    words = [w for t in lex.topics for w in t.nouns + t.verbs + t.adjectives]
    assert len(set(words)) == len(words) == ZH.num_topics * 60
    assert {len(w) for w in words} == {2, 3, 4}
    assert all(CJK.fullmatch(c) for w in words for c in w)


def test_chinese_sentences_end_with_cjk_marks_and_open_with_markers_in_order(zh_corpus):
    expected = [synthetic.ZH_MARKERS[m] for m in synthetic.markers(ZH.sentences_per_doc)]
    ends = collections.Counter()
    for text in zh_corpus[0]["text"]:
        found = split_sentences(text)
        assert [s.split("，")[0] for s in found] == expected, text
        ends.update(s[-1] for s in found)
    total = sum(ends.values())
    assert set(ends) == {"。", "！", "？"} and 0.7 < ends["。"] / total < 0.9


def test_chinese_documents_carry_topic_labels_a_character_probe_recovers(zh_corpus):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    train, held_out = zh_corpus
    assert set(train["label"]) == {f"topic_{t:02d}" for t in range(ZH.num_topics)}
    vec = CountVectorizer(analyzer="char")
    probe = LogisticRegression(max_iter=1000).fit(vec.fit_transform(train["text"][:600]), train["label"][:600])
    assert probe.score(vec.transform(held_out["text"]), held_out["label"]) > 0.9  # chance is 1 / 5


def test_a_wordpiece_tokenizer_on_chinese_text_gives_sentence_pairs(zh_corpus):
    texts = zh_corpus[0]["text"][:300]
    tok = tokenizer.train_tokenizer(TokenizerConfig(vocab_size=800), texts, 512)
    vocab = tokenizer.vocab_of(tok)
    assert not any(tok.unk_token_id in ids for ids in tok(texts, add_special_tokens=False)["input_ids"])
    step = pipeline.Tokenize(tok.backend_tokenizer.to_str(), 64, vocab.cls_id, vocab.sep_id, vocab.pad_id, "pairs")
    rows = pipeline.to_numpy(step({"text": np.asarray(texts, dtype=object)}))
    assert len(rows["a"]) > 2 * len(texts) and (rows["a_len"] > 0).all() and (rows["b_len"] > 0).all()
    a = tok.decode(rows["a"][0][:rows["a_len"][0]]).replace(" ", "")
    b = tok.decode(rows["b"][0][:rows["b_len"][0]]).replace(" ", "")
    assert texts[0].startswith(a + b)
