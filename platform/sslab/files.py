"""Files written whole: a reader sees the old file or the new one, never half of either."""
from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.fs as pafs


def write_whole(path: str | Path, data: str | bytes, fs: pafs.FileSystem | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, then move it over ``path``: a rename on
    a local or NFS disk, one whole object in object storage (``fs``, the local disk by default).
    A failed write leaves ``path`` as it was and no temporary file behind."""
    fs = fs or pafs.LocalFileSystem()
    parent, _, name = str(path).rpartition("/")
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data.encode() if isinstance(data, str) else data)
        fs.move(tmp, str(path))
    finally:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
