"""Parity: sslab's MLM and CLM against Hugging Face's `run_mlm` and `run_clm` recipes, trained
alike on real text in its natural order and scored by one evaluator on files neither side saw.

The corpus is real documentation text (`realtext.py`: what is installed on this machine, one
document per line, its files in sorted order), spread over the whole sorted file list. Whole
files making up 5 % of it, spread likewise, are held out for the evaluation; the others are the
training files, written in their sorted order, as real corpora come. sslab holds 1 % of their lines out for its own validation (by a
hash of each line, `sslab.corpus.is_validation`); the HF side drops the same lines, so both train
on the same documents.

Both sides train the same network from the same initial weights (the model sslab exports, rebuilt
from its config under the same seed), with the same tokenizer (trained by `sslab.prepare` on a
sample of the training files, and given to every run), AdamW with sslab's lr, betas, weight decay,
eps 1e-8 and no decay on biases and norms, sslab's linear warmup and decay over the same steps,
gradient clipping at 1.0, the same batch of blocks of 128 tokens, one process each:

- sslab: `sslab.pretrain(overrides=[...])`, tiny preset, `scaling.num_workers=1`, its defaults
  otherwise: documents packed into `[CLS] … [SEP]` blocks, shuffled (`data.shuffle=global`),
  masked (MLM: 15 %, 80/10/10) as they are read.
- HF: the recipe of transformers' examples/pytorch/language-modeling/run_mlm.py and run_clm.py:
  each line tokenised with its special tokens, `group_texts` (concatenate each `datasets.map`
  batch of 1,000 lines and cut blocks), `DataCollatorForLanguageModeling(mlm_probability=0.15)`
  given `special_tokens_mask` (CLM: `default_data_collator`, labels = input_ids). `Trainer` needs
  `accelerate`, which this project's constraints do not pin, so its loop is reproduced here step
  for step with its defaults: `RandomSampler`, `adamw_torch_fused`, `get_scheduler("linear")`,
  `Trainer.get_decay_parameter_names`, `max_grad_norm=1.0`, the model's own loss. One known
  difference: HF's warmup starts at lr 0 (step / warmup), sslab's at lr / (warmup + 1).

The evaluator scores both models on the held-out files, cut into blocks in both formats: HF's
`group_texts` blocks and sslab's packed blocks (`sslab.pipeline.pack`), at most `eval_blocks` of
each, evenly spread over the files. MLM: the mean cross-entropy of the masked tokens, the masks
drawn once by HF's collator from a fixed seed, so both models read the same masked inputs. CLM:
perplexity of every next token of the text. Both score the text's own tokens only: [CLS] and [SEP]
are artefacts of each format (HF's blocks open every document with [CLS], sslab's separate them by
one [SEP] and close every block with one), which a model trained on the other format cannot know.
Figures: sslab / HF per objective and format. Goal: <= 1.00 (lower is better).

Repetitions train every side again with the next seed (`train.seed` = the HF seed = repetition).

    python benchmarks/parity.py [--size smoke|full] [--reps 1]

`smoke`: 0.3 MB, 20 steps of 8 blocks each side (29 s on 2 cores, imports included). `full`: 9 MB,
400 steps of 32 blocks (35 minutes on 2 cores that other jobs shared: the four trainings took 12, 9,
8 and 5 minutes; on an idle machine expect less).
"""
from __future__ import annotations

import inspect
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import Figure, Result, Timer, parse_args, say, scratch  # noqa: E402
import realtext  # noqa: E402

SIZES = {
    "smoke": dict(megabytes=0.3, steps=20, warmup=2, batch_size=8, vocab_size=2000, eval_blocks=64),
    "full": dict(megabytes=9, steps=400, warmup=40, batch_size=32, vocab_size=8000, eval_blocks=1024),
}
SEQ_LEN = 128
HELD_OUT = 0.05  # share of the chosen text held out for the evaluation, in whole files
VAL_FRACTION = 0.01  # sslab's own validation split; the HF side drops the same lines
PART_BYTES = 1 << 20  # one training file holds about this much
MAP_BATCH = 1000  # `datasets.map(batched=True)`'s default batch: group_texts drops each batch's tail
EVAL_SEED = 1234
EVAL_BATCH = 16
FORMATS = ("HF group_texts blocks", "sslab packed blocks")
RECIPE = {"mlm": "HF run_mlm", "clm": "HF run_clm"}
# One worker with every core, as the HF side has; `prepare` starts Ray sized for it.
SCALING = ["scaling.num_workers=1", f"scaling.cpus_per_worker={os.cpu_count()}"]


