"""The per-worker training loop that Ray Train runs on every worker.

It does tensor work only: batches arrive already masked from Ray Data. One optimizer step is
``grad_accum`` micro-batches; every ``log_every`` steps all workers report (a barrier), every
``eval_every`` they evaluate together, every ``checkpoint_every`` rank 0 saves.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ray.train
import ray.train.torch
import torch
from torch.nn.parallel import DistributedDataParallel

from sslab import accelerator, checkpoint, config as config_mod, models, pipeline
from sslab.accelerator import Accelerator
from sslab.errors import RunError
from sslab.evaluation import evaluate
from sslab.masking import schedule_of
from sslab.objectives import adopt, get as get_objective
from sslab.objectives.base import unwrap
from sslab.rng import splitmix64
from sslab.progress import Progress, mark
from sslab.tracking import Tracker

if TYPE_CHECKING:
    from sslab.stream import Stream
    from sslab.sts import StsSet
    from sslab.tokenizer import Vocab


@dataclass
class Counters:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    tokens: int = 0
    nonfinite_total: int = 0
    nonfinite_run: int = 0


class WorkerHook:
    """Called inside every training worker's loop, at the points below (each does nothing here).

    sslab's tests inject faults through hooks (a crash before a step, a kill while a checkpoint
    is copied). Hooks travel to the workers in the :class:`WorkerPlan`, so they must pickle: a
    module outside sslab that defines one registers itself with
    ``ray.cloudpickle.register_pickle_by_value`` so that workers need not import it."""

    def before_step(self, step: int, resumed: bool) -> None:
        """Before optimizer step ``step + 1``; ``resumed``: this attempt started from a checkpoint."""

    def checkpoint_staged(self, staged: Path, dest: Path, resumed: bool) -> None:
        """Rank 0 has written the checkpoint to ``staged``; Ray copies it to ``dest`` next."""


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a training worker gets from the driver: typed, frozen and picklable."""

    config: config_mod.Config
    """The run's resolved config (a plug-in objective's config pickles with it, as its class does
    in ``plugins``)."""
    vocab: Vocab
    probe: dict | None
    """The linear probe's labelled blocks, or None (``eval.probe_docs=0``)."""
    sts: StsSet | None
    """The graded sentence pairs ``eval_sts_spearman`` scores, or None (see :func:`sslab.sts.of_run`)."""
    blocks_per_step: int
    """Blocks all workers train on per optimizer step."""
    train: Stream
    """The prepared training split and the order each worker reads its rows in."""
    run_dir: str
    start_from: str | None = None
    """Checkpoint directory to load weights, optimizer and step from (PBT's exploit)."""
    plugins: tuple = ()
    """Objectives registered outside sslab (:func:`sslab.objectives.plugins`)."""
    hooks: tuple[WorkerHook, ...] = ()


