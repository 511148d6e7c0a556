"""Downstream evaluation of exported models: linear probe, fine-tuning, perplexity, sentence
similarity, and bad input.

The models are exported the way sslab exports them (``save_pretrained`` of model and tokenizer
into one directory), built from sslab's own configs at the tiny preset, on a tokenizer sslab
trains on its topic-labelled synthetic corpus.
"""
import json
import math
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import scipy.stats
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, GPT2LMHeadModel

from sslab import downstream, models, synthetic, tokenizer
from sslab.config import ModelConfig, SyntheticConfig, TokenizerConfig
from sslab.errors import ConfigError
from sslab.objectives.clm import decoder_config

TOPICS, DOCS, MAX_LEN = 4, 120, 64
CHANCE = 1 / TOPICS
# A random-init model needs a high lr and ~50 steps to fine-tune (3 epochs of batch 16 stay at chance).
FAST = dict(max_length=MAX_LEN, epochs=4, lr=1e-3, batch_size=8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small gain nothing from a second thread, which only spins while other work holds the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus():
    """Topic-labelled synthetic documents of three sentences (about MAX_LEN tokens each)."""
    return pd.DataFrame(synthetic.generate(SyntheticConfig(num_docs=400, num_topics=TOPICS, sentences_per_doc=3),
                                           0, DOCS + 40))


@pytest.fixture(scope="module")
def labelled(corpus):
    return corpus.iloc[:DOCS].reset_index(drop=True)


@pytest.fixture(scope="module")
def held_out(corpus, tmp_path_factory):
    """Documents no model saw, one per line: the perplexity corpus."""
    path = tmp_path_factory.mktemp("corpus") / "held_out.txt"
    path.write_text("\n".join(corpus["text"].iloc[DOCS:]) + "\n")
    return path


def export(model, tok, path):
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def encoder_dir(corpus, tmp_path_factory):
    """A ModernBERT masked LM of the tiny preset on a WordPiece tokenizer, as ``sslab train`` exports it."""
    tok = tokenizer.train_tokenizer(TokenizerConfig(vocab_size=300), corpus["text"], MAX_LEN)
    torch.manual_seed(0)
    config = models.encoder_config(ModelConfig(preset="tiny", max_positions=128), tokenizer.vocab_of(tok))
    return export(AutoModelForMaskedLM.from_config(config), tok, tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="module")
def decoders(corpus, labelled, tmp_path_factory):
    """(untrained, trained) GPT-2 directories on a byte-level BPE tokenizer without a pad token, like
    most published decoders; the trained one has seen the labelled documents for 15 steps."""
    tok = tokenizer.train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=300), corpus["text"], MAX_LEN)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(decoder_config(ModelConfig(preset="tiny", max_positions=128), tokenizer.vocab_of(tok)))
    enc = tok(list(labelled["text"]), truncation=True, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    tok.pad_token, model.config.pad_token_id = None, None
    untrained = export(model, tok, tmp_path_factory.mktemp("decoder_untrained"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(15):  # held-out perplexity about 310 -> 40
        rows = torch.arange(step * 8, step * 8 + 8) % len(labels)
        model(input_ids=enc["input_ids"][rows], attention_mask=enc["attention_mask"][rows],
              labels=labels[rows]).loss.backward()
        opt.step()
        opt.zero_grad()
    return untrained, export(model, tok, tmp_path_factory.mktemp("decoder_trained"))


@pytest.fixture(scope="module")
def encoder_result(encoder_dir, labelled):
    return downstream.classify(encoder_dir, labelled, **FAST)


# ---------------------------------------------------------------- classification


def test_probe_and_fine_tuning_beat_chance_on_topic_labels(encoder_result, labelled):
    r = encoder_result
    assert r["labels"] == [f"topic_{t:02d}" for t in range(TOPICS)]
    assert (r["n_train"], r["n_test"]) == (DOCS - math.ceil(0.2 * DOCS), math.ceil(0.2 * DOCS))
    # Topics have their own words, so even a random-init encoder's pooled states separate them. Over
    # 8 tokenizers (WordPiece training was not deterministic then) the 24 test documents measured 0.67-0.83
    # (probe) and 0.88-1.0 (fine-tuning); chance is 0.25.
    assert r["probe_acc"] >= 0.55 and r["probe_macro_f1"] >= 0.5
    assert r["finetune_acc"] >= 0.7 and r["finetune_macro_f1"] >= 0.65


def test_classification_repeats_exactly_for_a_seed(encoder_dir, labelled):
    short = {**FAST, "epochs": 1}
    first = downstream.classify(encoder_dir, labelled, **short)
    assert downstream.classify(encoder_dir, labelled, **short) == first


def test_a_file_and_its_dataframe_give_the_same_probe(encoder_dir, labelled, tmp_path):
    path = tmp_path / "data.jsonl"
    labelled.to_json(path, orient="records", lines=True)
    from_file = downstream.classify(encoder_dir, path, finetune=False, max_length=MAX_LEN)
    assert from_file == downstream.classify(encoder_dir, labelled, finetune=False, max_length=MAX_LEN)
    assert "finetune_acc" not in from_file and from_file["probe_acc"] > 2 * CHANCE


def test_a_decoder_without_a_pad_token_is_probed_and_fine_tuned(decoders, labelled):
    untrained, _ = decoders
    assert AutoTokenizer.from_pretrained(str(untrained)).pad_token is None
    r = downstream.classify(untrained, labelled, **{**FAST, "epochs": 1})
    assert r["probe_acc"] >= 0.45  # causal states pool less well: 0.58 measured
    assert 0 <= r["finetune_acc"] <= 1  # it runs: the classifier finds each row's last token by the padding


# ---------------------------------------------------------------- labelled files


@pytest.fixture(scope="module")
def files(labelled, tmp_path_factory):
    """The labelled documents as JSON Lines, a JSON array, CSV and Parquet."""
    d = tmp_path_factory.mktemp("labelled")
    labelled.to_json(d / "data.jsonl", orient="records", lines=True)
    labelled.to_json(d / "data.json", orient="records")
    labelled.to_csv(d / "data.csv", index=False)
    labelled.to_parquet(d / "data.parquet")
    return d


@pytest.mark.parametrize("name", ["data.jsonl", "data.json", "data.csv", "data.parquet"])
def test_every_format_loads_the_same_rows(files, labelled, name):
    df = downstream.load_labelled(files / name)
    pd.testing.assert_frame_equal(df, labelled[["text", "label"]])


def test_other_column_names_and_numeric_labels_load_as_strings(tmp_path):
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"review": ["good", "bad", "fine", "awful", " "], "stars": [5, 1, 5, 1, 5]}).to_csv(path, index=False)
    df = downstream.load_labelled(path, text_field="review", label_field="stars")
    assert list(df.columns) == ["text", "label"]
    assert df["label"].tolist() == ["5", "1", "5", "1"]  # the blank review is dropped


def write(path, rows):
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    return path


TWO_EACH = {"text": ["a", "b", "c", "d"], "label": ["x", "x", "y", "y"]}
BAD_FILES = [  # (file name, rows written to it, load_labelled arguments, message)
    pytest.param("missing.jsonl", None, {}, r"missing\.jsonl.*does not exist", id="missing"),
    pytest.param("data.xlsx", TWO_EACH, {}, r"data\.xlsx.*unsupported extension '\.xlsx'", id="extension"),
    pytest.param("data.jsonl", TWO_EACH, {"text_field": "body"},
                 r"data\.jsonl has no column text_field='body' \(its columns: text, label\)", id="text_field"),
    pytest.param("data.jsonl", TWO_EACH, {"label_field": "topic"}, r"label_field='topic'.*text, label",
                 id="label_field"),
    pytest.param("data.jsonl", {"text": ["a", "b", "c", "d"], "label": ["x"] * 4}, {},
                 r"data\.jsonl needs at least 2 distinct labels.*only 'x'", id="one_label"),
    pytest.param("data.jsonl", {"text": ["a", "b", "", None], "label": ["x", "y", "x", "y"]}, {},
                 r"data\.jsonl has 2 usable rows", id="few_rows"),
    pytest.param("data.jsonl", {"text": ["a", "b", "c", "d"], "label": ["x", "x", "x", "rare"]}, {},
                 r"label 'rare' has a single example", id="rare_label"),
]


@pytest.mark.parametrize("name, rows, fields, message", BAD_FILES)
def test_bad_labelled_data_is_refused_naming_what_is_wrong(tmp_path, name, rows, fields, message):
    path = tmp_path / name
    if rows is not None:
        write(path, rows)
    with pytest.raises(ConfigError, match=message):
        downstream.load_labelled(path, **fields)


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": \n')
    with pytest.raises(ConfigError, match=r"broken\.jsonl.*could not be read as jsonl"):
        downstream.load_labelled(path)


def test_a_split_with_too_few_test_rows_is_refused_before_any_model_loads(encoder_dir):
    rows = pd.DataFrame({"text": list("abcdefgh"), "label": list("xxyyzzww")})
    with pytest.raises(ConfigError, match=r"test_size=0.2 leaves 2 test and 6 training rows for 4 labels"):
        downstream.classify(encoder_dir, rows)


@pytest.mark.parametrize("holds, message", [(None, "does not exist"), ("nothing", "holds no Hugging Face model"),
                                            ("config.json", "holds no loadable tokenizer")])
def test_a_directory_without_model_or_tokenizer_is_named(tmp_path, encoder_dir, labelled, holds, message):
    d = tmp_path / "model"
    if holds is not None:
        d.mkdir()
    if holds == "config.json":
        shutil.copy(encoder_dir / "config.json", d)
    with pytest.raises(ConfigError, match=f"model directory '{re.escape(str(d))}'.*{message}"):
        downstream.classify(d, labelled)


# ---------------------------------------------------------------- perplexity


def test_perplexity_is_hugging_faces_own_loss_on_one_block(decoders, labelled, tmp_path):
    _, trained = decoders
    text = labelled["text"][0]
    (tmp_path / "one.txt").write_text(text)
    r = downstream.perplexity(trained, tmp_path / "one.txt", max_length=128)
    tok = AutoTokenizer.from_pretrained(str(trained))
    ids = torch.tensor([[tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"], tok.eos_token_id]])
    assert ids.shape[1] <= 128 and r["tokens"] == ids.shape[1] - 1
    with torch.no_grad():
        loss = AutoModelForCausalLM.from_pretrained(str(trained))(input_ids=ids, labels=ids).loss
    assert r["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)


def test_perplexity_falls_below_the_vocabulary_size_with_training(decoders, held_out):
    untrained, trained = (downstream.perplexity(d, held_out, max_length=MAX_LEN) for d in decoders)
    vocab = len(AutoTokenizer.from_pretrained(str(decoders[0])))
    assert untrained["tokens"] == trained["tokens"] > 40 * 20
    assert vocab / 2 < untrained["perplexity"] < 2 * vocab  # a random model guesses about uniformly
    assert 1 < trained["perplexity"] < untrained["perplexity"] / 4


def test_a_directory_and_a_jsonl_corpus_read_as_the_text_file(decoders, held_out, tmp_path):
    _, trained = decoders
    lines = held_out.read_text().splitlines()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("\n".join(lines[:20]))
    (tmp_path / "docs" / "b.txt").write_text("\n\n".join(lines[20:]))  # blank lines are not documents
    write(tmp_path / "docs.jsonl", {"text": lines})
    expected = downstream.perplexity(trained, held_out, max_length=MAX_LEN)
    for corpus in (tmp_path / "docs", tmp_path / "docs.jsonl"):
        r = downstream.perplexity(trained, corpus, max_length=MAX_LEN)
        assert r["tokens"] == expected["tokens"]
        assert r["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    assert downstream.perplexity(trained, held_out, max_length=MAX_LEN, max_docs=5)["tokens"] < expected["tokens"]


@pytest.mark.parametrize("source, message", [
    ("missing.txt", r"corpus '.*missing\.txt' does not exist"),
    ("empty", r"corpus directory '.*empty' holds no \.txt files"),
    ("blank.txt", r"corpus '.*blank\.txt' holds no non-empty documents"),
    ("docs.jsonl", r"docs\.jsonl' has no 'text' column \(its columns: body\)"),
])
def test_a_bad_corpus_is_refused_naming_it(decoders, tmp_path, source, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.txt").write_text("\n  \n")
    write(tmp_path / "docs.jsonl", {"body": ["a", "b"]})
    with pytest.raises(ConfigError, match=message):
        downstream.perplexity(decoders[1], tmp_path / source)


def test_perplexity_refuses_an_encoder(encoder_dir, held_out):
    with pytest.raises(ConfigError, match=r"perplexity needs a decoder \(clm\) model.*ModernBertForMaskedLM"):
        downstream.perplexity(encoder_dir, held_out)


def test_perplexity_refuses_a_max_length_beyond_the_positions(decoders, held_out):
    with pytest.raises(ConfigError, match=r"max_length=1024 must be in \[8, 128\]"):
        downstream.perplexity(decoders[1], held_out, max_length=1024)


# ---------------------------------------------------------------- sentence similarity


@pytest.fixture(scope="module")
def sts_file(tmp_path_factory):
    """Graded pairs in the corpus's vocabulary, as an STS-B-style TSV."""
    path = tmp_path_factory.mktemp("sts") / "pairs.tsv"
    pairs = synthetic.sts_pairs(SyntheticConfig(num_docs=400, num_topics=TOPICS), 90)
    pd.DataFrame(pairs).to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture(scope="module")
def sts_result(encoder_dir, sts_file):
    return downstream.similarity(encoder_dir, sts_file, max_length=MAX_LEN)


def test_similarity_is_the_spearman_of_mean_pooled_cosines(encoder_dir, sts_file, sts_result):
    assert sts_result["sts_pooling"] == "mean" and sts_result["sts_pairs"] == 90
    frame = pd.read_csv(sts_file, sep="\t")
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    model = AutoModel.from_pretrained(str(encoder_dir)).eval()

    @torch.no_grad()
    def vector(sentence):  # one sentence alone: no padding to leave out
        ids = tok(sentence, return_tensors="pt")["input_ids"]
        return model(input_ids=ids).last_hidden_state[0].mean(0)

    cosines = [torch.cosine_similarity(vector(a), vector(b), dim=0).item()
               for a, b in zip(frame["sentence1"], frame["sentence2"])]
    assert sts_result["sts_spearman"] == pytest.approx(scipy.stats.spearmanr(cosines, frame["score"])[0], abs=0.01)


def pooling_config(model_dir, *modes):
    """A sentence-transformers Pooling module's config in ``model_dir/1_Pooling``."""
    flags = {f"pooling_mode_{m}": m in modes for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")}
    (model_dir / "1_Pooling").mkdir(exist_ok=True)
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 128, **flags}))


def test_similarity_pools_as_the_directory_records_unless_told(encoder_dir, sts_file, sts_result, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(encoder_dir, d)
    pooling_config(d, "cls_token")
    cls = downstream.similarity(d, sts_file, max_length=MAX_LEN)
    assert cls["sts_pooling"] == "cls" and cls["sts_spearman"] != sts_result["sts_spearman"]
    told = downstream.similarity(d, sts_file, pooling="mean", max_length=MAX_LEN)
    assert told == {**sts_result, "model_dir": str(d)}
    pooling_config(d, "max_tokens")
    with pytest.raises(ConfigError, match=r"pools by pooling_mode_max_tokens; sslab scores cls or mean: pass"):
        downstream.similarity(d, sts_file)
    with pytest.raises(ConfigError, match=r"pooling='max' must be one of mean, cls"):
        downstream.similarity(d, sts_file, pooling="max")


def test_the_pooling_module_is_found_where_modules_json_puts_it(tmp_path):
    assert downstream.recorded_pooling(tmp_path) is None  # nothing recorded: the caller's default
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "pool", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert downstream.recorded_pooling(tmp_path) == "mean"


@pytest.mark.slow  # a fresh process imports torch and transformers: 10-15 s on 2 busy cores
def test_sslab_eval_sts_in_a_process_of_its_own(encoder_dir, sts_file, sts_result):
    done = subprocess.run([sys.executable, "-m", "sslab.cli", "eval", str(encoder_dir), "--sts", str(sts_file),
                           "--max-length", str(MAX_LEN), "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == pytest.approx({**sts_result, "model_dir": str(encoder_dir)})


def test_sslab_eval_names_a_bad_file_of_pairs_on_one_line(encoder_dir, tmp_path, capsys):
    from sslab.cli import main

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"sentence1": ["a"] * 3, "sentence2": ["b"] * 3, "similarity": [1, 2, 3]}).to_csv(bad, index=False)
    assert main(["eval", str(encoder_dir), "--sts", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        f"sslab: error: STS pairs {str(bad)!r} has no column 'score' (its columns: sentence1, sentence2, similarity); "
        "STS pairs need sentence1, sentence2, score"]
