"""Tokenizers: training, the run's saved copy, loading from a directory, and the Vocab facts."""
import json
import subprocess
import sys
import unicodedata
from collections import Counter

import numpy as np
import pytest
from transformers import AutoTokenizer

from sslab import prepared, synthetic, tokenizer
from sslab.config import ConfigError, SyntheticConfig, TokenizerConfig, load

MAX_LEN = 128
SPECIAL_TOKENS = {"wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                  "bpe": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                  "unigram": ["<pad>", "</s>", "<unk>", "<s>", "<mask>"]}
KINDS = list(SPECIAL_TOKENS)


@pytest.fixture(scope="module")
def texts():
    return list(synthetic.generate(SyntheticConfig(seed=2), 0, 300)["text"])


@pytest.fixture(scope="module", params=KINDS)
def trained(request, texts):
    """(kind, tokenizer) trained with a requested vocabulary of 400."""
    return request.param, tokenizer.train_tokenizer(TokenizerConfig(kind=request.param, vocab_size=400), texts, MAX_LEN)


@pytest.fixture(scope="module")
def wordpiece(texts):
    return tokenizer.train_tokenizer(TokenizerConfig(vocab_size=400), texts, MAX_LEN)


def never_read():
    """An iterator of texts that fails the test if a tokenizer is trained on it."""
    raise AssertionError("texts were consumed although a tokenizer should have been reused")
    yield  # pragma: no cover


def ids_of(tok, texts):
    return tok(texts)["input_ids"]


# ---------------------------------------------------------------- training


def test_a_trained_tokenizer_has_the_requested_size_and_the_special_tokens(trained):
    kind, tok = trained
    assert 300 < len(tok) <= 400
    vocab = tok.get_vocab()
    specials = SPECIAL_TOKENS[kind]
    assert all(s in vocab for s in specials)
    assert sorted(vocab[s] for s in specials) == list(range(5))  # specials come first
    assert tok.mask_token == specials[-1] and tok.mask_token_id == vocab[specials[-1]]
    assert tok.is_fast and tok.model_max_length == MAX_LEN


def test_encoding_frames_text_with_the_block_tokens_and_decodes_back(trained, texts):
    kind, tok = trained
    v = tokenizer.vocab_of(tok)
    ids = tok(texts[0])["input_ids"]
    assert ids[0] == v.cls_id and ids[-1] == v.sep_id
    assert tok.unk_token_id not in ids  # the training corpus is fully covered
    assert tok.decode(ids, skip_special_tokens=True).strip() == texts[0]


def test_wordpiece_lowercases(wordpiece, texts):
    assert wordpiece(texts[0].upper())["input_ids"] == wordpiece(texts[0])["input_ids"]


# Trains both kinds on the ``texts`` fixture's corpus and saves them under argv[1]/<kind>.
TRAIN_AND_SAVE = """
import sys
from sslab import synthetic, tokenizer
from sslab.config import SyntheticConfig, TokenizerConfig
texts = list(synthetic.generate(SyntheticConfig(seed=2), 0, 300)["text"])
for kind in ("wordpiece", "bpe", "unigram"):
    tok = tokenizer.train_tokenizer(TokenizerConfig(kind=kind, vocab_size=400), iter(texts), 128)
    tok.save_pretrained(f"{sys.argv[1]}/{kind}")
"""


@pytest.fixture(scope="module")
def trained_elsewhere(tmp_path_factory):
    """Two fresh processes, each training both kinds (its own hash seeds, its own threads)."""
    dirs = [tmp_path_factory.mktemp("process") for _ in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", TRAIN_AND_SAVE, str(d)], cwd=d, stderr=subprocess.PIPE, text=True)
             for d in dirs]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return dirs


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_texts_train_the_same_tokenizer(texts, kind, trained_elsewhere, tmp_path):
    """A rerun of the same config must see the same token ids (reproducible runs, golden curves):
    the same texts give a byte-identical tokenizer.json here, again here, and in other processes."""
    cfg = TokenizerConfig(kind=kind, vocab_size=400)
    for i in range(3):
        tokenizer.train_tokenizer(cfg, iter(texts), MAX_LEN).save_pretrained(str(tmp_path / str(i)))
    saved = [tmp_path / str(i) / "tokenizer.json" for i in range(3)]
    saved += [d / kind / "tokenizer.json" for d in trained_elsewhere]
    first = saved[0].read_bytes()
    assert all(path.read_bytes() == first for path in saved[1:]), saved
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "0"), local_files_only=True)
    assert len(tok.all_special_tokens) == 5  # the pieces fixed as special tokens in training are not special


