"""Scale: how the cost of a run grows with the corpus, on real text prepared once.

Corpora of real documentation text (`realtext.py`: what is installed on this machine, the base in
sorted file order, then shuffled and tagged copies) at each size, with one WordPiece tokenizer
(vocab 8,000) trained once and given to every run, so every side tokenises the same way:

1. **prepare throughput**: `sslab.prepare` on a cold cache (read, tokenise, pack into MLM blocks of
   128, write Parquet shards and the manifest; Ray Data on every core) against bare `tokenizers`
   batch encoding of the same files' lines (`encode_batch_fast`, Rayon on every core), both in MB of
   text per second per core used. Goal: >= 0.8.
2. **first step on a cache hit**: seconds from `sslab.pretrain(...)` to its first training step
   (the `worker.first_step` mark), the corpus prepared already; the same call at each size, tiny
   model, 1 worker (in process: this machine alone). Goal: the largest size within 1.2x of the
   smallest.
3. **peak memory** during that run: the driver's RSS (this process, which also trains) and the
   object store's bytes in use (Ray's own store stats, sampled every 0.2 s). Goal: flat across
   sizes (the largest within 1.2x of the smallest), and the object store under 1 GB.
4. **resume**: seconds from a restart to its first new step, when a run that crashed right after
   its checkpoint at step 10, or at step 2,000, is restarted by `scaling.max_failures` (the same
   training function, in process; the marks of the second attempt). Goal: at 2,000 within 1.1x
   of at 10.
5. **tokenisation passes in an 8-trial search** (`sslab.tune`, a grid over `train.lr`, fresh
   cache): preparations written to the cache (each writes an `attempt-…` directory). Goal: 1.

    python benchmarks/scale.py [--size smoke|full|large] [--reps 1]

`full` is 10 MB and 100 MB (about 25 minutes on 2 cores); `large` adds 1 GB, to run by hand.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, Result, Timer, parse_args, say, scratch  # noqa: E402
import realtext  # noqa: E402

SIZES = {
    "smoke": dict(megabytes=[0.5, 1], resume_steps=[10, 30], trials=2, steps=6),
    "full": dict(megabytes=[10, 100], resume_steps=[10, 2000], trials=8, steps=20),
    "large": dict(megabytes=[10, 100, 1000], resume_steps=[10, 2000], trials=8, steps=20),
}
RUN = ["model.preset=tiny", "train.seq_len=128", "train.batch_size=8", "train.warmup_steps=1", "eval.probe_docs=0",
       "eval.max_blocks=64", "run.quiet=true", "track.tensorboard=false"]


def marks(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Sampler:
    """Peak RSS of this process and peak object-store bytes in use, sampled in a thread."""

    def __init__(self, every_s: float = 0.2):
        import psutil
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        self.every_s, self.proc = every_s, psutil.Process()
        self.state = get_state_from_address(ray.get_runtime_context().gcs_address)
        self.reply = get_memory_info_reply
        self.rss = self.store = 0
        self.stop = threading.Event()

    def sample(self) -> None:
        self.rss = max(self.rss, self.proc.memory_info().rss)
        stats = self.reply(self.state).store_stats
        self.store = max(self.store, stats.object_store_bytes_used)

    def __enter__(self):
        def loop():
            while not self.stop.is_set():
                self.sample()
                self.stop.wait(self.every_s)

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.sample()


def bare_encode(folder: Path, tokenizer_dir: Path) -> float:
    """Seconds for `tokenizers` alone to read and batch-encode every line of ``folder``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    with Timer() as t:
        for path in sorted(folder.iterdir()):
            lines = path.read_text(encoding="utf-8").splitlines()
            for i in range(0, len(lines), 10_000):
                tok.encode_batch_fast(lines[i:i + 10_000], add_special_tokens=False)
    return t.seconds


