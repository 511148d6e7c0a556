"""Tokenizers: trained with HF ``tokenizers`` on a sample streamed from the corpus, or loaded.

Either way the run keeps its own copy in ``run_dir/tokenizer`` (a fast tokenizer that
``AutoTokenizer.from_pretrained`` loads offline), and a rerun of the same directory reuses it,
so token ids never change under a resumed run.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from sslab import lazy, progress
from sslab.config import Config, TokenizerConfig
from sslab.errors import ConfigError
from sslab.sentences import ends_sentence

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Ray Data's processes unpickle a Vocab (an objective holds one) and never load a tokenizer.
transformers = lazy.module("transformers")

log = logging.getLogger("sslab.tokenizer")

# Special tokens in id order: BERT's for WordPiece, RoBERTa's for byte-level BPE, and for Unigram
# T5's (<pad> 0, </s> 1, <unk> 2) then <s> (blocks open with it) and <mask> (the masking objectives).
SPECIALS = {
    "wordpiece": dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"),
    "bpe": dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>"),
    "unigram": dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>", mask_token="<mask>"),
}

BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]
"""SentencePiece's byte pieces: with byte fallback, a character without a piece of its own is
spelled in the pieces of its UTF-8 bytes instead of ``<unk>``. They follow the special tokens."""

RARE = "\0"
"""What the rarest characters become in a Unigram's training texts: the trainer never puts it inside
a piece (it is its sentence boundary), as SentencePiece never puts its stand-in for them."""


@dataclass(frozen=True, eq=False)
class Vocab:
    """What the data side needs to know about a tokenizer: sizes, special ids, word pieces."""

    size: int
    pad_id: int
    mask_id: int | None
    cls_id: int
    """Id opening every packed block ([CLS] or <s>)."""
    sep_id: int
    """Id closing every block and separating documents inside it ([SEP] or </s>)."""
    special_ids: tuple[int, ...]
    continues_word: np.ndarray
    """Boolean per id: the token continues the word of the token before it."""
    sentence_end: np.ndarray | None = None
    """Boolean per id: the token ends a sentence (Latin or CJK end marks such as ``.``, ``?``,
    ``。``, ``！``, ``；``, closing quotes after them included: :func:`sslab.sentences.ends_sentence`)."""
    extra_ids: tuple[int, ...] = ()
    """Ids of the objective's extra tokens (:meth:`Objective.extra_tokens`), in their order."""
    tokenizer_json: str | None = field(default=None, repr=False)
    """The tokenizer itself, serialised, for a data-side step that tokenises words of its own
    (MacBERT's similar words, :mod:`sslab.similar`)."""

    @functools.cached_property
    def normal_ids(self) -> np.ndarray:
        """Ids of every non-special token (what a random replacement draws from)."""
        return np.setdiff1d(np.arange(self.size), self.special_ids)


def _build(kind: str, vocab_size: int, extra_specials: list[str] = ()) -> tuple[Tokenizer, trainers.Trainer]:
    specials = list(SPECIALS[kind].values()) + list(extra_specials)
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    elif kind == "unigram":  # SentencePiece's pipeline as T5's, ALBERT's and XLM-R's tokenizers run it in HF
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        # Punctuation splits as byte-level BPE's does, so that no piece crosses it: in Chinese, which
        # has no spaces, it bounds a piece's words and the trainer's strings (its time grows with them).
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(),
                                                     pre_tokenizers.Punctuation(behavior="contiguous")])
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                          unk_token=SPECIALS["unigram"]["unk_token"], show_progress=False)
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    return tok, trainer


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str], max_length: int) -> PreTrainedTokenizerFast:
    """Train a ``cfg.kind`` tokenizer of ``cfg.vocab_size`` on ``texts``: the same texts give the
    same ``tokenizer.json``, byte for byte, in any process."""
    specials = SPECIALS[cfg.kind]
    if cfg.kind == "wordpiece":
        tok = _train_wordpiece(cfg.vocab_size, list(texts))
    elif cfg.kind == "unigram":
        tok = _train_unigram(cfg, list(texts))
    else:
        tok, trainer = _build(cfg.kind, cfg.vocab_size)
        tok.train_from_iterator(texts, trainer=trainer)
    first, last = (specials["cls_token"], specials["sep_token"]) if cfg.kind == "wordpiece" else ("<s>", "</s>")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {last}", pair=f"{first} $A {last} $B:1 {last}:1",
        special_tokens=[(first, tok.token_to_id(first)), (last, tok.token_to_id(last))])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **specials)