# ---------------------------------------------------------------- the run's copy


def test_prepare_saves_a_tokenizer_that_auto_tokenizer_loads_offline(tmp_path, texts):
    cfg = TokenizerConfig(kind="bpe", vocab_size=400)
    tok = tokenizer.prepare_tokenizer(cfg, iter(texts), tmp_path, MAX_LEN)
    saved = tmp_path / "tokenizer"
    assert (saved / "tokenizer.json").is_file()
    loaded = AutoTokenizer.from_pretrained(str(saved), local_files_only=True)
    assert loaded.is_fast and loaded.get_vocab() == tok.get_vocab()
    sample = texts[:20] + ["unseen WORDS, 123 and émigré <mask> text"]
    assert ids_of(loaded, sample) == ids_of(tok, sample)
    assert loaded.mask_token_id == tok.mask_token_id and loaded.pad_token_id == tok.pad_token_id
    assert tokenizer.vocab_of(loaded).special_ids == tokenizer.vocab_of(tok).special_ids


def test_a_second_prepare_reuses_the_saved_tokenizer_without_reading_texts(tmp_path, texts):
    first = tokenizer.prepare_tokenizer(TokenizerConfig(vocab_size=400), iter(texts), tmp_path, MAX_LEN)
    # Even under another config: a resumed run must keep its token ids.
    again = tokenizer.prepare_tokenizer(TokenizerConfig(kind="bpe", vocab_size=1000), never_read(), tmp_path, MAX_LEN)
    assert again.get_vocab() == first.get_vocab()
    assert ids_of(again, texts[:10]) == ids_of(first, texts[:10])


def test_prepare_loads_a_configured_path_and_keeps_a_copy(tmp_path, wordpiece, texts):
    source = tmp_path / "mine"
    wordpiece.save_pretrained(str(source))
    run_dir = tmp_path / "run"
    tok = tokenizer.prepare_tokenizer(TokenizerConfig(path=str(source)), never_read(), run_dir, MAX_LEN)
    assert ids_of(tok, texts[:10]) == ids_of(wordpiece, texts[:10])
    copy = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"), local_files_only=True)
    assert copy.get_vocab() == wordpiece.get_vocab()


def test_prepare_falls_back_to_the_init_from_models_tokenizer(tmp_path, wordpiece, texts):
    model_dir = tmp_path / "model"
    wordpiece.save_pretrained(str(model_dir))
    tok = tokenizer.prepare_tokenizer(TokenizerConfig(), never_read(), tmp_path / "run", MAX_LEN,
                                      fallback_path=str(model_dir))
    assert tok.get_vocab() == wordpiece.get_vocab()
    # A fallback without a tokenizer is ignored: one is trained instead.
    (tmp_path / "empty").mkdir()
    trained = tokenizer.prepare_tokenizer(TokenizerConfig(kind="bpe", vocab_size=300), iter(texts),
                                          tmp_path / "run2", MAX_LEN, fallback_path=str(tmp_path / "empty"))
    assert "<mask>" in trained.get_vocab() and len(trained) <= 300


def test_a_directory_without_a_tokenizer_is_a_config_error_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = TokenizerConfig(path=str(empty))  # the config only checks that the directory exists
    with pytest.raises(ConfigError) as info:
        tokenizer.prepare_tokenizer(cfg, never_read(), tmp_path / "run", MAX_LEN)
    assert str(info.value).startswith(f"tokenizer.path={str(empty)!r}")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "tokenizer").exists()


# ---------------------------------------------------------------- Vocab facts


def test_vocab_of_a_wordpiece_tokenizer(wordpiece):
    v = tokenizer.vocab_of(wordpiece)
    vocab = wordpiece.get_vocab()
    assert v.size == len(wordpiece)
    assert (v.cls_id, v.sep_id, v.pad_id, v.mask_id) == (vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"], vocab["[MASK]"])
    assert v.special_ids == tuple(sorted(vocab[s] for s in SPECIAL_TOKENS["wordpiece"]))
    pieces = wordpiece.convert_ids_to_tokens(list(range(v.size)))
    expected = np.array([p.startswith("##") for p in pieces])
    assert expected.sum() > 50
    np.testing.assert_array_equal(v.continues_word, expected)
    assert v.continues_word.dtype == bool and v.continues_word.shape == (v.size,)


def test_vocab_of_a_bpe_tokenizer_frames_blocks_with_s_and_slash_s(texts):
    tok = tokenizer.train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=400), texts, MAX_LEN)
    v = tokenizer.vocab_of(tok)
    vocab = tok.get_vocab()
    assert (v.cls_id, v.sep_id, v.pad_id, v.mask_id) == (vocab["<s>"], vocab["</s>"], vocab["<pad>"], vocab["<mask>"])
    assert v.special_ids == tuple(sorted(vocab[s] for s in SPECIAL_TOKENS["bpe"]))
    # Byte-level BPE marks word starts with "Ġ": a piece without it continues a word.
    pieces = tok.convert_ids_to_tokens(list(range(v.size)))
    for i, piece in enumerate(pieces):
        if i not in v.special_ids:
            assert v.continues_word[i] == (not piece.startswith("\u0120")), piece
    assert not v.continues_word[list(v.special_ids)].any()


