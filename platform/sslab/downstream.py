"""Downstream evaluation of an exported model (``run_dir/model``): the ``sslab eval`` backend.

Three questions a pretrained model has to answer after training:

- :func:`classify`: how well does it serve a labelled text-classification task? A linear probe on
  its frozen, mean-pooled states, and full fine-tuning of a classification head, both on the same
  stratified held-out split, so the two numbers compare.
- :func:`perplexity`: how well does a decoder (``clm``) predict held-out text?
- :func:`similarity`: how well do its sentence vectors order graded sentence pairs (STS)?

All read the model and its tokenizer from one local Hugging Face directory (never the network),
so they work on any model ``transformers`` loads, not only sslab's own exports.
"""
from __future__ import annotations

import contextlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                          AutoTokenizer, get_linear_schedule_with_warmup)

from sslab import sts
from sslab.errors import ConfigError
from sslab.tables import READERS, kind_of, read_table

MIN_ROWS = 4  # fewer cannot give both sides of a split two labels
WARMUP = 0.1  # share of fine-tuning steps spent warming up the learning rate
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")  # the architectures that predict the next token


# ---------------------------------------------------------------- labelled data


def load_labelled(path: str | Path, text_field: str = "text", label_field: str = "label") -> pd.DataFrame:
    """Read a labelled table into a DataFrame with string columns ``text`` and ``label``.

    ``path`` is a ``.jsonl``/``.json`` (JSON Lines; a ``.json`` array also works), ``.csv``,
    ``.tsv`` or ``.parquet`` file; ``text_field`` and ``label_field`` name its columns. Rows with an empty or
    missing text or label are dropped. Raises :class:`~sslab.errors.ConfigError`, naming the file,
    when the file is missing or unreadable, a column is absent (the message lists the columns
    there are), fewer than two labels or four rows remain, or a label has a single example (a
    stratified split needs two of each).
    """
    kind = kind_of(path, "labelled data")
    return labelled_frame(read_table(path, kind), text_field, label_field, source=str(path))


def labelled_frame(frame: pd.DataFrame, text_field: str = "text", label_field: str = "label",
                   source: str = "the DataFrame") -> pd.DataFrame:
    """The ``text``/``label`` table of ``frame``, checked as :func:`load_labelled` checks a file.

    ``source`` names the data in error messages.
    """
    for field, value in (("text_field", text_field), ("label_field", label_field)):
        if value not in frame.columns:
            columns = ", ".join(map(str, frame.columns)) or "none"
            raise ConfigError(f"{source} has no column {field}={value!r} (its columns: {columns})")
    df = pd.DataFrame({"text": frame[text_field], "label": frame[label_field]}).dropna()
    df = df.assign(text=df["text"].astype(str).str.strip(), label=df["label"].astype(str).str.strip())
    df = df[(df["text"] != "") & (df["label"] != "")].reset_index(drop=True)
    _check_splittable(df, source)
    return df


def _check_splittable(df: pd.DataFrame, source: str) -> None:
    counts = df["label"].value_counts()
    if len(counts) < 2:
        found = f"only {counts.index[0]!r}" if len(counts) else "none"
        raise ConfigError(f"{source} needs at least 2 distinct labels to classify, found {found}")
    if len(df) < MIN_ROWS:
        raise ConfigError(f"{source} has {len(df)} usable rows (non-empty text and label); "
                          f"at least {MIN_ROWS} are needed to hold out a test set")
    rare = counts[counts < 2]
    if len(rare):
        raise ConfigError(f"{source}: label {rare.index[0]!r} has a single example; every label needs at "
                          "least 2 for a stratified train/test split (add examples or drop the label)")


