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