# ---------------------------------------------------------------- the corpus


@dataclass
class Corpus:
    train_dir: Path
    eval_lines: list[str]
    train_files: int
    eval_files: int
    train_bytes: int


def file_lines(path: Path) -> list[str]:
    """A file's documents as `realtext` takes them (lines of 3 words or more), whitespace collapsed
    as sslab cleans them, so that both sides read the same text."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return []
    return [" ".join(line.split()) for line in text.splitlines() if len(line.split()) >= 3]


def write_corpus(dest: Path, megabytes: float) -> Corpus:
    """About ``megabytes`` of training files, spread over the sorted documentation files: a file is
    taken while the share of bytes taken so far is below the share wanted, and a taken file is held
    out while the held-out share is below ``HELD_OUT``. Files larger than a 20th of the corpus are
    left out, so that none dominates it (or, at smoke size, is most of it)."""
    files = [lines for lines in map(file_lines, realtext.documentation_files()) if lines]
    size = [sum(len(line.encode()) + 1 for line in lines) for lines in files]
    files, size = zip(*[(f, n) for f, n in zip(files, size) if n <= megabytes * (1 << 20) / 20])
    share = min(1.0, megabytes * (1 << 20) / (1 - HELD_OUT) / sum(size))
    seen = taken = held = 0
    train, held_out = [], []
    for lines, n in zip(files, size):
        seen += n
        if taken < share * seen:
            taken += n
            if held < HELD_OUT * taken:
                held_out.append(lines)
                held += n
            else:
                train.append(lines)
    dest.mkdir(parents=True)
    parts: list[list[str]] = [[]]
    written = 0
    for line in chain.from_iterable(train):
        if written >= PART_BYTES * len(parts):
            parts.append([])
        parts[-1].append(line)
        written += len(line.encode()) + 1
    for i, part in enumerate(parts):
        (dest / f"part-{i:05d}.txt").write_text("\n".join(part) + "\n", encoding="utf-8")
    return Corpus(dest, list(chain.from_iterable(held_out)), len(train), len(held_out), written)


def training_lines(corpus: Corpus) -> list[str]:
    """The documents sslab trains on: every line of the training files in order, less the ones it
    holds out for its own validation."""
    from sslab.corpus import is_validation

    lines = chain.from_iterable(p.read_text(encoding="utf-8").splitlines() for p in sorted(corpus.train_dir.iterdir()))
    return [line for line in lines if line and not is_validation(line, VAL_FRACTION)]


# ---------------------------------------------------------------- sslab


def sslab_run(objective: str, corpus: Corpus, tok_dir: str, cache: Path, out: Path, size: dict, seed: int):
    """One `sslab.pretrain` of ``objective``, tiny preset, one worker on every core."""
    import sslab

    steps = size["steps"]
    return sslab.pretrain(None, overrides=[
        f"objective.name={objective}", f"corpus.source={corpus.train_dir}", f"corpus.val_fraction={VAL_FRACTION}",
        f"data.cache_dir={cache}", f"tokenizer.path={tok_dir}", "model.preset=tiny", f"train.seq_len={SEQ_LEN}",
        f"train.batch_size={size['batch_size']}", f"train.max_steps={steps}", f"train.warmup_steps={size['warmup']}",
        f"train.seed={seed}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}", "eval.max_blocks=64",
        "eval.probe_docs=0", *SCALING, f"run.out={out}", "run.quiet=true", "track.tensorboard=false"])


# ---------------------------------------------------------------- the HF recipe


def group_texts(examples: dict[str, list[list[int]]], block_size: int) -> dict[str, np.ndarray]:
    """run_mlm.py's and run_clm.py's `group_texts`, as `datasets.map(batched=True)` applies it: each
    batch of ``MAP_BATCH`` examples concatenated and cut into blocks, its tail dropped."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in examples}
    n = len(next(iter(examples.values())))
    for start in range(0, n, MAP_BATCH):
        for k, seqs in examples.items():
            flat = np.fromiter(chain.from_iterable(seqs[start:start + MAP_BATCH]), dtype=np.int32)
            out[k].append(flat[: len(flat) // block_size * block_size].reshape(-1, block_size))
    return {k: np.concatenate(v) for k, v in out.items()}


class Rows(torch.utils.data.Dataset):
    """Blocks as a `datasets` table hands them to a collator: one dict of Python lists per row."""

    def __init__(self, columns: dict[str, np.ndarray]):
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["input_ids"])

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {k: v[i].tolist() for k, v in self.columns.items()}


def recipe_rows(objective: str, tok, lines: list[str]) -> Rows:
    """The training blocks as the recipe makes them: run_mlm tokenises with
    ``return_special_tokens_mask``, run_clm copies ``input_ids`` into ``labels`` after grouping."""
    encoded = tok(lines, return_special_tokens_mask=objective == "mlm")
    blocks = group_texts(dict(encoded), SEQ_LEN)
    if objective == "clm":
        blocks["labels"] = blocks["input_ids"].copy()
    return Rows(blocks)


def optimizer(model: torch.nn.Module, t) -> torch.optim.Optimizer:
    """Trainer's AdamW (`adamw_torch_fused`, its default on torch >= 2.8): weight decay on the
    parameters `Trainer.get_decay_parameter_names` names (not biases, not norms)."""
    from transformers import Trainer

    decay = set(Trainer.get_decay_parameter_names(None, model))  # it reads nothing of the Trainer
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if n in decay], "weight_decay": t.weight_decay},
              {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, eps=1e-8, fused=True)


