"""SimCSE: its views, its evaluation, its config, and exact data-parallel gradients."""
from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch
import torch.distributed as dist

from sslab import tokenizer
from sslab.config import load
from sslab.errors import ConfigError
from sslab.objectives import RowRandom, get

from learning import learn

SEG, ROWS = 14, 8


def toy_vocab() -> tokenizer.Vocab:
    return tokenizer.Vocab(size=120, pad_id=0, mask_id=4, cls_id=2, sep_id=3, special_ids=(0, 1, 2, 3, 4),
                           continues_word=np.zeros(120, dtype=bool))


def toy_rows(n: int = ROWS, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a_len, b_len = rng.integers(3, SEG + 1, n), rng.integers(0, SEG + 1, n)
    b_len[::3] = 0  # a document's last sentence has no successor
    a = np.where(np.arange(SEG) < a_len[:, None], rng.integers(5, 120, (n, SEG)), 0)
    b = np.where(np.arange(SEG) < b_len[:, None], rng.integers(5, 120, (n, SEG)), 0)
    return {"a": a, "a_len": a_len, "b": b, "b_len": b_len, "doc": np.arange(n, dtype=np.uint64),
            "row_id": np.arange(n, dtype=np.uint64)}


def simcse(*overrides):
    cfg = load(overrides=["objective.name=simcse", "train.seq_len=16", *overrides])
    return cfg, get("simcse")(cfg.objective, toy_vocab())


def test_both_views_are_the_framed_sentence_and_the_eval_pairs_it_with_the_next():
    _, obj = simcse()
    rows = toy_rows()
    out = obj.transform(rows, RowRandom(0, 0, rows["row_id"]))
    assert out["view"].shape == (ROWS, SEG + 2)
    for i in range(ROWS):
        n = rows["a_len"][i]
        assert out["view"][i, :n + 2].tolist() == [2, *rows["a"][i, :n], 3]
        assert (out["view"][i, n + 2:] == 0).all()
    ev = obj.eval_transform(rows, RowRandom(0, 0, rows["row_id"]), load().eval)
    keep = rows["b_len"] > 0
    assert len(ev["partner"]) == keep.sum() < ROWS  # a sentence without a successor has no partner
    np.testing.assert_array_equal(ev["view"], out["view"][keep])
    first = int(np.flatnonzero(keep)[0])
    assert ev["partner"][0, 1:1 + rows["b_len"][first]].tolist() == rows["b"][first, :rows["b_len"][first]].tolist()


@pytest.mark.parametrize("override, field", [("objective.tau=0", "objective.tau"),
                                             ("objective.tau=-0.1", "objective.tau"),
                                             ("objective.pooling=max", "objective.pooling")])
def test_bad_knobs_are_refused_by_name(override, field):
    with pytest.raises(ConfigError, match=field):
        simcse(override)


def test_dropout_makes_the_two_views_differ_and_eval_mode_does_not():
    cfg, obj = simcse()
    torch.manual_seed(0)
    model = obj.build_model(cfg.model)  # SimCSE's dropout 0.1, though ModernBERT's own is 0
    rows = toy_rows()
    batch = {k: torch.as_tensor(v) for k, v in obj.transform(rows, RowRandom(0, 0, rows["row_id"])).items()}
    h = model(batch, ["view", "view"])["view"]
    assert not torch.allclose(h[0].hidden, h[1].hidden)
    model.eval()
    h = model(batch, ["view", "view"])["view"]
    assert torch.allclose(h[0].hidden, h[1].hidden)


def loss_and_grads(rank: int, world: int, init_file: str | None, out_file: str | None, pooling: str):
    """SimCSE's loss and (DDP-averaged) gradients of this rank's share of one fixed batch."""
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfg, obj = simcse("model.dropout=0.0", f"objective.pooling={pooling}")  # dropout off: the same forward
    torch.manual_seed(0)
    model = obj.build_model(cfg.model)
    rows = toy_rows(ROWS * 2)
    full = obj.transform(rows, RowRandom(0, 0, rows["row_id"]))
    share = slice(rank * len(rows["a"]) // world, (rank + 1) * len(rows["a"]) // world)
    loss, _ = obj.loss(model, {k: torch.as_tensor(v[share]) for k, v in full.items()})
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    loss = loss.detach()
    if world > 1:  # what DDP does: average gradients (and we average the logged loss)
        for t in [loss, *grads]:
            dist.all_reduce(t)
            t /= world
        dist.destroy_process_group()
    if out_file and rank == 0:
        torch.save({"loss": loss, "grads": grads}, out_file)
    return loss, grads


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_two_workers_give_the_loss_and_gradients_of_one_worker_on_the_whole_batch(tmp_path, pooling):
    ctx = multiprocessing.get_context("spawn")
    out = tmp_path / "two.pt"
    procs = [ctx.Process(target=loss_and_grads, args=(r, 2, str(tmp_path / "init"), str(out), pooling))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    two = torch.load(out)
    loss, grads = loss_and_grads(0, 1, None, None, pooling)
    torch.testing.assert_close(two["loss"], loss, rtol=1e-5, atol=1e-6)
    assert len(two["grads"]) == len(grads)
    for g2, g1 in zip(two["grads"], grads):
        # Sums in another order differ by ~1e-3 of the largest entry (1/tau amplifies them); leaving
        # out the cross-worker gradient (no all_reduce in the backward) differs by ~0.3 of it.
        torch.testing.assert_close(g2, g1, rtol=1e-3, atol=1e-2 * float(g1.abs().max()))


def test_retrieval_and_alignment_reward_an_encoder_that_matches_partners():
    _, obj = simcse()
    n, hidden = 32, 8
    ids = torch.full((n, 4), 5)
    za = torch.nn.functional.normalize(torch.randn(n, hidden), dim=-1)

    class Out:
        def __init__(self, z):
            self.hidden = z[:, None, :].expand(n, 4, hidden)

    batch = {"view": ids, "partner": ids}
    perfect = obj.eval_metrics({k: v.numpy() for k, v in obj.part_sums(None, [Out(za), Out(za)], batch).items()})
    assert perfect["eval_retrieval_acc"] == 1.0 and perfect["eval_align"] == pytest.approx(0.0, abs=1e-6)
    assert perfect["eval_retrieval_chance"] == pytest.approx(1 / 16)
    shuffled = obj.eval_metrics({k: v.numpy() for k, v in
                                 obj.part_sums(None, [Out(za), Out(za.roll(3, 0))], batch).items()})
    assert shuffled["eval_retrieval_acc"] < 0.2 and shuffled["eval_align"] > 0.5


def test_training_spreads_sentences_over_the_sphere_and_still_retrieves_document_halves():
    # Measured (150 steps, tiny, lr 2e-3, mean pooling): eval_uniform -1.94 -> -2.89, retrieval of a
    # document's second half among 16: 0.69 (chance 0.0625; the untrained encoder's bag of words
    # already gets 0.76). With cls pooling the eval-mode vectors collapsed to one (retrieval at
    # chance): this test is what would catch that. The synthetic STS pairs: 0.90 -> 0.84 (their
    # grades follow shared words, which an untrained bag of words reads well); at tau 1 the same
    # run falls to 0.31, the paper's order (Gao et al. 2021, Table D.1).
    before, after, _ = learn("simcse", ["eval.max_blocks=256"], steps=150)
    assert after["eval_retrieval_acc"] > after["eval_retrieval_chance"] + 0.3
    assert after["eval_uniform"] < before["eval_uniform"] - 0.4
    assert after["eval_sts_spearman"] > 0.6