def stratified_split(df: pd.DataFrame, test_size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stratified ``(train, test)`` split of ``df`` that both probe and fine-tuning use."""
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size={test_size!r} must be a fraction in (0, 1)")
    n_labels, n_test = df["label"].nunique(), math.ceil(test_size * len(df))
    if n_test < n_labels or len(df) - n_test < n_labels:
        raise ConfigError(f"test_size={test_size} leaves {n_test} test and {len(df) - n_test} training rows for "
                          f"{n_labels} labels; each side needs one row per label (add rows or change test_size)")
    train, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=df["label"])
    return train.reset_index(drop=True), test.reset_index(drop=True)


# ---------------------------------------------------------------- loading the model directory


@contextlib.contextmanager
def quiet():
    """Silence transformers' load reports and progress bars and sklearn's warnings, then restore them."""
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


def load_config(model_dir: str | Path) -> transformers.PretrainedConfig:
    """The Hugging Face config in ``model_dir``; ConfigError naming the directory if there is none."""
    if not Path(model_dir).is_dir():
        raise ConfigError(f"model directory {str(model_dir)!r} does not exist")
    try:
        return AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model directory {str(model_dir)!r} holds no Hugging Face model "
                          f"(config.json): {e}".splitlines()[0]) from None


def load_tokenizer(model_dir: str | Path, max_length: int):
    """The tokenizer saved beside the model, truncating at ``max_length`` and able to pad.

    Decoders often have no pad token: the end-of-text token pads instead (padding is always
    masked, so which id it is does not matter), which adds no token the embeddings lack.
    """
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"model directory {str(model_dir)!r} holds no loadable tokenizer (save it there with "
                          f"tokenizer.save_pretrained): {e}".splitlines()[0]) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.sep_token or tok.unk_token
    if tok.pad_token is None:
        raise ConfigError(f"the tokenizer in {str(model_dir)!r} has no pad, end-of-text or unknown token to pad with")
    tok.model_max_length = max_length
    return tok


def check_length(config, max_length: int, model_dir) -> None:
    """Refuse a ``max_length`` longer than the model's position embeddings."""
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if config.model_type == "roberta" and limit:
        limit -= (config.pad_token_id or 0) + 1  # RoBERTa's positions start after padding_idx
    if max_length < 8 or (limit and max_length > limit):
        bound = f"in [8, {limit}] (the positions the model in {str(model_dir)!r} has)" if limit else ">= 8"
        raise ConfigError(f"max_length={max_length} must be {bound}")


def pick_device(device) -> torch.device:
    """``device`` as given, else the GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_encoder(model_dir, config, device: torch.device) -> torch.nn.Module:
    """The network whose last hidden states the probe pools: the encoder half of T5/BART, else the
    base model (bidirectional for encoders, causal states for decoders)."""
    with quiet():
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    if config.is_encoder_decoder:
        model = model.get_encoder()
    return model.to(device).eval()


# ---------------------------------------------------------------- classification


def classify(model_dir: str | Path, data, *, text_field: str = "text", label_field: str = "label",
             finetune: bool = True, probe: bool = True, test_size: float = 0.2, seed: int = 0, epochs: int = 3,
             lr: float = 5e-5, batch_size: int = 32, max_length: int = 128, device=None) -> dict:
    """Classification accuracy of the model in ``model_dir`` on labelled ``data``.

    ``data`` is a file :func:`load_labelled` reads, or a DataFrame with ``text_field`` and
    ``label_field`` columns. A stratified ``test_size`` share is held out (the same rows for both
    methods, fixed by ``seed``); texts are cut at ``max_length`` tokens.

    - ``probe``: a logistic regression on the frozen model's mean-pooled last hidden states
      (for T5/BART, the encoder's) gives ``probe_acc`` and ``probe_macro_f1``.
    - ``finetune``: the whole model plus a new classification head trains for ``epochs`` with
      AdamW at ``lr`` (linear decay after 10 % warm-up) and gives ``finetune_acc`` and
      ``finetune_macro_f1``. Results repeat exactly for a seed on the CPU.

    Also returned: ``n_train``, ``n_test``, ``labels`` (sorted) and ``model_dir``. Raises
    :class:`~sslab.errors.ConfigError` for bad data, a directory without a model or tokenizer, or a
    model type ``transformers`` has no classification head for (pass ``finetune=False``).
    """
    if not (probe or finetune):
        raise ConfigError("classify: probe and finetune are both False; nothing to evaluate")
    if finetune and (epochs < 1 or batch_size < 1 or lr <= 0):
        raise ConfigError(f"fine-tuning needs epochs >= 1, batch_size >= 1 and lr > 0, got epochs={epochs}, "
                          f"batch_size={batch_size}, lr={lr}")
    if isinstance(data, pd.DataFrame):
        df = labelled_frame(data, text_field, label_field)
    else:
        df = load_labelled(data, text_field, label_field)
    config = load_config(model_dir)
    check_length(config, max_length, model_dir)
    tok = load_tokenizer(model_dir, max_length)
    train, test = stratified_split(df, test_size, seed)
    labels = sorted(df["label"].unique())
    result = {"model_dir": str(model_dir), "labels": labels, "n_train": len(train), "n_test": len(test)}
    dev = pick_device(device)
    if probe:
        result.update(linear_probe(model_dir, config, tok, train, test, dev))
    if finetune:
        result.update(fine_tune(model_dir, tok, train, test, labels, dev, seed=seed, epochs=epochs, lr=lr,
                                batch_size=batch_size))
    return result


def scores(prefix: str, y_true, y_pred) -> dict[str, float]:
    """Accuracy and macro-averaged F1 (every label counts alike, however rare) under ``prefix``."""
    return {f"{prefix}_acc": float(accuracy_score(y_true, y_pred)),
            f"{prefix}_macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def features(encoder, tok, texts: list[str], device) -> np.ndarray:
    """Mean-pooled last hidden states of ``texts``, one row each."""
    from sslab.evaluation import mean_pooled  # late: it imports Ray Train (seconds), which perplexity never needs

    enc = tok(texts, truncation=True, padding=True, return_tensors="np")
    return mean_pooled(encoder, enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64), device)


def linear_probe(model_dir, config, tok, train: pd.DataFrame, test: pd.DataFrame, device) -> dict[str, float]:
    """``probe_acc`` and ``probe_macro_f1`` of a logistic regression on frozen features."""
    encoder = load_encoder(model_dir, config, device)
    x_train, x_test = (features(encoder, tok, list(d["text"]), device) for d in (train, test))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    with quiet():
        clf.fit(x_train, train["label"])
        return scores("probe", test["label"], clf.predict(x_test))


def load_classifier(model_dir, tok, labels: list[str]) -> torch.nn.Module:
    """The model with a new, randomly initialised head of ``len(labels)`` outputs."""
    try:
        with quiet():
            model = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)}, local_files_only=True)
    except ValueError as e:
        raise ConfigError(f"the model in {str(model_dir)!r} has no sequence-classification head in transformers "
                          f"({e}); evaluate it with finetune=False".splitlines()[0]) from None
    if model.config.pad_token_id is None:  # decoders find each row's last token by its padding
        model.config.pad_token_id = tok.pad_token_id
    return model


def fine_tune(model_dir, tok, train: pd.DataFrame, test: pd.DataFrame, labels: list[str], device, *, seed: int,
              epochs: int, lr: float, batch_size: int) -> dict[str, float]:
    """``finetune_acc`` and ``finetune_macro_f1`` after training the whole model on ``train``."""
    torch.manual_seed(seed)  # the new head's initialisation and dropout
    model = load_classifier(model_dir, tok, labels).to(device)
    index = {label: i for i, label in enumerate(labels)}
    x = tok(list(train["text"]), truncation=True, padding=True, return_tensors="pt")
    y = torch.tensor([index[label] for label in train["label"]])
    steps = epochs * math.ceil(len(y) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(opt, int(WARMUP * steps), steps)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(y), generator=order).split(batch_size):
            with quiet():  # transformers notes its default loss choice on the first call
                out = model(input_ids=x["input_ids"][rows].to(device),
                            attention_mask=x["attention_mask"][rows].to(device), labels=y[rows].to(device))
            out.loss.backward()
            opt.step()
            schedule.step()
            opt.zero_grad(set_to_none=True)
    predicted = predict(model, tok, list(test["text"]), device, batch_size)
    return scores("finetune", list(test["label"]), [labels[i] for i in predicted])


@torch.no_grad()
def predict(model, tok, texts: list[str], device, batch_size: int) -> list[int]:
    """The index of the highest-scoring label for each of ``texts``."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], truncation=True, padding=True, return_tensors="pt")
        # Only these two: GPT-2 would add token-type embeddings the training never saw.
        logits = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)).logits
        out += logits.argmax(-1).tolist()
    return out