def _train_wordpiece(vocab_size: int, texts: list[str]) -> Tokenizer:
    """A WordPiece trained reproducibly: the same texts give the same ``tokenizer.json`` in any process.

    Its trainer (BPE with a ``##`` prefix) gives the ``##x`` piece of each character that continues
    a word an id in the order of a hash map seeded per process, and breaks ties between equally
    frequent merges by id, so the same texts gave other ids and even other pieces
    (huggingface/tokenizers#1794). Passing those pieces, sorted, as special tokens fixes their ids
    before any merge; they are then dropped from the special tokens and stay ordinary pieces.
    """
    specials = list(SPECIALS["wordpiece"].values())
    tok, trainer = _build("wordpiece", vocab_size, extra_specials=_continuing_pieces(texts))
    tok.train_from_iterator(texts, trainer=trainer)
    state = json.loads(tok.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] in specials]
    return Tokenizer.from_str(json.dumps(state))


def _continuing_pieces(texts: list[str]) -> list[str]:
    """The ``##x`` pieces a WordPiece trainer makes from ``texts``, sorted.

    A merge-free training run finds them, on the distinct space-separated chunks of the texts
    rather than the texts (about a fifth of the cost of training): the Bert normalizer works
    character by character and the Bert pre-tokenizer splits at every space, so the chunks hold
    the same words.
    """
    chunks = set()
    for text in texts:
        chunks.update(text.split(" "))
    tok, trainer = _build("wordpiece", 0)
    tok.train_from_iterator(chunks, trainer=trainer)
    return sorted(t for t in tok.get_vocab() if t.startswith("##"))


def _train_unigram(cfg: TokenizerConfig, texts: list[str]) -> Tokenizer:
    """A SentencePiece-style Unigram of ``cfg.vocab_size`` pieces (special and byte pieces included).

    ``cfg.character_coverage`` works as SentencePiece's: the characters that make up that share
    of the (normalised) texts keep a piece; the rarer ones become :data:`RARE` in the training
    texts, so that no piece holds them, and are spelled in bytes (or are ``<unk>``).
    ``cfg.byte_fallback`` adds the 256 :data:`BYTE_PIECES`, their ids fixed after the specials.
    """
    normalizer = _build("unigram", 0)[0].normalizer
    texts = [normalizer.normalize_str(t) for t in texts]
    counts = Counter()
    for text in texts:
        counts.update(text)
    counts.pop(" ", None)  # the word boundary (Metaspace's "▁") always keeps its piece
    rare = rare_characters(counts, cfg.character_coverage)
    if rare:
        table = dict.fromkeys(map(ord, rare), RARE)
        texts = [t.translate(table) for t in texts]
    room = cfg.vocab_size - len(SPECIALS["unigram"]) - (len(BYTE_PIECES) if cfg.byte_fallback else 0)
    kept = len(counts) - len(rare) + 1  # and "▁"
    if kept > room:
        raise ConfigError(f"tokenizer.vocab_size={cfg.vocab_size} leaves {room} pieces for the "
                          f"{kept} characters of the sample that "
                          f"tokenizer.character_coverage={cfg.character_coverage:g} keeps; raise tokenizer.vocab_size or "
                          "lower tokenizer.character_coverage (SentencePiece uses 0.9995 for Chinese and Japanese)")
    tok, trainer = _build("unigram", room + len(SPECIALS["unigram"]) + bool(rare))  # RARE's piece is dropped
    tok.train_from_iterator(texts, trainer=trainer)
    return _settled_unigram(tok, cfg.byte_fallback)


def rare_characters(counts: Counter, coverage: float) -> set[str]:
    """The characters beyond ``coverage`` of all ``counts``: the most frequent characters are kept
    until they cover that share (SentencePiece's rule, its ties broken by the character)."""
    total, covered, rare = sum(counts.values()), 0, set()
    for char, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if covered >= coverage * total:
            rare.add(char)
        covered += n
    return rare


