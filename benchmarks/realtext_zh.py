"""Real Chinese text nobody here wrote, assembled from what is installed on this machine, for the
checks that must not run only on the synthetic Chinese corpus (``realtext.py`` is its English twin).

The base, in sorted file order (naturally ordered, as real corpora come):

- the Chinese man pages (``/usr/share/man/zh_*``), roff macros and escapes stripped, one
  document per paragraph;
- the Chinese Vim tutors and GnuPG help (``tutor.zh*.utf-8``, ``help.zh_*.txt``), one document
  per paragraph;
- the translated messages (``msgstr``) of every Chinese gettext catalogue
  (``/usr/share/locale/zh*/LC_MESSAGES/*.mo``, Vim's too), one document per message.

Only documents of at least :data:`MIN_CJK` Chinese characters that are mostly Chinese (at least
half of their letters, :data:`MIN_SHARE`) are kept, each once. Simplified and traditional both.
A corpus larger than the base is the base followed by copies of it, each copy's documents
shuffled by its own seed and tagged with its number, as ``realtext.py`` does.

``python benchmarks/realtext_zh.py`` prints the size of the base and how ``corpus.sentence_split``
(``auto``) splits it into sentences.
"""
from __future__ import annotations

import gettext
import glob
import gzip
import random
import re
import statistics
import sys
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realtext  # noqa: E402  (its files and copies: write_lines)