# ---------------------------------------------------------------- perplexity


def perplexity(model_dir: str | Path, corpus: str | Path, *, max_length: int = 128, batch_size: int = 16,
               max_docs: int | None = None, device=None) -> dict:
    """Perplexity of the decoder (``clm``) model in ``model_dir`` on ``corpus``.

    ``corpus`` is a text file (one document per line), a directory of ``.txt`` files, or a
    ``.jsonl``/``.parquet`` file with a ``text`` column; ``max_docs`` keeps its first documents.
    Documents are tokenised, each closed by the end-of-text token, concatenated and cut into
    blocks of ``max_length`` that open with the start token, as sslab packs its training blocks;
    every token after the start is scored, in the last, shorter block too. Returns ``perplexity``
    (exp of the mean negative log-likelihood per scored token), ``tokens`` (how many were scored)
    and ``model_dir``. An encoder or encoder-decoder model is refused with a
    :class:`~sslab.errors.ConfigError`.
    """
    config = load_config(model_dir)
    if not any(a.endswith(CAUSAL_SUFFIXES) for a in config.architectures or []):
        raise ConfigError(f"perplexity needs a decoder (clm) model, but {str(model_dir)!r} holds "
                          f"{', '.join(config.architectures or [config.model_type])}; evaluate it with classify")
    check_length(config, max_length, model_dir)
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    tok = load_tokenizer(model_dir, max_length)
    blocks = pack_eval_blocks(tok, read_eval_texts(corpus, max_docs), max_length, model_dir)
    dev = pick_device(device)
    with quiet():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).to(dev).eval()
    nll, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        s, n = block_nll(model, blocks[i:i + batch_size], tok.pad_token_id, dev)
        nll, count = nll + s, count + n
    return {"perplexity": math.exp(nll / count), "tokens": count, "model_dir": str(model_dir)}


