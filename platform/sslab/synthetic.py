"""The built-in synthetic corpus: small, deterministic, and with structure a model can learn.

Each document has one topic (its probe label) and ``sentences_per_doc`` sentences on one line::

    first a muvi kotapa called rasin belokes the tiva. then rasin belokes the nubas with the
    domafe. next the muvi kotapa zeraes the kadi because it is muvi. ... finally ...

What there is to learn, from short to long range:

- grammar: ``the [ADJ] NOUN VERB the [ADJ] NOUN``, number agreement between subject and verb
  (``the kotapa belokes`` / ``the kotapas beloke``) and pronoun (``it is`` / ``they are``);
- lexical preferences: each noun has a few verbs and adjectives it mostly goes with;
- topic: nouns, verbs and adjectives come from the document's topic (10 % noise nouns);
- entities: sentence 1 introduces ``a NOUN called NAME``, later sentences refer back to the
  name or the noun, so a masked name can only be recovered from earlier in the document;
- discourse: sentences start with ``first``, then ``then``/``next``/``later`` in a fixed cycle,
  and the last with ``finally``, so swapped sentences are detectable (sentence-order prediction).

Document ``i`` depends only on the config and ``i``; the vocabulary only on the seed and the
number of topics. Words are lowercase ASCII pseudo-words built from consonant-vowel syllables.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from sslab.config import SyntheticConfig

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
SYLLABLES = [c + v for c in CONSONANTS for v in VOWELS]
FUNCTION_WORDS = frozenset("the a and of with because it they is are called first then next later finally".split())
MIDDLE_MARKERS = ("then", "next", "later")
NOUNS, VERBS, ADJECTIVES, NAMES = 30, 15, 15, 300
PREFERRED = 3  # verbs and adjectives each noun prefers


@dataclass(frozen=True)
class Topic:
    """One topic's words (stems) and each noun's preferred verbs and adjectives (indices)."""

    nouns: tuple[str, ...]
    verbs: tuple[str, ...]
    adjectives: tuple[str, ...]
    noun_verbs: tuple[tuple[int, ...], ...]
    noun_adjectives: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Lexicon:
    """The whole vocabulary of a synthetic corpus."""

    topics: tuple[Topic, ...]
    names: tuple[str, ...]


def markers(n: int) -> list[str]:
    """The discourse marker opening each of the ``n`` sentences of a document, in order."""
    middle = [MIDDLE_MARKERS[k % len(MIDDLE_MARKERS)] for k in range(n - 2)]
    return ["first", *middle, "finally"]


@functools.lru_cache(maxsize=8)
def lexicon(seed: int, num_topics: int) -> Lexicon:
    """The vocabulary for ``seed`` and ``num_topics`` (cached: built once per process)."""
    rng = np.random.default_rng([_unsigned(seed), num_topics, 0x1E7])
    per_topic = NOUNS + VERBS + ADJECTIVES
    stems = _pseudo_words(rng, num_topics * per_topic, final="")
    names = _pseudo_words(rng, NAMES, final="nlr")
    topics = []
    for t in range(num_topics):
        words = stems[t * per_topic:(t + 1) * per_topic]
        topics.append(Topic(nouns=tuple(words[:NOUNS]), verbs=tuple(words[NOUNS:NOUNS + VERBS]),
                            adjectives=tuple(words[NOUNS + VERBS:]),
                            noun_verbs=_preferences(rng, VERBS), noun_adjectives=_preferences(rng, ADJECTIVES)))
    return Lexicon(topics=tuple(topics), names=tuple(names))


def _preferences(rng: np.random.Generator, choices: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(rng.choice(choices, PREFERRED, replace=False).tolist()) for _ in range(NOUNS))


def _pseudo_words(rng: np.random.Generator, n: int, final: str) -> list[str]:
    """``n`` distinct words of 2-3 syllables (plus a final consonant from ``final`` if given).

    Plain stems end in a vowel, so a plural or verb form (stem + "s") never equals another stem,
    and names (which end in a consonant) never equal a stem.
    """
    seen = set(FUNCTION_WORDS)
    words: list[str] = []
    while len(words) < n:
        syl = rng.integers(len(SYLLABLES), size=(2 * n, 3))
        lengths = rng.integers(2, 4, size=2 * n)
        ends = rng.integers(len(final), size=2 * n) if final else None
        for k in range(2 * n):
            word = "".join(SYLLABLES[s] for s in syl[k, :lengths[k]]) + (final[ends[k]] if final else "")
            if word not in seen and len(words) < n:
                seen.add(word)
                words.append(word)
    return words


class _Draws:
    """Uniform draws from one document's generator, fetched in bulk (scalar numpy calls are slow)."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.buf = rng, []

    def uniform(self) -> float:
        if not self.buf:
            self.buf = self.rng.random(256).tolist()[::-1]
        return self.buf.pop()

    def index(self, n: int) -> int:
        return min(int(self.uniform() * n), n - 1)

    def chance(self, p: float) -> bool:
        return self.uniform() < p


