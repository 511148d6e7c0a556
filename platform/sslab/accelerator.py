"""What a training worker does differently on a GPU, decided once per worker.

On a CUDA device a worker trains under bf16 autocast with fused AdamW, has Ray Data pin its
batches so that the copy to the GPU does not block the step, and reports MFU against the
device's peak. ``scaling.simulate_gpu`` takes that same path with the CPU standing in for the
GPU: Ray reserves (fake) GPUs for the workers and sets ``CUDA_VISIBLE_DEVICES`` as it does on a
GPU node, and the worker runs bf16 autocast and fused AdamW, which PyTorch also has on a CPU. Only
the CUDA calls themselves, pinned memory (it needs CUDA) and NCCL (replaced by gloo) are left
out, so the GPU branch runs in ``make test``, or on a laptop before GPUs are rented.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import ray
import ray.train.torch
import torch

from sslab import models
from sslab.config import ScalingConfig


@dataclass(frozen=True)
class Accelerator:
    """How one worker uses its device."""

    device: torch.device
    """Where the model, its batches and its evaluation live."""
    gpu_recipe: bool
    """Train in bf16 autocast with fused AdamW, as on a GPU."""
    pin_memory: bool
    """Ray Data pins each batch in its prefetch threads (needs CUDA)."""
    peak_flops: float | None
    """Peak dense bf16 FLOP/s of the device, for MFU; None: MFU is not reported."""
    name: str
    """What the run trained on, for its summary (``NVIDIA H100 80GB HBM3``, ``CPU``, ``simulated GPU 0 on the CPU``)."""

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward and backward passes' precision: bf16 autocast with the GPU recipe, else fp32."""
        if not self.gpu_recipe:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def of_worker(scaling: ScalingConfig) -> Accelerator:
    """This Ray Train worker's accelerator, from the device Ray assigned it and ``scaling``."""
    if scaling.simulate_gpu:
        ids = ",".join(str(i) for i in ray.get_gpu_ids())
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return Accelerator(torch.device("cpu"), gpu_recipe=True, pin_memory=torch.cuda.is_available(),
                           peak_flops=scaling.peak_flops,
                           name=f"simulated GPU {ids} (CUDA_VISIBLE_DEVICES={visible}) on the CPU")
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        # What autocast leaves in fp32 (the loss, norms, the optimizer's own matmuls) may use TF32
        # tensor cores, as every GPU recipe sets; inductor warns when a compiled model runs without.
        torch.set_float32_matmul_precision("high")
        return Accelerator(device, gpu_recipe=True, pin_memory=True,
                           peak_flops=scaling.peak_flops or models.peak_flops(device),
                           name=torch.cuda.get_device_name(device))
    return Accelerator(device, gpu_recipe=False, pin_memory=False, peak_flops=scaling.peak_flops, name="CPU")