def read_eval_texts(corpus: str | Path, max_docs: int | None = None) -> list[str]:
    """The non-empty documents of ``corpus`` (see :func:`perplexity`), at most ``max_docs``."""
    path = Path(corpus)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if not p.name.startswith("."))
        if not files:
            raise ConfigError(f"corpus directory {str(path)!r} holds no .txt files")
        docs = [line for f in files for line in f.read_text(encoding="utf-8", errors="replace").splitlines()]
    elif not path.is_file():
        raise ConfigError(f"corpus {str(path)!r} does not exist")
    elif path.suffix.lower() in (".jsonl", ".json", ".parquet"):
        docs = _table_texts(path)
    else:
        docs = path.read_text(encoding="utf-8", errors="replace").splitlines()
    docs = [d.strip() for d in docs if isinstance(d, str) and d.strip()]
    if not docs:
        raise ConfigError(f"corpus {str(path)!r} holds no non-empty documents")
    return docs[:max_docs] if max_docs else docs


def _table_texts(path: Path) -> list:
    frame = read_table(path, READERS[path.suffix.lower()])
    if "text" not in frame.columns:
        raise ConfigError(f"corpus {str(path)!r} has no 'text' column (its columns: "
                          f"{', '.join(map(str, frame.columns)) or 'none'})")
    return frame["text"].tolist()


def pack_eval_blocks(tok, docs: list[str], max_length: int, model_dir) -> list[list[int]]:
    """Token blocks of at most ``max_length``: a start token, then the document stream."""
    start = next((t for t in (tok.cls_token_id, tok.bos_token_id, tok.eos_token_id) if t is not None), None)
    end = next((t for t in (tok.sep_token_id, tok.eos_token_id) if t is not None), None)
    if start is None or end is None:
        raise ConfigError(f"the tokenizer in {str(model_dir)!r} has no start/end-of-text tokens to frame blocks with")
    with quiet():  # documents longer than a block are expected here, not an error
        encoded = tok(docs, add_special_tokens=False)["input_ids"]
    stream = [i for ids in encoded for i in (*ids, end)]
    body = max_length - 1
    return [[start, *stream[i:i + body]] for i in range(0, len(stream), body)]


