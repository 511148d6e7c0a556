"""Sentence similarity (STS): the synthetic corpus's graded pairs, the score, and the files of pairs."""
from __future__ import annotations

import collections
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sslab import sts, synthetic
from sslab.config import SyntheticConfig, load
from sslab.errors import ConfigError

# ---------------------------------------------------------------- the synthetic pairs


def content_words(sentence: str) -> list[str]:
    """The words that are not the grammar's (function words, markers, punctuation)."""
    grammar = synthetic.FUNCTION_WORDS | set(synthetic.STS_MARKERS)
    return [w for w in sentence.strip(".").split() if w not in grammar]


def content_overlap(a: str, b: str) -> float:
    """Jaccard overlap of two sentences' content words: an independent measure of how much the
    two say alike."""
    words = [set(content_words(s)) for s in (a, b)]
    return len(words[0] & words[1]) / len(words[0] | words[1])


@pytest.fixture(scope="module")
def pairs():
    return pd.DataFrame(synthetic.sts_pairs(SyntheticConfig(), 600))


def test_pairs_are_graded_in_turn_on_the_sts_scale_and_depend_only_on_the_config(pairs):
    assert pairs["score"].tolist()[:12] == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0] * 2
    assert pairs["score"].value_counts().to_dict() == {float(level): 100 for level in synthetic.STS_LEVELS}
    again = pd.DataFrame(synthetic.sts_pairs(SyntheticConfig(), 300))
    pd.testing.assert_frame_equal(again, pairs.iloc[:300])  # a pair is a function of its index
    other = pd.DataFrame(synthetic.sts_pairs(SyntheticConfig(seed=1), 300))
    assert not set(other["sentence1"]) & set(pairs["sentence1"])


def test_higher_grades_share_more_content(pairs):
    overlap = pairs.assign(overlap=[content_overlap(a, b) for a, b in zip(pairs["sentence1"], pairs["sentence2"])])
    by_grade = overlap.groupby("score")["overlap"].mean()
    assert (by_grade.diff().dropna() > 0).all(), by_grade  # 0 < 1 < ... < 5 on average
    # The three the grades stand for: the same proposition reworded says all alike, another
    # proposition of the same topic little (a shared adjective at most), another topic nothing.
    assert by_grade[5.0] == 1.0 and 0 < by_grade[1.0] < 0.1 and by_grade[0.0] == 0.0


def test_grades_are_as_constructed(pairs):
    lex = synthetic.lexicon(0, SyntheticConfig().num_topics)
    nouns = {n: t for t, topic in enumerate(lex.topics) for n in topic.nouns}
    verbs = {v: t for t, topic in enumerate(lex.topics) for v in topic.verbs}

    def said(sentence):  # (subject, verb, object) stems and the topics of all nouns and verbs
        words = [w if w in nouns or w in verbs else w[:-1] for w in sentence.strip(".").split()]  # "kotapas"
        found = [w for w in words if w in nouns or w in verbs]
        return tuple(found[:3]), {nouns.get(w, verbs.get(w)) for w in found}

    for row in pairs.itertuples():
        (first, topics1), (second, topics2) = said(row.sentence1), said(row.sentence2)
        assert len(topics1) == len(topics2) == 1, row  # every noun and verb from one topic
        assert (topics1 == topics2) == (row.score > 0), row
        alike = [a == b for a, b in zip(first, second)]
        if row.score == 5:  # reworded: the same words, perhaps moved ("the red X" / "because it is red")
            assert content_overlap(row.sentence1, row.sentence2) == 1, row
        elif row.score == 4:  # and a detail added on one side
            words = [collections.Counter(content_words(s)) for s in (row.sentence1, row.sentence2)]
            assert alike == [True] * 3 and (words[0] <= words[1] or words[1] <= words[0]), row
        elif row.score == 3:  # the subject does the same to another object
            assert alike == [True, True, False], row
        elif row.score == 2:  # the subject does another thing to another object
            assert alike == [True, False, False], row
        else:  # nothing alike
            assert not any(alike), row


def test_rewording_varies_the_surface_at_every_grade(pairs):
    """Markers and the place of the subject's property are drawn for each sentence alike at every
    grade, so the wording cannot tell a grade; at grade 5 it is all that differs."""
    top = pairs[pairs["score"] == 5]
    assert (top["sentence1"] != top["sentence2"]).mean() > 0.6
    for grade, rows in pairs.groupby("score"):
        markers = {s.split()[0] for s in rows["sentence1"]} | {s.split()[0] for s in rows["sentence2"]}
        assert markers == set(synthetic.STS_MARKERS), grade
        assert rows["sentence1"].str.contains(" because ").mean() > 0.1, grade


