"""Data pipeline: tokens per second per CPU core delivered to a training worker.

(a) From raw text: Ray Data reads plain-text files, cleans and splits them, tokenises, packs and
    writes the prepared shards, which are then streamed and masked (sslab's own chain, as a first
    `sslab pretrain` on a corpus runs it), and the consumer iterates torch batches as a training
    worker does. Against: HF tokenizers' bare `encode_batch_fast` of the same
    documents, already in memory. Goal: at least 0.40 of the bare tokenizer's speed.
(b) From the prepared shards (packed blocks in Parquet, as every run after the first and every
    epoch reads them, in the default shuffled order): masking only. Against: transformers'
    `DataCollatorForLanguageModeling` (15 % masking, 80/10/10) on the same blocks, in batches of
    the same size, configured as its users configure it: as in transformers'
    examples/pytorch/language-modeling/run_mlm.py, the rows are those of a `datasets` table
    (Python lists), each with the `special_tokens_mask` that tokenising with
    `return_special_tokens_mask=True` gives (computed once, untimed, when the blocks are cached;
    the collator's docstring asks for it "for best performance"). Given the mask, the collator
    skips its per-row Python call of `get_special_tokens_mask`: what is timed is padding the rows
    into a batch and masking it. This is the collator's best case: run_mlm.py's own Trainer, with
    its default `remove_unused_columns=True`, drops the mask column before the collator sees it.
    Goal: at least 3x.

Per core: Ray gets --data-cpus CPUs (default 1) and the rate is divided by them; the alternatives
run on one thread (RAYON_NUM_THREADS=1, torch.set_num_threads(1)).

    python benchmarks/data_pipeline.py [--size smoke|full] [--reps 3] [--data-cpus 1]
"""
from __future__ import annotations

import os
import statistics

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before tokenizers starts its thread pool

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from common import Figure, Result, Timer, interleaved, parse_args, say, scratch  # noqa: E402

# Renamed when the collator got its special_tokens_mask (run.py marks JSONs of the old name to re-measure).
FIGURE_B = "data (b): cached blocks to masked batches / HF MLM collator with special_tokens_mask"
SIZES = {"smoke": dict(docs=300, batch_size=8, seq_len=64, epochs=2), "full": dict(docs=30000, batch_size=32, seq_len=128, epochs=5)}


def write_corpus(folder: Path, docs: int, files: int = 8) -> list[str]:
    """The built-in synthetic corpus as plain-text files, one document per line."""
    from sslab.config import SyntheticConfig
    from sslab.synthetic import generate

    texts = generate(SyntheticConfig(num_docs=max(docs, 10)), 0, docs)["text"]
    for i in range(files):
        (folder / f"part{i:02d}.txt").write_text("\n".join(texts[i::files]) + "\n")
    return texts


def collator_rows(tok, ids: np.ndarray) -> list[dict[str, list[int]]]:
    """The cached blocks as run_mlm.py's Trainer hands them to the HF collator: rows of a `datasets`
    table (Python lists), each with the ``special_tokens_mask`` its tokenizer returned, computed
    here once, untimed."""
    return [{"input_ids": row, "special_tokens_mask": tok.get_special_tokens_mask(row, already_has_special_tokens=True)}
            for row in ids.tolist()]