def first_step_on_hit(corpus: Path, overrides: list[str], out: Path, timeline: Path, steps: int) -> tuple[float, int, int]:
    """(seconds to the first step, peak RSS, peak object-store bytes) of a run on a prepared corpus."""
    import sslab

    timeline.unlink(missing_ok=True)
    with Sampler() as peak:
        started = time.time()
        sslab.pretrain(None, overrides=[f"corpus.source={corpus}", f"run.out={out}", f"train.max_steps={steps}",
                                  *overrides])
    first = next(m["t"] for m in marks(timeline) if m["event"] == "worker.first_step")
    return first - started, peak.rss, peak.store


def restart_to_first_step(corpus: Path, overrides: list[str], out: Path, timeline: Path, at: int) -> float:
    """Seconds from a restart (``max_failures``) to its first new step, the crash right after the
    checkpoint at step ``at``."""
    import sslab
    from sslab.runner import RunHooks
    from sslab.train_loop import WorkerHook

    class CrashAfterCheckpoint(WorkerHook):
        def before_step(self, step: int, resumed: bool) -> None:
            if step == at and not resumed:
                raise RuntimeError(f"benchmark: a crash after step {at}")

    timeline.unlink(missing_ok=True)
    sslab.pretrain(None, overrides=[f"corpus.source={corpus}", f"run.out={out}", f"train.max_steps={at + 2}",
                              f"train.checkpoint_every={at}", f"train.eval_every={at + 2}", f"train.log_every={at}",
                              "scaling.max_failures=1", *overrides],
                   hooks=RunHooks(worker=(CrashAfterCheckpoint(),)))
    starts = [m["t"] for m in marks(timeline) if m["event"] == "worker.start"]
    firsts = [m["t"] for m in marks(timeline) if m["event"] == "worker.first_step"]
    assert len(starts) == 2 and len(firsts) == 2, (starts, firsts)
    return firsts[1] - starts[1]


def search_passes(corpus: Path, cache: Path, trials: int, out: Path) -> int:
    """Preparations written to a fresh cache by a ``trials``-trial search."""
    import sslab

    spec = {"base": {"objective": "mlm", "corpus": str(corpus)}, "metric": "eval_mlm_loss", "mode": "min",
            "space": {"train.lr": {"grid": [10 ** (-3 - i / trials) for i in range(trials)]}}, "num_samples": 1}
    sslab.tune(spec, out=out, overrides=[f"data.cache_dir={cache}", "train.max_steps=2", "tokenizer.vocab_size=8000",
                                         *RUN])
    return sum(1 for entry in (cache / "data").iterdir() for p in entry.iterdir() if p.name.startswith("attempt-"))


