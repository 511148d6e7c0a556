"""Per-trial fixed cost: where a search trial's wall time goes besides its training steps.

One-trial searches (`sslab tune`, FIFO, a tiny MLM model on the built-in corpus with a tokenizer
trained once and shared, as a search shares it) run in turn with an empty Ray Train
`TorchTrainer` (one worker whose function returns at once), repetitions interleaved, after one
unmeasured trial (a search's first trial also starts Ray's worker processes):

- `1 worker, in process`: the default for a 1-worker CPU trial: it trains in one process, the
  trial's run task, with no Train controller or worker group;
- `1 worker, worker group`: the same trial with `scaling.in_process=false` (Train's controller
  and a worker process, as every trial trained before);
- `2 workers`: a worker group of two (3 CPUs: two workers and one for Ray Data).

Every sslab process appends a mark at each stage boundary to the file `$SSLAB_TIMELINE` names
(`sslab.progress.mark`; Tune's driver marks each trial's start and end), so a trial's wall time
splits into measured parts: the trial process's start and imports, the config's resolution, the
run's task, Ray's checks, the corpus and tokenizer, the pipeline's plan, Train's controller and
worker group (or nothing, in process), the model's build, the first batch and step, the steps,
each evaluation, the checkpoint, the training's teardown, the export and the trial's end.

Fixed cost = (Tune starts the trial -> its first step ends, less one median step)
           + (its last checkpoint is written -> Tune records the trial's end).
Goals (issue 26): <= 8 s for a 1-worker trial, <= 20 s for a 2-worker trial. These goals are
absolute, so these two figures are seconds, not ratios, with the empty `TorchTrainer`'s wall time
measured beside them.

Then, once, `make demo`'s search (the Makefile's `DEMO_OVERRIDES`, one trial at a time as on 2
cores): the share of its wall time spent in training steps. A trial's training seconds are its
steps times its median seconds per step, read from its `metrics.jsonl` (the gaps between logs
with no evaluation or checkpoint in or before them). Goal: at least 0.8.

    python benchmarks/trial_overhead.py [--size smoke|full] [--reps 3]
"""
from __future__ import annotations

import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, Result, Timer, parse_args, say, scratch  # noqa: E402
from search import shared_tokenizer  # noqa: E402

SIZES = {"smoke": dict(steps=6, docs=400, seq_len=32, batch_size=8),
         "full": dict(steps=40, docs=2000, seq_len=64, batch_size=32)}
CASES = {"1 worker, in process": ["resources.workers=1"],
         "1 worker, worker group": ["resources.workers=1", "scaling.in_process=false"],
         "2 workers": ["resources.workers=2"]}
EMPTY = "empty TorchTrainer"
GOALS_S = {"1 worker, in process": 8.0, "2 workers": 20.0}
PARTS = [  # (part, from mark, to mark): consecutive marks of one trial
    ("trial process start", "tune.trial_start", "proc_start"),
    ("imports and unpickling", "proc_start", "trial.start"),
    ("config resolution", "trial.start", "trial.config"),
    ("run task start (queue actor, drive_run)", "trial.config", "run.start"),
    ("Ray checks, run directory", "run.start", "run.ray"),
    ("corpus and tokenizer", "run.ray", "data.tokenizer"),
    ("pipeline plan and counts", "data.tokenizer", "data.ready"),
    ("Train controller and worker group", "data.ready", "worker.start"),
    ("model build", "worker.start", "worker.ready"),
    ("first batch and step", "worker.ready", "worker.first_step"),
    ("training steps after the first", "worker.first_step", "eval.start"),
    ("evaluation", "eval.start", "eval.end"),
    ("checkpoint", "checkpoint.start", "checkpoint.end"),
    ("training teardown", "checkpoint.end", "run.fitted"),
    ("export", "run.fitted", "run.exported"),
    ("trial end, as Tune records it", "run.exported", "tune.trial_end"),
]