# ---------------------------------------------------------------- Unigram (SentencePiece-style)

# Real Chinese words: sentences of them have no spaces, and their characters repeat across words.
ZH_WORDS = ("我们 今天 明天 北京 上海 大学 学习 中文 天气 很好 公园 散步 老师 学生 朋友 电脑 手机 工作 吃饭 喜欢 "
            "音乐 电影 图书馆 医院 火车 飞机 城市 农村 经济 发展 科学 技术 历史 文化 语言 世界 国家 社会 问题 方法 "
            "时间 地方 孩子 父母 早上 晚上 咖啡 水果 新闻 报纸 运动 比赛 快乐 认真 重要 简单 安静 漂亮").split()
UNSEEN = "猫"  # in none of the words


@pytest.fixture(scope="module")
def chinese():
    """300 Chinese sentences of 4-9 words, in clauses closed by ， or 。 (a few hundred characters)."""
    rng = np.random.default_rng(0)
    return ["".join(rng.choice(ZH_WORDS, rng.integers(2, 5))) + "，" + "".join(rng.choice(ZH_WORDS, rng.integers(2, 5)))
            + "。" for _ in range(300)]


@pytest.fixture(scope="module")
def unigram(texts, chinese):
    """A Unigram trained on English and Chinese, with byte fallback (the default)."""
    return tokenizer.train_tokenizer(TokenizerConfig(kind="unigram", vocab_size=700), texts[:100] + chinese, MAX_LEN)


def test_a_unigram_tokenizer_is_sentencepiece_style_with_t5s_first_ids(unigram):
    model = json.loads(unigram.backend_tokenizer.to_str())["model"]
    assert model["type"] == "Unigram" and model["byte_fallback"] is True
    vocab = unigram.get_vocab()
    assert [vocab[t] for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]  # T5's ids
    assert [vocab[f"<0x{b:02X}>"] for b in (0, 255)] == [5, 260]  # byte pieces right after the specials
    assert len(unigram) == 700
    assert unigram.tokenize("the Cat")[0].startswith("\u2581") and unigram.tokenize("Cat") != unigram.tokenize("cat")


def test_vocab_of_a_unigram_tokenizer_marks_pieces_without_the_metaspace_as_continuing(unigram, texts, chinese):
    v = tokenizer.vocab_of(unigram)
    vocab = unigram.get_vocab()
    assert (v.cls_id, v.sep_id, v.pad_id, v.mask_id) == (vocab["<s>"], vocab["</s>"], vocab["<pad>"], vocab["<mask>"])
    assert v.special_ids == (0, 1, 2, 3, 4)
    pieces = unigram.convert_ids_to_tokens(list(range(v.size)))
    for i, piece in enumerate(pieces):
        if i not in v.special_ids:
            assert v.continues_word[i] == (not piece.startswith("\u2581")), piece
    assert not v.continues_word[list(v.special_ids)].any()
    assert not v.continues_word[vocab["\u2581the"]] and v.continues_word[vocab["<0xE7>"]]
    # Each space-separated word opens with one piece (Chinese has none inside a sentence).
    for text in texts[:5] + chinese[:5] + [f"the {UNSEEN}cat, and 我们{UNSEEN}"]:
        ids = unigram(text, add_special_tokens=False)["input_ids"]
        assert (~v.continues_word[ids]).sum() == len(text.split()), unigram.convert_ids_to_tokens(ids)


