"""Small tables a user hands sslab (labelled documents, graded sentence pairs), read with pandas."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from sslab.errors import ConfigError

READERS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
"""The extensions read, and how."""


def kind_of(path: str | Path, what: str) -> str:
    """How to read the existing file ``path`` (a :data:`READERS` value); ConfigError naming
    ``what`` and the file when it is missing or of another extension."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist (or is not a file)")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"{what} {str(path)!r} has an unsupported extension {path.suffix!r}; "
                          f"use one of {', '.join(READERS)}")
    return kind


def read_table(path: str | Path, kind: str) -> pd.DataFrame:
    """The table in ``path`` read as ``kind``: text columns stay text (a label ``01`` is not 1),
    and a TSV's quote marks are part of its text, as in GLUE's STS-B files. A file pandas or
    pyarrow cannot parse is a ConfigError naming it, with the parser's first line."""
    try:
        if kind == "csv":
            return pd.read_csv(path, dtype=str)
        if kind == "tsv":
            return pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE)
        if kind == "parquet":
            return pd.read_parquet(path)
        with open(path, encoding="utf-8", errors="replace") as f:
            array = f.read(256).lstrip().startswith("[")  # a .json holding one array of records
        return pd.read_json(path, lines=not array)
    except Exception as e:  # pandas and pyarrow raise many kinds for a malformed file
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{str(path)!r} could not be read as {kind}: {first}") from None
