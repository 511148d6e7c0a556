"""The synthetic corpus is deterministic and has structure a model can learn."""
import collections
import math
import re

import pytest

from sslab import synthetic
from sslab.config import SyntheticConfig


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
