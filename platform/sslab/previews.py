"""``sslab preview``: the first rows of a corpus as training sees them, tokenised and corrupted,
in seconds and without Ray.

The first documents of the corpus are read here with the corpus's own parsers (the training
split only), tokenised into the objective's unit by the very function and arguments that
``sslab prepare`` maps over the corpus (:func:`sslab.pipeline.tokenize`), and corrupted by
:func:`sslab.pipeline.corrupt` with the run's seed and the chosen epoch, as each training worker
corrupts its rows (:func:`sslab.stream.read_window`). A row's corruption depends only on its
ids, the seed and the epoch (:class:`~sslab.rng.RowRandom`), so a row shown here is, id for id,
the row training reads, with one exception: NSP's random second segment comes from another row
of the same batch, and training batches its rows in another order.

The tokenizer is the run's: ``tokenizer.path`` (or ``model.init_from``'s, or the one a run in
``run.out`` saved), else the one the data cache keeps for this corpus once ``sslab prepare``
(or a run) has trained it. Before that, a tokenizer is trained on the documents read here: the
tokens look alike, but the ids are not the run's, which trains on a sample of the whole corpus.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.extensions import ArrowTensorArray

from sslab import corpus as corpus_mod
from sslab import pipeline, prepared, runs
from sslab import tokenizer as tokenizers_mod
from sslab.config import Config, CorpusConfig, build, load, merge, parse_overrides, require
from sslab.errors import RunError
from sslab.objectives import get as get_objective
from sslab.objectives.base import IGNORE

MAX_DOCS = 2000
"""Documents read from the start of the corpus: the rows, and the tokenizer trained when no run's is found."""
MAX_BYTES = 8 << 20
"""Bytes read from the start of the corpus's text files, at most."""
OBJECTIVE_NAME = re.compile(r"[a-z0-9_]+(\+[a-z0-9_]+)*")
# Scripts written without spaces between words: WordPiece's decoder spaces out their characters.
CJK = re.compile(r"[\u2e80-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def preview(objective_or_config=None, corpus: str | None = None, overrides: list[str] | None = None, n: int = 5,
            epoch: int = 0) -> list[dict]:
    """The first ``n`` training rows of a corpus as the objective corrupts them in ``epoch``.

    ``objective_or_config``: an objective name or mixture (``"mlm"``, ``"mlm+sop"``), or what
    :func:`sslab.resolve` takes (a Config, a dict, a YAML path; None: the defaults); ``corpus``
    sets ``corpus.source``; ``overrides`` are ``key=value`` strings (``train.seed=3``,
    ``objective.mask_ratio=0.3``). Bad input raises the one-line errors of ``sslab pretrain``.

    Each row is a plain dict: ``row_id``, ``views`` (per part of the objective, what it makes of
    the row: masked tokens with their marks and labels, the two segments and the label, the two
    views, the corrupted input and the target), ``batch`` (every column training's batch holds
    for the row, as lists) and ``source`` (the prepared row before corruption), plus what was
    previewed (``objective``, ``corpus``, ``epoch``, ``seed``, ``tokenizer``, and ``documents``:
    how many were read).
    """
    cfg = _config(objective_or_config, corpus, overrides)
    require(isinstance(n, int) and n >= 1, "n", n, "an integer >= 1")
    require(isinstance(epoch, int) and epoch >= 0, "epoch", epoch, "an integer >= 0")
    files = corpus_mod.check(cfg.corpus)
    docs = first_documents(cfg.corpus, files)
    objective_cls = get_objective(cfg.objective.name)
    extra = objective_cls.extra_tokens(cfg.objective)  # T5's sentinels
    tok, origin = run_tokenizer(cfg, files, docs.column("text").to_pylist())
    with tempfile.TemporaryDirectory() as scratch:
        tokenizers_mod.add_tokens(tok, extra, Path(scratch))
    vocab = tokenizers_mod.vocab_of(tok, extra)
    objective = objective_cls(cfg.objective, vocab)
    objective.check_seq_len(cfg.train.seq_len, cfg.eval)
    rows = tokenize(docs, tok.backend_tokenizer.to_str(), cfg, vocab, objective.unit)
    if rows.num_rows == 0:
        from sslab.runner import too_small  # late: the runner imports the training side

        raise RunError(f"the first {docs.num_rows} training documents of corpus {cfg.corpus.source!r} give no "
                       f"{objective.unit} row: {too_small(objective.unit, cfg.train.seq_len)}")
    source = pipeline.to_numpy(rows.slice(0, pipeline.CORRUPT_BATCH))  # one training chunk at most
    batch = pipeline.corrupt(source, objective, cfg.train.seed, epoch)
    about = {"objective": cfg.objective.name, "unit": objective.unit, "corpus": cfg.corpus.source, "epoch": epoch,
             "seed": cfg.train.seed, "seq_len": cfg.train.seq_len, "tokenizer": origin, "documents": docs.num_rows}
    return [describe(i, objective, tok, source, batch, about) for i in range(min(n, rows.num_rows))]