MIN_CJK = 10
MIN_SHARE = 0.5
MAN_PAGES = "/usr/share/man/zh*/man*/*.gz"
PLAIN_FILES = ("/usr/share/vim/vim*/tutor/tutor.zh*.utf-8", "/usr/share/gnupg/help.zh*.txt")
CATALOGUES = ("/usr/share/locale/zh*/LC_MESSAGES/*.mo", "/usr/share/vim/vim*/lang/zh*/LC_MESSAGES/*.mo")

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LETTER = re.compile(r"[A-Za-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Roff: font and size changes, motions, named characters; what is left of a line is its text.
ROFF_CHARS = {"lq": "“", "rq": "”", "aq": "'", "oq": "‘", "cq": "’", "dq": '"', "bu": "•", "em": "—",
              "en": "–", "hy": "-", "mi": "-", "co": "©", "tm": "™", "rg": "®", "ti": "~", "ha": "^"}
ROFF_ESCAPE = re.compile(r"\\(?:f(?:\[[^]]*]|\(..|.)|s[-+]?\d+|[hvwlLxoDzkn]'[^']*'|\*(?:\(..|\[[^]]*]|.)"
                         r"|\((..)|\[([^]]*)]|(.))")
TEXT_MACROS = {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB"}  # font macros whose arguments are text


def is_chinese(text: str) -> bool:
    """At least :data:`MIN_CJK` Chinese characters, and at least :data:`MIN_SHARE` of the letters."""
    cjk = len(CJK.findall(text))
    return cjk >= MIN_CJK and cjk >= MIN_SHARE * len(LETTER.findall(text))


def join_lines(lines: list[str]) -> str:
    """Wrapped lines as one paragraph: no space where a Chinese line break falls between two
    non-ASCII characters, one space elsewhere."""
    out = ""
    for line in (ln.strip() for ln in lines):
        if line:
            glue = "" if not out or (ord(out[-1]) > 0x2E7F and ord(line[0]) > 0x2E7F) else " "
            out += glue + line
    return out


def _roff_escape(match: re.Match) -> str:
    two, named, one = match.groups()
    if two or named:
        return ROFF_CHARS.get(two or named, "")
    return {"-": "-", "e": "\\", " ": " ", "~": " ", "0": " "}.get(one or "", "")


def man_paragraphs(source: str) -> list[str]:
    """A roff man page's paragraphs as plain text: a macro line ends a paragraph, except a font
    macro (``.B``, ``.BR`` …) whose arguments are part of it."""
    paragraphs, current = [], []
    for line in source.splitlines():
        if line.startswith((".", "'")):
            name, _, args = line[1:].strip().partition(" ")
            if name in TEXT_MACROS:
                current.append(args.replace('"', ""))
                continue
            paragraphs.append(current)
            current = []
            if name in ("SH", "SS", "TP", "IP"):  # a heading's or an item's text is a paragraph of its own
                paragraphs.append([args.replace('"', "")])
            continue
        current.append(line)
    paragraphs.append(current)
    return [join_lines([ROFF_ESCAPE.sub(_roff_escape, ln) for ln in p]) for p in paragraphs]


def plain_paragraphs(source: str) -> list[str]:
    """A plain text file's paragraphs: blank lines, comments (``#``) and GnuPG's ``.key`` lines
    separate them."""
    paragraphs, current = [], []
    for line in source.splitlines():
        if not line.strip() or line.startswith(("#", ".")) or set(line.strip()) <= set("=~-"):
            paragraphs.append(current)
            current = []
        else:
            current.append(line)
    paragraphs.append(current)
    return [join_lines(p) for p in paragraphs]


def catalogue_messages(path: str) -> list[str]:
    """The translated messages of a gettext ``.mo`` file (plural forms each), whitespace collapsed."""
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog  # the standard library's own parser
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    return [" ".join(text.split()) for key, text in sorted(catalog.items(), key=repr) if key != ""]


def sources() -> list[tuple[str, list[str]]]:
    """Every source file and its candidate documents, in sorted file order."""
    found = []
    for path in sorted(glob.glob(MAN_PAGES)):
        found.append((path, man_paragraphs(gzip.decompress(Path(path).read_bytes()).decode("utf-8", "replace"))))
    for path in sorted(p for pattern in PLAIN_FILES for p in glob.glob(pattern)):
        found.append((path, plain_paragraphs(Path(path).read_text(encoding="utf-8", errors="replace"))))
    for path in sorted(p for pattern in CATALOGUES for p in glob.glob(pattern)):
        found.append((path, catalogue_messages(path)))
    return found


@cache
def base_lines() -> tuple[str, ...]:
    """The distinct Chinese documents of :func:`sources`, in file order, whitespace collapsed."""
    seen: dict[str, None] = {}
    for _, docs in sources():
        for doc in docs:
            doc = " ".join(doc.split())
            if is_chinese(doc):
                seen.setdefault(doc)
    return tuple(seen)


def write_corpus(dest: Path, megabytes: float) -> Path:
    """A folder of text files of about ``megabytes`` MB of real Chinese text, one document per
    line (see the module's docstring)."""
    lines = base_lines()
    if not lines:
        raise SystemExit("no Chinese text found (man pages, Vim tutors, gettext catalogues under /usr/share)")
    return realtext.write_lines(dest, megabytes, lines)


def kind(path: str) -> str:
    return "man pages" if "/man/" in path else "messages" if path.endswith(".mo") else "tutors and help"


def main() -> None:
    """The base's size, and its sentences by ``corpus.sentence_split=auto``, per kind of source."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
    from sslab.sentences import split_sentences

    lines = base_lines()
    print(f"{len(lines):,} distinct Chinese documents, {sum(len(t.encode()) for t in lines) / 1e6:.2f} MB "
          f"(UTF-8), {sum(len(t) for t in lines):,} characters")
    by_kind: dict[str, dict[str, None]] = {}
    for path, docs in sources():
        by_kind.setdefault(kind(path), {}).update(dict.fromkeys(d for d in (" ".join(x.split()) for x in docs)
                                                                 if is_chinese(d)))
    for name, docs in by_kind.items():
        counts = [len(split_sentences(t)) for t in docs]
        print(f"{name}: {len(docs):,} documents, {sum(len(t) for t in docs):,} characters; sentences per "
              f"document median {statistics.median(counts)}, mean {statistics.mean(counts):.2f}, max {max(counts)}; "
              f"{sum(n > 1 for n in counts) / len(counts):.0%} have more than one")
    several = [t for t in lines if len(split_sentences(t)) > 1]
    for text in random.Random(0).sample(several, min(12, len(several))):
        print(" | ".join(split_sentences(text)))


if __name__ == "__main__":
    main()