def overrides(size: dict, tokenizer: str, case: list[str]) -> list[str]:
    steps = size["steps"]
    return ["num_samples=1", "scheduler=fifo", "model.preset=tiny", f"train.seq_len={size['seq_len']}",
            f"train.batch_size={size['batch_size']}", f"train.max_steps={steps}", "train.warmup_steps=2",
            f"train.log_every={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
            "eval.max_blocks=128", "eval.probe_docs=0", f"corpus.synthetic.num_docs={size['docs']}",
            f"tokenizer.path={tokenizer}", "resources.cpus_per_worker=1", "run.quiet=true", *case]


def read_marks(path: Path, since: float) -> list[dict]:
    marks = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted((m for m in marks if m["t"] >= since), key=lambda m: m["t"])


def breakdown(marks: list[dict], steps: int) -> dict[str, float]:
    """Seconds of each part of one trial, and its fixed cost, from the trial's marks."""
    # The search's driver prepares the data before it starts the trial, writing some of the same
    # marks (data.tokenizer, data.ready): a trial's parts start at its own start.
    begun = next(m["t"] for m in marks if m["event"] == "tune.trial_start")
    at: dict[str, float] = {}
    for m in (m for m in marks if m["t"] >= begun):
        at.setdefault(m["event"], m["t"])  # the first of each (one trial, one evaluation, one checkpoint)
        if m["event"] == "trial.start" and m.get("proc_start"):
            at["proc_start"] = max(m["proc_start"], at["tune.trial_start"])  # a pooled process started earlier
    parts = {name: at[b] - at[a] for name, a, b in PARTS if a in at and b in at}
    if "run.start" not in at:  # the run trained in the trial's own process: no task between
        parts.pop("run task start (queue actor, drive_run)", None)
    step = parts.get("training steps after the first", 0.0) / max(1, steps - 1)
    parts["one training step (median)"] = step
    start = at["worker.first_step"] - at["tune.trial_start"] - step
    end = at["tune.trial_end"] - at["checkpoint.end"]
    parts.update({"start-up (trial start -> first step, less one step)": start,
                  "teardown (last checkpoint -> trial end)": end, "fixed cost": start + end,
                  "trial wall time": at["tune.trial_end"] - at["tune.trial_start"]})
    return parts


def one_trial(size: dict, tokenizer: str, case: list[str], out: Path, timeline: Path) -> dict[str, float]:
    import sslab

    since = time.time()
    sslab.tune("mlm_masking", out=out, overrides=overrides(size, tokenizer, case))
    return breakdown(read_marks(timeline, since), size["steps"])


def demo_overrides() -> list[str]:
    """``make demo``'s overrides, read from the Makefile (the one place they are written)."""
    text = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    return re.search(r"^DEMO_OVERRIDES := (.*?[^\\])$", text, re.S | re.M).group(1).replace("\\\n", " ").split()


def training_seconds(run_dir: Path) -> float:
    """A trial's steps x its median seconds per step (from the wall times of its logs)."""
    from sslab.report import read_metrics

    logged = read_metrics(run_dir)
    if len(logged) < 3:
        return 0.0
    evaluated = logged.filter(like="eval_").notna().any(axis=1)
    gap = logged["wall_time"].diff() / logged["step"].diff()  # seconds per step since the previous log
    plain = gap[~evaluated & ~evaluated.shift(1, fill_value=True)].dropna()  # no evaluation or checkpoint in it
    return float(logged["step"].max() * plain.median()) if len(plain) else 0.0


def demo_share(size: str, out: Path) -> dict[str, float]:
    """``make demo``'s search alone (its tokenizer trained on the corpus, as the demo does): its wall
    time and the share of it spent in training steps."""
    import sslab

    extra = ["num_samples=1", "corpus.synthetic.num_docs=400", "train.max_steps=12", "train.log_every=2",
             "train.eval_every=6", "train.checkpoint_every=6", "scheduler.grace_period=6",
             "eval.probe_docs=0"] if size == "smoke" else []
    with Timer() as t:
        found = sslab.tune("mlm_masking", out=out, overrides=[*demo_overrides(), "max_concurrent_trials=1",
                                                              "run.quiet=true", *extra])
    trained = sum(training_seconds(out / "trials" / str(tid)) for tid in found.table["trial_id"])
    return {"wall_s": t.seconds, "training_s": trained, "share": trained / t.seconds}


