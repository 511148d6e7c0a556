"""Chinese whole-word masking end to end: a folder of Chinese text, jieba run in the Ray Data
tokenize step of ``sslab.prepare``, the word boundaries kept with the prepared rows and handed to
the objective as training streams them, and a Ray Train run of mlm on them."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

import sslab
from sslab import masking, pipeline, segment, stream, tokenizer
from sslab.config import TokenizerConfig
from sslab.objectives.mlm import IGNORE

pytestmark = pytest.mark.slow

TOPICS = ["计算机 人工智能 机器学习 神经网络 数据 模型 算法 训练 芯片 软件 互联网 服务器",
          "经济 市场 银行 投资 企业 公司 价格 增长 货币 股票 贸易 消费者",
          "足球 篮球 比赛 运动员 教练 冠军 球队 观众 体育场 奥运会 成绩 球迷"]
COMMON = "我们 他们 今天 非常 已经 可以 认为 发现 需要 因为 所以 但是".split()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """A folder of Chinese text, one document a line: sentences of topic and common words, closed by 。"""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("zh") / "corpus"
    root.mkdir()
    for part in range(2):
        lines = []
        for i in range(300):
            words = TOPICS[i % len(TOPICS)].split() + COMMON
            lines.append("".join("".join(rng.choice(words, 8)) + "。" for _ in range(4)))
        (root / f"part{part}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def zh_tokenizer(corpus_dir, tmp_path_factory):
    """A WordPiece tokenizer of the corpus, trained here (a run would sample the corpus with Ray Data
    for it: two passes that cost this test ~8 s and that other tests cover)."""
    path = tmp_path_factory.mktemp("zh-tokenizer")
    texts = [line for f in sorted(corpus_dir.iterdir()) for line in f.read_text(encoding="utf-8").splitlines()]
    tokenizer.train_tokenizer(TokenizerConfig(vocab_size=300), texts, 512).save_pretrained(str(path))
    return path


def test_mlm_with_jieba_whole_words_prepares_boundaries_and_trains_on_ray(ray_cluster, corpus_dir, zh_tokenizer,
                                                                         tmp_path):
    overrides = [f"corpus.source={corpus_dir}", "tokenizer.word_segmenter=jieba", f"tokenizer.path={zh_tokenizer}",
                 "objective.whole_word=true", "objective.mask_ratio=0.3", "model.preset=tiny", "train.seq_len=64",
                 "train.batch_size=16", "train.max_steps=10", "train.eval_every=10", "train.checkpoint_every=10",
                 "train.log_every=10", "eval.max_blocks=32", "eval.probe_docs=0", "data.shard_rows=100",
                 "scaling.in_process=false", "run.quiet=true", f"run.out={tmp_path / 'run'}",
                 f"data.cache_dir={tmp_path / 'cache'}"]
    data = sslab.prepare(None, overrides=overrides)
    assert not data.hit
    # The prepared rows carry jieba's boundaries, aligned to their tokens: multi-character words.
    rows = pipeline.to_numpy(data.entry.read("train"))
    ids, cont = rows["input_ids"], rows[segment.COLUMN]
    assert cont.shape == ids.shape and cont.dtype == bool and 0.3 < cont.mean() < 0.7

    # Training reads them with the rows: the objective gets the column and masks whole words.
    seen = []

    class Recording:
        def __getattr__(self, name):  # the rest of the objective (its mask_epoch …) as it is
            return getattr(data.objective, name)

        def transform(self, batch, rng):
            seen.append(batch)
            return data.objective.transform(batch, rng)

    train = data.entry.stream(data.config.data, data.config.train.seed)
    task = pa.Table.from_pylist(train.tasks(0, 1, 0, 64)[:1])
    out = next(stream.read_window(task, train, Recording(), 0, 1, train.rows_per_worker(1)))
    assert set(out) == {"input_ids", "labels"}  # the column does not reach the model
    batch = seen[0]
    special = np.isin(batch["input_ids"], data.vocab.special_ids)
    starts = masking.word_starts(batch["input_ids"], data.vocab, special, batch[segment.COLUMN])
    selected = out["labels"] != IGNORE
    first = masking.first_of(starts)
    assert (selected == np.take_along_axis(selected, first, axis=1))[~special].all()
    assert (selected & ~starts).sum() > 50

    result = sslab.train(data)
    assert result.summary["steps"] == 10
    assert math.isfinite(result.summary["metrics"]["eval_mlm_loss"])
    assert (result.model_dir / "config.json").is_file()


def test_a_mixtures_pairs_carry_the_boundaries_through_prepare_and_its_mlm_part_masks_whole_words(
        ray_cluster, corpus_dir, zh_tokenizer, tmp_path):
    """ALBERT's mlm+sop on Chinese: jieba's marks go with each segment of the prepared pairs, sop frames
    them with the segments it orders, and mlm masks whole words of what sop built."""
    overrides = [f"corpus.source={corpus_dir}", "tokenizer.word_segmenter=jieba", f"tokenizer.path={zh_tokenizer}",
                 "objective=mlm+sop", "objective.mlm.whole_word=true", "objective.mlm.mask_ratio=0.3",
                 "train.seq_len=64", "data.shard_rows=100", "run.quiet=true", f"run.out={tmp_path / 'run'}",
                 f"data.cache_dir={tmp_path / 'cache'}"]
    data = sslab.prepare(None, overrides=overrides)
    rows = pipeline.to_numpy(data.entry.read("train"))
    for side in ("a", "b"):
        marks = rows[segment.pair_column(side)]
        assert marks.shape == rows[side].shape and marks.dtype == bool
        assert 0.2 < marks.sum() / rows[f"{side}_len"].sum() < 0.7  # jieba's words: 1-4 characters
    plain = sslab.prepare(None, overrides=overrides[:1] + overrides[2:])  # without the segmenter: its own entry
    assert plain.entry.uri != data.entry.uri and segment.pair_column("a") not in plain.entry.read("train").schema.names

    framed = []

    class Recording:  # keeps what the mixture's builder (sop) framed for its mlm part, marks included
        def __getattr__(self, name):
            return getattr(data.objective, name)

        def transform(self, batch, rng):
            framed.append(data.objective.members[0].transform(batch, rng.fork(0)))
            return data.objective.transform(batch, rng)

    train = data.entry.stream(data.config.data, data.config.train.seed)
    task = pa.Table.from_pylist(train.tasks(0, 1, 0, 64)[:1])
    out = next(stream.read_window(task, train, Recording(), 0, 1, train.rows_per_worker(1)))
    assert set(out) == {"input_ids", "labels", "sop_label"}  # the marks do not reach the model
    ids, marks = framed[0]["input_ids"], framed[0][segment.COLUMN]
    selected = out["labels"] != IGNORE
    np.testing.assert_array_equal(out["labels"][selected], ids[selected])
    special = np.isin(ids, data.vocab.special_ids)
    starts = masking.word_starts(ids, data.vocab, special, marks)
    first = masking.first_of(starts)
    assert (selected == np.take_along_axis(selected, first, axis=1))[~special].all()
    assert (selected & ~starts).sum() > 50
