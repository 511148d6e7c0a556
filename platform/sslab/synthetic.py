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

Document ``i`` depends only on the config and ``i``; the vocabulary only on the seed, the
number of topics and the language. Words are lowercase ASCII pseudo-words built from
consonant-vowel syllables.

``language: zh`` gives Chinese text with the same structure, written without spaces::

    首先，一张单类级将的唱战鞋叫做冯文，宫牛了这张状眼。然后，冯文唱题了这些面字吗？接着，冯文层季了这座菜甜年。
    后来，冯文友唱了这个货象。然后，……。最后，冯文唱题了这些镜戴妻，因为它很恨环境吗？

Its words are pseudo-words of 2-4 common characters (nouns, verbs and adjectives per topic, as
above); each noun has a measure word (``一只``, ``这本``) that agrees with it, and a plural
(``这些`` without measure word) agrees with its pronoun (``它很`` / ``它们很``). Names are a
surname and one or two characters. Sentences end with ``。``, one in ten with ``！`` and one in
ten is a question ending ``吗？``; the discourse markers are ``首先``, ``然后``/``接着``/``后来``
and ``最后``, each followed by ``，``.

:func:`sts_pairs` gives sentence pairs in the same language with a known similarity grade, drawn
apart from the documents, for the sentence-similarity score (:mod:`sslab.sts`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from sslab.config import SyntheticConfig

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
SYLLABLES = [c + v for c in CONSONANTS for v in VOWELS]
FUNCTION_WORDS = frozenset("the a and of with because it they is are called first then next later finally".split())
MIDDLE_MARKERS = ("then", "next", "later")
NOUNS, VERBS, ADJECTIVES, NAMES = 30, 15, 15, 300
PREFERRED = 3  # verbs and adjectives each noun prefers

# Chinese: the characters of the function words, measure words and surnames never occur in a
# content word, so a segmenter can find the words and a name never equals a stem.
ZH_MARKERS = {"first": "首先", "then": "然后", "next": "接着", "later": "后来", "finally": "最后"}
ZH_CLASSIFIERS = "个只本条张座把台块位"
ZH_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾萧田董"
ZH_GIVEN = "明华强伟芳丽军杰涛静敏燕磊洋勇艳娜秀英兰平刚玉萍红娟霞峰鹏辉建国文"
_ZH_FUNCTION = "".join(ZH_MARKERS.values()) + "一叫做它们了这些的用因为很吗" + ZH_CLASSIFIERS + ZH_SURNAMES
ZH_CHARACTERS = "".join(dict.fromkeys(c for c in (
    "天地人山水火木金土日月星云风雨雪花草树林石田河海湖江川鱼鸟马牛羊虫龙虎狗猫鸡鸭米麦茶酒饭菜果瓜豆肉"
    "衣帽鞋布纸笔书画琴棋歌舞门窗房屋墙桥路车船灯钟镜盘碗杯瓶箱柜桌椅床被城村街市店园院厂校宫殿塔楼港岛"
    "湾谷峰原野光影声色味香甜苦酸辣冷热明暗新旧高低长短大小多少快慢远近深浅轻重软硬清浊美丑善恶真假强弱"
    "贫富安危静动红黄蓝绿白黑紫灰青春夏秋冬早晚朝夕东西南北左右前中心头手足眼耳口鼻身体骨血皮毛力气思想"
    "情意爱恨喜怒哀乐忧愁梦觉生死老少父母兄弟姐妹夫妻子女师友客主王民兵官工农商医学文武理法道德礼义信智"
    "勇仁和平战争开关出入来去走跑飞游唱读写看听说问答买卖送收教练造修种养洗煮烧切拉推拿放打织编算测量查"
    "找寻求追赶登爬跳坐站躺睡醒笑哭喊呼吸吃喝穿戴带领建设发展变化增减升降进退往返聚散合分离连续断绝保护"
    "破坏整齐乱序尾始终初末半全单双独众群类族国家省县乡镇区域世界宇宙时空季节年岁代期刻秒点线面角形状图"
    "案符号数字价值钱财货物品质级层阶段步骤方技术能电磁波粒原素材料资源环境件态现象题结果目标计划任务事业"
    "活比赛戏故史传神话英雄将军皇帝公猎匠诗者邻伙伴敌") if c not in _ZH_FUNCTION))
"""The characters Chinese content words are built from (distinct, in a fixed order)."""
ZH_WORD_LENGTHS = ((2, 3, 4), (0.5, 0.35, 0.15))  # characters per word, and how often


@dataclass(frozen=True)
class Topic:
    """One topic's words (stems) and each noun's preferred verbs and adjectives (indices)."""

    nouns: tuple[str, ...]
    verbs: tuple[str, ...]
    adjectives: tuple[str, ...]
    noun_verbs: tuple[tuple[int, ...], ...]
    noun_adjectives: tuple[tuple[int, ...], ...]
    classifiers: tuple[str, ...] = ()
    """Chinese only: each noun's measure word."""


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
def lexicon(seed: int, num_topics: int, language: str = "en") -> Lexicon:
    """The vocabulary for ``seed``, ``num_topics`` and ``language`` (cached: built once per process)."""
    zh = language == "zh"
    rng = np.random.default_rng([_unsigned(seed), num_topics, 0x1E7] + ([0x2E7] if zh else []))
    per_topic = NOUNS + VERBS + ADJECTIVES
    stems = _hanzi_words(rng, num_topics * per_topic) if zh else _pseudo_words(rng, num_topics * per_topic, final="")
    names = _chinese_names(rng, NAMES) if zh else _pseudo_words(rng, NAMES, final="nlr")
    topics = []
    for t in range(num_topics):
        words = stems[t * per_topic:(t + 1) * per_topic]
        topics.append(Topic(nouns=tuple(words[:NOUNS]), verbs=tuple(words[NOUNS:NOUNS + VERBS]),
                            adjectives=tuple(words[NOUNS + VERBS:]),
                            noun_verbs=_preferences(rng, VERBS), noun_adjectives=_preferences(rng, ADJECTIVES),
                            classifiers=_classifiers(rng) if zh else ()))
    return Lexicon(topics=tuple(topics), names=tuple(names))


def _classifiers(rng: np.random.Generator) -> tuple[str, ...]:
    return tuple(ZH_CLASSIFIERS[k] for k in rng.integers(len(ZH_CLASSIFIERS), size=NOUNS))


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


def _hanzi_words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct Chinese pseudo-words of 2-4 characters of :data:`ZH_CHARACTERS`."""
    lengths, p = ZH_WORD_LENGTHS
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < n:
        chars = rng.integers(len(ZH_CHARACTERS), size=(2 * n, max(lengths)))
        sizes = rng.choice(lengths, size=2 * n, p=p)
        for k in range(2 * n):
            word = "".join(ZH_CHARACTERS[c] for c in chars[k, :sizes[k]])
            if word not in seen and len(words) < n:
                seen.add(word)
                words.append(word)
    return words


def _chinese_names(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct names: a surname and one or two given-name characters."""
    seen: set[str] = set()
    while len(seen) < n:
        surname, first, second = rng.integers(len(ZH_SURNAMES)), *rng.integers(len(ZH_GIVEN), size=2)
        name = ZH_SURNAMES[surname] + ZH_GIVEN[first] + (ZH_GIVEN[second] if rng.random() < 0.7 else "")
        if name not in seen:
            seen.add(name)
    return sorted(seen)


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


def _zh_object(d: _Draws, lex: Lexicon, t: Topic) -> str:
    """``这[MEASURE]`` or ``这些``, ``[ADJ的]NOUN``; one noun in ten from another topic (noise)."""
    topic = lex.topics[d.index(len(lex.topics))] if d.chance(0.1) else t
    n = d.index(NOUNS)
    adj = _pick_pref(d, topic.adjectives, topic.noun_adjectives[n]) + "的" if d.chance(0.4) else ""
    return ("这些" if d.chance(0.3) else "这" + topic.classifiers[n]) + adj + topic.nouns[n]


def _zh_sentence(d: _Draws, lex: Lexicon, t: Topic, marker: str, hero: int, name: str) -> str:
    """One Chinese sentence, drawn as :func:`_sentence` draws an English one."""
    if d.chance(0.5):
        noun, plural, subject = hero, False, name
    else:
        noun = hero if d.chance(0.4) else d.index(NOUNS)
        plural = noun != hero and d.chance(0.4)
        adj = _pick_pref(d, t.adjectives, t.noun_adjectives[noun]) + "的" if d.chance(0.5) else ""
        subject = ("这些" if plural else "这" + t.classifiers[noun]) + adj + t.nouns[noun]
    verb = _pick_pref(d, t.verbs, t.noun_verbs[noun])
    tool = "用" + _zh_object(d, lex, t) if d.chance(0.25) else ""  # "with the NOUN" comes before the verb
    text = f"{ZH_MARKERS[marker]}，{subject}{tool}{verb}了{_zh_object(d, lex, t)}"
    if d.chance(0.3):
        adj = _pick_pref(d, t.adjectives, t.noun_adjectives[noun], p=1.0)
        text += f"，因为{'它们' if plural else '它'}很{adj}"
    u = d.uniform()
    return text + ("吗？" if u < 0.1 else "！" if u < 0.2 else "。")


def _zh_intro(d: _Draws, lex: Lexicon, t: Topic, hero: int, name: str) -> str:
    adj = _pick_pref(d, t.adjectives, t.noun_adjectives[hero])
    verb = _pick_pref(d, t.verbs, t.noun_verbs[hero])
    return f"首先，一{t.classifiers[hero]}{adj}的{t.nouns[hero]}叫做{name}，{verb}了{_zh_object(d, lex, t)}。"


def document(cfg: SyntheticConfig, i: int) -> tuple[str, str]:
    """Document ``i``: ``(text, label)``, a function of ``cfg`` and ``i`` only."""
    lex = lexicon(cfg.seed, cfg.num_topics, cfg.language)
    d = _Draws(np.random.default_rng([_unsigned(cfg.seed), i]))
    topic = d.index(cfg.num_topics)
    t, hero, name = lex.topics[topic], d.index(NOUNS), lex.names[d.index(NAMES)]
    marks = markers(cfg.sentences_per_doc)
    if cfg.language == "zh":
        sentences = [_zh_intro(d, lex, t, hero, name)]
        sentences += [_zh_sentence(d, lex, t, m, hero, name) for m in marks[1:]]
        return "".join(sentences), f"topic_{topic:02d}"
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


# ---------------------------------------------------------------- graded sentence pairs (STS)

STS_LEVELS = (5, 4, 3, 2, 1, 0)
"""The grades of :func:`sts_pairs`, the STS annotation scale (Agirre et al. 2012; STS-B, Cer et al.
2017) read in this corpus's terms:

- 5, equivalent: the same proposition, reworded (another discourse marker; the subject's
  property said before its noun or in a ``because it is ADJ`` clause; Chinese ``。`` or ``！``);
- 4, mostly equivalent, a detail differs: one side adds or drops the instrument (``with the X``)
  or the object's adjective;
- 3, roughly equivalent, important content differs: the same subject and verb, another object;
- 2, not equivalent but sharing details: the same subject, another verb and object;
- 1, not equivalent, same topic: no noun or verb in common, all from the topic;
- 0, different topics."""
STS_STREAM = 0x575
"""Seeds the pairs apart from every document (``document(cfg, i)`` seeds by ``(seed, i)``)."""
STS_MARKERS = ("then", "next", "later", "finally")


@dataclass(frozen=True)
class Mention:
    """A noun phrase of one topic: ``the [ADJ] NOUN(s)`` (indices into the topic's words)."""

    noun: int
    plural: bool
    adjective: int | None


@dataclass(frozen=True)
class Proposition:
    """What a sentence says: a subject (whose adjective is its property) does something to an
    object, perhaps with an instrument; every word from one topic."""

    topic: int
    subject: Mention
    verb: int
    object: Mention
    tool: Mention | None


def sts_pairs(cfg: SyntheticConfig, n: int) -> dict[str, list]:
    """``n`` sentence pairs graded by :data:`STS_LEVELS` (the grades in turn), as an STS file has
    them: ``{"sentence1": [...], "sentence2": [...], "score": [...]}``.

    A pair depends only on ``cfg`` and its index, and is drawn from a stream of its own
    (:data:`STS_STREAM`), never from the corpus's documents. Both sentences of every grade are
    worded at random in the same ways (marker, where the subject's property goes), so the
    wording says nothing of the grade; only the propositions do."""
    lex = lexicon(cfg.seed, cfg.num_topics, cfg.language)
    out: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
    for i in range(n):
        level = STS_LEVELS[i % len(STS_LEVELS)]
        d = _Draws(np.random.default_rng([_unsigned(cfg.seed), STS_STREAM, i]))
        first, second = _graded(d, lex, cfg.num_topics, level)
        out["sentence1"].append(_say(d, lex, first, cfg.language))
        out["sentence2"].append(_say(d, lex, second, cfg.language))
        out["score"].append(float(level))
    return out


def _graded(d: _Draws, lex: Lexicon, num_topics: int, level: int) -> tuple[Proposition, Proposition]:
    """Two propositions as similar as ``level`` says."""
    topic = d.index(num_topics)
    p = _proposition(d, lex, topic)
    t = lex.topics[topic]
    if level == 5:
        return p, p
    if level == 4:
        if d.chance(0.5):
            return p, replace(p, tool=None if p.tool else _mention(d, t))
        obj = p.object
        adjective = None if obj.adjective is not None else t.noun_adjectives[obj.noun][d.index(PREFERRED)]
        return p, replace(p, object=replace(obj, adjective=adjective))
    if level == 3:
        return p, replace(p, object=_mention(d, t, _other(d, NOUNS, p.object.noun)))
    if level == 2:
        verb = p.verb
        while verb == p.verb:
            verb = _verb_of(d, t, p.subject.noun)
        tool = _mention(d, t) if d.chance(0.25) else None
        return p, replace(p, verb=verb, object=_mention(d, t, _other(d, NOUNS, p.object.noun)), tool=tool)
    if level == 1:
        q = _proposition(d, lex, topic)
        while q.verb == p.verb or {q.subject.noun, q.object.noun} & {p.subject.noun, p.object.noun}:
            q = _proposition(d, lex, topic)
        return p, q
    return p, _proposition(d, lex, _other(d, num_topics, topic))


def _proposition(d: _Draws, lex: Lexicon, topic: int) -> Proposition:
    """A proposition drawn as the corpus draws a sentence (preferred verbs and adjectives)."""
    t = lex.topics[topic]
    subject = _mention(d, t, adjective_p=0.5)
    verb = _verb_of(d, t, subject.noun)
    return Proposition(topic, subject, verb, _mention(d, t), _mention(d, t) if d.chance(0.25) else None)


def _mention(d: _Draws, t: Topic, noun: int | None = None, adjective_p: float = 0.4) -> Mention:
    noun = d.index(NOUNS) if noun is None else noun
    adjective = t.noun_adjectives[noun][d.index(PREFERRED)] if d.chance(adjective_p) else None
    return Mention(noun, d.chance(0.3), adjective)


def _verb_of(d: _Draws, t: Topic, noun: int) -> int:
    return t.noun_verbs[noun][d.index(PREFERRED)] if d.chance(0.8) else d.index(VERBS)


def _other(d: _Draws, n: int, old: int) -> int:
    """An index in ``range(n)`` other than ``old``, uniformly."""
    return (old + 1 + d.index(n - 1)) % n


def _say(d: _Draws, lex: Lexicon, p: Proposition, language: str) -> str:
    """``p`` as one sentence, worded at random: the marker, and whether the subject's property
    comes before its noun or in a ``because`` clause."""
    marker, predicative = STS_MARKERS[d.index(len(STS_MARKERS))], d.chance(0.5)
    t, s = lex.topics[p.topic], p.subject
    prop = t.adjectives[s.adjective] if predicative and s.adjective is not None else None
    if language == "zh":
        tool = "用" + _zh_mention(t, p.tool) if p.tool else ""
        subject, obj = _zh_mention(t, s, not predicative), _zh_mention(t, p.object)
        text = f"{ZH_MARKERS[marker]}，{subject}{tool}{t.verbs[p.verb]}了{obj}"
        if prop:
            text += f"，因为{'它们' if s.plural else '它'}很{prop}"
        return text + ("！" if d.chance(0.2) else "。")
    words = [marker, *_en_mention(t, s, not predicative), _verb(t.verbs[p.verb], s.plural), *_en_mention(t, p.object)]
    if p.tool:
        words += ["with", *_en_mention(t, p.tool)]
    if prop:
        words += ["because", "they" if s.plural else "it", "are" if s.plural else "is", prop]
    return " ".join(words) + "."


def _en_mention(t: Topic, m: Mention, attributive: bool = True) -> list[str]:
    adjective = [t.adjectives[m.adjective]] if attributive and m.adjective is not None else []
    return ["the", *adjective, _noun(t.nouns[m.noun], m.plural)]


def _zh_mention(t: Topic, m: Mention, attributive: bool = True) -> str:
    adjective = t.adjectives[m.adjective] + "的" if attributive and m.adjective is not None else ""
    return ("这些" if m.plural else "这" + t.classifiers[m.noun]) + adjective + t.nouns[m.noun]