def hf_train(objective: str, config_dir: Path, tok, lines: list[str], t, out: Path) -> None:
    """Build the model from ``config_dir``'s config and train it as `Trainer.train` would, with
    the run's ``t`` (sslab's resolved `TrainConfig`); save it into ``out``."""
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM,
                              DataCollatorForLanguageModeling, default_data_collator, get_scheduler, set_seed)

    assert t.schedule == "linear" and t.min_lr_ratio == 0 and t.grad_accum == 1, "the recipe's schedule"
    rows = recipe_rows(objective, tok, lines)
    set_seed(t.seed)  # run_*.py seed before building the model, as sslab does
    auto = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    model = auto.from_config(AutoConfig.from_pretrained(config_dir), attn_implementation="sdpa")
    collate = (DataCollatorForLanguageModeling(tok, mlm_probability=0.15) if objective == "mlm"
               else default_data_collator)
    set_seed(t.seed)  # Trainer.__init__ seeds again
    opt = optimizer(model, t)
    schedule = get_scheduler("linear", opt, num_warmup_steps=t.warmup_steps, num_training_steps=t.max_steps)
    loader = torch.utils.data.DataLoader(rows, batch_size=t.batch_size, sampler=torch.utils.data.RandomSampler(rows),
                                         collate_fn=collate)
    accepted = set(inspect.signature(model.forward).parameters)  # Trainer's remove_unused_columns
    model.train()
    step = 0
    while step < t.max_steps:
        for batch in loader:
            model(**{k: v for k, v in batch.items() if k in accepted}).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            schedule.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == t.max_steps:
                break
    model.save_pretrained(out)


# ---------------------------------------------------------------- the evaluator


def spread(blocks: np.ndarray, most: int) -> torch.Tensor:
    """At most ``most`` rows, evenly spaced, so every held-out file is represented."""
    rows = np.unique(np.linspace(0, len(blocks) - 1, min(most, len(blocks))).round().astype(int))
    return torch.as_tensor(blocks[rows], dtype=torch.long)


def eval_blocks(tok, lines: list[str], most: int) -> dict[str, torch.Tensor]:
    """The held-out text in both formats: HF's `group_texts` blocks and sslab's packed blocks."""
    from sslab import pipeline

    hf = group_texts({"input_ids": tok(lines)["input_ids"]}, SEQ_LEN)["input_ids"]
    bare = tok(lines, add_special_tokens=False)["input_ids"]
    packed = pipeline.to_numpy(pipeline.pack(bare, SEQ_LEN, tok.cls_token_id, tok.sep_token_id))["input_ids"]
    return dict(zip(FORMATS, (spread(hf, most), spread(packed, most))))