def _settled_unigram(tok: Tokenizer, byte_fallback: bool) -> Tokenizer:
    """The trained Unigram made the same in every process, with its byte pieces.

    The trainer sums its statistics in the order of a hash map, which changes from process to
    process, so its scores differ in their last bits: they are rounded to 1e-6 (SentencePiece keeps
    them in float32, no finer). It gives each character that lost its piece in pruning the lowest
    score plus 1e-4 times its place in a hash set, and orders tied pieces by that place: those
    characters all get the lowest score here, and tied pieces are ordered by piece. It also
    drops byte fallback from the model it trains; it is set again here.
    """
    state = json.loads(tok.to_str())
    n = len(SPECIALS["unigram"])
    specials, pieces = state["model"]["vocab"][:n], [p for p in state["model"]["vocab"][n:] if p[0] != RARE]
    floor, penalty, penalised = min(score for _, score in pieces), 0.0, set()
    for _ in pieces:  # the trainer's scores for those characters, exactly (its f64 is Python's float)
        penalised.add(floor + penalty)
        penalty += 1e-4
    pieces = [[p, round(floor if len(p) == 1 and score in penalised else score, 6)] for p, score in pieces]
    pieces.sort(key=lambda piece: (-piece[1], piece[0]))
    # Below every learned piece, so that a text spelling "<0x41>" is read as its characters.
    byte_pieces = [[b, round(floor, 6) - 100.0] for b in BYTE_PIECES] if byte_fallback else []
    state["model"].update(vocab=specials + byte_pieces + pieces, byte_fallback=byte_fallback)
    return Tokenizer.from_str(json.dumps(state))


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer from a local directory (never from the network)."""
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"tokenizer.path={str(path)!r} holds no loadable tokenizer: {e}".splitlines()[0]) from None
    if not tok.is_fast:
        raise ConfigError(f"tokenizer.path={str(path)!r} is a slow tokenizer; sslab needs a fast (tokenizer.json) one")
    return tok


def prepare_tokenizer(cfg: TokenizerConfig, texts: Iterable[str], run_dir: Path, max_length: int,
                      fallback_path: str | None = None) -> PreTrainedTokenizerFast:
    """The run's tokenizer: ``run_dir/tokenizer`` if it exists, else loaded or trained, then saved there.

    ``texts`` is consumed only when a tokenizer has to be trained; ``fallback_path`` (an
    ``init_from`` model directory) is used when it holds a tokenizer and none is configured.
    """
    saved = run_dir / "tokenizer"
    path = source_dir(cfg, run_dir, fallback_path)
    if path == str(saved):
        return load_tokenizer(saved)
    if path:
        tok = load_tokenizer(path)
    else:
        log.info("training a %s tokenizer (vocab %d) on up to %d documents", cfg.kind, cfg.vocab_size, cfg.sample_docs)
        tok = train_tokenizer(cfg, texts, max_length)
    tok.save_pretrained(str(saved))
    return tok


def corpus_tokenizer(cfg: Config, train_docs, out_dir: Path, quiet: bool = True,
                     cached: Path | None = None) -> PreTrainedTokenizerFast:
    """The tokenizer of a run (or of every trial of a search) on the corpus whose training split
    is the Ray Dataset ``train_docs``: :func:`prepare_tokenizer` into ``out_dir``, trained on
    ``tokenizer.sample_docs`` of its documents when it has to be, with progress unless ``quiet``.

    ``cached``: where the tokenizer trained for this corpus and these settings is kept (the data
    cache's, :func:`sslab.prepared.tokenizer_dir`): loaded from there when it is complete, saved
    there once trained, so that the corpus is sampled once per cache, not once per run."""
    if source_dir(cfg.tokenizer, out_dir, cfg.model.init_from):  # nothing to train: the corpus is not sampled
        return prepare_tokenizer(cfg.tokenizer, iter(()), out_dir, cfg.model.max_positions,
                                 fallback_path=cfg.model.init_from)
    if cached is not None and (cached / COMPLETE).is_file():
        tok = load_tokenizer(cached)
        tok.save_pretrained(str(out_dir / "tokenizer"))
        return tok
    with progress.stage(f"tokenizer sample: {cfg.tokenizer.sample_docs:,} documents drawn from the whole corpus", quiet):
        sample = sample_texts(train_docs, cfg.tokenizer.sample_docs, cfg.train.seed)
    with progress.stage("tokenizer", quiet):
        tok = prepare_tokenizer(cfg.tokenizer, sample, out_dir, cfg.model.max_positions,
                                fallback_path=cfg.model.init_from)
    if cached is not None:
        keep(tok, cached)
    return tok


COMPLETE = "COMPLETE"
"""Written last into a cached tokenizer's directory: without it the directory is a save cut short."""


def keep(tok: PreTrainedTokenizerFast, cached: Path) -> None:
    """Save ``tok`` into the cache directory ``cached``, the completion mark last. Two runs that
    save at once write the same files (training is deterministic)."""
    try:
        cached.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(cached))
        (cached / COMPLETE).write_text("")
    except OSError as e:  # the run has its own copy: a cache that cannot keep it only costs time
        log.warning("could not keep the tokenizer in the cache at %s (%s); later runs will train it again", cached, e)


