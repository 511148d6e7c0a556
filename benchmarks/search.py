"""Search efficiency: ASHA against running every trial to the end.

The shipped `mlm_masking` space (mask ratio x learning rate, 16 trials, ranked by the masked-token
loss at a fixed 15 % eval masking) at tiny scale, searched twice with the same random seed, so
both searches draw the same 16 configurations: once with the space's own ASHA scheduler (its
grace period scaled with `train.max_steps`), once with `scheduler=fifo`. Each repetition draws
a new set of 16 (search seed = repetition).

Compute: trial-steps actually trained (each trial's last logged step, so a stopped trial's steps
after its last report count too), ASHA / FIFO. Goal: at most 0.35.
Quality: the best finished trial's `eval_mlm_loss`, ASHA / FIFO. Goal: at most 1.02 (within 2 %).

    python benchmarks/search.py [--size smoke|full] [--reps 3]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, Result, Timer, parse_args, say, scratch  # noqa: E402

SPACE = "mlm_masking"
SIZES = {
    "smoke": dict(trials=2, steps=8, seq_len=32, batch_size=8, docs=400, concurrent=2),
    "full": dict(trials=16, steps=128, seq_len=64, batch_size=32, docs=2000, concurrent=3),
}


def overrides(size: dict, seed: int, scheduler: str, tokenizer: str) -> list[str]:
    from sslab.search_spec import load_spec

    shipped = load_spec(SPACE)
    steps = size["steps"]
    # The space's grace period and warm-up as the same shares of training (16 trials, 128 steps:
    # rungs at 8, 32 and 128, as the shipped 1250, 5000 and 20000). Trials report every grace period:
    # ASHA's rungs (grace x reduction factor^k) then fall on report steps, so a trial it stops has
    # trained exactly to its rung, and each evaluation (a Ray Data pass) is one ASHA can use. Without
    # a scheduler only the final evaluation counts (evaluating changes no weights: same results).
    grace = max(1, round(shipped.scheduler.grace_period / shipped.max_steps * steps))
    warmup = max(1, round(shipped.base_config().train.warmup_steps / shipped.max_steps * steps))
    return [
        f"num_samples={size['trials']}", f"search.seed={seed}", "model.preset=tiny",
        f"train.seq_len={size['seq_len']}", f"train.batch_size={size['batch_size']}", f"train.max_steps={steps}",
        f"train.warmup_steps={warmup}", f"train.log_every={grace}",
        f"train.eval_every={grace if scheduler == 'asha' else steps}",
        f"train.checkpoint_every={steps}", "eval.max_blocks=128", "eval.probe_docs=0",
        f"corpus.synthetic.num_docs={size['docs']}", f"tokenizer.path={tokenizer}",
        "resources.cpus_per_worker=1", "run.quiet=true",
        *([f"scheduler.grace_period={grace}"] if scheduler == "asha" else ["scheduler=fifo"]),
    ]


def shared_tokenizer(size: dict, path: Path) -> str:
    from sslab import synthetic, tokenizer
    from sslab.config import SyntheticConfig, TokenizerConfig

    docs = synthetic.generate(SyntheticConfig(num_docs=size["docs"]), 0, size["docs"])["text"]
    tokenizer.train_tokenizer(TokenizerConfig(vocab_size=4000), docs, 512).save_pretrained(str(path))
    return str(path)


def last_logged_step(run_dir: Path) -> int:
    from sslab.report import read_metrics

    logged = read_metrics(run_dir)
    return int(logged["step"].max()) if len(logged) else 0


def trial_steps(search_dir: Path) -> int:
    """Steps trained by every trial together (each trial's last logged step)."""
    return sum(last_logged_step(run_dir) for run_dir in (search_dir / "trials").iterdir() if run_dir.is_dir())


def steps_after_stop(search_dir: Path, table) -> int:
    """Steps the trials ASHA stopped trained past the result it stopped them at (they train on while
    that result travels to Tune and until their run is ended)."""
    stopped = table[table["status"] == "STOPPED"]
    return sum(max(0, last_logged_step(search_dir / "trials" / trial) - int(step))
               for trial, step in zip(stopped["trial_id"], stopped["step"]))


def best_finished(table, metric: str) -> float:
    done = table[table["status"] == "FINISHED"]
    return float(done[metric].min())


def main() -> None:
    args = parse_args(__doc__)
    size = SIZES[args.size]
    import ray

    import sslab

    # Trials mostly wait on Ray's start-up here; several at a time on this many CPUs (each trial
    # takes a worker CPU and one for Ray Data) only changes the order results come in. The dashboard
    # stays: Ray Train frees the workers of a trial ASHA stops through its State API, and without it
    # their CPUs stay reserved until the next trials' Ray Data has none left.
    ray.init(address="local", num_cpus=2 * size["concurrent"], logging_level="WARNING")
    result = Result(__file__, f"Search efficiency: ASHA against every trial to the end ({SPACE}, tiny)", args.size,
                    args.reps, params={**size, "space": SPACE, "metric": "eval_mlm_loss"})
    steps = {"asha": [], "fifo": []}
    best = {"asha": [], "fifo": []}
    late = []  # per repetition: ASHA's trial-steps trained after it stopped the trial
    with scratch("search") as tmp, Timer() as wall:
        # One tokenizer for both searches: the WordPiece trainer is not deterministic, and the two
        # must train the same 16 configurations on the same tokens.
        tokenizer = shared_tokenizer(size, Path(tmp) / "tokenizer")
        for rep in range(args.reps):
            for scheduler in ("asha", "fifo"):
                out = Path(tmp) / f"{scheduler}{rep}"
                found = sslab.tune(SPACE, out=out, overrides=overrides(size, rep, scheduler, tokenizer))
                steps[scheduler].append(trial_steps(out))
                best[scheduler].append(best_finished(found.table, "eval_mlm_loss"))
                if scheduler == "asha":
                    late.append(steps_after_stop(out, found.table))
                say(f"rep {rep + 1}/{args.reps} {scheduler}: {steps[scheduler][-1]} trial-steps, "
                    f"best eval_mlm_loss {best[scheduler][-1]:.4f}, "
                    f"{int((found.table['status'] == 'FINISHED').sum())} trials finished")
            # Saved after every repetition: an interrupted benchmark keeps what it measured.
            result.reps, result.wall_s = rep + 1, wall.elapsed()
            result.notes = [f"ASHA's trial-steps trained after it stopped the trial (counted in its compute), "
                            f"per repetition: {late}"]
            if rep + 1 < args.reps:
                result.notes.append(f"{rep + 1} of the {args.reps} repetitions asked for "
                                    f"({wall.elapsed() / (rep + 1) / 60:.0f} min each here)")
            result.params["grace_period"] = int(overrides(size, 0, "asha", tokenizer)[-1].split("=")[1])
            result.figures = [
                Figure.compare("search compute: ASHA trial-steps / every trial to the end", steps, "asha", "fifo", 0.35,
                               "trial-steps", lower_is_better=True),
                Figure.compare("search quality: best eval_mlm_loss, ASHA / every trial to the end", best, "asha",
                               "fifo", 1.02, "eval_mlm_loss", lower_is_better=True),
            ]
            result.save(args.out)


if __name__ == "__main__":
    main()