def empty_trainer(out: Path) -> float:
    """Wall seconds of a 1-worker TorchTrainer whose function returns at once."""
    import ray.train
    from ray.train.torch import TorchTrainer

    with Timer() as t:
        TorchTrainer(lambda: None, scaling_config=ray.train.ScalingConfig(num_workers=1),
                     run_config=ray.train.RunConfig(storage_path=str(out), name="empty")).fit()
    return t.seconds


def main() -> None:
    args = parse_args(__doc__)
    size = SIZES[args.size]
    with scratch("trial-overhead") as tmp:
        timeline = Path(tmp) / "timeline.jsonl"
        os.environ["SSLAB_TIMELINE"] = str(timeline)  # before Ray starts: its workers inherit it
        import ray

        ray.init(address="local", num_cpus=4, logging_level="WARNING")
        result = Result(__file__, "Per-trial fixed cost: a 1-worker trial in process, with a worker group, "
                        "2 workers", args.size, args.reps, params={**size, "cpus": 4})
        tokenizer = shared_tokenizer(size, Path(tmp) / "tokenizer")
        # One trial first, unmeasured: a search's first trial also starts Ray's worker processes
        # (not at smoke size, whose figures only show that the script runs).
        if args.size != "smoke":
            one_trial(size, tokenizer, CASES["1 worker, in process"], Path(tmp) / "warm-up", timeline)
        parts: dict[str, list[dict]] = {name: [] for name in CASES}
        empty: list[float] = []
        with Timer() as wall:
            for rep in range(args.reps):
                empty.append(empty_trainer(Path(tmp) / f"empty{rep}"))
                say(f"rep {rep + 1}/{args.reps} {EMPTY}: {empty[-1]:.1f} s")
                for name, case in CASES.items():
                    got = one_trial(size, tokenizer, case, Path(tmp) / f"{rep}-{name.replace(' ', '_')}", timeline)
                    parts[name].append(got)
                    say(f"rep {rep + 1}/{args.reps} {name}: fixed cost {got['fixed cost']:.1f} s of "
                        f"{got['trial wall time']:.1f} s")
                result.reps, result.wall_s = rep + 1, wall.elapsed()
                result.figures = figures(parts, empty)
                result.notes = notes(parts, empty)
                result.save(args.out)
            demo = demo_share(args.size, Path(tmp) / "demo")
            say(f"make demo's search: {demo['training_s']:.0f} s of training steps in {demo['wall_s']:.0f} s")
            result.figures.append(Figure("make demo: share of the search's wall time in training steps",
                                         [demo["share"]], 0.8, [demo["training_s"]], [demo["wall_s"]], "s",
                                         "training steps", "search wall time",
                                         note="one run of make demo's search (DEMO_OVERRIDES), one trial at a time"))
            result.wall_s = wall.elapsed()
            result.save(args.out)


def figures(parts: dict, empty: list[float]) -> list[Figure]:
    """The fixed cost of each case with a goal, in seconds (the goals are absolute), beside the
    empty TorchTrainer measured in the same repetitions."""
    out = []
    for name, goal_s in GOALS_S.items():
        fixed = [p["fixed cost"] for p in parts[name]]
        out.append(Figure(f"per-trial fixed cost in seconds: {name}", fixed, goal_s, fixed, empty, "s", name,
                          EMPTY, lower_is_better=True,
                          note=f"seconds, not a ratio: the goal ({goal_s:g} s) is absolute; the empty "
                               f"TorchTrainer beside it is one worker whose function returns at once"))
    return out


def notes(parts: dict, empty: list[float]) -> list[str]:
    names = list(dict.fromkeys(k for runs in parts.values() for p in runs for k in p))
    head = "| part (median s) | " + " | ".join(parts) + " |"
    rows = [head, "|---|" + "---|" * len(parts)]
    for k in names:
        cells = [f"{statistics.median([p[k] for p in runs if k in p]):.2f}" if any(k in p for p in runs) else "—"
                 for runs in parts.values()]
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    return ["the breakdown of one trial, each part measured by the marks its processes wrote "
            f"({EMPTY}: {statistics.median(empty):.1f} s):\n\n" + "\n".join(rows) + "\n"]


if __name__ == "__main__":
    main()
