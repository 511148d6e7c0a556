"""Segment pairs, and the two objectives on them: next-sentence (NSP) and sentence-order (SOP) prediction."""
from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoModel

from sslab import pipeline, synthetic, tokenizer
from sslab.config import SyntheticConfig, TokenizerConfig, load
from sslab.objectives import RowRandom, get
from sslab.objectives.base import frame
from sslab.objectives.encoder import HEADS_FILE

from learning import FIXED_TOKENIZER, learn, numpy_rows

SEQ = 64


@pytest.fixture(scope="module")
def setup():
    texts = synthetic.generate(SyntheticConfig(num_docs=300), 0, 300)["text"]
    tok = tokenizer.train_tokenizer(TokenizerConfig(vocab_size=600), texts, 512)
    vocab = tokenizer.vocab_of(tok)
    tokenize = pipeline.Tokenize(tok.backend_tokenizer.to_str(), SEQ, vocab.cls_id, vocab.sep_id, vocab.pad_id, "pairs")
    return tok, vocab, texts, numpy_rows(tokenize({"text": np.asarray(texts, dtype=object)}))


def real(ids, length):
    return list(ids[:length])


def test_pair_rows_are_consecutive_segments_of_one_document(setup):
    tok, vocab, texts, rows = setup
    seg = pipeline.segment_length("pairs", SEQ)
    assert rows["a"].shape[1] == seg and (rows["a_len"] > 0).all() and (rows["b_len"] > 0).all()
    assert (rows["a_len"] <= seg).all() and (rows["b_len"] <= seg).all()
    # Row 0 comes from document 0: a then b is a stretch of its text.
    doc0 = tok.decode(tok(texts[0], add_special_tokens=False)["input_ids"])
    joined = tok.decode(real(rows["a"][0], rows["a_len"][0]) + real(rows["b"][0], rows["b_len"][0]))
    assert joined in doc0
    # Overlapping pairs: a row's b is the next row's a within a document.
    same_doc = rows["doc"][1:] == rows["doc"][:-1]
    assert same_doc.any()
    i = int(np.flatnonzero(same_doc)[0])
    assert real(rows["b"][i], rows["b_len"][i]) == real(rows["a"][i + 1], rows["a_len"][i + 1])


def test_a_single_segment_document_gives_no_pair_but_one_sentence_row():
    docs = [[[5, 6, 7]], [[8, 9], [10, 11]]]  # one sentence; two sentences
    pairs = numpy_rows(pipeline.segment_pairs(docs, seg_len=3, pad_id=0))
    assert len(pairs["a"]) == 1 and real(pairs["a"][0], 2) == [8, 9] and real(pairs["b"][0], 2) == [10, 11]
    sentences = numpy_rows(pipeline.segment_pairs(docs, seg_len=4, pad_id=0, last_alone=True))
    assert list(sentences["b_len"]) == [0, 2, 0]  # [5 6 7] alone; one row per sentence of the second
    assert real(sentences["a"][1], 2) == [8, 9] and real(sentences["b"][1], 2) == [10, 11]


def test_frame_puts_specials_around_real_tokens_and_pads_the_rest(setup):
    _, vocab, _, _ = setup
    a, b = np.array([[11, 12, 0], [13, 0, 0]]), np.array([[21, 0, 0], [22, 23, 24]])
    got = frame(vocab, 10, (a, np.array([2, 1])), (b, np.array([1, 3])))
    c, s, p = vocab.cls_id, vocab.sep_id, vocab.pad_id
    assert got.tolist() == [[c, 11, 12, s, 21, s, p, p, p, p], [c, 13, s, 22, 23, 24, s, p, p, p]]


def objective(vocab, name):
    return get(name)(load(overrides=[f"objective.name={name}"]).objective, vocab)


def test_nsp_labels_say_whether_the_second_segment_is_the_true_successor(setup):
    _, vocab, _, rows = setup
    out = objective(vocab, "nsp").transform(rows, RowRandom(0, 0, rows["row_id"]))
    labels, ids = out["nsp_label"], out["input_ids"]
    for i in range(len(labels)):
        second = [t for t in ids[i, 2 + rows["a_len"][i]:] if t not in (vocab.sep_id, vocab.pad_id)]
        assert real(ids[i], 1 + rows["a_len"][i])[1:] == real(rows["a"][i], rows["a_len"][i])
        if labels[i] == 0:
            assert second == real(rows["b"][i], rows["b_len"][i])
        else:  # some other document's segment
            sources = [j for j in range(len(labels)) if real(rows["b"][j], rows["b_len"][j]) == second]
            assert sources and all(rows["doc"][j] != rows["doc"][i] for j in sources)
    # Half the pairs are drawn random; a draw from the same document is kept real, so a bit less.
    assert 0.35 < labels.mean() < 0.55