def test_chinese_pairs_are_graded_as_the_english_ones():
    zh = pd.DataFrame(synthetic.sts_pairs(SyntheticConfig(language="zh"), 60))
    assert zh["score"].tolist() == pd.DataFrame(synthetic.sts_pairs(SyntheticConfig(), 60))["score"].tolist()
    assert zh["sentence1"].str.match(r"^(然后|接着|后来|最后)，[^ ]+[。！]$").all()

    def said(sentence):  # the characters of its proposition, whatever the marker and where the property goes
        body = sentence[3:-1].replace("，因为它们很", "").replace("，因为它很", "").replace("的", "")
        return sorted(body)

    same = zh[zh["score"] == 5]
    assert [said(a) for a in same["sentence1"]] == [said(b) for b in same["sentence2"]]
    assert (same["sentence1"] != same["sentence2"]).any()


# ---------------------------------------------------------------- the score


def test_spearman_ranks_ties_by_their_mean_rank():
    # predicted 0.1 0.4 0.4 0.9 0.2 -> ranks 1 3.5 3.5 5 2; gold 1 2 3 3 1 -> ranks 1.5 3 4.5 4.5 1.5.
    # Deviations from the mean rank 3: (-2, .5, .5, 2, -1) and (-1.5, 0, 1.5, 1.5, -1.5), so
    # rho = 8.25 / sqrt(9.5 * 9).
    predicted, gold = [0.1, 0.4, 0.4, 0.9, 0.2], [1, 2, 3, 3, 1]
    assert sts.spearman(predicted, gold) == pytest.approx(8.25 / math.sqrt(9.5 * 9), abs=1e-12)
    assert sts.spearman(np.exp(predicted), gold) == pytest.approx(8.25 / math.sqrt(85.5))  # ranks only
    assert sts.spearman([-x for x in predicted], gold) == pytest.approx(-8.25 / math.sqrt(85.5))
    assert sts.spearman([0.7] * 5, gold) == 0.0  # one vector for every sentence orders nothing


