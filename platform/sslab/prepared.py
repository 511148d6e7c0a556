"""Prepared data: a corpus tokenised and packed once into the objective's unit rows, in Parquet
shards under a content-addressed directory, with a manifest written last.

An entry is named by a key that covers everything that changes its rows: the corpus's
fingerprint (:func:`sslab.corpus.fingerprint`), the tokenizer itself, ``seq_len``, the unit and
the evaluation unit, and this module's format. A changed input gives another key, so an entry
is never stale; the manifest, written atomically once every shard is in place, is what makes an
entry exist, so a preparation killed midway leaves nothing that looks complete. Counts (rows,
tokens) are read from the manifest, never from a pass over the data.

Two preparations of one key at once tokenise it once: on a local or NFS cache the entry has one
owner (:mod:`sslab.owner`), and the second waits for it and finds its entry. Even without that
lock (object storage has none) they do not collide: each writes its shards under a directory of
its own (``attempt-<uuid>``) and names them in the manifest it writes, so whichever manifest lands
last names complete shards. Streaming the shards in training order is :mod:`sslab.stream`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray.data
from ray.data.datasource import FilenameProvider

from sslab import owner, progress
from sslab.config import DataConfig
from sslab.errors import RunError
from sslab.files import write_whole

FORMAT = 2
"""The layout of an entry's rows and manifest; raise it when either changes, or when the cleaning,
tokenising or packing code changes the rows a corpus gives."""
MANIFEST = "manifest.json"


def digest(*parts) -> str:
    """A hex digest of JSON-serialisable ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def data_key(corpus_fingerprint: str, tokenizer_json: str, seq_len: int, unit: str, eval_unit: str | None,
             *, word_segmenter: str | None = None, sentence_split: str = "auto") -> str:
    """The name of the entry holding a corpus's ``unit`` rows of ``seq_len`` tokens under one
    tokenizer (``tokenizer_json``: its serialised form, special tokens included), with the word
    boundaries of ``word_segmenter`` when rows carry them. Rows built from sentences (any unit but
    ``packed``) also depend on ``sentence_split``, the rule that finds them; packed rows do not,
    so runs that differ only in it share their packed entry."""
    tokenizer = hashlib.sha256(tokenizer_json.encode()).hexdigest()
    parts = ["data", FORMAT, corpus_fingerprint, tokenizer, seq_len, unit, eval_unit]
    if word_segmenter:  # the keys of unsegmented entries stay as they were
        parts.append(word_segmenter)
    if {unit, eval_unit or unit} != {"packed"}:
        parts.append(sentence_split)
    return digest(*parts)[:32]


def tokenizer_key(corpus_fingerprint: str, tokenizer_cfg, max_length: int, seed: int) -> str:
    """The name of the tokenizer trained on a corpus (``tokenizer_cfg``: its
    :class:`~sslab.config.TokenizerConfig`; ``seed`` draws its sample). The word segmenter does
    not change the tokenizer, so not its key."""
    settings = {k: v for k, v in dataclasses.asdict(tokenizer_cfg).items() if k != "word_segmenter"}
    return digest("tokenizer", FORMAT, corpus_fingerprint, settings, max_length, seed)[:32]


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


def write_manifest(fs: pafs.FileSystem, entry: str, manifest: Manifest) -> None:
    """Write ``entry``'s manifest atomically (a temporary file moved over it: a rename on a local
    or NFS disk, one whole object in object storage): a reader sees the whole manifest or none.
    Call it last, once every shard it names is written."""
    write_whole(f"{entry}/{MANIFEST}", json.dumps(manifest.to_dict(), indent=1), fs)


def read_manifest(fs: pafs.FileSystem, entry: str, key: str) -> Manifest | None:
    """The manifest of a complete entry, or None when ``entry`` holds none (never prepared, or a
    preparation that did not finish). An entry of another format or key, or a manifest that does
    not parse, is refused with a message that says to prepare it again."""
    path = f"{entry}/{MANIFEST}"
    try:
        with fs.open_input_stream(path) as f:
            text = f.read().decode()
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


# ---------------------------------------------------------------- the cache


def cache_root(cfg: DataConfig) -> str:
    """The cache's directory or URI: ``data.cache_dir``, else ``$SSLAB_CACHE_DIR``, else
    ``~/.cache/sslab``; a local path comes back absolute (workers resolve it as the driver did)."""
    root = cfg.cache_dir or os.environ.get("SSLAB_CACHE_DIR") or "~/.cache/sslab"
    return root.rstrip("/") if "://" in root else str(Path(root).expanduser().resolve())


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``uri`` and its path there."""
    from sslab.corpus import open_filesystem  # late: corpus imports ray.data's readers

    if "://" not in uri:
        return pafs.LocalFileSystem(), uri
    try:
        return open_filesystem(uri)
    except Exception as e:  # noqa: BLE001 - its message names corpus.source
        raise RunError(f"data.cache_dir {uri!r}: no filesystem reaches it ({e})") from None


def check_writable(root: str) -> None:
    """Refuse a cache that cannot be written, before anything is tokenised."""
    fs, path = filesystem(root)
    probe = f"{path}/.write-test-{uuid.uuid4().hex}"
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as f:
            f.write(b"sslab")
        fs.delete_file(probe)
    except OSError as e:
        raise RunError(f"the data cache {root} is not writable ({e}); set data.cache_dir (or $SSLAB_CACHE_DIR) "
                       f"to a directory this machine and the Ray workers can write") from None


class ShardNames(FilenameProvider):
    """``shard-<task>-<write>.parquet``: in the dataset's order when sorted, unique per write."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"shard-{task_index:06d}-{write_uuid}.parquet"