def test_sop_swaps_half_the_pairs_and_labels_the_swapped(setup):
    _, vocab, _, rows = setup
    out = objective(vocab, "sop").transform(rows, RowRandom(0, 0, rows["row_id"]))
    labels = out["sop_label"]
    ab = frame(vocab, out["input_ids"].shape[1], (rows["a"], rows["a_len"]), (rows["b"], rows["b_len"]))
    ba = frame(vocab, out["input_ids"].shape[1], (rows["b"], rows["b_len"]), (rows["a"], rows["a_len"]))
    np.testing.assert_array_equal(out["input_ids"], np.where(labels[:, None] == 1, ba, ab))
    n = len(labels)
    assert abs(labels.mean() - 0.5) < 4 * np.sqrt(0.25 / n)


@pytest.mark.parametrize("name", ["nsp", "sop"])
def test_pairs_are_new_each_epoch_and_the_same_for_the_same_epoch(setup, name):
    _, vocab, _, rows = setup
    obj = objective(vocab, name)
    first = obj.transform(rows, RowRandom(0, 0, rows["row_id"]))[f"{name}_label"]
    again = obj.transform(rows, RowRandom(0, 0, rows["row_id"]))[f"{name}_label"]
    other = obj.transform(rows, RowRandom(0, 1, rows["row_id"]))[f"{name}_label"]
    np.testing.assert_array_equal(first, again)
    assert (first != other).mean() > 0.2


@pytest.mark.parametrize("name", ["nsp", "sop"])
def test_the_model_exports_an_encoder_and_its_pair_head(setup, name, tmp_path):
    _, vocab, _, rows = setup
    cfg = load(overrides=[f"objective.name={name}"])
    obj = get(name)(cfg.objective, vocab)
    model = obj.build_model(cfg.model)
    obj.export(model, str(tmp_path))
    assert AutoModel.from_pretrained(tmp_path).config.hidden_size == 128
    assert (tmp_path / HEADS_FILE).is_file()
    again = obj.build_model(load(overrides=[f"objective.name={name}", f"model.init_from={tmp_path}"]).model)
    for a, b in zip(model.heads.parameters(), again.heads.parameters()):
        assert (a == b).all()


def test_sop_learns_the_order_of_segments():
    # Measured: eval_sop_acc 0.5 -> 0.97 in 150 steps (majority 0.5); the synthetic corpus orders
    # its discourse markers (first … then … finally), which only the order task can exploit.
    before, after, _ = learn("sop", ["eval.max_blocks=256"], steps=120)
    assert after["eval_sop_acc"] > after["eval_sop_majority_acc"] + 0.2
    assert after["eval_sop_acc"] > before["eval_sop_acc"] + 0.2


def test_nsp_learns_to_tell_a_successor_from_another_documents_segment():
    # Measured at 500 steps: eval_nsp_acc 0.59 and 0.79 in two runs (majority 0.52): the model
    # is on a cliff there (the WordPiece vocabulary then differed run to run, tokenizers#1794, since fixed), so the
    # test trains further. Telling a successor needs comparing the two segments' entities and
    # topics, which a 2-layer model picks up late; SOP's marker order comes much sooner.
    # A fixed tokenizer makes the run repeatable: with one drawn per run it once reached only
    # 0.57 at 700 steps. With this one: 0.83 vs majority 0.60, the same on every run.
    before, after, _ = learn("nsp", ["train.lr=1e-3", "eval.max_blocks=256"], steps=700,
                             tokenizer_dir=FIXED_TOKENIZER)
    assert after["eval_nsp_acc"] > after["eval_nsp_majority_acc"] + 0.08


def test_sop_learns_the_order_of_chinese_sentences():
    # Chinese synthetic text (no spaces, sentences closed by 。！？, split by corpus.sentence_split's
    # default rule). Measured: eval_sop_acc 0.49 -> 0.87 in 120 steps (majority 0.51).
    before, after, _ = learn("sop", ["corpus.synthetic.language=zh", "tokenizer.vocab_size=3000",
                                     "eval.max_blocks=256"], steps=120)
    assert after["eval_sop_acc"] > after["eval_sop_majority_acc"] + 0.2
    assert after["eval_sop_acc"] > before["eval_sop_acc"] + 0.2