def build_optimizer(model: torch.nn.Module, cfg, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms (BERT's recipe); ``fused``: one kernel for all
    parameters (the GPU recipe: on a GPU it saves a launch per tensor)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


def lr_factor(step: int, cfg) -> float:
    """Linear warmup, then linear, cosine or no decay down to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    decay = 1 - progress if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay


def step_seed(seed: int, rank: int, step: int) -> int:
    """Dropout seed of one step on one rank: a resumed run draws the same dropout masks."""
    return int(splitmix64(splitmix64(splitmix64(seed) ^ rank) ^ step) >> 1)


@contextlib.contextmanager
def micro_batches(w: Worker):
    """Torch batches of this worker's training rows, from its position in its stream on (a
    resumed run starts there without reading what it trained on before: :mod:`sslab.stream`).
    The stream stops on exit, the run's end or its failure: a run trained in process must not
    leave Ray Data's executor running in its caller."""
    t, ctx = w.cfg.train, ray.train.get_context()
    rows_per_step = t.batch_size * t.grad_accum
    if w.counters.step >= t.max_steps:  # a rerun of a finished run: nothing to read
        yield iter(())
        return
    rows = w.plan.train.dataset(w.objective, ctx.get_world_rank(), ctx.get_world_size(),
                                start=w.counters.step * rows_per_step, stop=t.max_steps * rows_per_step,
                                rows_per_step=rows_per_step)
    source = iter(pipeline.torch_batches(rows, t.batch_size, t.prefetch_batches, w.accelerator.device,
                                         pin_memory=w.accelerator.pin_memory))
    try:
        yield source
    finally:
        source.close()


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    tokens: int
    """Tokens this worker trained on."""
    model_tokens: float
    """Token positions its model read for them (:meth:`Objective.model_tokens`; SimCSE reads each twice)."""
    logs: dict[str, float]
    """The objective's own logged values (each part of a mixture, ELECTRA's generator and
    discriminator), averaged over the micro-batches."""
    waited_s: float
    """Seconds spent waiting for batches from Ray Data."""


def train_step(model, objective, optimizer, batches, cfg, amp) -> StepResult:
    """One optimizer step over ``grad_accum`` micro-batches."""
    accum, loss_sum, tokens, model_tokens, logs, waited = cfg.train.grad_accum, 0.0, 0, 0.0, {}, 0.0
    for i in range(accum):
        start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            raise RunError("the training data ran out before train.max_steps; this is a bug in epoch sizing") from None
        waited += time.perf_counter() - start
        sync = contextlib.nullcontext() if i == accum - 1 or not isinstance(model, DistributedDataParallel) \
            else model.no_sync()
        with sync, amp:
            loss, parts = objective.loss(model, batch)
            (loss / accum).backward()
        loss_sum += loss.detach()
        for k, v in parts.items():
            logs[k] = logs.get(k, 0.0) + v.detach().float()
        tokens += batch["input_ids"].numel()
        model_tokens += objective.model_tokens(batch)
    clip = cfg.train.grad_clip or float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    return StepResult(float(loss_sum) / accum, float(grad_norm), tokens, model_tokens,
                      {k: float(v) / accum for k, v in logs.items()}, waited)


def quiet_ray_train_reports() -> None:
    """Drop Ray Train's INFO line per report: sslab prints its own progress line."""
    try:  # that logger is named after its file, so LoggingConfig's level does not reach it
        from ray.train.v2._internal.execution import context
        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


@dataclass
class Worker:
    """What one training worker holds between steps."""

    cfg: config_mod.Config
    plan: WorkerPlan
    objective: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    counters: Counters
    progress: Progress
    tracker: Tracker
    val_shard: object
    world: int
    accelerator: Accelerator
    flops_per_token: float
    resumed: bool
    """This attempt started from a checkpoint (the run's own, or PBT's ``start_from``)."""


def setup(plan: WorkerPlan) -> Worker:
    """Build (or restore) the model, optimizer and schedule."""
    adopt(plan.plugins)  # objectives registered by the driver's script
    cfg = plan.config
    ctx = ray.train.get_context()
    acc = accelerator.of_worker(cfg.scaling)
    if acc.device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    objective = get_objective(cfg.objective.name)(cfg.objective, plan.vocab)
    torch.manual_seed(cfg.train.seed)  # identical init everywhere; DDP also broadcasts rank 0's
    model = objective.build_model(cfg.model)
    if cfg.train.compile:
        model.compile()  # in place: the state dict keeps its keys, so checkpoints and export are unchanged
    # Gradients as views into DDP's all-reduce buckets: no copy in or out of them each step.
    model = ray.train.torch.prepare_model(model, move_to_device=acc.device,
                                          parallel_strategy_kwargs={"gradient_as_bucket_view": True})
    optimizer = build_optimizer(model, cfg.train, fused=acc.gpu_recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.train))
    restored = restore(plan.start_from, unwrap(model), optimizer, scheduler, cfg.train)
    for group in optimizer.param_groups:  # a restored group carries the recipe of the device that saved it
        group["fused"] = acc.gpu_recipe
    counters = Counters(**restored) if restored else Counters()
    quiet = cfg.run.quiet or ctx.get_world_rank() != 0
    worker = Worker(cfg, plan, objective, model, optimizer, scheduler, counters,
                    Progress(cfg.train.max_steps, counters.step, quiet=quiet),
                    Tracker(cfg, plan.run_dir, counters.step, ctx.get_world_rank()),
                    ray.train.get_dataset_shard("val"),
                    ctx.get_world_size(), acc, models.flops_per_token(unwrap(model), cfg.train.seq_len),
                    resumed=restored is not None)
    return worker


def restore(start: str | None, model, optimizer, scheduler, train_cfg) -> dict | None:
    """Resume the run's own latest checkpoint, else start from ``start_from`` (PBT's exploit):
    its weights, optimizer and step, under this trial's (perhaps perturbed) learning rate."""
    own = ray.train.get_checkpoint()
    if own is not None or not start:
        return checkpoint.restore(own, model, optimizer, scheduler)
    counters = checkpoint.restore(ray.train.Checkpoint(start), model, optimizer, scheduler)
    scheduler.base_lrs = [train_cfg.lr] * len(optimizer.param_groups)
    for group in optimizer.param_groups:
        group["initial_lr"], group["lr"] = train_cfg.lr, train_cfg.lr * lr_factor(scheduler.last_epoch, train_cfg)
    return counters


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point; ``loop_config["plan"]`` is the run's :class:`WorkerPlan`."""
    mark("worker.start")
    quiet_ray_train_reports()
    w = setup(loop_config["plan"])
    cfg, counters = w.cfg, w.counters
    mark("worker.ready")
    first = counters.step + 1
    rank = ray.train.get_context().get_world_rank()
    w.model.train()
    with contextlib.closing(w.tracker), micro_batches(w) as batches:
        while counters.step < cfg.train.max_steps:
            for hook in w.plan.hooks:
                hook.before_step(counters.step, w.resumed)
            torch.manual_seed(step_seed(cfg.train.seed, rank, counters.step))
            done = train_step(w.model, w.objective, w.optimizer, batches, cfg, w.accelerator.autocast())
            apply_or_skip(w.optimizer, w.scheduler, counters, done.loss, done.grad_norm, cfg)
            counters.step += 1
            counters.tokens += done.tokens * w.world
            w.progress.tick(done.tokens * w.world, done.waited_s)
            if counters.step == first:
                mark("worker.first_step")
            maybe_report(w, {**step_metrics(w, done), **done.logs})
    mark("worker.end")


