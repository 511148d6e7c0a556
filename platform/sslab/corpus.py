"""Reading a corpus into cleaned ``{text, label}`` rows with Ray Data.

A corpus is a file, a folder or a glob, local, ``file://`` or in object storage (``s3://``,
``gs://`` ...), listed on the driver through a pyarrow filesystem that Ray Data then reads with.
:func:`check` runs on the driver before Ray starts, so a missing, empty, mixed, binary or
unreadable corpus fails at once with a :class:`CorpusError`. ``read_documents`` builds the lazy
dataset: files are read and split into documents inside Ray Data workers; a malformed file raises
a ``CorpusError`` there, which reaches the driver wrapped by Ray (``find_sslab_error`` finds it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
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


@dataclass(frozen=True)
class CorpusFiles:
    """The files of a corpus and the filesystem Ray Data reads them with.

    The driver builds ``filesystem`` once and Ray Data pickles it into every read task: an S3
    endpoint, and S3 keys from the driver's environment, reach its workers by value, on a local
    Ray and on a joined cluster alike."""

    filesystem: pafs.FileSystem
    paths: list[str]
    """Paths on ``filesystem`` (``bucket/key`` in object storage)."""
    sizes: list[int]
    mtimes_ns: list[int]
    """Modification times (0 where the filesystem gives none): with the sizes, what says a file changed."""
    prefix: str = ""
    """What makes a path the URI a user knows (``s3://``); empty for local files."""

    @property
    def uris(self) -> list[str]:
        return [self.prefix + p for p in self.paths]


def resolve_files(cfg: CorpusConfig) -> list[str]:
    """The files ``cfg.source`` names: a file, a directory or prefix (recursive), or a glob,
    local, ``file://`` or in object storage (``s3://``, ``gs://`` ...); ``synthetic`` has none.

    Hidden files are skipped; with ``format: auto`` a directory contributes only files with a
    known extension, unless none has one. Local files are absolute paths, others URIs."""
    return [] if cfg.source == "synthetic" else list_files(cfg).uris


def list_files(cfg: CorpusConfig) -> CorpusFiles:
    """Like :func:`resolve_files`, with the filesystem that holds the files and their sizes."""
    fs, path = open_filesystem(cfg.source)
    is_glob = any(c in path for c in "*?[")
    try:
        found = _glob(fs, path) if is_glob else _walk(fs, path, cfg.format, cfg.source)
    except OSError as e:  # no such bucket, no permission, no connection
        raise CorpusError(f"corpus.source {cfg.source!r} cannot be listed: {e}") from None
    if not found:
        raise CorpusError(f"corpus.source {cfg.source!r} " + ("matches no files" if is_glob else "holds no files"))
    found.sort(key=lambda info: info.path)
    local = isinstance(fs, pafs.LocalFileSystem) or "://" in found[0].path
    return CorpusFiles(fs, [i.path for i in found], [i.size for i in found], [i.mtime_ns or 0 for i in found],
                       "" if local else urlsplit(cfg.source).scheme + "://")


def open_filesystem(source: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding ``source`` and its path there, found as Ray Data finds them:
    pyarrow's own filesystems (local, ``file://``, ``s3://``, ``gs://`` ...), fsspec's otherwise.

    S3 settings come from the URI's query (``?endpoint_override=http://host:9000``) or the
    environment (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_REGION`` ...)."""
    if "://" not in source:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(source))
    try:
        fs, path = pafs.FileSystem.from_uri(source)
    except pa.ArrowInvalid as e:  # a scheme pyarrow has no filesystem for (https://, memory:// ...)
        try:
            import fsspec

            spec_fs, path = fsspec.core.url_to_fs(source)
        except (ImportError, ValueError) as spec_error:
            raise CorpusError(f"corpus.source {source!r}: no filesystem reads it ({e}; {spec_error})") from None
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(spec_fs))
    except OSError as e:  # e.g. the bucket's region cannot be found: no such bucket, no network
        raise CorpusError(f"corpus.source {source!r}: {e}") from None
    return _with_driver_keys(fs), path


def _with_driver_keys(fs: pafs.FileSystem) -> pafs.FileSystem:
    """An S3 filesystem that carries the keys of the driver's environment, when it holds some.

    pyarrow pickles an S3 filesystem with its endpoint, region and scheme but with keys only when
    they were given explicitly; without them a worker whose environment lacks the keys (any
    worker of a cluster the driver joined) would try the node's own credentials instead."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if fs.type_name != "s3" or not (key and secret):
        return fs
    _, (options,) = fs.__reduce__()  # pyarrow's own pickled form: S3FileSystem's keyword arguments
    if options["access_key"] or options["anonymous"] or options["role_arn"]:
        return fs  # the URI chose how to sign, and that travels with it already
    options.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
    return pafs.S3FileSystem(**options)


def _walk(fs: pafs.FileSystem, path: str, fmt: str, source: str) -> list[pafs.FileInfo]:
    """A file, or the visible files under a directory or prefix."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [info]
    if info.type != pafs.FileType.Directory:
        bucket = path.split("/", 1)[0]
        if fs.type_name in ("s3", "gcs") and fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise CorpusError(f"corpus.source {source!r}: there is no bucket {bucket!r}")
        raise CorpusError(f"corpus.source {source!r} does not exist (no file, folder or prefix of that name)")
    entries = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = [i for i in entries if i.type == pafs.FileType.File and not _hidden(i.path, path)]
    known = [i for i in files if PurePosixPath(i.path).suffix.lower() in FORMATS]
    return known if fmt == "auto" and known else files


def _glob(fs: pafs.FileSystem, pattern: str) -> list[pafs.FileInfo]:
    """The visible files a glob matches (``**`` spans folders)."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    root = pattern[:min(pattern.index(c) for c in "*?[" if c in pattern)].rsplit("/", 1)[0]
    matches = ArrowFSWrapper(fs).glob(pattern, detail=True).values()
    paths = [m["name"] for m in matches if m["type"] == "file" and not _hidden(m["name"], root)]
    return fs.get_file_info(paths) if paths else []  # as a folder's listing gives them


def _hidden(path: str, root: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(path).relative_to(root).parts)


def resolve_format(cfg: CorpusConfig, files: list[str]) -> str:
    """``text``, ``jsonl`` or ``parquet``: ``cfg.format``, or by extension when it is ``auto``."""
    if cfg.format != "auto":
        return cfg.format
    by_format: dict[str, list[str]] = {}
    for f in files:
        by_format.setdefault(FORMATS.get(PurePosixPath(f).suffix.lower(), "text"), []).append(f)
    if len(by_format) > 1:
        kinds = "; ".join(f"{k}: {PurePosixPath(v[0]).name}" + (f" and {len(v) - 1} more" if len(v) > 1 else "")
                          for k, v in sorted(by_format.items()))
        raise CorpusError(f"corpus {cfg.source!r} mixes file formats ({kinds}); "
                          "point corpus.source at one kind or set corpus.format")
    return next(iter(by_format))


def fingerprint(cfg: CorpusConfig, files: CorpusFiles | None = None) -> str:
    """A digest of what decides the corpus's documents and their split: every file's URI, size and
    modification time (for the synthetic corpus, its settings and its generator's code) and the
    reader's options. A file added, removed, rewritten or touched changes it; naming the same
    files another way (a folder, a glob) does not. ``files``: the corpus listed already
    (:func:`check`), so that the digest names exactly the files that are read."""
    # sentence_split decides no document: the prepared-data key of the units it shapes holds it.
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("source", "synthetic", "sentence_split")}
    if cfg.source == "synthetic":
        from sslab import synthetic

        read = {"synthetic": dataclasses.asdict(cfg.synthetic),
                "generator": hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()}
    else:
        files = files or list_files(cfg)
        read = {"files": [list(f) for f in zip(files.uris, files.sizes, files.mtimes_ns)],
                "format": resolve_format(cfg, files.uris)}
    return hashlib.sha256(json.dumps({**options, **read}, sort_keys=True).encode()).hexdigest()


def check(cfg: CorpusConfig) -> CorpusFiles | None:
    """Everything about the corpus the driver can check before Ray starts, each failure a
    :class:`CorpusError` naming the path or URI: the files exist and are of one format, they are
    not all empty, and (the first files, by their first bytes) text files hold UTF-8 text, files
    without an extension that hold JSON Lines or Parquet are not taken for text, and Parquet files
    have the configured columns. The workers check every file in full as they read it. Returns
    the listing it checked (None for the synthetic corpus): :func:`fingerprint` and
    :func:`read_documents` take it, so one preparation lists the corpus once."""
    if cfg.source == "synthetic":
        return None
    files = list_files(cfg)
    fmt = resolve_format(cfg, files.uris)
    if all(size == 0 for size in files.sizes):
        raise CorpusError(f"corpus {cfg.source!r} is empty: its {len(files.paths)} file(s) hold 0 bytes")
    if fmt == "parquet":
        _check_parquet_columns(cfg, files)
        return files
    for path, uri in list(zip(files.paths, files.uris))[:SNIFF_FILES]:
        with files.filesystem.open_input_file(path) as f:
            head = f.read(SNIFF_BYTES)
        problem = not_text(head, head.decode("utf-8-sig", errors="replace"))
        if cfg.format == "auto" and PurePosixPath(uri).suffix.lower() not in FORMATS:
            problem = problem or _not_plain_text(head)
        if problem:
            raise CorpusError(f"{uri}: {problem}")
    return files


def _not_plain_text(head: bytes) -> str | None:
    """Why a file without a known extension should not be read as plain text, or None: it holds
    Parquet or JSON Lines (object stores are full of ``part-00000`` files), which ``format: auto``
    would otherwise train on as raw bytes or raw JSON lines."""
    if head.startswith(b"PAR1"):
        return "a Parquet file without the .parquet extension; set corpus.format=parquet"
    first = head.lstrip().split(b"\n", 1)[0]
    try:
        record = json.loads(first)
    except ValueError:
        return None
    if isinstance(record, dict):
        return ("holds JSON Lines but has no .jsonl extension; set corpus.format=jsonl "
                "(or corpus.format=text to train on the raw lines)")
    return None


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


def _parse_files(batch: dict, fmt: str, cfg: CorpusConfig, prefix: str) -> pa.Table:
    texts, labels = [], []
    for data, path in zip(batch["bytes"], batch["path"]):
        path = path if "://" in path else prefix + path  # Ray Data gives bucket/key: name the URI
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


def has_labels(cfg: CorpusConfig) -> bool:
    """Whether the corpus's documents may carry a label (the synthetic corpus's topics, or
    ``corpus.label_field`` of JSON Lines or Parquet records); plain text never does."""
    return cfg.source == "synthetic" or bool(cfg.label_field)


def read_documents(cfg: CorpusConfig, files: CorpusFiles | None = None):
    """The cleaned corpus as a lazy Ray Dataset with string columns ``text`` and ``label``.

    ``label`` is None where the corpus has no label. Reading happens when the dataset runs;
    a malformed file then raises a :class:`CorpusError` naming the file (and line). ``files``:
    the listing :func:`check` returned, read as it is (listed and checked once).
    """
    import ray

    if cfg.source == "synthetic":
        from sslab.synthetic import read_synthetic

        ds, text_col, label_col = read_synthetic(cfg.synthetic), "text", "label"
    else:
        checked, files = files is not None, files or list_files(cfg)
        fmt = resolve_format(cfg, files.uris)
        if fmt == "parquet":
            if not checked:  # check() has read the footers of a listing it returned
                _check_parquet_columns(cfg, files)
            columns = [cfg.text_field] + ([cfg.label_field] if cfg.label_field else [])
            ds = ray.data.read_parquet(files.uris, filesystem=files.filesystem, columns=columns)
            text_col, label_col = cfg.text_field, cfg.label_field
        else:
            ds = ray.data.read_binary_files(files.uris, filesystem=files.filesystem, include_paths=True)
            ds = ds.map_batches(_parse_files, batch_format="numpy",
                                fn_kwargs={"fmt": fmt, "cfg": cfg, "prefix": files.prefix})
            text_col, label_col = "text", "label"
    # By default Ray Data replaces a UDF's exception by a UserCodeException whose cause is lost
    # on the way to the driver; this keeps the CorpusError itself. The setting lives in this
    # dataset's context, shared by datasets derived from it, not in the global one.
    ds.context.raise_original_map_exception = True
    return ds.map_batches(_clean, batch_format="pyarrow",
                          fn_kwargs={"text_col": text_col, "label_col": label_col, "min_chars": cfg.min_chars})


def _check_parquet_columns(cfg: CorpusConfig, files: CorpusFiles) -> None:
    import pyarrow.parquet as pq

    path, uri = files.paths[0], files.uris[0]
    try:
        schema = pq.read_schema(path, filesystem=files.filesystem)
    except (OSError, pa.ArrowException) as e:
        raise CorpusError(f"{uri}: not a readable Parquet file ({e})") from None
    for field in filter(None, (cfg.text_field, cfg.label_field)):
        if field not in schema.names:
            raise CorpusError(f"{uri}: no column {field!r} (columns: {', '.join(schema.names)})")
    text_type = schema.field(cfg.text_field).type
    value_type = text_type.value_type if pa.types.is_dictionary(text_type) else text_type
    if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)):
        raise CorpusError(f"{uri}: column {cfg.text_field!r} holds {text_type}, not strings")


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
