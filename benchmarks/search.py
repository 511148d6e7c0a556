"""Search efficiency: ASHA against running every trial to the end.

The shipped `mlm_masking` space (mask ratio x learning rate, 16 trials, ranked by the masked-token
loss at a fixed 15 % eval masking) at tiny scale, searched twice with the same random seed, so
both searches draw the same 16 configurations: once with the space's own ASHA scheduler (its
grace period scaled with `train.max_steps`), once with `scheduler=fifo`. Each repetition draws
a new set of 16 (search seed = repetition).

Compute, in training steps with evaluations counted: ASHA's trials evaluate (and report) at every
grace period so that its rungs can judge them, while every trial run to the end evaluates once, at
its end. A search's compute is the sum over its trials of

    steps trained + evaluations x E

Steps trained: each trial's last logged step, so a stopped trial's steps after its last report
count too. Evaluations: each trial's logged evaluations. E: the seconds one evaluation adds to a
trial (its Ray Data pass over the validation blocks, the forward passes, the report that carries
its metrics), in training steps. It is measured in every repetition, before the searches, by one
`sslab pretrain` of a trial's config (the space's default knobs) alone on the machine, logging every
grace period and evaluating at every other log: E = (median seconds between logs with an
evaluation between them - median seconds between logs without) / (that median without / grace
period). Both medians come from the same run, so a busy machine slows both alike.
ASHA / FIFO. Goal: at most 0.35.
Quality: the best finished trial's `eval_mlm_loss`, ASHA / FIFO. Goal: at most 1.02 (within 2 %).

    python benchmarks/search.py [--size smoke|full] [--reps 3]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, Result, Timer, parse_args, say, scratch  # noqa: E402

SPACE = "mlm_masking"
METRIC = "eval_mlm_loss"
# Renamed when evaluations joined the compute (run.py marks JSONs of the old name to re-measure).
COMPUTE = "search compute: ASHA / every trial to the end, in training steps with evaluations counted"
COMPUTE_NOTE = ("compute of a search = its trials' steps trained + their evaluations x E, E = the seconds one "
                "evaluation (with its report) adds to a trial over the seconds of one training step, measured in each "
                "repetition by one run of a trial's config that evaluates at every other log; the same E for both sides")
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
    grace = grace_period(size)
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


def evaluations(search_dir: Path, metric: str) -> int:
    """Evaluations logged by every trial together (an evaluation cut short by a stop is not logged)."""
    from sslab.report import read_metrics

    logged = [read_metrics(run_dir) for run_dir in (search_dir / "trials").iterdir() if run_dir.is_dir()]
    return sum(int(df[metric].notna().sum()) for df in logged if metric in df)


def eval_cost(size: dict, rep: int, tokenizer: str, out: Path) -> tuple[float, float]:
    """Seconds of one training step and of one evaluation with its report, from one run of a trial's
    config that logs every grace period and evaluates at every other log (see the docstring)."""
    import sslab
    from sslab.report import read_metrics
    from sslab.search_spec import load_spec

    grace = grace_period(size)
    cfg = load_spec(SPACE, overrides(size, rep, "fifo", tokenizer)).base_config().to_dict()
    cfg["train"].update(log_every=grace, eval_every=2 * grace)
    cfg["run"]["out"] = str(out)
    sslab.pretrain(cfg)
    logged = read_metrics(out)
    gaps = logged["wall_time"].diff().shift(-1)  # seconds from each log to the next
    evaluated = logged[METRIC].notna()
    plain, after_eval = gaps[~evaluated].median(), gaps[evaluated].median()
    return float(plain / grace), float(max(0.0, after_eval - plain))  # numpy's floats would reach the JSON


def grace_period(size: dict) -> int:
    """The space's grace period as the same share of this size's ``train.max_steps``."""
    from sslab.search_spec import load_spec

    shipped = load_spec(SPACE)
    return max(1, round(shipped.scheduler.grace_period / shipped.max_steps * size["steps"]))


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
                    args.reps, params={**size, "space": SPACE, "metric": METRIC, "grace_period": grace_period(size)})
    steps = {"asha": [], "fifo": []}  # per repetition: trial-steps
    evals = {"asha": [], "fifo": []}  # per repetition: evaluations
    best = {"asha": [], "fifo": []}
    cost = []  # per repetition: (seconds of a training step, of an evaluation)
    late = []  # per repetition: ASHA's trial-steps trained after it stopped the trial
    with scratch("search") as tmp, Timer() as wall:
        # One tokenizer for both searches, trained once: the two train the same 16 configurations
        # on the same tokens.
        tokenizer = shared_tokenizer(size, Path(tmp) / "tokenizer")
        for rep in range(args.reps):
            cost.append(eval_cost(size, rep, tokenizer, Path(tmp) / f"eval_cost{rep}"))
            say(f"rep {rep + 1}/{args.reps}: a training step {cost[-1][0]:.3g} s, an evaluation {cost[-1][1]:.3g} s")
            for scheduler in ("asha", "fifo"):
                out = Path(tmp) / f"{scheduler}{rep}"
                found = sslab.tune(SPACE, out=out, overrides=overrides(size, rep, scheduler, tokenizer))
                steps[scheduler].append(trial_steps(out))
                evals[scheduler].append(evaluations(out, METRIC))
                best[scheduler].append(best_finished(found.table, METRIC))
                if scheduler == "asha":
                    late.append(steps_after_stop(out, found.table))
                say(f"rep {rep + 1}/{args.reps} {scheduler}: {steps[scheduler][-1]} trial-steps, "
                    f"{evals[scheduler][-1]} evaluations, best {METRIC} {best[scheduler][-1]:.4f}, "
                    f"{int((found.table['status'] == 'FINISHED').sum())} trials finished")
            # Saved after every repetition: an interrupted benchmark keeps what it measured.
            result.reps, result.wall_s = rep + 1, wall.elapsed()
            result.notes = compute_notes(steps, evals, cost, late)
            if rep + 1 < args.reps:
                result.notes.append(f"{rep + 1} of the {args.reps} repetitions asked for "
                                    f"({wall.elapsed() / (rep + 1) / 60:.0f} min each here)")
            compute = {k: step_equivalents(steps[k], evals[k], cost) for k in steps}
            result.figures = [
                Figure.compare(COMPUTE, compute, "asha", "fifo", 0.35, "step-equivalents", lower_is_better=True,
                               note=COMPUTE_NOTE),
                Figure.compare(f"search quality: best {METRIC}, ASHA / every trial to the end", best, "asha",
                               "fifo", 1.02, METRIC, lower_is_better=True),
            ]
            result.save(args.out)


def step_equivalents(steps: list[int], evals: list[int], cost: list[tuple[float, float]]) -> list[float]:
    """Per repetition: trial-steps plus evaluations at their measured cost in training steps."""
    return [s + e * evaluation / step for s, e, (step, evaluation) in zip(steps, evals, cost)]


def compute_notes(steps: dict, evals: dict, cost: list, late: list) -> list[str]:
    per_rep = [f"rep {i + 1}: an evaluation = {evaluation / step:.3g} training steps ({evaluation:.3g} s / "
               f"{step:.3g} s); ASHA {steps['asha'][i]} trial-steps + {evals['asha'][i]} evaluations, every trial to "
               f"the end {steps['fifo'][i]} trial-steps + {evals['fifo'][i]} evaluations"
               for i, (step, evaluation) in enumerate(cost)]
    return [f"compute per repetition: {'; '.join(per_rep)}",
            f"ASHA's trial-steps trained after it stopped the trial (counted in its compute), per repetition: {late}"]


if __name__ == "__main__":
    main()
