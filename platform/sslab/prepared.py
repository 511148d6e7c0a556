"""Prepared data: a corpus tokenised and packed once into the objective's unit rows, in Parquet
shards under a content-addressed directory, with a manifest written last.

An entry is named by a key that covers everything that changes its rows: the corpus's
fingerprint (:func:`sslab.corpus.fingerprint`), the tokenizer itself, ``seq_len``, the unit and
the evaluation unit, and this module's format. A changed input gives another key, so an entry
is never stale; the manifest, written atomically once every shard is in place, is what makes an
entry exist, so a preparation killed midway leaves nothing that looks complete. Counts (rows,
tokens) are read from the manifest, never from a pass over the data.

This module holds the keys and the manifest; writing and streaming the shards build on it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sslab.errors import RunError

FORMAT = 1
"""The layout of an entry's rows and manifest; raise it when either changes, or when the cleaning,
tokenising or packing code changes the rows a corpus gives."""
MANIFEST = "manifest.json"


def digest(*parts) -> str:
    """A hex digest of JSON-serialisable ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def data_key(corpus_fingerprint: str, tokenizer_json: str, seq_len: int, unit: str, eval_unit: str | None) -> str:
    """The name of the entry holding a corpus's ``unit`` rows of ``seq_len`` tokens under one
    tokenizer (``tokenizer_json``: its serialised form, special tokens included)."""
    tokenizer = hashlib.sha256(tokenizer_json.encode()).hexdigest()
    return digest("data", FORMAT, corpus_fingerprint, tokenizer, seq_len, unit, eval_unit)[:32]


def tokenizer_key(corpus_fingerprint: str, tokenizer_cfg, max_length: int, seed: int) -> str:
    """The name of the tokenizer trained on a corpus (``tokenizer_cfg``: its
    :class:`~sslab.config.TokenizerConfig`; ``seed`` draws its sample)."""
    return digest("tokenizer", FORMAT, corpus_fingerprint, dataclasses.asdict(tokenizer_cfg), max_length, seed)[:32]


@dataclass(frozen=True)
class Shard:
    path: str
    """Relative to the entry's directory."""
    rows: int


@dataclass(frozen=True)
class Split:
    rows: int
    tokens: int
    shards: tuple[Shard, ...]


@dataclass(frozen=True)
class Manifest:
    """What an entry holds: its key, the shape of its rows and, per split, the shards."""

    key: str
    unit: str
    seq_len: int
    splits: dict[str, Split]
    format: int = FORMAT

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        splits = {name: Split(s["rows"], s["tokens"], tuple(Shard(**shard) for shard in s["shards"]))
                  for name, s in data["splits"].items()}
        return cls(key=data["key"], unit=data["unit"], seq_len=data["seq_len"], splits=splits, format=data["format"])


def write_manifest(entry: Path, manifest: Manifest) -> None:
    """Write ``entry``'s manifest atomically (a temporary file renamed over it): a reader sees the
    whole manifest or none. Call it last, once every shard it names is written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=entry)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest.to_dict(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, entry / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(entry: Path, key: str) -> Manifest | None:
    """The manifest of a complete entry, or None when ``entry`` holds none (never prepared, or a
    preparation that did not finish). An entry of another format or key, or a manifest that does
    not parse, is refused with a message that says to prepare it again."""
    path = entry / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        found = data.get("format")
        if found != FORMAT:
            raise RunError(f"{entry} was prepared by another sslab (data format {found}, this one reads {FORMAT}); "
                           f"delete it to prepare the corpus again")
        manifest = Manifest.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunError(f"{path} is not a manifest sslab can read ({type(e).__name__}: {e}); "
                       f"delete {entry} to prepare the corpus again") from None
    if manifest.key != key:
        raise RunError(f"{path} is the manifest of entry {manifest.key}, not of {key}: the cache directory was "
                       f"rearranged by hand; delete {entry} to prepare the corpus again")
    return manifest
