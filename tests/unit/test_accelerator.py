"""The GPU recipe without a GPU: every objective, and mixtures, take a training step under bf16
autocast with fused AdamW on the CPU, and the FLOP accounting behind MFU agrees with the FLOPs
PyTorch counts in that step."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sslab import models, pipeline, train_loop
from sslab.accelerator import Accelerator
from sslab.objectives import available
from sslab.train_loop import build_optimizer, train_step

from learning import FIXED_TOKENIZER, Setup, take, to_torch

GPU_ON_CPU = Accelerator(torch.device("cpu"), gpu_recipe=True, pin_memory=False, peak_flops=1e12, name="simulated")
CASES = [*available(), "mlm+sop", "simcse+mlm"]


def first_batch(setup: Setup, rows: int = 8) -> dict[str, torch.Tensor]:
    return to_torch(pipeline.corrupt(take(setup.train, slice(0, rows)), setup.objective, 0, 0))


def linear_output_dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    """The dtypes the model's Linear layers produce from now on (filled as they run)."""
    seen: set[torch.dtype] = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    return seen


@pytest.mark.parametrize("name", CASES)
def test_a_step_of_the_gpu_recipe_on_the_cpu_and_its_flops(name):
    setup = Setup(name, ["model.preset=mini", "train.batch_size=8"], num_docs=300, tokenizer_dir=FIXED_TOKENIZER)
    model = setup.model()
    optimizer = build_optimizer(model, setup.cfg.train, fused=GPU_ON_CPU.gpu_recipe)
    assert all(g["fused"] for g in optimizer.param_groups)
    dtypes = linear_output_dtypes(model)
    before = [p.detach().clone() for p in model.parameters()]
    with FlopCounterMode(display=False) as counter:
        done = train_step(model, setup.objective, optimizer, iter([first_batch(setup)]), setup.cfg,
                          GPU_ON_CPU.autocast())
    optimizer.step()
    assert dtypes == {torch.bfloat16}, dtypes  # every matmul ran in bf16
    assert math.isfinite(done.loss) and math.isfinite(done.grad_norm)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps fp32 master weights
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

    # The PaLM formula per token the model reads, against what PyTorch counted: it counts the
    # embeddings' 6N as matmuls, so it runs a little high on models this small.
    per_token = models.flops_per_token(model, setup.cfg.train.seq_len)
    counted = counter.get_total_flops()
    assert 0.8 < counted / (per_token * done.model_tokens) < 1.05, (counted, per_token, done.model_tokens)
    # MFU as the worker reports it, for a step of one second on a device of 1 TFLOP/s.
    mfu = train_loop.mfu(done.tokens, per_token * done.model_tokens / done.tokens, GPU_ON_CPU.peak_flops, world=1)
    assert mfu == pytest.approx(counted / GPU_ON_CPU.peak_flops, rel=0.2)


def test_the_cpu_recipe_trains_in_fp32_with_the_plain_optimizer():
    cpu = Accelerator(torch.device("cpu"), gpu_recipe=False, pin_memory=False, peak_flops=None, name="CPU")
    setup = Setup("mlm", ["model.preset=tiny", "train.batch_size=8"], num_docs=300, tokenizer_dir=FIXED_TOKENIZER)
    model = setup.model()
    dtypes = linear_output_dtypes(model)
    optimizer = build_optimizer(model, setup.cfg.train, fused=cpu.gpu_recipe)
    train_step(model, setup.objective, optimizer, iter([first_batch(setup)]), setup.cfg, cpu.autocast())
    assert dtypes == {torch.float32} and not any(g["fused"] for g in optimizer.param_groups)


def test_simcse_reads_each_sentence_twice_and_an_encoder_decoder_its_inputs_and_targets():
    simcse = Setup("simcse", ["model.preset=tiny"], num_docs=300, tokenizer_dir=FIXED_TOKENIZER)
    batch = first_batch(simcse)
    assert simcse.objective.model_tokens(batch) == 2 * batch["view"].numel()
    span = Setup("span", ["model.preset=tiny"], num_docs=300, tokenizer_dir=FIXED_TOKENIZER)
    batch = first_batch(span)
    assert span.objective.model_tokens(batch) == (batch["input_ids"].numel() + batch["labels"].numel()) / 2