def _config(objective_or_config, corpus: str | None, overrides: list[str] | None) -> Config:
    """The config as :func:`sslab.resolve` makes it (without importing the training side: torch)."""
    x, flags = objective_or_config, []
    if isinstance(x, str) and OBJECTIVE_NAME.fullmatch(x) and not Path(x).is_file():
        x, flags = None, [f"objective.name={x}"]
    if corpus is not None:
        flags.append(f"corpus.source={corpus}")
    overrides = flags + list(overrides or [])
    if isinstance(x, Config):
        x = x.to_dict()
    return build(merge(x, parse_overrides(overrides))) if isinstance(x, dict) else load(x, overrides)


# ---------------------------------------------------------------- the corpus's first documents


def first_documents(cfg: CorpusConfig, files: corpus_mod.CorpusFiles | None) -> pa.Table:
    """The cleaned ``{text, label}`` documents of the training split at the start of the corpus (at
    most :data:`MAX_DOCS`), read here with the parsers of Ray Data's read tasks (a malformed file
    raises their CorpusError)."""
    tables, count = [], 0
    for table in _tables(cfg, files):
        train = [not corpus_mod.is_validation(t, cfg.val_fraction) for t in table.column("text").to_pylist()]
        tables.append(table.filter(pa.array(train, pa.bool_())))
        count += tables[-1].num_rows
        if count >= MAX_DOCS:
            break
    return pa.concat_tables(tables).slice(0, MAX_DOCS) if tables else corpus_mod.SCHEMA.empty_table()


def _tables(cfg: CorpusConfig, files: corpus_mod.CorpusFiles | None):
    """Cleaned ``{text, label}`` tables from the start of the corpus, in its order."""
    if files is None:  # the synthetic corpus
        from sslab.synthetic import generate

        docs = generate(cfg.synthetic, 0, min(cfg.synthetic.num_docs, MAX_DOCS))
        yield corpus_mod._clean(pa.table(docs), "text", "label", cfg.min_chars)
        return
    fmt, budget = corpus_mod.resolve_format(cfg, files.uris), MAX_BYTES
    for path, size in zip(files.paths, files.sizes):
        if fmt == "parquet":
            yield from _parquet(cfg, files, path)
            continue
        if budget <= 0:
            return
        with files.filesystem.open_input_file(path) as f:
            data = f.read(budget)
        budget -= len(data)
        if len(data) < size:  # cut short: drop the last, partial document
            cut = data.rfind(b"\n\n" if cfg.doc_split == "paragraph" and fmt == "text" else b"\n")
            data = data[:max(cut, 0)]
        parsed = corpus_mod._parse_files({"bytes": [data], "path": [path]}, fmt, cfg, files.prefix)
        yield corpus_mod._clean(parsed, "text", "label", cfg.min_chars)