def apply_or_skip(optimizer, scheduler, counters: Counters, loss: float, grad_norm: float, cfg) -> None:
    """Step the optimizer, or skip a non-finite step and fail after too many in a row."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        optimizer.step()
        counters.nonfinite_run = 0
    else:
        counters.nonfinite_total += 1
        counters.nonfinite_run += 1
        if counters.nonfinite_run >= cfg.train.max_nonfinite:
            raise RunError(f"loss or gradient was non-finite for {counters.nonfinite_run} steps in a row "
                           f"(step {counters.step}); lower train.lr or raise train.max_nonfinite")
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


def step_metrics(w: Worker, done: StepResult) -> dict:
    c = w.counters
    metrics = {"step": c.step, "wall_time": time.time(), "loss": done.loss, "lr": w.scheduler.get_last_lr()[0],
               "grad_norm": done.grad_norm,
               "tokens": c.tokens, "tokens_per_s": w.progress.tokens_per_s, "data_wait": w.progress.data_wait,
               "epoch": c.step * w.plan.blocks_per_step / w.plan.train.rows,
               "nonfinite_steps": c.nonfinite_total}
    schedule = schedule_of(w.cfg.objective)
    if schedule:  # the ratio this step's rows were masked at
        metrics["mask_ratio"] = float(schedule.ratio_at((c.step - 1) / w.cfg.train.max_steps))
    if w.accelerator.peak_flops:
        flops_per_token = w.flops_per_token * done.model_tokens / done.tokens  # per token trained
        metrics["mfu"] = mfu(w.progress.tokens_per_s, flops_per_token, w.accelerator.peak_flops, w.world)
    return metrics


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float, world: int) -> float:
    """Model FLOPs utilisation: the model FLOP/s all ``world`` workers achieve over their peak."""
    return tokens_per_s * flops_per_token / (peak_flops * world)


def append_history(run_dir: str, metrics: dict) -> None:
    """Append one report to ``metrics.jsonl`` (a resumed run's Tracker first cut it back: one row per step)."""
    with open(Path(run_dir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(metrics) + "\n")


def maybe_report(w: Worker, metrics: dict) -> None:
    """Log, evaluate, checkpoint and report to Ray on the steps that call for each (all ranks alike)."""
    t, step = w.cfg.train, w.counters.step
    last = step == t.max_steps
    do_eval, do_ckpt = step % t.eval_every == 0 or last, step % t.checkpoint_every == 0 or last
    if not (do_eval or do_ckpt or step % t.log_every == 0):
        return
    if do_eval:
        mark("eval.start")
        metrics.update(evaluate(w.model, w.objective, w.val_shard, w.plan.probe, w.plan.sts, w.cfg,
                                w.accelerator.device))
        w.model.train()
        mark("eval.end")
    w.progress.line(metrics)
    rank0 = ray.train.get_context().get_world_rank() == 0
    if rank0:
        append_history(w.plan.run_dir, metrics)
        w.tracker.log(metrics)
    if not (do_eval or do_ckpt):
        # Logging alone skips Ray: a report is a barrier, and Train V2's controller drains each
        # worker's one-slot result queue every 2 s, so frequent reports would stall the step.
        return
    metrics = {**metrics, "device": w.accelerator.name}  # for the summary; the trackers take numbers only
    if do_ckpt and rank0:
        mark("checkpoint.start")
        name = f"checkpoint_{step:08d}"
        dest = Path(w.plan.run_dir) / name
        staged = [lambda tmp, hook=hook: hook.checkpoint_staged(tmp, dest, w.resumed) for hook in w.plan.hooks]
        with checkpoint.save(unwrap(w.model), w.optimizer, w.scheduler, asdict(w.counters), staged) as ckpt:
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)
        mark("checkpoint.end")
    else:
        ray.train.report(metrics, checkpoint=None)
