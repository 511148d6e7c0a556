"""Reading a corpus into cleaned ``{text, label}`` rows with Ray Data.

:func:`check` runs on the driver before Ray starts, so a missing, empty, mixed, binary or
unreadable corpus fails at once with a :class:`CorpusError`. ``read_documents`` builds the lazy
dataset: files are read and split into documents inside Ray Data workers; a malformed file raises
a ``CorpusError`` there, which reaches the driver wrapped by Ray (``find_sslab_error`` finds it).
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from pathlib import Path

import pyarrow as pa
from ray.exceptions import UserCodeException

from sslab.config import CorpusConfig
from sslab.errors import CorpusError, find_sslab_error

logger = logging.getLogger("sslab.corpus")

FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".json": "jsonl",
           ".parquet": "parquet"}
REPLACEMENT = "\ufffd"
# A text file is refused when more than this share of its characters, and at least this many, are
# undecodable or NUL: a few bad bytes are strays (replaced, with a warning), not another encoding.
MAX_UNDECODABLE, MIN_UNDECODABLE = 0.1, 16
SNIFF_FILES, SNIFF_BYTES = 64, 8192  # what the driver reads of a text corpus before Ray starts
SCHEMA = pa.schema([("text", pa.string()), ("label", pa.string())])


# ---------------------------------------------------------------- finding files (driver, no Ray)


def resolve_files(cfg: CorpusConfig) -> list[str]:
    """The files ``cfg.source`` names: a file, a directory (recursive), a glob, or a URI.

    URIs (``s3://``, ``gs://`` ...) are returned as they are, unchecked; ``synthetic`` has none. Hidden files are skipped
    in directories; with ``format: auto`` a directory contributes only files with a known
    extension, unless none has one.
    """
    source = cfg.source
    if source == "synthetic":
        return []
    if "://" in source:
        return [source]
    if any(c in source for c in "*?["):
        matches = glob.glob(os.path.expanduser(source), recursive=True)
        files = sorted({os.path.abspath(p) for p in matches if os.path.isfile(p)})
        if not files:
            raise CorpusError(f"corpus.source {source!r} matches no files")
        return files
    path = Path(source).expanduser()
    if path.is_file():
        return [str(path.resolve())]
    if path.is_dir():
        files = _directory_files(path, cfg.format)
        if not files:
            raise CorpusError(f"corpus directory {source!r} holds no files")
        return files
    raise CorpusError(f"corpus.source {source!r} does not exist")


def _directory_files(root: Path, fmt: str) -> list[str]:
    files = sorted(str(p.resolve()) for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    known = [f for f in files if Path(f).suffix.lower() in FORMATS]
    return known if fmt == "auto" and known else files


def resolve_format(cfg: CorpusConfig, files: list[str]) -> str:
    """``text``, ``jsonl`` or ``parquet``: ``cfg.format``, or by extension when it is ``auto``."""
    if cfg.format != "auto":
        return cfg.format
    by_format: dict[str, list[str]] = {}
    for f in files:
        by_format.setdefault(FORMATS.get(Path(f).suffix.lower(), "text"), []).append(f)
    if len(by_format) > 1:
        kinds = "; ".join(f"{k}: {Path(v[0]).name}" + (f" and {len(v) - 1} more" if len(v) > 1 else "")
                          for k, v in sorted(by_format.items()))
        raise CorpusError(f"corpus {cfg.source!r} mixes file formats ({kinds}); "
                          "point corpus.source at one kind or set corpus.format")
    return next(iter(by_format))


def check(cfg: CorpusConfig) -> None:
    """Everything about the corpus the driver can check before Ray starts, each failure a
    :class:`CorpusError` naming the path: the files exist and are of one format, they are not
    all empty, and (the first files, by their first bytes) text files hold UTF-8 text and Parquet
    files have the configured columns. The workers check every file in full as they read it."""
    if cfg.source == "synthetic":
        return
    files = resolve_files(cfg)
    fmt = resolve_format(cfg, files)
    local = [f for f in files if "://" not in f]
    if local and len(local) == len(files) and all(os.path.getsize(f) == 0 for f in local):
        raise CorpusError(f"corpus {cfg.source!r} is empty: its {len(files)} file(s) hold 0 bytes")
    if fmt == "parquet":
        _check_parquet_columns(cfg, files)
        return
    for path in local[:SNIFF_FILES]:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
        problem = not_text(head, head.decode("utf-8-sig", errors="replace"))
        if problem:
            raise CorpusError(f"{path}: {problem}")


def not_text(data: bytes, text: str) -> str | None:
    """Why ``data`` (decoded as ``text`` with U+FFFD replacements) is not UTF-8 text, or None.

    A few bad bytes in a text file are replaced (see :func:`decode`); a file that is largely
    undecodable or NUL (binary, compressed, UTF-16, another encoding) would train on noise."""
    bad = text.count(REPLACEMENT) - data.count(REPLACEMENT.encode()) + text.count("\x00")
    if bad >= MIN_UNDECODABLE and bad > MAX_UNDECODABLE * len(text):
        return (f"not UTF-8 text ({bad} of {len(text)} characters undecodable or NUL: binary, compressed "
                "or another encoding?); convert it to UTF-8")
    return None


# ---------------------------------------------------------------- per-file parsing (in workers)


class WorkerCorpusError(CorpusError, UserCodeException):
    """A CorpusError raised inside a Ray Data worker.

    Being a ``UserCodeException`` too, Ray Data reports it as an error in user code (a short
    trace) rather than as a Ray bug ("please open an issue", full internal trace).
    """


def decode(data: bytes, path: str) -> str:
    """UTF-8 text of a file; a few undecodable bytes become U+FFFD and are reported, a file that is
    not text (:func:`not_text`) raises a CorpusError naming it."""
    text = data.decode("utf-8-sig", errors="replace")
    problem = not_text(data, text)
    if problem:
        raise CorpusError(f"{path}: {problem}")
    replaced = text.count(REPLACEMENT) - data.count(REPLACEMENT.encode())
    if replaced > 0:
        logger.warning("%s: %d undecodable byte sequence(s) replaced by U+FFFD", path, replaced)
    return text


def text_documents(text: str, doc_split: str) -> list[str]:
    """Documents of a plain-text file: one per line, or per blank-line separated paragraph."""
    if doc_split == "line":
        return text.splitlines()
    paragraphs, current = [], []
    for line in text.splitlines() + [""]:
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return paragraphs


def jsonl_documents(text: str, path: str, text_field: str, label_field: str | None) -> tuple[list, list]:
    """``(texts, labels)`` of a JSON Lines file; a bad line raises a CorpusError naming it."""
    texts, labels = [], []
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other line separators.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        value = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise CorpusError(f"{path}:{lineno}: no string field {text_field!r} in this record")
        label = record.get(label_field) if label_field else None
        texts.append(value)
        labels.append(None if label is None else str(label))
    return texts, labels


def _parse_files(batch: dict, fmt: str, cfg: CorpusConfig) -> pa.Table:
    texts, labels = [], []
    for data, path in zip(batch["bytes"], batch["path"]):
        try:
            text = decode(data, path)
            if fmt == "jsonl":
                t, lab = jsonl_documents(text, path, cfg.text_field, cfg.label_field)
            else:
                t = text_documents(text, cfg.doc_split)
                lab = [None] * len(t)
        except CorpusError as e:
            raise WorkerCorpusError(str(e)) from None
        texts += t
        labels += lab
    return pa.table([pa.array(texts, pa.string()), pa.array(labels, pa.string())], schema=SCHEMA)


def _clean(batch: pa.Table, text_col: str, label_col: str | None, min_chars: int) -> pa.Table:
    """Collapse whitespace, strip, drop short documents; output exactly ``text`` and ``label``."""
    texts = [" ".join(t.split()) if t else "" for t in batch.column(text_col).to_pylist()]
    labels = batch.column(label_col).to_pylist() if label_col else [None] * len(texts)
    keep = [i for i, t in enumerate(texts) if len(t) >= min_chars]
    return pa.table([pa.array([texts[i] for i in keep], pa.string()),
                     pa.array([None if labels[i] is None else str(labels[i]) for i in keep], pa.string())],
                    schema=SCHEMA)


# ---------------------------------------------------------------- datasets


def read_documents(cfg: CorpusConfig):
    """The cleaned corpus as a lazy Ray Dataset with string columns ``text`` and ``label``.

    ``label`` is None where the corpus has no label. Reading happens when the dataset runs;
    a malformed file then raises a :class:`CorpusError` naming the file (and line).
    """
    import ray

    if cfg.source == "synthetic":
        from sslab.synthetic import read_synthetic

        ds, text_col, label_col = read_synthetic(cfg.synthetic), "text", "label"
    else:
        files = resolve_files(cfg)
        fmt = resolve_format(cfg, files)
        if fmt == "parquet":
            _check_parquet_columns(cfg, files)
            columns = [cfg.text_field] + ([cfg.label_field] if cfg.label_field else [])
            ds, text_col, label_col = ray.data.read_parquet(files, columns=columns), cfg.text_field, cfg.label_field
        else:
            ds = ray.data.read_binary_files(files, include_paths=True)
            ds = ds.map_batches(_parse_files, batch_format="numpy", fn_kwargs={"fmt": fmt, "cfg": cfg})
            text_col, label_col = "text", "label"
    # By default Ray Data replaces a UDF's exception by a UserCodeException whose cause is lost
    # on the way to the driver; this keeps the CorpusError itself. The setting lives in this
    # dataset's context, shared by datasets derived from it, not in the global one.
    ds.context.raise_original_map_exception = True
    return ds.map_batches(_clean, batch_format="pyarrow",
                          fn_kwargs={"text_col": text_col, "label_col": label_col, "min_chars": cfg.min_chars})


def _check_parquet_columns(cfg: CorpusConfig, files: list[str]) -> None:
    import pyarrow.parquet as pq

    local = next((f for f in files if "://" not in f), None)
    if local is None:
        return
    try:
        schema = pq.read_schema(local)
    except (OSError, pa.ArrowException) as e:
        raise CorpusError(f"{local}: not a readable Parquet file ({e})") from None
    for field in filter(None, (cfg.text_field, cfg.label_field)):
        if field not in schema.names:
            raise CorpusError(f"{local}: no column {field!r} (columns: {', '.join(schema.names)})")
    text_type = schema.field(cfg.text_field).type
    value_type = text_type.value_type if pa.types.is_dictionary(text_type) else text_type
    if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)):
        raise CorpusError(f"{local}: column {cfg.text_field!r} holds {text_type}, not strings")


def is_validation(text: str, val_fraction: float) -> bool:
    """Whether a document belongs to the validation split: a hash of its text decides."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 1_000_000 < val_fraction * 1_000_000


def _select(batch: pa.Table, val: bool, val_fraction: float) -> pa.Table:
    mask = [is_validation(t, val_fraction) == val for t in batch.column("text").to_pylist()]
    return batch.filter(pa.array(mask, pa.bool_()))


def split(ds, val_fraction: float):
    """``(train, val)`` datasets; a document's side depends only on its text.

    The split is the same whatever the file order, batching or number of workers, and
    duplicate documents always land on the same side.
    """
    def side(val: bool):
        return ds.map_batches(_select, batch_format="pyarrow", fn_kwargs={"val": val, "val_fraction": val_fraction})

    return side(False), side(True)


def count_documents(ds, source: str) -> int:
    """Run the dataset and count its documents; a corpus error surfaces as a clean CorpusError."""
    try:
        n = ds.count()
    except Exception as e:
        err = find_sslab_error(e)
        if not isinstance(err, CorpusError):
            raise
        # Ray wraps the worker's error (RayTaskError(CorpusError), whose str() is a traceback)
        # and appends retry advice to its message: re-raise it as raised, on one line.
        raise CorpusError(str(getattr(err, "cause", err)).split("\n", 1)[0]) from e
    if n == 0:
        raise CorpusError(f"corpus {source!r} is empty after cleaning")
    return n