def _parquet(cfg: CorpusConfig, files: corpus_mod.CorpusFiles, path: str):
    columns = [cfg.text_field] + ([cfg.label_field] if cfg.label_field else [])
    with files.filesystem.open_input_file(path) as f:
        for part in pq.ParquetFile(f).iter_batches(batch_size=MAX_DOCS, columns=columns):
            yield corpus_mod._clean(pa.Table.from_batches([part]), cfg.text_field, cfg.label_field, cfg.min_chars)


# ---------------------------------------------------------------- tokenizer and rows, as a run makes them


def run_tokenizer(cfg: Config, files, texts: list[str]):
    """The tokenizer a run of ``cfg`` would use, and a line saying where it came from."""
    given = tokenizers_mod.source_dir(cfg.tokenizer, runs.directory(cfg), cfg.model.init_from)
    if given:
        return tokenizers_mod.load_tokenizer(given), f"the run's, from {given}"
    root = prepared.cache_root(cfg.data)
    key = prepared.tokenizer_key(corpus_mod.fingerprint(cfg.corpus, files), cfg.tokenizer, cfg.model.max_positions,
                                 cfg.train.seed)
    cached = prepared.tokenizer_dir(root, key)
    if cached is not None and (cached / tokenizers_mod.COMPLETE).is_file():
        return tokenizers_mod.load_tokenizer(cached), f"the run's, trained for this corpus (data cache: {cached})"
    sample = texts[:cfg.tokenizer.sample_docs]
    tok = tokenizers_mod.train_tokenizer(cfg.tokenizer, sample, cfg.model.max_positions)
    return tok, (f"trained here on these {len(sample)} documents; a run trains its own on a sample of the whole "
                 "corpus (`sslab prepare` first to preview with it)")


class _Steps:
    """Stands in for the Ray Dataset :func:`sslab.pipeline.tokenize` maps over: it records the
    steps, which :func:`tokenize` then runs here, with the same functions and arguments."""

    def __init__(self):
        self.steps = []

    def map_batches(self, fn, **options):
        self.steps.append((fn, options))
        return self


def tokenize(docs: pa.Table, tokenizer_json: str, cfg: Config, vocab, unit: str) -> pa.Table:
    """The rows of ``unit`` that the first batch of ``docs`` gives (training's first rows), made by
    the steps ``sslab prepare`` maps over the corpus, with their functions and arguments."""
    plan = pipeline.tokenize(_Steps(), tokenizer_json, cfg, vocab, unit)
    for fn, options in plan.steps:
        if isinstance(fn, type):
            fn = fn(**options.get("fn_constructor_kwargs", {}))
        docs = _run(fn, docs.slice(0, options.get("batch_size") or docs.num_rows), options)
    return docs


def _run(fn, table: pa.Table, options: dict) -> pa.Table:
    batch = table if options.get("batch_format") == "pyarrow" else pipeline.to_numpy(table)
    out = fn(batch, **options.get("fn_kwargs", {}))
    if isinstance(out, pa.Table):
        return out
    return pa.table({k: ArrowTensorArray.from_numpy(v) if np.ndim(v) > 1 else pa.array(v) for k, v in out.items()})


# ---------------------------------------------------------------- what each part of the objective makes of a row


def describe(i: int, objective, tok, source: dict, batch: dict, about: dict) -> dict:
    """Row ``i`` of the corrupted ``batch`` as a plain dict (see :func:`preview`)."""
    text = Text(tok, objective.vocab)
    row = {k: np.asarray(v[i]) for k, v in batch.items()}
    views = [VIEWS.get(part.name, columns_view)(part, text, row) for part in getattr(objective, "members", [objective])]
    return {**about, "row": i, "row_id": int(source["row_id"][i]), "views": views,
            "batch": {k: v.tolist() for k, v in row.items()},
            "source": {k: np.asarray(v[i]).tolist() for k, v in source.items() if k != "row_id"}}