def test_byte_fallback_spells_an_unseen_chinese_character_in_its_bytes(unigram, chinese, texts):
    assert not any(UNSEEN in t for t in chinese + texts)
    text = f"我们今天在公园看见一只{UNSEEN}。"
    ids = unigram(text, add_special_tokens=False)["input_ids"]
    assert unigram.unk_token_id not in ids
    spelled = unigram.convert_tokens_to_ids([f"<0x{b:02X}>" for b in UNSEEN.encode("utf-8")])
    assert any(ids[i:i + 3] == spelled for i in range(len(ids)))
    assert unigram.decode(ids) == text
    # Without byte fallback the character is <unk>, and the 256 byte pieces are not in the vocabulary.
    plain = tokenizer.train_tokenizer(TokenizerConfig(kind="unigram", vocab_size=700, byte_fallback=False), chinese,
                                      MAX_LEN)
    assert plain.unk_token_id in plain(text)["input_ids"] and "<0xE7>" not in plain.get_vocab()


def test_character_coverage_keeps_the_most_frequent_characters_that_cover_its_share():
    counts = Counter({"a": 50, "b": 30, "c": 15, "d": 4, "e": 1})
    assert tokenizer.rare_characters(counts, 1.0) == set()
    assert tokenizer.rare_characters(counts, 0.95) == {"d", "e"}  # a, b and c make 95 %
    assert tokenizer.rare_characters(counts, 0.96) == {"e"}
    assert tokenizer.rare_characters(Counter({"x": 1, "y": 1}), 0.5) == {"y"}  # ties: by character


def test_characters_beyond_the_coverage_get_no_piece_and_are_spelled_in_bytes(chinese):
    counts = Counter(c for text in chinese for c in unicodedata.normalize("NFKC", text))  # as the trainer sees them
    rare = tokenizer.rare_characters(counts, 0.95)
    assert len(rare) >= 5 and sum(counts[c] for c in rare) <= 0.05 * sum(counts.values())
    full = tokenizer.train_tokenizer(TokenizerConfig(kind="unigram", vocab_size=400), chinese, MAX_LEN)
    covered = tokenizer.train_tokenizer(TokenizerConfig(kind="unigram", vocab_size=400, character_coverage=0.95),
                                        chinese, MAX_LEN)
    assert set(counts) <= set(full.get_vocab())
    in_a_piece = {c for piece in covered.get_vocab() for c in piece}
    assert not rare & in_a_piece and set(counts) - rare <= in_a_piece
    for text in chinese[:50]:  # spelled in bytes, never <unk>, decoded back
        ids = covered(text, add_special_tokens=False)["input_ids"]
        assert covered.unk_token_id not in ids and covered.decode(ids) == unicodedata.normalize("NFKC", text)
    assert len(covered) == len(full) == 400  # the slots of the rare characters went to longer pieces


def test_a_vocabulary_too_small_for_the_characters_is_a_config_error_naming_both_keys():
    hanzi = ["".join(chr(0x4E00 + i) for i in range(j, j + 20)) for j in range(0, 400, 20)]  # 400 characters
    with pytest.raises(ConfigError) as info:
        tokenizer.train_tokenizer(TokenizerConfig(kind="unigram", vocab_size=500), hanzi, MAX_LEN)
    message = str(info.value)
    assert message.startswith("tokenizer.vocab_size=500 ") and "tokenizer.character_coverage=1" in message
    assert "\n" not in message