@torch.no_grad()
def block_nll(model, blocks: list[list[int]], pad_id: int, device) -> tuple[float, int]:
    """Summed next-token negative log-likelihood over ``blocks`` and the number of tokens scored."""
    width = max(len(b) for b in blocks)
    ids = torch.full((len(blocks), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, block in enumerate(blocks):
        ids[row, :len(block)], mask[row, :len(block)] = torch.tensor(block), 1
    ids, mask = ids.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="sum")
    return float(nll), int(mask[:, 1:].sum())


# ---------------------------------------------------------------- sentence similarity


def similarity(model_dir: str | Path, data, *, pooling: str | None = None, max_length: int = 128,
               device=None) -> dict:
    """How well the sentence vectors of the model in ``model_dir`` order graded sentence pairs.

    ``data`` is a file of pairs (:func:`sslab.sts.read_pairs`: columns ``sentence1``,
    ``sentence2``, ``score``; STS-B's TSV as it comes) or a DataFrame with those columns. Each
    sentence, cut at ``max_length`` tokens, is pooled from the last hidden states by ``pooling``:
    ``mean`` or ``cls``; None: as the directory records its model was trained (a
    sentence-transformers ``1_Pooling/config.json``), else ``mean``. Returns ``sts_spearman`` (the
    Spearman correlation of the pairs' cosine similarities with their scores), ``sts_pairs``,
    ``sts_pooling`` and ``model_dir``. Raises :class:`~sslab.errors.ConfigError` naming the bad
    file, column or row, or a pooling it cannot apply.
    """
    if pooling is not None and pooling not in sts.POOLINGS:
        raise ConfigError(f"pooling={pooling!r} must be one of {', '.join(sts.POOLINGS)}")
    frame = sts.pairs_frame(data) if isinstance(data, pd.DataFrame) else sts.read_pairs(data)
    config = load_config(model_dir)
    check_length(config, max_length, model_dir)
    pooling = pooling or recorded_pooling(model_dir) or "mean"
    pairs = sts.encode(frame, load_tokenizer(model_dir, max_length), max_length,
                       "the DataFrame" if isinstance(data, pd.DataFrame) else str(data))
    dev = pick_device(device)
    score = sts.score(load_encoder(model_dir, config, dev), pairs, pooling, dev)
    return {"sts_spearman": score, "sts_pairs": len(pairs), "sts_pooling": pooling, "model_dir": str(model_dir)}


POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}
"""sentence-transformers' pooling flags that :func:`similarity` applies, and its names for them."""


def recorded_pooling(model_dir: str | Path) -> str | None:
    """The pooling a sentence-transformers export in ``model_dir`` records (its Pooling module's
    ``config.json``, in the folder ``modules.json`` names, ``1_Pooling`` by convention): ``cls``
    or ``mean``, or None when it records none. A pooling sslab does not apply (max, a
    concatenation) is a ConfigError that says to choose one."""
    root = Path(model_dir)
    folder = "1_Pooling"
    if (root / "modules.json").is_file():
        try:
            modules = json.loads((root / "modules.json").read_text())
            folder = next((m["path"] for m in modules if str(m.get("type", "")).endswith("Pooling")), folder)
        except (ValueError, TypeError, KeyError, AttributeError):
            pass  # not sentence-transformers' layout: look in the conventional folder
    path = root / folder / "config.json"
    if not path.is_file():
        return None
    try:
        flags = json.loads(path.read_text())
        modes = [k for k, v in flags.items() if k.startswith("pooling_mode_") and v is True]
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"{str(path)!r} is not a sentence-transformers pooling config ({e}); "
                          f"pass the pooling (--pooling mean or cls)") from None
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ConfigError(f"{str(path)!r} pools by {' + '.join(modes) or 'nothing'}; sslab scores "
                          f"{' or '.join(POOLING_MODES.values())}: pass the pooling to use (--pooling mean or cls)")
    return POOLING_MODES[modes[0]]