def fixed_masks(tok, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked inputs and their labels, drawn once (15 %, 80/10/10) by HF's collator from a fixed seed."""
    from transformers import DataCollatorForLanguageModeling

    special = torch.isin(blocks, torch.tensor(tok.all_special_ids)).long()
    collate = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, seed=EVAL_SEED)
    masked = collate([{"input_ids": ids, "special_tokens_mask": mask}
                      for ids, mask in zip(blocks.tolist(), special.tolist())])
    return masked["input_ids"], masked["labels"]


def text_labels(tok, blocks: torch.Tensor) -> torch.Tensor:
    """CLM's targets: the text's own tokens. Special tokens are the formats' artefacts, not text:
    after a document's [SEP] comes [CLS] in HF's blocks and the next document in sslab's, and
    sslab's blocks end in a [SEP] that closes no document; a model trained on one format would
    be charged for not knowing the other's."""
    return blocks.masked_fill(torch.isin(blocks, torch.tensor(tok.all_special_ids)), -100)


def eval_sets(tok, blocks: dict[str, torch.Tensor]) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Per objective and format, the inputs and labels every model of that objective is scored on."""
    return {"mlm": {fmt: fixed_masks(tok, ids) for fmt, ids in blocks.items()},
            "clm": {fmt: (ids, text_labels(tok, ids)) for fmt, ids in blocks.items()}}


@torch.no_grad()
def mean_loss(objective: str, model, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy over the scored tokens: MLM's masked ones, CLM's next ones."""
    nll, count = 0.0, 0
    for i in range(0, len(inputs), EVAL_BATCH):
        logits, target = model(input_ids=inputs[i:i + EVAL_BATCH]).logits, labels[i:i + EVAL_BATCH]
        if objective == "clm":  # position t predicts token t + 1
            logits, target = logits[:, :-1], target[:, 1:]
        scored = target != -100
        nll += F.cross_entropy(logits[scored].float(), target[scored], reduction="sum").item()
        count += int(scored.sum())
    return nll / count