def main() -> None:
    args = parse_args(__doc__, default_reps=1, sizes=tuple(SIZES))
    size = SIZES[args.size]
    import ray

    from sslab import progress, tokenizer
    from sslab.config import TokenizerConfig

    cores = os.cpu_count()
    result = Result(__file__, "Scale: prepare once, stream always, resume in O(1)", args.size, args.reps,
                    params={**size, "cores": cores, "seq_len": 128, "vocab_size": 8000})
    with scratch("scale") as tmp, Timer() as wall:
        tmp = Path(tmp)
        timeline = tmp / "timeline.jsonl"
        os.environ[progress.TIMELINE] = str(timeline)
        corpora = {mb: realtext.write_corpus(tmp / f"corpus{mb}", mb) for mb in size["megabytes"]}
        say(f"corpora: {', '.join(f'{mb} MB ({realtext.corpus_bytes(c):,} bytes)' for mb, c in corpora.items())}")
        tok_dir = tmp / "tokenizer"
        sample = realtext.base_lines()[::max(1, len(realtext.base_lines()) // 50_000)]
        tokenizer.train_tokenizer(TokenizerConfig(vocab_size=8000), list(sample), 512).save_pretrained(str(tok_dir))
        common = [f"tokenizer.path={tok_dir}", *RUN]
        ray.init(address="local", num_cpus=cores, logging_level="WARNING")

        prepare_rate, bare_rate, first_s, rss, store = {}, {}, {}, {}, {}
        for mb, corpus in corpora.items():
            import sslab

            megabytes = realtext.corpus_bytes(corpus) / (1 << 20)
            rates, bares, firsts = [], [], []
            for rep in range(args.reps):
                cache = tmp / f"cache-{mb}mb-{rep}"
                with Timer() as t:
                    sslab.prepare(overrides=[f"corpus.source={corpus}", f"data.cache_dir={cache}", *common])
                rates.append(megabytes / t.seconds / cores)
                bares.append(megabytes / bare_encode(corpus, tok_dir) / cores)
                s, r, o = first_step_on_hit(corpus, [f"data.cache_dir={cache}", *common], tmp / f"run{mb}-{rep}",
                                            timeline, size["steps"])
                firsts.append(s)
                rss[mb], store[mb] = max(rss.get(mb, 0), r), max(store.get(mb, 0), o)
                say(f"{mb} MB rep {rep + 1}: prepare {rates[-1]:.2f} MB/s/core (bare tokenizers {bares[-1]:.2f}), "
                    f"first step on a hit {s:.1f} s, peak RSS {r / 2**20:,.0f} MB, object store {o / 2**20:,.0f} MB")
            prepare_rate[mb], bare_rate[mb], first_s[mb] = rates, bares, firsts

        small, large = min(corpora), max(corpora)
        result.figures.append(Figure(f"prepare throughput per core / bare tokenizers per core ({large} MB)",
                                     [a / b for a, b in zip(prepare_rate[large], bare_rate[large])], 0.8,
                                     prepare_rate[large], bare_rate[large], "MB/s/core", "sslab prepare",
                                     "tokenizers encode_batch_fast"))
        result.figures.append(Figure(f"first step on a cache hit: {large} MB / {small} MB",
                                     [a / b for a, b in zip(first_s[large], first_s[small])], 1.2,
                                     first_s[large], first_s[small], "s", f"{large} MB", f"{small} MB",
                                     lower_is_better=True))
        result.figures.append(Figure(f"peak object-store bytes: {large} MB / {small} MB", [store[large] / max(1, store[small])],
                                     1.2, [store[large]], [store[small]], "bytes", f"{large} MB", f"{small} MB",
                                     lower_is_better=True))
        result.figures.append(Figure(f"peak driver RSS: {large} MB / {small} MB", [rss[large] / rss[small]], 1.2,
                                     [rss[large]], [rss[small]], "bytes", f"{large} MB", f"{small} MB",
                                     lower_is_better=True))
        for mb in corpora:
            result.notes.append(f"{mb} MB: prepare {statistics.median(prepare_rate[mb]):.2f} MB/s per core (bare "
                                f"tokenizers {statistics.median(bare_rate[mb]):.2f}); first step on a hit "
                                f"{statistics.median(first_s[mb]):.1f} s; peak driver RSS {rss[mb] / 2**20:,.0f} MB; "
                                f"peak object store {store[mb] / 2**20:,.0f} MB")

        lo, hi = size["resume_steps"]
        prepared_small = [f"data.cache_dir={tmp / f'cache-{small}mb-0'}", *common]
        restarts = {at: [restart_to_first_step(corpora[small], prepared_small, tmp / f"resume{at}-{rep}", timeline, at)
                         for rep in range(args.reps)] for at in (lo, hi)}
        result.figures.append(Figure(f"restart to first new step: resumed at step {hi} / at step {lo}",
                                     [a / b for a, b in zip(restarts[hi], restarts[lo])], 1.1, restarts[hi],
                                     restarts[lo], "s", f"step {hi}", f"step {lo}", lower_is_better=True))

        passes = search_passes(corpora[small], tmp / "search-cache", size["trials"], tmp / "search")
        result.figures.append(Figure(f"tokenisation passes in a {size['trials']}-trial search", [passes], 1, [passes],
                                     [1], "passes", "sslab tune", "one", lower_is_better=True))
    result.wall_s = wall.seconds
    result.save(args.out)


if __name__ == "__main__":
    main()
