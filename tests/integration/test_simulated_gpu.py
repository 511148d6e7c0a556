"""Every objective end to end on the GPU branch, on a machine without a GPU (``scaling.simulate_gpu``).

sslab starts a local Ray that declares GPUs, Ray Train reserves one for each worker and sets its
``CUDA_VISIBLE_DEVICES``, and each worker trains with the GPU recipe (bf16 autocast, fused
AdamW) on the CPU standing in for its GPU, over gloo, and reports MFU against an injected peak.
Each kind of data path runs on two workers: packed blocks with T5's sentinels (span), sentences
with document halves for the retrieval eval (simcse+mlm), and segment pairs in a mixture
(mlm+nsp, from the command line). Every objective runs, the encoder ones (mlm, nsp, sop, simcse,
which share one model and loss path) inside mixtures: each Ray Train run costs ~20 s of start-up
on 2 cores, and tests/unit/test_accelerator.py steps each objective alone through the same GPU
recipe. Each process starts with no Ray running, as a user's would."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

from sslab.objectives import available

pytestmark = pytest.mark.slow

STEPS = 4
SMALL = ["corpus.source=synthetic", "corpus.synthetic.num_docs=400", "model.preset=tiny", "train.seq_len=32",
         "train.batch_size=8", f"train.max_steps={STEPS}", "train.warmup_steps=1", "train.log_every=2",
         f"train.eval_every={STEPS}", "eval.max_blocks=32", "eval.probe_docs=0", "run.quiet=true",
         "scaling.simulate_gpu=true", "scaling.peak_flops=1e12"]
CLI_MIXTURE = "mlm+nsp"
TWO_WORKERS = {"span", "simcse+mlm", CLI_MIXTURE}  # one of each data path
RUNS = ["clm", "denoise", "electra", "span", "simcse+mlm", "mlm+sop"]
EXPORTS = {  # Auto class that loads model/, metrics the summary must hold
    "span": (AutoModelForSeq2SeqLM, ("eval_span_loss", "eval_unigram_loss")),
    "simcse+mlm": (AutoModelForMaskedLM, ("eval_retrieval_acc", "eval_align", "eval_sts_spearman", "eval_mlm_acc",
                                          "simcse_loss", "mlm_loss")),
    "mlm+nsp": (AutoModelForMaskedLM, ("eval_nsp_acc", "eval_mlm_acc", "nsp_loss", "mlm_loss")),
}

# The objectives one after another in one process: one Ray for all of them, as a notebook would;
# the two-worker runs first, since the local Ray is sized by the first run.
SCRIPT = textwrap.dedent("""
    import json, sys
    import ray, sslab
    out, two_workers, names, common = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4:]
    summaries = {}
    for name in sorted(names, key=lambda n: n not in two_workers):
        workers = 2 if name in two_workers else 1
        result = sslab.pretrain(None, overrides=[*common, f"objective.name={name}", f"run.out={out}/{name}",
                                                 f"scaling.num_workers={workers}"])
        summaries[name] = result.summary
    summaries["cluster_gpus"] = ray.cluster_resources().get("GPU", 0)
    print(json.dumps(summaries))
""")


def without_ray_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer_dir):
    """The pairs mixture on two workers from the command line, then every objective and simcse+mlm."""
    out = tmp_path_factory.mktemp("simulated")
    common = [*SMALL, f"tokenizer.path={tokenizer_dir}"]
    cli = subprocess.run([sys.executable, "-m", "sslab.cli", "pretrain", "--objective", CLI_MIXTURE, "--workers", "2",
                          "--out", str(out / CLI_MIXTURE), *common], env=without_ray_env(), capture_output=True,
                         text=True, timeout=900)
    assert cli.returncode == 0, cli.stderr[-3000:]
    each = subprocess.run([sys.executable, "-c", SCRIPT, str(out), ",".join(TWO_WORKERS), ",".join(RUNS), *common],
                          env=without_ray_env(), capture_output=True, text=True, timeout=1800)
    assert each.returncode == 0, each.stderr[-3000:]
    summaries = json.loads(each.stdout.strip().splitlines()[-1])
    summaries[CLI_MIXTURE] = json.loads((out / CLI_MIXTURE / "summary.json").read_text())
    return out, summaries


def test_every_objective_runs_through_the_gpu_branch():
    assert {part for run in [*RUNS, CLI_MIXTURE] for part in run.split("+")} == set(available())


@pytest.mark.parametrize("name", [*RUNS, CLI_MIXTURE])
def test_each_objective_takes_the_gpu_branch(runs, name):
    out, summaries = runs
    assert summaries["cluster_gpus"] >= 2  # the local Ray sslab started declares GPUs for the workers
    summary = summaries[name]
    workers = 2 if name in TWO_WORKERS else 1
    assert summary["steps"] == STEPS and summary["num_workers"] == workers, summary
    # Ray reserved a GPU for rank 0 and exposed it as CUDA would see it.
    gpu = summary["device"].removeprefix("simulated GPU ").split(" ")[0]
    assert gpu.isdigit() and f"(CUDA_VISIBLE_DEVICES={gpu}" in summary["device"], summary["device"]
    m = summary["metrics"]
    assert 0 < m["mfu"] < 1 and all(v == v for v in m.values() if isinstance(v, float)), m
    logged = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2, 4] and all(0 < r["mfu"] < 1 for r in logged)
    assert (out / name / "model" / "config.json").is_file()


@pytest.mark.parametrize("name", EXPORTS)
def test_each_data_path_exports_a_model_that_loads(runs, name):
    out, summaries = runs
    auto, metrics = EXPORTS[name]
    assert set(metrics) <= set(summaries[name]["metrics"]), summaries[name]["metrics"]
    model_dir = out / name / "model"
    model = auto.from_pretrained(model_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    assert model.config.vocab_size >= len(tok)
    assert AutoModel.from_pretrained(model_dir, local_files_only=True) is not None
    if name == "span":  # the sentinels were added to the run's tokenizer and exported with it
        assert "<extra_id_99>" in tok.get_vocab()
