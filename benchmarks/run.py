"""Run the benchmarks and write benchmarks/RESULTS.md (what `make bench` does).

Each script runs in its own process (its own Ray), one after another, so no two measure at
the same time; each writes `<out>/<script>.json`, and RESULTS.md is assembled from every JSON
found there, so a figure measured elsewhere (the GPU one, on a lent GPU machine) can be copied
in and rendered beside the rest.

    python benchmarks/run.py                       # every script, full size, 3 repetitions
    python benchmarks/run.py --only data_pipeline  # one script
    python benchmarks/run.py --render              # only rewrite RESULTS.md from the JSONs
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("data_pipeline", "training", "search", "trial_overhead", "scale", "parity", "gpu")
# Figures whose definition changed, by their old name (each was renamed): a JSON that still holds
# one was measured the old way, and RESULTS.md says so until the script is run again.
REDEFINED = {
    "data (b): cached blocks to masked batches / HF MLM collator":
        "the HF collator found each row's special tokens itself, a Python call per row; it now gets their mask "
        "with the rows, as run_mlm.py gives it",
    "training overhead: sslab pretrain (1 worker) / bare PyTorch loop":
        "wall-clock tokens/s; it is now tokens per core-second, counting every process and thread of each side",
    "search compute: ASHA trial-steps / every trial to the end":
        "training steps only, leaving out that ASHA's trials evaluate at every grace period and the others once; "
        "evaluations now count at their measured cost in training steps",
}


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(script: str, size: str, reps: int, out: Path) -> None:
    cmd = [sys.executable, str(HERE / f"{script}.py"), "--size", size, "--reps", str(reps), "--out", str(out)]
    print(f"[bench] {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"[bench] {script} took {time.perf_counter() - start:.0f}s", flush=True)


def fmt(x: float) -> str:
    return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def render(results: list[dict]) -> str:
    lines = ["# Benchmark results", "",
             "Written by `make bench` (`python benchmarks/run.py`) from `benchmarks/results/*.json`; do not edit "
             "by hand. Each figure is a ratio of sslab to the alternative measured in the same run, repetitions "
             "interleaved, so a busy machine slows both sides alike; the median of the per-repetition ratios "
             "stands beside its goal. How each is measured is in the script's docstring.", ""]
    if not results:
        return "\n".join(lines + ["No results yet: run `make bench`.", ""])
    lines += ["| benchmark | figure | median | goal | | sslab | alternative | per repetition |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for f in r["figures"]:
            sign = "≤" if f["lower_is_better"] else "≥"
            verdict = "**to be re-measured**" if f["name"] in REDEFINED else "holds" if f["holds"] else "**missed**"
            lines.append(
                f"| `{Path(r['script']).name}` ({r['size']}, {r['reps']} rep{'s' if r['reps'] != 1 else ''}) | {f['name']} | **{f['median']:.3g}** "
                f"| {sign} {f['goal']:g} | {verdict} "
                f"| {f['ours_label']}: {fmt(statistics.median(f['ours']))} {f['unit']} "
                f"| {f['theirs_label']}: {fmt(statistics.median(f['theirs']))} {f['unit']} "
                f"| {', '.join(f'{x:.3g}' for x in f['ratio'])} |")
    for r in results:
        lines += ["", f"## {r['title']}", "",
                  f"`{Path(r['script']).name} --size {r['size']} --reps {r['reps']}`, {r['wall_s']:.0f} s, "
                  f"commit `{r['versions'].get('commit', '?')}`.", ""]
        lines += [f"- **to be re-measured** (`python benchmarks/run.py --only {Path(r['script']).stem}`): "
                  f"{f['name']}, measured under its old definition: {REDEFINED[f['name']]}"
                  for f in r["figures"] if f["name"] in REDEFINED]
        lines += [f"- {f['name']}: {f['note']}" for f in r["figures"] if f.get("note")]
        lines += [f"- {note}" for note in r["notes"]]
        lines += [f"- parameters: {', '.join(f'{k}={v}' for k, v in r['params'].items())}"]
        m, v = r["machine"], r["versions"]
        lines += [f"- machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs, {m.get('memory_gb', '?')} GB"
                  + (f", {m['gpu']}" if m.get("gpu") else "") + f"; {m.get('platform')}, Python {m.get('python')}",
                  f"- versions: {', '.join(f'{k} {x}' for k, x in v.items() if k != 'commit')}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    p.add_argument("--size", choices=("smoke", "full"), default="full")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=HERE / "results", help="folder of the JSON results")
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="the Markdown file to write")
    p.add_argument("--render", action="store_true", help="do not run anything; rewrite RESULTS.md from the JSONs")
    args = p.parse_args()
    if args.reps < 3 and args.size == "full" and not args.render:
        print(f"[bench] note: --reps {args.reps}; RESULTS.md asks for the median of at least 3", flush=True)
    if not args.render:
        for script in args.only or SCRIPTS:
            if script == "gpu" and args.size == "full" and not has_cuda():
                print("[bench] gpu: no CUDA GPU here, skipped (run it on a GPU machine and copy gpu.json into "
                      f"{args.out})", flush=True)
                continue
            run(script, args.size, args.reps, args.out)
    found = {p.stem: json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))}
    ordered = [found[s] for s in SCRIPTS if s in found] + [r for s, r in found.items() if s not in SCRIPTS]
    args.results.write_text(render(ordered))
    print(f"[bench] wrote {args.results}", flush=True)


if __name__ == "__main__":
    main()