def sample_texts(docs, n: int, seed: int) -> list[str]:
    """A uniform sample of ``n`` documents of the Ray Dataset ``docs`` (all of them if it holds
    fewer), the same for the same documents and ``seed`` whatever their order, their files or the
    batching: the ``n`` whose seeded hash is smallest (a bottom-k sample), in the order of that hash.

    Real corpora come sorted (by file, section, source); their first documents are one corner of
    them, and a vocabulary trained there misses the rest (another language, another domain).
    Two passes over the corpus: the hashes alone, to find the n-th smallest, then the texts at or
    below it. Only ``n`` hashes per block and ``n`` texts reach the driver."""
    smallest = np.empty(0, dtype=np.uint64)
    keys = docs.map_batches(_smallest_keys, batch_format="numpy", batch_size=None, fn_kwargs={"n": n, "seed": seed})
    for batch in keys.iter_batches(batch_size=None, batch_format="numpy"):
        smallest = np.sort(np.concatenate([smallest, batch["key"]]))[:n]
    if not len(smallest):
        return []
    chosen = docs.map_batches(_keyed_at_most, batch_format="numpy",
                              fn_kwargs={"threshold": int(smallest[-1]), "seed": seed})
    rows = [(int(k), t) for b in chosen.iter_batches(batch_size=None, batch_format="numpy")
            for k, t in zip(b["key"], b["text"])]
    return [str(t) for _, t in sorted(rows)[:n]]