def test_a_saved_unigram_tokenizer_reloads_offline_with_the_same_ids(tmp_path, texts, chinese, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = tokenizer.prepare_tokenizer(TokenizerConfig(kind="unigram", vocab_size=700), iter(texts[:100] + chinese),
                                      tmp_path, MAX_LEN)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"), local_files_only=True)
    assert loaded.is_fast and loaded.get_vocab() == tok.get_vocab()
    sample = texts[:10] + chinese[:10] + [f"Unseen {UNSEEN} and émigré, 😀 <mask> text", "ｆｕｌｌ－ｗｉｄｔｈ！"]
    assert ids_of(loaded, sample) == ids_of(tok, sample)
    assert tokenizer.vocab_of(loaded).special_ids == tokenizer.vocab_of(tok).special_ids
    np.testing.assert_array_equal(tokenizer.vocab_of(loaded).continues_word, tokenizer.vocab_of(tok).continues_word)


# ---------------------------------------------------------------- the kind each objective trains


def test_span_trains_a_unigram_unless_the_config_names_a_kind():
    assert load(overrides=["objective.name=span"]).tokenizer.kind == "unigram"
    assert load(overrides={"objective": "span"}).tokenizer.kind == "unigram"
    assert load(overrides=["objective.name=span", "tokenizer.kind=bpe"]).tokenizer.kind == "bpe"
    assert load(overrides={"objective": "span", "tokenizer": {"kind": "wordpiece"}}).tokenizer.kind == "wordpiece"
    assert load(overrides=["objective.name=mlm"]).tokenizer.kind == "wordpiece"
    assert load().tokenizer.kind == "wordpiece"
    # Another kind is another tokenizer in the data cache, so it is trained (not reused).
    keys = {prepared.tokenizer_key("corpus", load(overrides=o).tokenizer, 512, 0)
            for o in (["objective.name=span"], ["objective.name=span", "tokenizer.kind=bpe"], ["objective.name=mlm"])}
    assert len(keys) == 3


@pytest.mark.parametrize("overrides, key", [
    (["tokenizer.kind=sentencepiece"], "tokenizer.kind"),
    (["tokenizer.kind=unigram", "tokenizer.character_coverage=0"], "tokenizer.character_coverage"),
    (["tokenizer.kind=unigram", "tokenizer.character_coverage=1.5"], "tokenizer.character_coverage"),
    (["tokenizer.kind=bpe", "tokenizer.character_coverage=0.9995"], "tokenizer.character_coverage"),
    (["objective.name=span", "tokenizer.vocab_size=300"], "tokenizer.vocab_size"),
])
def test_a_bad_unigram_setting_is_a_one_line_config_error_naming_it(overrides, key):
    with pytest.raises(ConfigError) as info:
        load(overrides=overrides)
    assert str(info.value).startswith(f"{key}=") and "\n" not in str(info.value)
    assert load(overrides=["objective.name=span", "tokenizer.vocab_size=300", "tokenizer.byte_fallback=false"])


# ---------------------------------------------------------------- the sample it trains on


def sorted_corpus(n: int = 1000) -> list[str]:
    """Documents in topic order, as real corpora come (by file, section, source): topic t holds
    documents t*100 .. t*100+99."""
    return [f"document {i} is about topic{i // 100} and says word{i % 37}" for i in range(n)]


def test_the_sample_is_drawn_from_the_whole_corpus_whatever_its_order_or_blocks(ray_cluster):
    import ray

    docs = sorted_corpus()
    in_order = ray.data.from_items([{"text": t} for t in docs], override_num_blocks=3)
    shuffled = ray.data.from_items([{"text": t} for t in np.random.default_rng(0).permutation(docs)],
                                   override_num_blocks=7)
    sample = tokenizer.sample_texts(in_order, 100, seed=0)
    assert len(sample) == len(set(sample)) == 100
    assert tokenizer.sample_texts(shuffled, 100, seed=0) == sample  # the same documents, in the same order
    topics = [int(t.split("topic")[1].split()[0]) for t in sample]
    assert set(topics) == set(range(10)), "the first documents alone would be topic 0"
    assert max(np.bincount(topics)) < 25  # about 10 of each of the 10 topics
    assert tokenizer.sample_texts(in_order, 100, seed=1) != sample  # another seed, another sample
    assert sorted(tokenizer.sample_texts(in_order, 5000, seed=0)) == sorted(docs)  # fewer than asked: all


def test_a_corpus_whose_chinese_half_comes_last_gets_its_characters_in_the_vocabulary(ray_cluster, tmp_path):
    # Measured on a real corpus (English files sorting before zh_CN ones): trained on its first
    # documents, the WordPiece vocabulary held 11 CJK characters and 70 % of the Chinese tokens were [UNK].
    import ray

    from sslab.config import load

    rng = np.random.default_rng(0)
    hanzi = [chr(0x4E00 + i) for i in rng.choice(20000, 300, replace=False)]
    english = list(synthetic.generate(SyntheticConfig(seed=3), 0, 600)["text"])
    chinese = ["".join(rng.choice(hanzi, 40)) for _ in range(400)]
    docs = ray.data.from_items([{"text": t} for t in english + chinese], override_num_blocks=4)
    cfg = load(overrides=["tokenizer.vocab_size=1500", "tokenizer.sample_docs=600"])
    tok = tokenizer.corpus_tokenizer(cfg, docs, tmp_path)
    cjk = [t for t in tok.get_vocab() if len(t.removeprefix("##")) == 1 and "\u4e00" <= t.removeprefix("##") <= "\u9fff"]
    assert len(set(c.removeprefix("##") for c in cjk)) >= 280, len(cjk)
    unknown = sum(i == tok.unk_token_id for i in tok(chinese[:50], add_special_tokens=False)["input_ids"][0])
    assert unknown == 0