@dataclass(frozen=True)
class Entry:
    """A complete prepared entry: where it is and what its manifest says."""

    uri: str
    manifest: Manifest
    tokenised: bool = False
    """This call wrote it (False: found in the cache, also after waiting for another's writing)."""

    def read(self, split: str, limit: int | None = None) -> pa.Table:
        """The first ``limit`` rows (all by default) of one split, in prepared order, read here
        with pyarrow: the validation and probe sets are small, and a Ray Data read would start
        listing and footer tasks (worker processes, on a small machine) at every run's start.
        Training reads through :meth:`stream`."""
        fs, path = filesystem(self.uri)
        tables, rows = [], 0
        for shard in self.manifest.splits[split].shards:
            if limit is not None and rows >= limit:
                break
            tables.append(pq.read_table(f"{path}/{shard.path}", filesystem=fs))
            rows += tables[-1].num_rows
        table = pa.concat_tables(tables) if tables else None
        if table is None:
            raise RunError(f"{self.uri} holds no {split} rows")
        return table if limit is None else table.slice(0, limit)

    def probe_documents(self, n: int) -> tuple[list[str], list[str]]:
        """The first ``n`` labelled validation documents kept for the probe: (texts, labels)."""
        split = self.manifest.splits.get(PROBE)
        if not split or not split.rows or n == 0:
            return [], []
        table = self.read(PROBE, n)
        return table.column("text").to_pylist(), table.column("label").to_pylist()

    def stream(self, cfg: DataConfig, seed: int):
        """The training split, to be read in ``cfg.shuffle``'s order (:class:`sslab.stream.Stream`)."""
        from sslab.stream import Stream

        return Stream(root=self.uri, shards=self.manifest.splits["train"].shards, shuffle=cfg.shuffle,
                      window=cfg.shuffle_window, seed=seed, opened=filesystem(self.uri))


def tokenizer_dir(root: str, key: str) -> Path | None:
    """Where the tokenizer of :func:`tokenizer_key` ``key`` is kept, on a local or NFS cache
    (one in object storage keeps prepared data only)."""
    return None if "://" in root else Path(root) / "tokenizers" / key


def find(root: str, key: str) -> Entry | None:
    """The complete entry ``key`` in the cache at ``root``, or None."""
    fs, path = filesystem(root)
    uri = f"{root}/data/{key}"
    manifest = read_manifest(fs, f"{path}/data/{key}", key)
    return Entry(uri, manifest) if manifest else None


PROBE = "probe"
"""The split of labelled validation documents (``text``, ``label``) the linear probe draws from."""
PROBE_DOCS = 10_000
"""Labelled documents kept for the probe (``eval.probe_docs`` takes its first ones)."""


def write(root: str, key: str, unit: str, seq_len: int, splits: dict[str, ray.data.Dataset], shard_rows: int,
          quiet: bool = True, probe: ray.data.Dataset | None = None, val_fraction: float | None = None) -> Entry:
    """Write ``splits`` (name: rows of ``unit``) as entry ``key`` and return it, with ``probe``'s
    labelled documents (at most :data:`PROBE_DOCS`; None: none) as the split :data:`PROBE`. The
    shards go to a directory of this attempt's own, the manifest last.

    Unless ``quiet``, and where Ray Data draws no bars (outside a terminal), a line every
    :data:`WATCH_EVERY_S` seconds says how far each split's writing is: rows and MB written, rows/s
    and, for the training split, an ETA from the rows that ``val_fraction`` of the documents gave
    ("val" is written first for that).

    On a local or NFS cache the entry is this call's while it writes: another preparation of
    ``key`` under way is waited for, and the entry it wrote returned (nothing is tokenised)."""
    if "://" in root:  # object storage: no lock, and no harm but the work done twice
        return write_entry(root, key, unit, seq_len, splits, shard_rows, quiet, probe, val_fraction)
    entry_dir = Path(root) / "data" / key

    def waiting(who: str) -> None:
        progress.say(f"prepared data: {entry_dir} is being written by {who}; waiting for it", quiet)

    with owner.hold(entry_dir, f"the data cache entry {entry_dir}", wait_s=None, waiting=waiting):
        found = find(root, key)
        if found is not None:
            progress.say(f"prepared data: found {found.uri}, written meanwhile by another command; "
                         f"nothing to tokenise", quiet)
            return found
        return write_entry(root, key, unit, seq_len, splits, shard_rows, quiet, probe, val_fraction)