class Text:
    """Token ids as text, by the tokenizer's own decoder, token by token."""

    WINDOW = 8  # tokens of context decoded before each one: enough for a character split into bytes

    def __init__(self, tok, vocab):
        self.tok, self.vocab = tok, vocab

    def trim(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` without the padding after the row's last token."""
        if self.vocab.pad_id == self.vocab.sep_id:
            return ids
        real = np.flatnonzero(ids != self.vocab.pad_id)
        return ids[:real[-1] + 1] if len(real) else ids[:0]

    def pieces(self, ids) -> list[str]:
        """Each token's share of the decoded text, with the space before it; a character that
        byte-level BPE splits into several tokens goes to its last token."""
        ids = [int(x) for x in ids]
        out, start, last = [], 0, ""
        for i in range(len(ids)):
            s = max(0, start - self.WINDOW)
            before, now = self._decode(ids[s:start]), self._decode(ids[s:i + 1])
            if now.endswith("\ufffd") and i - start < 3:  # the character's bytes go on
                out.append("")
                continue
            piece = now[len(os.path.commonprefix([before, now])):]
            if piece[:1] == " " and CJK.match(piece[1:2]) and CJK.match(last):
                piece = piece[1:]  # WordPiece spaces out Chinese characters; the text had no spaces
            out.append(piece)
            start, last = i + 1, (piece[-1:] or last)
        if start < len(ids):  # bytes that never made a character
            out[-1] = self._decode(ids[start:])
        return out

    def __call__(self, ids) -> str:
        return "".join(self.pieces(ids)).strip()

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) if ids else ""

    def tokens(self, ids) -> list[str]:
        return self.tok.convert_ids_to_tokens([int(x) for x in ids])

    def alone(self, ids) -> str:
        """Tokens out of context (a random replacement): as text, or as tokens where they are not."""
        text = self(ids)
        return text if text and "\ufffd" not in text else " ".join(self.tokens(ids))


def marked(pieces: list[str], marks: list[str], render) -> list[list[str]]:
    """Text runs ``[mark, text]``: unmarked text, and each run of equally marked tokens as
    ``render(text, positions, mark)`` puts it."""
    runs, j = [], 0
    while j < len(pieces):
        k = j
        while k < len(pieces) and marks[k] == marks[j]:
            k += 1
        words = "".join(pieces[j:k])
        if not marks[j]:
            runs.append(["", words])
        else:
            lead = words[:len(words) - len(words.lstrip())]
            runs += [["", lead], [marks[j], render(words.lstrip(), list(range(j, k)), marks[j])]]
        j = k
    return [r for r in runs if r[1]]


def masked_view(part, text: Text, row: dict) -> dict:
    """Masked tokens (mlm, electra's generator): what was selected, and what became of it."""
    ids = text.trim(row["input_ids"])
    labels = row["labels"][:len(ids)]
    selected = labels != IGNORE
    original = np.where(selected, labels, ids)
    action = np.where(ids == text.vocab.mask_id, "mask", np.where(ids == labels, "kept", "random"))
    marks = np.where(selected, action, "").tolist()
    mask = text.tok.convert_ids_to_tokens(text.vocab.mask_id)

    def render(word, positions, mark):
        if mark == "kept":
            return f"«={word}»"
        shown = mask * len(positions) if mark == "mask" else "~" + text.alone(ids[positions])
        return f"«{word}→{shown}»"

    runs = marked(text.pieces(original), marks, render)
    counts = {"tokens": int((~np.isin(original, text.vocab.special_ids)).sum()), "selected": int(selected.sum()),
              **{m: marks.count(m) for m in ("mask", "random", "kept")}}
    view = {"part": part.name, "kind": "masked", "text": "".join(t for _, t in runs).strip(), "runs": runs,
            "tokens": text.tokens(ids), "labels": labels.tolist(), "marks": marks, "counts": counts,
            "mask_token": mask, "keys": ["input_ids", "labels"]}
    if "original" in row:  # ELECTRA
        view["note"] = "the generator's input: its samples replace the masks in the discriminator's input"
        view["keys"].append("original")
    return view


PAIR_LABELS = {"sop": ("in order", "swapped: B comes first in the document"),
               "nsp": ("B follows A in the document", "B is a segment of another document")}


def pair_view(part, text: Text, row: dict) -> dict:
    """The two segments the pair head reads (before any masking by another part) and the label."""
    ids = text.trim(row["input_ids"])
    if "labels" in row and row["labels"].shape == row["input_ids"].shape:  # a mixture's mlm masked them
        ids = np.where(row["labels"][:len(ids)] != IGNORE, row["labels"][:len(ids)], ids)
    a, b = np.split(ids[1:], np.flatnonzero(ids[1:] == text.vocab.sep_id) + 1)[:2]  # [CLS] A [SEP] B [SEP]
    segments = [text(a[:-1]), text(b[:-1])]
    label = int(row[f"{part.name}_label"])
    meaning = PAIR_LABELS.get(part.name, ("0", "1"))[label]
    return {"part": part.name, "kind": "pair", "segments": segments, "label": label, "meaning": meaning,
            "keys": ["input_ids", f"{part.name}_label"]}


def views_view(part, text: Text, row: dict) -> dict:
    """The id arrays the encoder reads, one per view (SimCSE: the same sentence twice)."""
    keys = list(part.encoder_inputs)
    return {"part": part.name, "kind": "views", "views": [text(text.trim(row[k])) for k in keys],
            "note": "the same ids twice: the encoder's dropout makes them two views" if len(set(keys)) == 1 else "",
            "keys": keys + ["input_ids"]}  # input_ids: the copy a mixture's mlm masks


def seq2seq_view(part, text: Text, row: dict) -> dict:
    """The corrupted encoder input and the decoder's target (T5 span corruption, BART denoising);
    where the row says which target tokens were noised, they are marked."""
    target = text.trim(row["labels"])
    pieces = text.pieces(target)
    marks = [""] * len(pieces)
    if "noised" in row:
        marks = np.where(row["noised"][:len(target)] > 0, "noised", "").tolist()
    runs = marked(pieces, marks, lambda word, positions, mark: f"«{word}»")
    return {"part": part.name, "kind": "seq2seq", "input": text(text.trim(row["input_ids"])),
            "target": "".join(t for _, t in runs).strip(), "runs": runs,
            "keys": ["input_ids", "labels", "noised", "attention_mask"]}


def causal_view(part, text: Text, row: dict) -> dict:
    """The input and its targets: each token, predicted from the ones before it."""
    ids, labels = text.trim(row["input_ids"]), row["labels"]
    tokens = text.tokens(ids)
    scored = [j for j in range(1, len(ids)) if labels[j] != IGNORE]
    return {"part": part.name, "kind": "causal", "input": text(ids), "scored": len(scored), "tokens": len(ids),
            "next": [[tokens[j - 1], tokens[j]] for j in scored[:6]], "keys": ["input_ids", "labels"]}


def columns_view(part, text: Text, row: dict) -> dict:
    """An objective this module does not know (a plug-in): its columns, ids as text."""
    return {"part": part.name, "kind": "columns", "columns": {k: summary(v, text) for k, v in row.items()},
            "keys": list(row)}


def summary(value: np.ndarray, text: Text | None = None) -> str:
    """One column of one row, in a few words (ids, as text)."""
    if value.ndim == 0:
        return str(value.item())
    if value.dtype == bool or set(np.unique(value).tolist()) <= {0, 1}:
        return f"{value.size} flags, {int(value.astype(bool).sum())} set"
    if text is not None and np.issubdtype(value.dtype, np.integer) and value.ndim == 1 and \
            value.min() >= 0 and value.max() < text.vocab.size:
        return text(text.trim(value))
    return f"{value.size} values ({value.dtype})"


VIEWS = {"mlm": masked_view, "electra": masked_view, "sop": pair_view, "nsp": pair_view, "simcse": views_view,
         "span": seq2seq_view, "denoise": seq2seq_view, "clm": causal_view}


# ---------------------------------------------------------------- for people


COLORS = {"mask": "\033[1;31m", "noised": "\033[1;31m", "random": "\033[1;33m", "kept": "\033[1;32m"}
RESET = "\033[0m"


def format_rows(rows: list[dict], color: bool = False) -> str:
    """:func:`preview`'s rows as text for a terminal (``color``: ANSI colours on the marked runs)."""
    about, plural = rows[0], "s" * (len(rows) > 1)
    lines = [f"{about['objective']} on {about['corpus']}: the first {len(rows)} training row{plural} ({about['unit']}, "
             f"train.seq_len={about['seq_len']}) as epoch {about['epoch']} corrupts them with seed {about['seed']}",
             f"tokenizer: {about['tokenizer']}"]
    lines += legend(about["views"])
    width = max(len(v["part"]) for v in about["views"]) + 2
    for row in rows:
        lines += ["", f"row {row['row'] + 1} (row_id {row['row_id']:016x})"]
        for view in row["views"]:
            body = FORMATS[view["kind"]](view, color)
            lines += [f"  {(view['part'] if k == 0 else ''):<{width}}{line}" for k, line in enumerate(body)]
        used = {k for v in row["views"] for k in v["keys"]}
        lines += [f"  {'':<{width}}{k}: {summary(np.asarray(v))}" for k, v in row["batch"].items() if k not in used]
    return "\n".join(lines)


def legend(views: list[dict]) -> list[str]:
    kinds = {v["kind"] for v in views}
    out = []
    if "masked" in kinds:
        mask = next(v["mask_token"] for v in views if v["kind"] == "masked")
        out.append(f"marks: «w→{mask}» masked · «w→~x» replaced by the random token x · «=w» selected, "
                   "kept as it is; w is the label")
    if any(v["kind"] == "seq2seq" and any(m == "noised" for m, _ in v["runs"]) for v in views):
        out.append("marks: «w» in the target: inside a masked span of the input")
    return out


def paint(runs: list[list[str]], color: bool) -> str:
    text = "".join(COLORS[m] + t + RESET if color and m in COLORS else t for m, t in runs)
    return text.strip()


def _masked(view: dict, color: bool) -> list[str]:
    c = view["counts"]
    share = c["selected"] / max(c["tokens"], 1)
    lines = [paint(view["runs"], color),
             f"{c['selected']} of {c['tokens']} tokens selected ({share:.1%}): {c['mask']} masked, "
             f"{c['random']} random, {c['kept']} kept"]
    return lines + ([view["note"]] if view.get("note") else [])


def _pair(view: dict, color: bool) -> list[str]:
    return [f"label {view['label']}: {view['meaning']}", f"A: {view['segments'][0]}", f"B: {view['segments'][1]}"]


def _views(view: dict, color: bool) -> list[str]:
    lines = [f"view {k + 1}: {v}" for k, v in enumerate(view["views"])]
    return lines + ([f"({view['note']})"] if view["note"] else [])


def _seq2seq(view: dict, color: bool) -> list[str]:
    return [f"input:  {view['input']}", f"target: {paint(view['runs'], color)}"]


def _causal(view: dict, color: bool) -> list[str]:
    pairs = " · ".join(f"{a}→{b}" for a, b in view["next"])
    return [f"input:   {view['input']}",
            f"targets: the next token at each position, {view['scored']} of {view['tokens']} scored: {pairs} …"]


def _columns(view: dict, color: bool) -> list[str]:
    return [f"{k}: {v}" for k, v in view["columns"].items()]


FORMATS = {"masked": _masked, "pair": _pair, "views": _views, "seq2seq": _seq2seq, "causal": _causal,
           "columns": _columns}