class BagOfTokens(torch.nn.Module):
    """An "encoder" whose states are one-hot tokens: mean pooling gives a bag of words."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"last_hidden_state": torch.nn.functional.one_hot(input_ids, self.vocab).float()})


def test_mean_pooling_ignores_padding_and_cls_reads_the_first_token():
    ids = torch.tensor([[2, 7, 8, 3, 0, 0], [2, 7, 8, 3, 0, 0]])
    real = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]).bool()
    hidden = torch.nn.functional.one_hot(ids, 10).float()
    mean = sts.pool(hidden, real, "mean")
    assert torch.allclose(mean[0], torch.nn.functional.normalize(hidden[0, :4].mean(0), dim=0))
    assert not torch.allclose(mean[0], mean[1])  # the second row counts its padding as tokens
    assert torch.equal(sts.pool(hidden, real, "cls")[0], hidden[0, 0])


def test_the_score_of_a_bag_of_words_encoder_is_the_spearman_of_its_cosines(tokenizer_dir):
    from sslab import tokenizer

    tok = tokenizer.load_tokenizer(tokenizer_dir)
    frame = pd.DataFrame(synthetic.sts_pairs(SyntheticConfig(), 60))
    pairs = sts.encode(frame, tok, 64, "the synthetic corpus")
    encoder = BagOfTokens(len(tok))
    cos = sts.cosines(encoder, pairs, "mean", "cpu")
    by_hand = []
    for a, b in zip(frame["sentence1"], frame["sentence2"]):
        counts = [np.bincount(tok(s)["input_ids"], minlength=len(tok)).astype(float) for s in (a, b)]
        by_hand.append(counts[0] @ counts[1] / np.linalg.norm(counts[0]) / np.linalg.norm(counts[1]))
    np.testing.assert_allclose(cos, by_hand, rtol=1e-5)
    # (float32 breaks the exact ties of by_hand's float64 cosines, so their ranks differ slightly)
    assert sts.score(encoder, pairs, "mean", "cpu") == sts.spearman(cos, frame["score"])


# ---------------------------------------------------------------- files of pairs

ROWS = [("a man plays a guitar .", "a man is playing the guitar .", 4.8),
        ("a cat sleeps", "a dog barks", 0.4),
        ("stocks fell \"sharply\" today", "markets dropped today", 3.5)]


def write_pairs(path: Path, rows=ROWS, columns=sts.COLUMNS) -> Path:
    frame = pd.DataFrame(rows, columns=list(columns))
    if path.suffix == ".tsv":  # as GLUE's STS-B: a quote is part of the text, not quoting
        path.write_text("\n".join("\t".join(map(str, r)) for r in [columns, *rows]) + "\n")
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_a_file_of_pairs_reads_as_written(tmp_path, suffix):
    frame = sts.read_pairs(write_pairs(tmp_path / f"pairs{suffix}"))
    assert frame.to_dict("list") == {"sentence1": [r[0] for r in ROWS], "sentence2": [r[1] for r in ROWS],
                                     "score": [r[2] for r in ROWS]}


def test_stsb_columns_beyond_the_three_are_ignored(tmp_path):
    path = tmp_path / "sts-dev.tsv"
    header = ("genre", "filename", "year", "old_index", "source1", "source2", *sts.COLUMNS)
    path.write_text("\n".join("\t".join(r) for r in [header, *[("main-captions", "MSRvid", "2012test", "0001",
                                                                 "none", "none", a, b, str(s)) for a, b, s in ROWS]]))
    assert sts.read_pairs(path)["score"].tolist() == [4.8, 0.4, 3.5]


@pytest.mark.parametrize("case, message", [
    ("missing", r"STS pairs '.*missing\.tsv' does not exist"),
    ("suffix", r"unsupported extension '\.txt'"),
    ("column", r"has no column 'score' \(its columns: sentence1, sentence2, similarity\)"),
    ("score", r"row 2 has score 'high', not a number"),
    ("sentence", r"row 3 has no sentence2"),
    ("few", r"has 2 pairs and 2 distinct scores; a correlation needs at least 3 pairs"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, case, message):
    rows = [list(r) for r in ROWS]
    path = tmp_path / "pairs.tsv"
    if case == "missing":
        path = tmp_path / "missing.tsv"
    elif case == "suffix":
        path = tmp_path / "pairs.txt"
        path.write_text("sentence1\tsentence2\tscore\n")
    elif case == "column":
        write_pairs(path, columns=("sentence1", "sentence2", "similarity"))
    else:
        if case == "score":
            rows[1][2] = "high"
        if case == "sentence":
            rows[2][1] = ""
        write_pairs(path, rows=rows[:2] if case == "few" else rows)
    with pytest.raises(ConfigError, match=message) as e:
        sts.read_pairs(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_eval_sts_data_is_checked_with_the_config_and_kept_absolute(tmp_path, monkeypatch):
    write_pairs(tmp_path / "pairs.tsv")
    monkeypatch.chdir(tmp_path)
    cfg = load(overrides=["objective.name=simcse", "eval.sts_data=pairs.tsv"])
    assert cfg.eval.sts_data == str(tmp_path / "pairs.tsv")
    write_pairs(tmp_path / "bad.tsv", columns=("s1", "s2", "score"))
    with pytest.raises(ConfigError, match=r"^eval.sts_data '.*bad\.tsv' has no column 'sentence1'") as e:
        load(overrides=["eval.sts_data=bad.tsv"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="eval.sts_pairs"):
        load(overrides=["eval.sts_pairs=-1"])


def test_a_run_scores_the_file_else_the_synthetic_pairs_else_none(tmp_path, tokenizer_dir, caplog, monkeypatch):
    from sslab import config, tokenizer

    tok = tokenizer.load_tokenizer(tokenizer_dir)
    synthetic_run = sts.of_run(load(overrides=["eval.sts_pairs=30"]), tok)
    assert len(synthetic_run) == 30 and synthetic_run.source == "the synthetic corpus"
    assert synthetic_run.first["input_ids"][0, 0] == tok.cls_token_id  # framed as the run's sentences
    path = write_pairs(tmp_path / "pairs.jsonl", rows=[(f"s {i}", f"t {i}", i % 4) for i in range(50)])
    from_file = sts.of_run(load(overrides=[f"eval.sts_data={path}", "eval.sts_pairs=20"]), tok)
    assert len(from_file) == 20 and from_file.source == str(path)
    again = sts.of_run(load(overrides=[f"eval.sts_data={path}", "eval.sts_pairs=20"]), tok)
    np.testing.assert_array_equal(again.first["input_ids"], from_file.first["input_ids"])  # fixed by eval.seed
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c.\n")
    monkeypatch.setattr(config, "_warned", set())  # what this process has warned of already
    with caplog.at_level("WARNING", logger="sslab"):
        assert sts.of_run(load(overrides=[f"corpus.source={corpus}"]), tok) is None
        assert sts.of_run(load(overrides=[f"corpus.source={corpus}"]), tok) is None  # said once
        assert sts.of_run(load(overrides=[f"corpus.source={corpus}", "run.quiet=true"]), tok) is None
    assert sum("no eval_sts_spearman" in r.message for r in caplog.records) == 1
    assert sts.of_run(load(overrides=["eval.sts_pairs=0"]), tok) is None