def doc_keys(texts, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each text: the order of :func:`sample_texts`."""
    salt = seed.to_bytes(16, "little", signed=True)
    return np.array([int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8, salt=salt).digest(), "little")
                     for t in texts], dtype=np.uint64)


def _smallest_keys(batch: dict, n: int, seed: int) -> dict:
    return {"key": np.sort(doc_keys(batch["text"].tolist(), seed))[:n]}


def _keyed_at_most(batch: dict, threshold: int, seed: int) -> dict:
    keys = doc_keys(batch["text"].tolist(), seed)
    keep = keys <= np.uint64(threshold)
    return {"key": keys[keep], "text": batch["text"][keep]}


def source_dir(cfg: TokenizerConfig, run_dir: Path, fallback_path: str | None = None) -> str | None:
    """Where the run's tokenizer comes from: its own copy in ``run_dir/tokenizer`` (a resumed run),
    ``cfg.path``, or the ``fallback_path`` model's; None when it is to be trained."""
    saved = run_dir / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return str(saved)
    if cfg.path:
        return cfg.path
    if fallback_path and (Path(fallback_path) / "tokenizer.json").is_file():
        return fallback_path
    return None


def check_init_from(cfg: TokenizerConfig, init_from: str | None, run_dir: Path, extra_tokens=()) -> None:
    """Before Ray starts: the tokenizer the run will load must be one the ``init_from`` model reads.

    Its ids index the model's embeddings, so it may not have more tokens (with ``extra_tokens``,
    the objective's additions) than the model has embeddings, nor give the model's own tokenizer's
    tokens other ids. A tokenizer the run trains is checked when the model is built."""
    path = source_dir(cfg, run_dir, init_from) if init_from else None
    if path is None:
        return
    tok = load_tokenizer(path)
    named = f"tokenizer.path={path!r}" if path == cfg.path else f"the tokenizer in {path}"
    try:
        embeddings = transformers.AutoConfig.from_pretrained(init_from, local_files_only=True).vocab_size
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.init_from={init_from!r} holds no Hugging Face model: {e}".splitlines()[0]) from None
    size = len(tok) + len(set(extra_tokens) - set(tok.get_vocab()))
    if size > embeddings:
        raise ConfigError(f"model.init_from={init_from!r} has {embeddings} token embeddings but {named} has "
                          f"{size} tokens; use the model's own tokenizer (leave tokenizer.path unset)")
    if Path(path).resolve() == Path(init_from).resolve() or not (Path(init_from) / "tokenizer.json").is_file():
        return
    ours, theirs = tok.get_vocab(), load_tokenizer(init_from).get_vocab()
    moved = next((t for t, i in sorted(theirs.items(), key=lambda kv: kv[1]) if ours.get(t) != i), None)
    if moved is not None:
        raise ConfigError(f"{named} does not match model.init_from={init_from!r}: token {moved!r} is id "
                          f"{ours.get(moved)} in it but {theirs[moved]} in the model's own tokenizer; use the model's "
                          "own tokenizer (leave tokenizer.path unset)")


def add_tokens(tok: PreTrainedTokenizerFast, tokens: list[str], run_dir: Path) -> None:
    """Add an objective's special tokens (a no-op when the run's tokenizer already has them)."""
    missing = [t for t in tokens if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        tok.save_pretrained(str(run_dir / "tokenizer"))


def continuation_rule(tok: PreTrainedTokenizerFast) -> Callable[[str], bool]:
    """Whether a piece of ``tok`` continues the word of the piece before it. WordPiece marks
    continuations with ``##``; byte-level BPE marks word starts with ``Ġ``, and SentencePiece
    (Unigram, Metaspace: T5, ALBERT, XLM-R, Llama) with ``▁``: a piece without it continues, byte
    pieces included. Of those two, the mark that opens more pieces is the tokenizer's."""
    if isinstance(tok.backend_tokenizer.model, models.WordPiece):
        return lambda token: token.startswith("##")
    pieces = tok.get_vocab()
    metaspace = sum(t.startswith("\u2581") for t in pieces) > sum(t.startswith("\u0120") for t in pieces)
    mark = "\u2581" if metaspace else "\u0120"
    return lambda token: not token.startswith(mark)


def vocab_of(tok: PreTrainedTokenizerFast, extra_tokens: list[str] = ()) -> Vocab:
    """The :class:`Vocab` facts of a fast tokenizer; ``extra_tokens`` must be in it already."""
    cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    if cls_id is None or sep_id is None:
        raise ConfigError("the tokenizer has neither [CLS]/[SEP] nor <s>/</s> tokens to frame blocks with")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else sep_id
    size = len(tok)
    continues = np.zeros(size, dtype=bool)
    continues_word = continuation_rule(tok)
    for token, idx in tok.get_vocab().items():
        continues[idx] = continues_word(token)
    extra_ids = tuple(tok.convert_tokens_to_ids(list(extra_tokens)))
    specials = tuple(sorted(set(tok.all_special_ids) | set(extra_ids)))
    continues[list(specials)] = False
    ends = sentence_ends(tok)
    ends[list(specials)] = False
    return Vocab(size=size, pad_id=pad_id, mask_id=tok.mask_token_id, cls_id=cls_id, sep_id=sep_id,
                 special_ids=specials, continues_word=continues, sentence_end=ends, extra_ids=extra_ids,
                 tokenizer_json=tok.backend_tokenizer.to_str())


def sentence_ends(tok: PreTrainedTokenizerFast) -> np.ndarray:
    """Boolean per id: the token's text is sentence-ending punctuation. Its text is what the
    tokenizer's decoder makes of it (byte-level BPE stores ``。`` as three byte symbols), less a
    WordPiece ``##``."""
    decoder = tok.backend_tokenizer.decoder
    ends = np.zeros(len(tok), dtype=bool)
    for token, idx in tok.get_vocab().items():
        text = decoder.decode([token]) if decoder is not None else token
        ends[idx] = ends_sentence(text.removeprefix("##"))
    return ends