def _noun(stem: str, plural: bool) -> str:
    return stem + "s" if plural else stem


def _verb(stem: str, plural: bool) -> str:
    return stem if plural else stem + "s"  # agreement: "the kotapa belokes", "the kotapas beloke"


def _pick_pref(d: _Draws, words: tuple[str, ...], prefs: tuple[int, ...], p: float = 0.8) -> str:
    return words[prefs[d.index(len(prefs))]] if d.chance(p) else words[d.index(len(words))]


def _object(d: _Draws, lex: Lexicon, t: Topic) -> list[str]:
    """``the [ADJ] NOUN(s)``; one noun in ten comes from another topic (noise)."""
    topic = lex.topics[d.index(len(lex.topics))] if d.chance(0.1) else t
    n = d.index(NOUNS)
    adj = [_pick_pref(d, topic.adjectives, topic.noun_adjectives[n])] if d.chance(0.4) else []
    return ["the", *adj, _noun(topic.nouns[n], d.chance(0.3))]


def _sentence(d: _Draws, lex: Lexicon, t: Topic, marker: str, hero: int, name: str) -> str:
    """One sentence; the subject is the document's entity (by name or noun) or another noun."""
    if d.chance(0.5):
        noun, plural, subject = hero, False, [name]
    else:
        noun = hero if d.chance(0.4) else d.index(NOUNS)
        plural = noun != hero and d.chance(0.4)
        adj = [_pick_pref(d, t.adjectives, t.noun_adjectives[noun])] if d.chance(0.5) else []
        subject = ["the", *adj, _noun(t.nouns[noun], plural)]
    words = [marker, *subject, _verb(_pick_pref(d, t.verbs, t.noun_verbs[noun]), plural), *_object(d, lex, t)]
    if d.chance(0.25):
        words += ["with", *_object(d, lex, t)]
    if d.chance(0.3):
        words += ["because", "they" if plural else "it", "are" if plural else "is",
                  _pick_pref(d, t.adjectives, t.noun_adjectives[noun], p=1.0)]
    return " ".join(words) + "."


def _intro(d: _Draws, lex: Lexicon, t: Topic, hero: int, name: str) -> str:
    adj = _pick_pref(d, t.adjectives, t.noun_adjectives[hero])
    verb = _verb(_pick_pref(d, t.verbs, t.noun_verbs[hero]), False)
    return " ".join(["first", "a", adj, t.nouns[hero], "called", name, verb, *_object(d, lex, t)]) + "."


def document(cfg: SyntheticConfig, i: int) -> tuple[str, str]:
    """Document ``i``: ``(text, label)``, a function of ``cfg`` and ``i`` only."""
    lex = lexicon(cfg.seed, cfg.num_topics)
    d = _Draws(np.random.default_rng([_unsigned(cfg.seed), i]))
    topic = d.index(cfg.num_topics)
    t, hero, name = lex.topics[topic], d.index(NOUNS), lex.names[d.index(NAMES)]
    marks = markers(cfg.sentences_per_doc)
    sentences = [_intro(d, lex, t, hero, name)]
    sentences += [_sentence(d, lex, t, m, hero, name) for m in marks[1:]]
    return " ".join(sentences), f"topic_{topic:02d}"


def generate(cfg: SyntheticConfig, start: int, stop: int) -> dict[str, list]:
    """Documents ``start`` to ``stop - 1`` as ``{"text": [...], "label": [...]}``."""
    docs = [document(cfg, i) for i in range(start, stop)]
    return {"text": [text for text, _ in docs], "label": [label for _, label in docs]}


def read_synthetic(cfg: SyntheticConfig):
    """The corpus as a Ray Dataset with string columns ``text`` and ``label``.

    Generation runs in Ray Data workers, one batch of document ids at a time.
    """
    import ray

    def batch_documents(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        docs = [document(cfg, int(i)) for i in batch["id"]]
        return {"text": np.array([t for t, _ in docs], dtype=object),
                "label": np.array([label for _, label in docs], dtype=object)}

    return ray.data.range(cfg.num_docs).map_batches(batch_documents, batch_format="numpy")


def _unsigned(seed: int) -> int:
    return seed % 2**64  # numpy seed sequences refuse negative entropy