def score(objective: str, model_dir: Path, sets: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Per format: MLM's mean masked loss, CLM's perplexity, of the model saved in ``model_dir``."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    auto = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    model = auto.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    losses = {fmt: mean_loss(objective, model, inputs, labels) for fmt, (inputs, labels) in sets.items()}
    return losses if objective == "mlm" else {fmt: math.exp(loss) for fmt, loss in losses.items()}


# ---------------------------------------------------------------- the benchmark


@dataclass
class Bench:
    """What every repetition shares: the corpus, its prepared cache and tokenizer, the lines the
    HF side trains on, the evaluation sets; and what the repetitions measured."""

    tmp: Path
    size: dict
    corpus: Corpus
    tok_dir: str
    tok: object
    lines: list[str]
    blocks: dict[str, torch.Tensor]
    got: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """``"sslab mlm"`` -> format -> one value per repetition."""
    took: dict[str, list[float]] = field(default_factory=dict)
    """Seconds per run, ``"hf clm"`` -> one per repetition."""


def setup(tmp: Path, size: dict) -> Bench:
    """Write the corpus, let `sslab.prepare` train the tokenizer and prepare the blocks once."""
    import sslab
    from transformers import AutoTokenizer

    corpus = write_corpus(tmp / "corpus", size["megabytes"])
    say(f"corpus: {corpus.train_files} training files ({corpus.train_bytes / 2**20:.1f} MB), "
        f"{corpus.eval_files} held out ({len(corpus.eval_lines):,} lines)")
    prepared = sslab.prepare(overrides=[f"corpus.source={corpus.train_dir}", f"corpus.val_fraction={VAL_FRACTION}",
                                        f"data.cache_dir={tmp / 'cache'}", f"tokenizer.vocab_size={size['vocab_size']}",
                                        f"train.seq_len={SEQ_LEN}", *SCALING, "run.quiet=true"])
    tok = AutoTokenizer.from_pretrained(str(prepared.tokenizer_dir))
    return Bench(tmp, size, corpus, str(prepared.tokenizer_dir), tok, training_lines(corpus),
                 eval_blocks(tok, corpus.eval_lines, size["eval_blocks"]))


def repetition(b: Bench, rep: int, sets: dict) -> object:
    """Both objectives, each trained by sslab then by the recipe under seed ``rep``, and scored.
    Returns the last sslab run's resolved config."""
    for objective in ("mlm", "clm"):
        with Timer() as t:
            run = sslab_run(objective, b.corpus, b.tok_dir, b.tmp / "cache", b.tmp / f"sslab-{objective}-{rep}",
                            b.size, rep)
        b.took.setdefault(f"sslab {objective}", []).append(t.seconds)
        torch.set_num_threads(os.cpu_count())  # sslab's run set its worker's thread count in this process
        hf_dir = b.tmp / f"hf-{objective}-{rep}"
        with Timer() as t:
            hf_train(objective, run.model_dir, b.tok, b.lines, run.config.train, hf_dir)
        b.took.setdefault(f"hf {objective}", []).append(t.seconds)
        for side, model_dir in (("sslab", run.model_dir), ("hf", hf_dir)):
            for fmt, value in score(objective, model_dir, sets[objective]).items():
                b.got.setdefault(f"{side} {objective}", {}).setdefault(fmt, []).append(value)
        say(f"rep {rep + 1} {objective}: " + "; ".join(
            f"{fmt}: sslab {b.got[f'sslab {objective}'][fmt][-1]:.4g}, HF {b.got[f'hf {objective}'][fmt][-1]:.4g}"
            for fmt in FORMATS))
    return run.config


def figures(got: dict[str, dict[str, list[float]]]) -> list[Figure]:
    out = []
    for objective, (what, unit) in {"mlm": ("held-out masked loss", "nats"), "clm": ("held-out perplexity", "ppl")}.items():
        for fmt in FORMATS:
            ours, theirs = got[f"sslab {objective}"][fmt], got[f"hf {objective}"][fmt]
            scored = ("the same masks (15 % of the text's tokens, 80/10/10), drawn from a fixed seed, for both models"
                      if objective == "mlm" else "every next token of the text (special tokens are not scored)")
            out.append(Figure(f"parity {objective.upper()}: sslab / {RECIPE[objective]}, {what}, {fmt}",
                              [a / b for a, b in zip(ours, theirs)], 1.0, ours, theirs, unit, "sslab",
                              RECIPE[objective], lower_is_better=True,
                              note=f"one evaluator, on files neither side trained on, in {fmt}: {scored}"))
    return out


def notes(b: Bench, cfg) -> list[str]:
    t, c = cfg.train, b.corpus
    return [
        f"corpus: {c.train_files} training files of real documentation text in sorted order "
        f"({c.train_bytes / 2**20:.1f} MB; {len(b.lines):,} lines, the same on both sides), {c.eval_files} files held "
        f"out ({len(c.eval_lines):,} lines), scored as " + " and ".join(f"{len(x):,} {f}" for f, x in b.blocks.items()),
        f"both sides: tiny preset from the same initial weights, tokenizer of {len(b.tok):,} tokens, {t.max_steps} steps "
        f"of {t.batch_size} blocks of {SEQ_LEN}, AdamW lr {t.lr:g}, betas {tuple(t.betas)}, weight decay "
        f"{t.weight_decay:g}, linear warmup over {t.warmup_steps} steps and decay to 0, clipping at {t.grad_clip:g}; "
        "the HF side runs Trainer's loop reproduced here (the constraints pin no accelerate, which Trainer needs)",
        "seconds per run (sslab: its run, export included, on the prepared cache; HF: tokenising, grouping, "
        "training, saving): " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in b.took.items())]


def main() -> None:
    args = parse_args(__doc__, default_reps=1)
    size = SIZES[args.size]
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "sequence longer than model_max_length": group_texts cuts it
    hf_logging.disable_progress_bar()
    result = Result(__file__, "Parity: sslab's MLM and CLM against HF's run_mlm and run_clm on real text", args.size,
                    args.reps, params={**size, "seq_len": SEQ_LEN, "preset": "tiny", "held_out": HELD_OUT,
                                       "threads": os.cpu_count()})
    with scratch("parity") as tmp, Timer() as wall:
        b = setup(Path(tmp), size)
        sets = eval_sets(b.tok, b.blocks)
        for rep in range(args.reps):
            cfg = repetition(b, rep, sets)
        result.figures += figures(b.got)
        result.notes += notes(b, cfg)
    result.wall_s = wall.seconds
    result.save(args.out)


if __name__ == "__main__":
    main()
