"""On a machine with a CUDA GPU: the same run goes to the GPU by itself, in bf16, and reports MFU."""
from __future__ import annotations

import pytest
import torch

import sslab
from sslab import models
from sslab.config import load

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_a_run_uses_the_gpu_when_the_cluster_has_one_and_reports_mfu(ray_cluster, tiny, tmp_path):
    result = sslab.pretrain(load(overrides=tiny(tmp_path / "run", "train.max_steps=30", "train.log_every=10",
                                                "eval.probe_docs=0")))
    m = result.summary["metrics"]
    if models.peak_flops(torch.device("cuda")):  # MFU needs the GPU's peak FLOP/s
        assert 0 < m["mfu"] < 1, m
    assert m["eval_mlm_acc"] > 0 and result.summary["steps"] == 30
    assert result.summary["device"] == torch.cuda.get_device_name(0)


def test_an_injected_peak_gives_mfu_on_any_gpu(ray_cluster, tiny, tmp_path):
    result = sslab.pretrain(load(overrides=tiny(tmp_path / "run", "train.max_steps=10", "train.log_every=5",
                                                "eval.probe_docs=0", "scaling.peak_flops=1e15")))
    assert 0 < result.summary["metrics"]["mfu"] < 1


def test_a_search_packs_two_trials_on_one_gpu(ray_cluster, tokenizer_dir, tmp_path):
    spec = {"base": {"objective": "mlm", "corpus": "synthetic"}, "metric": "eval_mlm_loss", "mode": "min",
            "space": {"train.lr": {"grid": [1e-3, 3e-3]}}, "num_samples": 1,
            "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0.5}}
    result = sslab.tune(spec, out=tmp_path / "s", overrides=[
        "model.preset=tiny", "corpus.synthetic.num_docs=400", "train.seq_len=32", "train.max_steps=20",
        "train.eval_every=10", "eval.probe_docs=0", f"tokenizer.path={tokenizer_dir}"])
    assert list(result.table["status"]) == ["FINISHED", "FINISHED"], result.table
    for run_dir in (tmp_path / "s" / "trials").iterdir():
        config = (run_dir / "config.yaml").read_text()
        assert "use_gpu: true" in config and "gpus_per_worker: 0.5" in config