def write_entry(root: str, key: str, unit: str, seq_len: int, splits: dict[str, ray.data.Dataset], shard_rows: int,
                quiet: bool, probe: ray.data.Dataset | None, val_fraction: float | None) -> Entry:
    """:func:`write`'s work, whoever else writes ``key``."""
    fs, path = filesystem(root)
    attempt = f"attempt-{uuid.uuid4().hex[:12]}"
    entry = f"{path}/data/{key}"
    written = {}
    parts = {name: (ds, unit) for name, ds in sorted(splits.items(), key=lambda kv: kv[0] != "val")}
    if probe is not None:
        parts[PROBE] = (probe.select_columns(["text", "label"]).limit(PROBE_DOCS), "documents")
    else:  # a corpus without labels: no pass to look for them
        written[PROBE] = Split(rows=0, tokens=0, shards=())
    watch = not quiet and not ray.data.DataContext.get_current().enable_progress_bars
    for name, (ds, kind) in parts.items():
        where = f"{entry}/{attempt}/{name}"
        expected = None
        if name == "train" and "val" in written and val_fraction and parts["val"][1] == kind:
            expected = round(written["val"].rows * (1 - val_fraction) / val_fraction)
        with progress.stage(f"prepare: writing the {name} split as {kind} rows to {root}/data/{key}", quiet), \
                watching(fs, where, name, shard_rows, expected, watch and kind != "documents"):
            try:
                # Shards of exactly shard_rows (the last one fewer): the unit the global shuffle reorders.
                ds.repartition(target_num_rows_per_block=shard_rows, strict=True).write_parquet(
                    where, filesystem=fs, min_rows_per_file=shard_rows, filename_provider=ShardNames())
            except Exception as e:
                cause = _os_error(e)
                if cause is None:
                    raise
                raise RunError(f"could not write the prepared data to {root}/data/{key} ({cause}); free space "
                               f"there or set data.cache_dir elsewhere") from None
        written[name] = _split(fs, entry, f"{attempt}/{name}", kind, seq_len)
    ordered = {name: written[name] for name in [*splits, PROBE] if name in written}  # as given, not as written
    manifest = Manifest(key=key, unit=unit, seq_len=seq_len, splits=ordered)
    write_manifest(fs, entry, manifest)
    return Entry(f"{root}/data/{key}", manifest, tokenised=True)


WATCH_EVERY_S = float(os.environ.get("SSLAB_PROGRESS_EVERY_S", 15))
"""Seconds between the progress lines of a split being written (outside a terminal)."""


@contextlib.contextmanager
def watching(fs: pafs.FileSystem, where: str, name: str, shard_rows: int, expected: int | None, on: bool):
    """While a split is written to ``where``: every :data:`WATCH_EVERY_S` seconds, its rows (each
    shard file holds ``shard_rows``) and MB written so far, rows/s and, given the ``expected``
    rows, an ETA. Listing the directory is the whole cost: the write itself is not touched."""
    if not on:
        yield
        return
    stop, start = threading.Event(), time.perf_counter()

    def report():
        while not stop.wait(WATCH_EVERY_S):
            infos = fs.get_file_info(pafs.FileSelector(where, allow_not_found=True))
            shards = [i for i in infos if i.base_name.endswith(".parquet")]
            progress.say(progress_line(name, len(shards) * shard_rows, sum(i.size or 0 for i in shards),
                                       time.perf_counter() - start, expected))

    thread = threading.Thread(target=report, name="sslab-prepare-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def progress_line(name: str, rows: int, nbytes: int, elapsed_s: float, expected: int | None) -> str:
    """``prepare: train split: 40,960 of about 160,000 rows, 21 MB written | 630 rows/s | eta 0:03:08``."""
    rate = rows / elapsed_s if elapsed_s > 0 else 0.0
    of = f" of about {expected:,}" if expected else ""
    eta = f" | eta {progress.fmt_duration((expected - rows) / rate)}" if expected and rate > 0 and rows < expected else ""
    return f"prepare: {name} split: {rows:,}{of} rows, {nbytes / 1e6:,.0f} MB written | {rate:,.0f} rows/s{eta}"


def _split(fs: pafs.FileSystem, entry: str, sub: str, unit: str, seq_len: int) -> Split:
    """A written split's shards and counts, from the Parquet footers (and the length columns of
    segment rows): no pass over the token data."""
    infos = fs.get_file_info(pafs.FileSelector(f"{entry}/{sub}", allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.base_name.endswith(".parquet"))
    shards, tokens = [], 0
    for name in names:
        f = f"{entry}/{sub}/{name}"
        rows = pq.ParquetFile(f, filesystem=fs).metadata.num_rows
        if rows == 0:
            continue
        shards.append(Shard(f"{sub}/{name}", rows))
        if unit == "packed":
            tokens += rows * seq_len
        elif unit != "documents":
            lengths = pq.read_table(f, filesystem=fs, columns=["a_len", "b_len"])
            tokens += sum(int(lengths[c].to_numpy().sum()) for c in ("a_len", "b_len"))
    return Split(rows=sum(s.rows for s in shards), tokens=tokens, shards=tuple(shards))


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind ``e`` (Ray wraps a write task's error), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    return None
