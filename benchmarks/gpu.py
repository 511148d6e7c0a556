"""GPU: BERT-base masked LM, sequence 128, bf16 on one GPU — tokens/s and MFU.

`sslab pretrain` as a user runs it on a GPU node: packed blocks, dynamic masking in Ray Data,
pinned-memory prefetch, SDPA attention, bf16 autocast, fused AdamW, and with --compile also
`torch.compile` (`train.compile=true`). MFU is the model FLOPs per token (6N + 12·L·H·T) times
tokens/s over the GPU's dense bf16 peak. Goal: at least 0.50 on an H100. Also reported: the
share of step time the worker spent waiting for data (`data_wait` in metrics.jsonl).

Without a GPU only `--size smoke` runs (a tiny model on the CPU: the script cannot rot), and it
records that MFU was not measured.

    python benchmarks/gpu.py [--size smoke|check|full] [--reps 3] [--compile]

``check`` is the full size at half the steps, what ``make gpu-check`` runs (one repetition).
"""
from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, Result, Timer, parse_args, say, scratch  # noqa: E402

SIZES = {
    "smoke": dict(preset="tiny", arch="bert", seq_len=32, batch_size=8, steps=20, log_every=5, docs=400),
    "full": dict(preset="base", arch="bert", seq_len=128, batch_size=256, steps=400, log_every=50, docs=60000),
    # make gpu-check: the full size, shorter, to fit one 15-minute device window with the GPU tests.
    "check": dict(preset="base", arch="bert", seq_len=128, batch_size=256, steps=200, log_every=25, docs=30000),
}


def run_config(size: dict, out: str, gpu: bool, compile_model: bool) -> dict:
    steps = size["steps"]
    return {
        "objective": {"name": "mlm"},
        "corpus": {"source": "synthetic", "synthetic": {"num_docs": size["docs"]}},
        "tokenizer": {"vocab_size": 30522 if size["preset"] == "base" else 4000, "sample_docs": 20000},
        "model": {"preset": size["preset"], "arch": size["arch"]},
        "train": {"seq_len": size["seq_len"], "batch_size": size["batch_size"], "max_steps": steps,
                  "warmup_steps": steps // 10, "log_every": size["log_every"], "eval_every": steps,
                  "checkpoint_every": steps, "prefetch_batches": 4, "compile": compile_model},
        "eval": {"max_blocks": 256, "probe_docs": 0},
        "scaling": {"num_workers": 1, "use_gpu": gpu, "cpus_per_worker": 1},
        "run": {"out": out, "quiet": True},
    }


def steady(run_dir: Path) -> dict:
    """Medians over the logged windows after the first (compilation and start-up) and before the last."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:-1]
    out = {k: statistics.median(r[k] for r in rows) for k in ("tokens_per_s", "data_wait")}
    out["mfu"] = statistics.median(r["mfu"] for r in rows) if rows and "mfu" in rows[0] else None
    return out


def main() -> None:
    args = parse_args(__doc__, switches={"--compile": "also torch.compile the model (train.compile=true)"},
                      sizes=tuple(SIZES))
    compile_model = args.compile
    import torch

    gpu = torch.cuda.is_available()
    if args.size != "smoke" and not gpu:
        raise SystemExit(f"benchmarks/gpu.py --size {args.size} needs a CUDA GPU; --size smoke runs on the CPU")
    size = SIZES[args.size]
    import ray

    import sslab
    from sslab import models

    ray.init(address="local", logging_level="WARNING")
    device = torch.cuda.get_device_name(0) if gpu else "cpu"
    peak = models.peak_flops(torch.device("cuda", 0)) if gpu else None
    result = Result(__file__, "GPU: BERT-base MLM, seq 128, bf16, one GPU", args.size, args.reps,
                    params={**size, "device": device, "peak_flops": peak, "compile": compile_model})
    runs = []
    with scratch("gpu") as tmp, Timer() as wall:
        for rep in range(args.reps):
            out = Path(tmp) / f"run{rep}"
            sslab.pretrain(run_config(size, str(out), gpu, compile_model))
            runs.append(steady(out))
            # The run's own rows travel with the figures: a GPU window is short, and they say where time went.
            Path(args.out).mkdir(parents=True, exist_ok=True)
            shutil.copy(out / "metrics.jsonl", Path(args.out) / f"gpu_metrics_rep{rep + 1}.jsonl")
            say(f"rep {rep + 1}/{args.reps}: {runs[-1]}")
        tps = [r["tokens_per_s"] for r in runs]
        wait = [r["data_wait"] for r in runs]
        result.params["tokens_per_s"] = statistics.median(tps)
        result.params["data_wait"] = statistics.median(wait)
        if peak:
            achieved = [r["mfu"] * peak for r in runs]
            result.figures.append(Figure("GPU MFU: model FLOP/s / peak dense bf16", [a / peak for a in achieved], 0.50,
                                         achieved, [peak] * len(achieved), "FLOP/s", "sslab", f"{device} peak"))
        else:
            result.notes.append(f"no GPU here ({device}): MFU not measured; tokens/s {statistics.median(tps):,.0f} "
                                f"on the CPU at smoke size")
        result.notes.append(f"median data wait: {statistics.median(wait):.1%} of step time")
    result.wall_s = wall.seconds
    result.save(args.out)


if __name__ == "__main__":
    main()
