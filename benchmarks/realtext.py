"""Real text nobody here wrote, assembled from what is installed on this machine, for the
benchmarks that must not run on the synthetic corpus (DESIGN.md: the synthetic corpus hides what
real text shows).

The base is the documentation text under ``/usr/share/doc`` (licences, READMEs, changelogs,
manuals: ``*.txt``, ``*.md``, ``*.rst``, ``copyright``) and the ``*.md``, ``*.rst`` and ``*.txt``
files of the installed Python packages, one document per non-empty line, in sorted file order:
naturally ordered, as real corpora come. A corpus larger than the base is the base followed by
copies of it, each copy's lines shuffled by its own seed and tagged with its number, so no two
copies give the same blocks.
"""
from __future__ import annotations

import random
import sys
from functools import cache
from pathlib import Path

DOCS = Path("/usr/share/doc")
SUFFIXES = (".txt", ".md", ".rst")
FILE_BYTES = 8 << 20  # one corpus file holds about this much


def documentation_files() -> list[Path]:
    """The text files the base is read from, in sorted order."""
    roots = [DOCS] + [Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    files = []
    for root in roots:
        if root.is_dir():
            files += [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                      and (p.suffix in SUFFIXES or p.name == "copyright")]
    return sorted(set(files))


@cache
def base_lines() -> tuple[str, ...]:
    """Every non-empty line of :func:`documentation_files` with at least 3 words, in file order."""
    lines = []
    for path in documentation_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        lines += [line.strip() for line in text.splitlines() if len(line.split()) >= 3]
    return tuple(lines)


def write_corpus(dest: Path, megabytes: float) -> Path:
    """A folder of text files of about ``megabytes`` MB of real text (see the module's docstring)."""
    lines = base_lines()
    if not lines:
        raise SystemExit("no documentation text found under /usr/share/doc or site-packages")
    return write_lines(dest, megabytes, lines)


def write_lines(dest: Path, megabytes: float, lines: tuple[str, ...]) -> Path:
    """``lines`` (one document each), then copies of them, each shuffled by its own seed and tagged
    with its number, as text files in ``dest`` until they hold about ``megabytes`` MB."""
    dest.mkdir(parents=True, exist_ok=True)
    target, written, copy = int(megabytes * (1 << 20)), 0, 0
    part, out = 0, None
    while written < target:
        order = list(lines)
        if copy:
            random.Random(copy).shuffle(order)
        for line in order:
            if out is None or out.tell() >= FILE_BYTES:
                if out:
                    out.close()
                out = open(dest / f"part-{part:05d}.txt", "w", encoding="utf-8")
                part += 1
            text = (f"[{copy}] {line}" if copy else line) + "\n"
            out.write(text)
            written += len(text.encode())
            if written >= target:
                break
        copy += 1
    out.close()
    return dest


def corpus_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())