def main() -> None:
    args = parse_args(__doc__)
    import argparse

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--data-cpus", type=int, default=1)
    data_cpus = extra.parse_known_args()[0].data_cpus
    size = SIZES[args.size]
    torch.set_num_threads(1)

    from transformers import DataCollatorForLanguageModeling

    from sslab import corpus, pipeline, prepared
    from sslab.config import DataConfig, build
    from sslab.objectives import get
    from sslab.tokenizer import train_tokenizer, vocab_of
    from sslab.config import TokenizerConfig

    result = Result(__file__, "Data pipeline: tokens/s per CPU core delivered to a training worker", args.size,
                    args.reps, params={**size, "data_cpus": data_cpus, "objective": "mlm (15 %, 80/10/10)"})
    with scratch("data") as tmp, Timer() as wall:
        folder = Path(tmp) / "corpus"
        folder.mkdir()
        texts = write_corpus(folder, size["docs"])
        cfg = build({"corpus": {"source": str(folder), "val_fraction": 0.01},
                     "train": {"seq_len": size["seq_len"], "batch_size": size["batch_size"]}})
        tok = train_tokenizer(TokenizerConfig(), texts[:5000], cfg.model.max_positions)
        vocab = vocab_of(tok)
        objective = get("mlm")(cfg.objective, vocab)
        tok_json = tok.backend_tokenizer.to_str()
        backend = tok.backend_tokenizer

        ray.init(address="local", num_cpus=data_cpus, include_dashboard=False, logging_level="WARNING")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False

        def delivered(ds) -> float:
            """Tokens/s per data CPU that reach the consumer as torch batches."""
            tokens = 0
            with Timer() as t:
                for batch in pipeline.torch_batches(ds, size["batch_size"], 2, torch.device("cpu")):
                    tokens += batch["input_ids"].numel()
            return tokens / t.seconds / data_cpus

        def stream(entry, epochs: int, shuffle: str = "global"):
            """A training worker's stream of ``epochs`` epochs of a prepared entry (one worker)."""
            rows = entry.manifest.splits["train"].rows
            return entry.stream(DataConfig(shuffle=shuffle), cfg.train.seed).dataset(objective, 0, 1, 0, epochs * rows)

        writes = iter(range(1_000_000))

        def raw() -> float:  # what a first run does: prepare (tokenise, pack, write shards), then one epoch
            train, _ = corpus.split(corpus.read_documents(cfg.corpus), cfg.corpus.val_fraction)
            blocks = pipeline.tokenize(train, tok_json, cfg, vocab)
            tokens = 0
            with Timer() as t:
                entry = prepared.write(f"{tmp}/cache", f"raw{next(writes)}", "packed", size["seq_len"],
                                       {"train": blocks}, cfg.data.shard_rows)
                for batch in pipeline.torch_batches(stream(entry, 1), size["batch_size"], 2, torch.device("cpu")):
                    tokens += batch["input_ids"].numel()
            return tokens / t.seconds / data_cpus

        def bare_tokenizer() -> float:
            tokens = 0
            with Timer() as t:
                for i in range(0, len(texts), pipeline.TOKENIZE_BATCH):
                    encodings = backend.encode_batch_fast(texts[i:i + pipeline.TOKENIZE_BATCH], add_special_tokens=False)
                    tokens += sum(len(e.ids) for e in encodings)
            return tokens / t.seconds

        def side_by_side(name: str, theirs: str, ours_fn, theirs_fn, goal: float, note: str = "") -> None:
            say(name)
            got = interleaved({"sslab Ray Data": ours_fn, theirs: theirs_fn}, args.reps, warmup=True)
            result.figures.append(Figure.compare(name, got, "sslab Ray Data", theirs, goal, "tokens/s/core", note=note))

        side_by_side("data (a): raw text to masked batches / bare HF tokenizer", "tokenizers encode_batch_fast",
                     raw, bare_tokenizer, 0.40)

        train, _ = corpus.split(corpus.read_documents(cfg.corpus), cfg.corpus.val_fraction)
        cached = prepared.write(f"{tmp}/cache", "cached", "packed", size["seq_len"],
                                {"train": pipeline.tokenize(train, tok_json, cfg, vocab)}, cfg.data.shard_rows)
        ids = pipeline.to_numpy(cached.read("train"))["input_ids"]
        collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, return_tensors="pt")
        rows = collator_rows(tok, ids)

        def masking_only() -> float:  # several epochs of prepared shards in one pass, as a training run reads them
            return delivered(stream(cached, size["epochs"]))

        def in_corpus_order() -> float:
            return delivered(stream(cached, size["epochs"], shuffle="none"))

        def hf_collator() -> float:
            bs, tokens = size["batch_size"], 0
            with Timer() as t:
                for _ in range(size["epochs"]):
                    for i in range(0, len(rows) - bs + 1, bs):
                        tokens += collator(rows[i:i + bs])["input_ids"].numel()
            return tokens / t.seconds

        side_by_side(FIGURE_B, "DataCollatorForLanguageModeling", masking_only, hf_collator, 3.0,
                     note="HF side: rows as run_mlm.py's Trainer hands them over (Python lists, each with the "
                          "special_tokens_mask its tokenizer returned, computed once, untimed), collated and masked "
                          "on one thread; "
                          "sslab side: the prepared Parquet shards streamed in the default shuffled order, masked in Ray Data "
                          "and delivered as torch batches, per data CPU")
        say("the shuffle's cost: data.shuffle=global against none")
        got = interleaved({"global": masking_only, "none": in_corpus_order}, args.reps, warmup=True)
        result.notes.append(f"the shuffle's cost: prepared shards to masked batches at {statistics.median(got['global']):,.0f} "
                            f"tokens/s/core with data.shuffle=global, {statistics.median(got['none']):,.0f} in corpus "
                            f"order (none): {statistics.median(got['global']) / statistics.median(got['none']):.3f}x")
        result.params["tokens_per_pass"] = int(ids.size)
        ray.shutdown()
        result.notes.append(segmenter_cost(size, args.reps))
    result.wall_s = wall.seconds
    result.save(args.out)


def segmenter_cost(size: dict, reps: int) -> str:
    """The tokenize step (``pipeline.Tokenize``, packed blocks, one core) on the Chinese synthetic
    corpus without and with ``tokenizer.word_segmenter=jieba``: the price of Chinese whole-word
    masking, paid once per corpus as it is prepared (the rows keep the words), never per epoch."""
    from sslab import pipeline
    from sslab.config import SyntheticConfig, TokenizerConfig
    from sslab.synthetic import generate
    from sslab.tokenizer import train_tokenizer, vocab_of

    texts = generate(SyntheticConfig(num_docs=max(size["docs"] // 3, 100), language="zh"), 0,
                     max(size["docs"] // 3, 100))["text"]
    tok = train_tokenizer(TokenizerConfig(vocab_size=3000), texts, 512)
    v = vocab_of(tok)

    def rate(segmenter: str | None):
        step = pipeline.Tokenize(tok.backend_tokenizer.to_str(), size["seq_len"], v.cls_id, v.sep_id, v.pad_id,
                                 word_segmenter=segmenter)

        def run() -> float:
            tokens = 0
            with Timer() as t:
                for i in range(0, len(texts), pipeline.TOKENIZE_BATCH):
                    tokens += step({"text": np.asarray(texts[i:i + pipeline.TOKENIZE_BATCH], dtype=object)}).num_rows
            return tokens * size["seq_len"] / t.seconds
        return run

    say("the segmenter's cost: the tokenize step on Chinese text, without and with jieba")
    got = interleaved({"plain": rate(None), "jieba": rate("jieba")}, reps, warmup=True)
    plain, jieba = statistics.median(got["plain"]), statistics.median(got["jieba"])
    return (f"the segmenter's cost: the tokenize step on {len(texts):,} Chinese synthetic documents, one core: "
            f"{plain:,.0f} tokens/s without a segmenter, {jieba:,.0f} with tokenizer.word_segmenter=jieba "
            f"({plain / jieba:.2f}x slower), paid once per corpus in sslab prepare (the prepared rows keep the words)")


if __name__ == "__main__":
    main()
