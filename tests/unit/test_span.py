"""Property tests of T5 span corruption, its model, and a learning check.

The blocks are real packed text (``blocks.py``, with T5's 100 sentinels added). Every check reads the noise back out of the transform's output
(``input_ids`` and ``labels`` merged again), not out of the objective's internals, so a bug in
how the spans are written out shows up as well as one in how they are drawn.
"""
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from sslab import tokenizer
from sslab.config import ConfigError, EvalConfig, ModelConfig
from sslab.rng import RowRandom
from sslab.objectives.span import NUM_SENTINELS, Span, SpanConfig, span_counts

from blocks import assert_row_keyed, corpus_tokenizer, packed, transformed
from learning import learn

SEQ_LEN = 128


@pytest.fixture(scope="module")
def tok():
    return corpus_tokenizer(max_len=SEQ_LEN, extra=Span.extra_tokens(SpanConfig()))


@pytest.fixture(scope="module")
def vocab(tok):
    return tokenizer.vocab_of(tok, Span.extra_tokens(SpanConfig()))


@pytest.fixture(scope="module")
def blocks(tok, vocab):
    """About 800 packed blocks of 128 tokens: ``input_ids`` (int64) and ``row_id``."""
    return packed(tok, vocab, SEQ_LEN, 1700)


def span(vocab, **cfg) -> Span:
    return Span(SpanConfig(**cfg), vocab)


def merge(inputs: np.ndarray, labels: np.ndarray, sentinels) -> tuple[np.ndarray, np.ndarray]:
    """The body the encoder input and the targets were cut from, and its noise mask (one row).

    Written the plain way: cut the input before each sentinel and the targets at each
    sentinel, and put back after sentinel i what follows sentinel i in the targets.
    """
    marks = np.flatnonzero(np.isin(labels[:-1], sentinels))
    fills = {labels[k]: labels[k + 1:end] for k, end in zip(marks, [*marks[1:], len(labels) - 1])}
    body, noise = [], []
    for piece in np.split(inputs[1:-1], np.flatnonzero(np.isin(inputs[1:-1], sentinels))):
        if len(piece) and piece[0] in fills:
            fill = fills.pop(piece[0])
            body += [fill, piece[1:]]
            noise += [np.ones(len(fill), bool), np.zeros(len(piece) - 1, bool)]
        else:
            body.append(piece)
            noise.append(np.zeros(len(piece), bool))
    assert not fills, "a target span has no sentinel in the input"
    return np.concatenate(body), np.concatenate(noise)


def merged(out, vocab):
    pairs = [merge(i, l, vocab.extra_ids) for i, l in zip(out["input_ids"], out["labels"])]
    return np.stack([b for b, _ in pairs]), np.stack([m for _, m in pairs])


def runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in each row of ``mask``, all rows together."""
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    return ends[1] - starts[1]


# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("cfg", [{}, {"noise_density": 0.5, "mean_span": 8.0}, {"noise_density": 0.05,
                                                                               "mean_span": 1.0}])
def test_inputs_and_labels_give_back_the_original_body(vocab, blocks, cfg):
    ids = blocks["input_ids"]
    before = ids.copy()
    out = transformed(span(vocab, **cfg), blocks, rows=slice(0, 200))
    assert set(out) == {"input_ids", "labels"}
    assert out["input_ids"].dtype == out["labels"].dtype == np.int64
    body, noise = merged(out, vocab)
    np.testing.assert_array_equal(body, ids[:200, 1:-1])
    assert noise.any() and not noise.all()
    np.testing.assert_array_equal(ids, before)  # the input batch is not modified in place


def test_widths_are_fixed_by_the_length_alone(vocab, blocks):
    out = transformed(span(vocab, noise_density=0.3, mean_span=2.0), blocks)
    noise, spans = span_counts(SEQ_LEN - 2, 0.3, 2.0)
    assert (noise, spans) == (38, 19)
    assert out["input_ids"].shape == (len(blocks["input_ids"]), SEQ_LEN - noise + spans)
    assert out["labels"].shape == (len(blocks["input_ids"]), noise + spans + 1)
    empty = transformed(span(vocab, noise_density=0.3, mean_span=2.0), blocks, rows=slice(0, 0))
    assert empty["input_ids"].shape == (0, out["input_ids"].shape[1])
    assert empty["labels"].shape == (0, noise + spans + 1)


def test_cls_and_final_sep_are_untouched_and_the_labels_end_with_sep(vocab, blocks):
    ids = blocks["input_ids"]
    out = transformed(span(vocab, noise_density=0.6, mean_span=1.0), blocks)
    np.testing.assert_array_equal(out["input_ids"][:, 0], ids[:, 0])
    assert (out["input_ids"][:, 0] == vocab.cls_id).all()
    assert (out["input_ids"][:, -1] == vocab.sep_id).all() and (out["labels"][:, -1] == vocab.sep_id).all()
    # [CLS] never turns up anywhere else; the last body token is always noise (T5's layout ends
    # on a noise span), so the targets' [SEP] before the end is the body's own.
    assert (out["input_ids"][:, 1:] != vocab.cls_id).all() and (out["labels"] != vocab.cls_id).all()


def test_sentinels_appear_in_order_once_each(vocab, blocks):
    sentinels = np.array(vocab.extra_ids)
    out = transformed(span(vocab, noise_density=0.4, mean_span=1.5), blocks)
    _, spans = span_counts(SEQ_LEN - 2, 0.4, 1.5)
    for key in ("input_ids", "labels"):
        is_sentinel = np.isin(out[key], sentinels)
        assert (is_sentinel.sum(1) == spans).all()
        found = out[key][is_sentinel].reshape(-1, spans)
        np.testing.assert_array_equal(found, np.tile(sentinels[:spans], (len(found), 1)))
    assert (out["labels"][:, 0] == sentinels[0]).all()  # the targets open with the first span
    # A sentinel stands for a whole span: never two in a row in the input, nor in the targets.
    for key in ("input_ids", "labels"):
        is_sentinel = np.isin(out[key], sentinels)
        assert not (is_sentinel[:, 1:] & is_sentinel[:, :-1]).any()


# ---------------------------------------------------------------- rates


@pytest.mark.parametrize("density, mean_span", [(0.15, 3.0), (0.3, 5.0), (0.5, 1.0), (0.1, 2.5)])
def test_realised_density_and_mean_span_match_the_config(vocab, blocks, density, mean_span):
    out = transformed(span(vocab, noise_density=density, mean_span=mean_span), blocks, seed=3)
    _, noise = merged(out, vocab)
    length = noise.shape[1]
    # Counts are T5's roundings of length * density and of noise / mean_span, the same in every
    # row; only their error from rounding separates them from the config.
    per_row = noise.sum(1)
    assert (per_row == per_row[0]).all()
    assert abs(per_row[0] / length - density) <= 0.5 / length
    lengths = runs(noise)  # spans as they came out, so merged neighbours would show
    spans = len(lengths) / len(noise)
    assert spans == round(per_row[0] / mean_span)
    assert abs(lengths.mean() - mean_span) <= mean_span * 0.5 / spans + 1e-9
    # Spans are random: for each length, its share is that of a uniform random split of the
    # noise tokens into the spans, P(len = j) = C(N-j-1, k-2) / C(N-1, k-1).
    n, k = int(per_row[0]), int(round(spans))
    if k > 1:
        longest = n - k + 1
        observed = np.bincount(lengths, minlength=longest + 1)[1:]
        expected = np.array([math.comb(n - j - 1, k - 2) / math.comb(n - 1, k - 1) for j in range(1, longest + 1)])
        total = len(lengths)
        assert abs(expected.sum() - 1) < 1e-9
        se = np.sqrt(expected * (1 - expected) / total)
        assert (np.abs(observed / total - expected) <= 5 * se + 1e-3).all()


def test_noise_is_spread_over_the_body(vocab, blocks):
    """Every position is noise at about the density, but for the ends: T5's layout opens on a
    clean span and closes on a noise span."""
    out = transformed(span(vocab, noise_density=0.3, mean_span=3.0), blocks, seed=2)
    _, noise = merged(out, vocab)
    assert noise[:, -1].all()
    assert not noise[:, 0].any()  # and the first is never: a clean span comes first
    # Away from both ends, where the layout pins the rate, columns are noise at about the
    # density (simulated: 0.291-0.298 for 0.3; the ends take a little more than their share).
    cols = noise[:, 10:-10].mean(0)
    se = np.sqrt(0.3 * 0.7 / len(noise))  # rows are independent draws
    assert abs(cols.mean() - 0.3) < 0.015
    assert np.abs(cols - 0.3).max() < 5 * se + 0.01


def test_spans_are_capped_by_the_clean_tokens():
    """At density 0.9 and mean span 1 each noise span still needs a clean token before it."""
    assert span_counts(126, 0.9, 1.0) == (113, 13)
    assert span_counts(126, 0.15, 3.0) == (19, 6)
    assert span_counts(10, 0.01, 3.0) == (1, 1)  # at least one noise token, one span


# ---------------------------------------------------------------- per-row randomness


def test_the_same_seed_epoch_and_row_give_the_same_corruption(vocab, blocks):
    objective = span(vocab)
    assert_row_keyed(objective, blocks)


@pytest.mark.parametrize("other", [dict(seed=0, epoch=1), dict(seed=1, epoch=0)], ids=["epoch", "seed"])
def test_another_epoch_or_seed_draws_new_spans(vocab, blocks, other):
    first = merged(transformed(span(vocab), blocks, seed=0, epoch=0), vocab)[1]
    second = merged(transformed(span(vocab), blocks, **other), vocab)[1]
    assert not (first == second).all(axis=1).any(), "some row kept its spans"
    # Independent layouts: noise in both at about density squared, away from the pinned ends.
    both = (first & second)[:, 10:-10].mean()
    assert abs(both - 0.15 ** 2) < 0.01


def test_same_content_under_different_row_ids_gets_different_spans(vocab, blocks):
    ids = np.tile(blocks["input_ids"][:1], (300, 1))
    out = span(vocab).transform({"input_ids": ids}, RowRandom(0, 0, np.arange(300) * 7919))
    assert len({r.tobytes() for r in out["input_ids"]}) == 300


# ---------------------------------------------------------------- the fixed eval protocol


def test_eval_corrupts_by_the_protocol_whatever_the_objectives_knobs(vocab, blocks):
    protocol = EvalConfig()
    rng = RowRandom(protocol.seed, 0, blocks["row_id"])
    batch = {"input_ids": blocks["input_ids"]}
    plain = span(vocab).eval_transform(batch, rng, protocol)
    tuned = span(vocab, noise_density=0.5, mean_span=8.0).eval_transform(batch, rng, protocol)
    for key in plain:
        np.testing.assert_array_equal(tuned[key], plain[key])
    _, noise = merged(plain, vocab)
    assert (noise.sum(1) == round(0.15 * (SEQ_LEN - 2))).all()
    other = span(vocab).eval_transform(batch, rng, EvalConfig(mask_ratio=0.3, mean_span=2.0))
    assert other["labels"].shape[1] == sum(span_counts(SEQ_LEN - 2, 0.3, 2.0)) + 1


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("density", [0.0, 1.0, -0.1, 1.5])
def test_noise_density_outside_the_open_unit_interval_is_refused(density):
    with pytest.raises(ConfigError, match=r"^objective\.noise_density="):
        SpanConfig(noise_density=density)


@pytest.mark.parametrize("mean_span", [0.0, 0.99, -3.0])
def test_mean_span_below_one_is_refused(mean_span):
    with pytest.raises(ConfigError, match=r"^objective\.mean_span="):
        SpanConfig(mean_span=mean_span)
    SpanConfig(mean_span=1.0)


def test_more_spans_than_sentinels_is_refused_naming_the_knobs_and_seq_len(vocab):
    objective = span(vocab, noise_density=0.4, mean_span=1.0)
    objective.check_seq_len(SEQ_LEN)  # 50 spans: fits
    with pytest.raises(ConfigError, match=r"objective\.noise_density=0\.4 with objective\.mean_span=1 .*"
                                          r"train\.seq_len=512"):
        objective.check_seq_len(512)
    long_spans = span(vocab, mean_span=8.0)
    long_spans.check_seq_len(1024, EvalConfig())  # 19 spans to train, 51 to evaluate
    with pytest.raises(ConfigError, match=r"eval\.mask_ratio=0\.15 with eval\.mean_span=1 .*seq_len=1024"):
        long_spans.check_seq_len(1024, EvalConfig(mean_span=1.0))


def test_span_needs_the_sentinels_in_the_tokenizer(tok):
    with pytest.raises(ConfigError, match="sentinel"):
        Span(SpanConfig(), tokenizer.vocab_of(tok))


def test_the_sentinels_are_t5s_hundred_extra_ids():
    extra = Span.extra_tokens(SpanConfig(noise_density=0.5, mean_span=1.0))
    assert len(extra) == NUM_SENTINELS == 100
    assert extra[0] == "<extra_id_0>" and extra[-1] == "<extra_id_99>"
    assert extra == Span.extra_tokens(SpanConfig())


# ---------------------------------------------------------------- model


def test_build_train_export_and_reload(vocab, blocks, tmp_path):
    objective = span(vocab)
    torch.manual_seed(0)
    model = objective.build_model(ModelConfig())
    assert model.config.d_model == 128 and model.config.num_layers == model.config.num_decoder_layers == 2
    assert model.config.is_gated_act and model.config.dropout_rate == 0.0
    assert model.config._attn_implementation == "sdpa"
    assert objective.build_model(ModelConfig(dropout=0.1)).config.dropout_rate == 0.1
    batch = {k: torch.as_tensor(v) for k, v in transformed(objective, blocks, rows=slice(0, 4)).items()}
    loss, _ = objective.loss(model, batch)
    assert abs(loss.item() - math.log(vocab.size)) < 2  # a sane start
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    hidden = objective.encoder(model)(input_ids=batch["input_ids"],
                                      attention_mask=torch.ones_like(batch["input_ids"])).last_hidden_state
    assert hidden.shape == (*batch["input_ids"].shape, 128)
    objective.export(model, str(tmp_path))
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path), local_files_only=True)
    model.eval(), reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)
    again = objective.build_model(ModelConfig(init_from=str(tmp_path)))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(**batch).logits, model(**batch).logits)


def test_eval_scores_the_corrupted_tokens_only(vocab, blocks):
    objective = span(vocab)
    torch.manual_seed(0)
    model = objective.build_model(ModelConfig()).eval()
    protocol = EvalConfig()
    out = objective.eval_transform({"input_ids": blocks["input_ids"][:8]}, RowRandom(1, 0, np.arange(8)), protocol)
    with torch.no_grad():
        sums = objective.eval_sums(model, {k: torch.as_tensor(v) for k, v in out.items()})
    assert sums["count"] == 8 * round(0.15 * (SEQ_LEN - 2))
    hist = sums["target_hist"].numpy()
    assert hist[list(vocab.extra_ids)].sum() == 0
    metrics = objective.eval_metrics({k: v.numpy() for k, v in sums.items()})
    assert set(metrics) == {"eval_span_loss", "eval_span_acc", "eval_unigram_loss", "eval_unigram_acc"}
    assert abs(metrics["eval_span_loss"] - math.log(vocab.size)) < 2


@pytest.mark.slow
def test_span_corruption_learns_to_beat_the_unigram_baseline():
    # Measured (seq_len 64, batch 16, tiny T5, eval at the fixed 15 % / mean span 3), margin of
    # eval_unigram_loss over eval_span_loss: at the harness's defaults (lr 2e-3, noise 0.15) none
    # after 150 steps (5.31 vs 4.89; MLM is level with its unigram there too: 4.86 vs 4.84), as
    # only ~9 of 64 tokens a row are targets. Training at noise 0.5, lr 3e-3 (seeds 1, 2):
    # 0.22-0.24 after 200 steps, 0.32-0.39 after 250, 0.41-0.42 after 300; the accuracy margin
    # over the unigram's after 250 steps was 0.036-0.065. Asserted: about half of those.
    # WordPiece, as measured (span's default, unigram, trains for minutes on 2 cores here).
    before, after, _ = learn("span", ["objective.noise_density=0.5", "train.lr=3e-3", "eval.max_blocks=256",
                                      "tokenizer.kind=wordpiece"],
                             steps=250)
    assert before["eval_span_loss"] > before["eval_unigram_loss"] + 1
    assert after["eval_span_loss"] < after["eval_unigram_loss"] - 0.15
    assert after["eval_span_acc"] > after["eval_unigram_acc"] + 0.02
