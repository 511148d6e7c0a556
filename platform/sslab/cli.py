"""The ``sslab`` command line."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from pathlib import Path

from sslab.errors import SslabError, find_sslab_error
from sslab.protocol import is_fixed_protocol

PRETRAIN_EXAMPLES = """examples:
  sslab pretrain --objective mlm --corpus synthetic --preset tiny --workers 2 --max-steps 300 --out runs/demo
  sslab pretrain --corpus data/books/ --out runs/books train.seq_len=256 objective.mask_ratio=0.3
  sslab pretrain --config my_run.yaml --out runs/a train.lr=1e-3
  (rerun the same command to resume from the run's last checkpoint)
"""

TUNE_EXAMPLES = """examples:
  sslab tune mlm_masking --out runs/masking                       (a shipped space, at the scale it was written for)
  sslab tune mlm_masking --out runs/m --num-samples 8 model.preset=tiny train.max_steps=200
  sslab tune my_space.yaml --out runs/s scheduler.grace_period=500 resources.workers=2
  sslab tune mlm_masking --out runs/masking --resume               (continue an interrupted search)
  key=value sets a search key (num_samples, metric, mode, scheduler.*, search.*, resources.*,
  max_concurrent_trials) or else the base config of every trial (model.preset, train.lr, ...)
"""

# Shorthand flags and the config keys they set.
FLAGS = {"objective": "objective.name", "corpus": "corpus.source", "preset": "model.preset",
         "workers": "scaling.num_workers", "max_steps": "train.max_steps", "out": "run.out",
         "mlflow_uri": "track.mlflow_uri", "wandb_project": "track.wandb_project"}
TRACK_FLAGS = ("mlflow_uri", "wandb_project")


def add_tracking(p) -> None:
    p.add_argument("--mlflow-uri", help="also log to MLflow, e.g. file:./mlruns or http://mlflow:5000 (sslab[mlflow])")
    p.add_argument("--wandb-project", help="also log to Weights & Biases (sslab[wandb]; track.wandb_mode=offline "
                                           "writes locally)")


def add_source(p) -> None:
    """The flags that say what a run trains on, shared by pretrain and prepare."""
    p.add_argument("--config", help="YAML config file (overrides and flags apply on top)")
    p.add_argument("--objective", help="objective name or mixture, e.g. mlm, clm, mlm+nsp (see `sslab objectives`)")
    p.add_argument("--corpus", help="'synthetic', a file, a directory, a glob or a URI")


def add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain one model", epilog=PRETRAIN_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Pretrain a model with a self-supervised objective on Ray Train.")
    add_source(p)
    p.add_argument("--preset", help="model size: tiny, mini, small, base, large")
    p.add_argument("--workers", type=int, help="data-parallel Ray Train workers")
    p.add_argument("--max-steps", type=int, help="optimizer steps")
    p.add_argument("--out", help="run directory (rerun with the same one to resume)")
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    add_tracking(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=1e-3")


def pretrain_overrides(args) -> list[str]:
    out = [f"{key}={getattr(args, flag)}" for flag, key in FLAGS.items() if getattr(args, flag) is not None]
    if args.quiet:
        out.append("run.quiet=true")
    return out + list(args.overrides)


def owning(out: str | None, label: str):
    """Hold the output directory ``out`` names (None: nothing yet, the run holds its own) from
    the start: a second command on it is refused before the seconds of importing torch and Ray."""
    from sslab import owner

    return owner.hold(Path(out), label) if out else contextlib.nullcontext()


def cmd_pretrain(args) -> int:
    with owning(args.out, f"run.out={args.out!r}"):
        from sslab.runner import pretrain, resolve

        cfg = resolve(args.config, pretrain_overrides(args))  # validated before Ray starts
        result = pretrain(cfg)
    print_summary(result.summary)
    return 0


def print_summary(summary: dict) -> None:
    m = summary["metrics"]
    shown = {k: v for k, v in m.items() if is_fixed_protocol(k) or k == "loss"}
    print("\n[sslab] run finished")
    print(f"  steps {summary['steps']}  tokens {summary['tokens']:,}  wall {summary['wall_s']:.0f}s"
          f"  ({summary['tokens_per_s'] or 0:,.0f} tok/s at the end)")
    for k, v in shown.items():
        print(f"  {k:<18} {v:.4f}")
    print(f"  model   {summary['model_dir']}")


PREPARE_EXAMPLES = """examples:
  sslab prepare --corpus data/books/                               (MLM rows of train.seq_len=128, the default)
  sslab prepare --corpus 's3://bucket/corpus/*.jsonl' --objective clm train.seq_len=512 data.cache_dir=s3://bucket/cache
  sslab prepare --config my_run.yaml                               (what `sslab pretrain --config my_run.yaml` reads)
  Every later pretrain, and every trial of a search, with the same corpus, tokenizer, objective
  unit and train.seq_len finds the prepared rows by itself.
"""


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="tokenize and pack a corpus once into the data cache", epilog=PREPARE_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train (or load) the tokenizer, then tokenize and pack the corpus into the "
                                   "objective's rows, on the Ray cluster, as Parquet shards in data.cache_dir.")
    add_source(p)
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.seq_len=512")


def cmd_prepare(args) -> int:
    from sslab.runner import prepare, resolve

    overrides = [f"{FLAGS[f]}={getattr(args, f)}" for f in ("corpus", "objective") if getattr(args, f) is not None]
    cfg = resolve(args.config, overrides + (["run.quiet=true"] if args.quiet else []) + list(args.overrides))
    result = prepare(cfg)
    print(f"\n[sslab] prepared data {'found' if result.hit else 'written'} in {result.wall_s:.0f}s")
    for name, split in result.splits.items():
        tokens = f"{split['tokens']:>14,} tokens" if name != "probe" else f"{'labelled documents':>21}"
        print(f"  {name:<6} {split['rows']:>12,} rows  {tokens}  {split['shards']:>6,} shards")
    print(f"  entry  {result.entry.uri}")
    if result.tokenizer_dir:
        print(f"  tokenizer {result.tokenizer_dir}")
    return 0


PREVIEW_EXAMPLES = """examples:
  sslab preview --objective mlm --corpus data/books/                  (5 rows, masked as in epoch 0)
  sslab preview --objective span --corpus data/zh/ -n 2 objective.noise_density=0.3
  sslab preview --objective mlm+sop --corpus data/books/ --epoch 3 --json
  sslab preview --config my_run.yaml                                  (what `sslab pretrain --config my_run.yaml` reads)
  Reads the first documents of the corpus here, without Ray, in seconds. The tokenizer is the run's
  when tokenizer.path is set or `sslab prepare` has run; else one trained on those documents.
"""


def add_preview(sub) -> None:
    p = sub.add_parser("preview", help="show a few rows of a corpus as an objective corrupts them",
                       epilog=PREVIEW_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Print the first rows of the corpus tokenized and corrupted exactly as training "
                                   "reads them (masks, replacements, segments, views, inputs and targets).")
    add_source(p)
    p.add_argument("-n", "--rows", type=int, default=5, help="rows to show (default: 5)")
    p.add_argument("--epoch", type=int, default=0, help="the epoch whose corruption to show (default: 0)")
    p.add_argument("--seed", type=int, help="the run's seed (train.seed) the corruption is drawn from")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. objective.mask_ratio=0.3")


def cmd_preview(args) -> int:
    import json
    import os

    from sslab.previews import format_rows, preview

    overrides = [f"{FLAGS[f]}={getattr(args, f)}" for f in ("corpus", "objective") if getattr(args, f) is not None]
    overrides += [f"train.seed={args.seed}"] if args.seed is not None else []
    rows = preview(args.config, overrides=overrides + list(args.overrides), n=args.rows, epoch=args.epoch)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    else:
        print(format_rows(rows, color=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    return 0


def add_tune(sub) -> None:
    p = sub.add_parser("tune", help="search hyperparameters with Ray Tune", epilog=TUNE_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run a search-space file: every trial is a pretraining run; trials rank by a "
                                   "fixed-protocol metric. Shipped spaces: see `sslab spaces`.")
    p.add_argument("spec", help="search-space YAML file, or the name of a shipped one (e.g. mlm_masking)")
    p.add_argument("--out", help="search directory (default runs/<space name>)")
    p.add_argument("--num-samples", type=int, help="trials to run (overrides the file's num_samples)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search in --out")
    add_tracking(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="search keys or base config overrides")


def cmd_tune(args) -> int:
    out = str(Path(args.out).expanduser().resolve()) if args.out else None
    with owning(out, f"--out {out!r}"):
        from sslab.search import tune

        overrides = list(args.overrides) + ([f"num_samples={args.num_samples}"] if args.num_samples is not None else [])
        overrides += [f"{FLAGS[f]}={getattr(args, f)}" for f in TRACK_FLAGS if getattr(args, f) is not None]
        result = tune(args.spec, out=args.out, resume=args.resume, overrides=overrides)
    print_search(result)
    return 0


def print_search(result) -> None:
    import pandas as pd

    table = result.table.drop(columns=["error"])
    # Across objectives most metrics are one objective's: show those every trial reports
    # (results.csv has them all).
    ran = table[table["status"] != "ERROR"]
    partial = [c for c in table.columns if is_fixed_protocol(c) and ran[c].isna().any()]
    with pd.option_context("display.max_columns", 30, "display.width", 200, "display.precision", 4):
        print("\n[sslab] search finished: trials ranked best first\n")
        print(table.drop(columns=partial).to_string(index=False))
    errors = result.table[result.table["status"] == "ERROR"]
    for row in errors.itertuples():
        print(f"  trial {row.trial_id} failed: {row.error}")
    print(f"\n  results  {result.results_csv}")
    print(f"  best     {result.best['model_dir']}" if result.best else "  best     (no trial finished)")
    if result.report:
        print(f"  report   {result.report}")


STUDY_EXAMPLES = """examples:
  sslab studies                                    (the shipped studies: paper, table, settings, sizes)
  sslab study dynamic_masking                      (CPU-tiny, the default size: minutes on 2 cores)
  sslab study span_corruption --out runs/t5 train.max_steps=600       (every trial's config)
  sslab study electra --size paper --out runs/electra corpus.source=data/ resources.gpus_per_worker=1
  Prints the paper's numbers beside sslab's, each direction the paper states with whether sslab
  agrees, and writes study.md, study.json and the report into --out.
"""


def add_study(sub) -> None:
    p = sub.add_parser("study", help="reproduce a published ablation at a size that fits", epilog=STUDY_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run a shipped ablation (every setting, same seeds, to the end) and set the "
                                   "paper's numbers beside sslab's. Shipped studies: see `sslab studies`.")
    p.add_argument("name", help="a shipped study (e.g. dynamic_masking) or a study YAML file")
    p.add_argument("--size", default="tiny", help="the study's size: tiny (the CPU default), paper, ...")
    p.add_argument("--out", help="search directory (default runs/study-<name>-<size>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study in --out")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="every trial's config, or resources.*")


def cmd_study(args) -> int:
    out = str(Path(args.out or f"runs/study-{Path(args.name).stem}-{args.size}").expanduser().resolve())
    with owning(out, f"--out {out!r}"):
        from sslab.study import study

        result = study(args.name, size=args.size, out=out, resume=args.resume, overrides=list(args.overrides))
    print(f"\n{result}\n")
    search = result.search
    print(f"  study    {search.search_dir / 'study.md'} (and study.json)")
    print(f"  results  {search.results_csv}")
    if search.report:
        print(f"  report   {search.report}")
    return 0


def cmd_studies(args) -> int:
    from sslab.study import load_study, shipped_studies

    for path in shipped_studies():
        s = load_study(path)
        print(f"{path.stem:<20} {s.description}")
        print(f"{'':<20} paper: {s.paper['citation']}, {s.paper['where']}")
        print(f"{'':<20} {s.setting}: {', '.join(x.label for x in s.settings)}; {s.metric} ({s.mode}); "
              f"seeds {s.seeds}; sizes {', '.join(s.sizes)}")
    return 0


def cmd_spaces(args) -> int:
    from sslab.search_spec import load_spec, shipped_spaces

    for path in shipped_spaces():
        spec = load_spec(path)
        space = ", ".join(f"{d.field} {d.describe()}" for d in spec.domains)
        print(f"{path.stem:<20} {spec.description}")
        print(f"{'':<20} space: {space}")
        print(f"{'':<20} rank by {spec.metric} ({spec.mode}); {spec.scheduler.name}, {spec.num_samples} trials")
    return 0


def cmd_objectives(args) -> int:
    from sslab import objectives
    from sslab.objectives.mixture import FAMOUS

    for name in objectives.available():
        cls = objectives.get(name)
        knobs = [f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Config) if f.name != "name"]
        print(f"{name:<8} {cls.backbone} on {cls.unit}; eval: {', '.join(cls.metrics)}")
        print(f"{'':<8} knobs: {', '.join(f'objective.{k}' for k in knobs) or '(none)'}")
        print(f"{'':<8} paper: {cls.paper}")
    recipes = ", ".join(f"{k} ({v})" for k, v in FAMOUS.items() if k.split("+")[0] in ("mlm", "simcse"))
    print("\nmixtures: join encoder objectives (mlm, nsp, sop, simcse) that share a unit with '+', at most one\n"
          f"of nsp, sop, simcse: {recipes}. Knobs: objective.<part>.<knob> and\n"
          "objective.<part>_weight (the first part weighs 1, mlm as an auxiliary 0.1, others 1).")
    return 0


LIST_EXAMPLES = {
    "objectives": "example:\n  sslab objectives        then e.g. sslab pretrain --objective span objective.noise_density=0.3",
    "spaces": "example:\n  sslab spaces            then e.g. sslab tune mlm_masking --out runs/masking",
    "studies": "example:\n  sslab studies           then e.g. sslab study dynamic_masking",
    "presets": "example:\n  sslab presets           then e.g. sslab pretrain --preset small model.arch=bert",
}

REPORT_EXAMPLES = """examples:
  sslab report runs/demo              (a search: curves, knob vs metric, ranked trials, throughput)
  sslab report runs/demo/trials/22eae_00000    (one run)
"""

EVAL_EXAMPLES = """examples:
  sslab eval runs/demo/best/model --data reviews.jsonl --label-field sentiment
  sslab eval runs/a/model --data labelled.csv --no-finetune          (linear probe only)
  sslab eval runs/gpt/model --perplexity data/heldout/               (a decoder: perplexity)
  sslab eval runs/sim/model --sts sts-dev.tsv                        (sentence similarity, STS-B style)
"""


def add_listings(sub) -> None:
    helps = {"objectives": "list the objectives, their knobs and metrics", "spaces": "list the shipped search spaces",
             "studies": "list the shipped studies (published ablations)", "presets": "list the model size presets"}
    for name, text in helps.items():
        sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", epilog=LIST_EXAMPLES[name],
                       formatter_class=argparse.RawDescriptionHelpFormatter)


def add_report(sub) -> None:
    p = sub.add_parser("report", help="write an HTML report of a run or a search", epilog=REPORT_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Write <dir>/report/index.html (self-contained, images inline) and its PNGs.")
    p.add_argument("path", help="a run directory or a search directory")


def cmd_report(args) -> int:
    from sslab.report import write_report

    print(f"[sslab] report: {write_report(args.path)}")
    return 0


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="downstream evaluation of an exported model", epilog=EVAL_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Classification on a labelled file (linear probe and full fine-tuning; accuracy "
                                   "and macro-F1 on a held-out split), perplexity of a decoder on a corpus, or "
                                   "sentence similarity (Spearman's rho of cosines with graded pairs' scores).")
    p.add_argument("model_dir", help="an exported model directory (a run's model/, a search's best/model)")
    p.add_argument("--data", help="labelled .jsonl, .csv or .parquet")
    p.add_argument("--text-field", default="text", help="text column of --data (default: text)")
    p.add_argument("--label-field", default="label", help="label column of --data (default: label)")
    p.add_argument("--no-probe", action="store_true", help="skip the linear probe")
    p.add_argument("--no-finetune", action="store_true", help="skip full fine-tuning")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default: 3)")
    p.add_argument("--lr", type=float, default=5e-5, help="fine-tuning learning rate (default: 5e-5)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per example (default: 128)")
    p.add_argument("--seed", type=int, default=0, help="split and fine-tuning seed (default: 0)")
    p.add_argument("--perplexity", metavar="CORPUS", help="a decoder's perplexity on a text file, folder or .jsonl")
    p.add_argument("--sts", metavar="FILE", help="graded sentence pairs (.tsv, .csv, .jsonl: columns sentence1, "
                                                 "sentence2, score): Spearman of cosines with the scores")
    p.add_argument("--pooling", choices=("mean", "cls"), help="sentence vectors for --sts (default: as the model "
                                                              "directory records, else mean)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_eval(args) -> int:
    import json

    from sslab import downstream
    from sslab.errors import ConfigError

    if not (args.data or args.perplexity or args.sts):
        raise ConfigError("sslab eval needs --data FILE (classification), --perplexity CORPUS (decoders) or "
                          "--sts FILE (sentence similarity)")
    result = {}
    if args.data:
        result.update(downstream.classify(args.model_dir, args.data, text_field=args.text_field,
                                          label_field=args.label_field, probe=not args.no_probe,
                                          finetune=not args.no_finetune, epochs=args.epochs, lr=args.lr,
                                          max_length=args.max_length, seed=args.seed))
    if args.perplexity:
        result.update(downstream.perplexity(args.model_dir, args.perplexity, max_length=args.max_length))
    if args.sts:
        result.update(downstream.similarity(args.model_dir, args.sts, pooling=args.pooling, max_length=args.max_length))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"\n[sslab] eval of {args.model_dir}")
    for k, v in result.items():
        if isinstance(v, float):
            print(f"  {k:<18} {v:.4f}")
        elif k in ("n_train", "n_test", "tokens", "sts_pairs"):
            print(f"  {k:<18} {v:,}")
        elif k == "sts_pooling":
            print(f"  {k:<18} {v}")
    return 0


def cmd_presets(args) -> int:
    from types import SimpleNamespace

    import torch
    from transformers import AutoModel

    from sslab.config import ModelConfig
    from sslab.models import PRESETS, encoder_config

    vocab = SimpleNamespace(size=32000, pad_id=0, cls_id=1, sep_id=2)
    print(f"{'preset':<8} {'hidden':>6} {'layers':>6} {'heads':>5} {'ffn':>5}  parameters without embeddings")
    for name, (hidden, layers, heads, inter) in PRESETS.items():
        with torch.device("meta"):  # counts parameters without allocating them
            model = AutoModel.from_config(encoder_config(ModelConfig(preset=name), vocab))
        body = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
        print(f"{name:<8} {hidden:>6} {layers:>6} {heads:>5} {inter:>5}  {body / 1e6:8.1f}M")
    print("\nmodel.arch: modernbert (default), bert, roberta; decoders (clm) and encoder-decoders (span, denoise)\n"
          "use the same sizes. Embeddings add vocab_size x hidden (tokenizer.vocab_size).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sslab", description="Self-supervised LM pretraining on Ray.",
                                     epilog="run `sslab COMMAND --help` for a command's options and examples")
    sub = parser.add_subparsers(dest="command", required=True)
    add_pretrain(sub)
    add_prepare(sub)
    add_preview(sub)
    add_tune(sub)
    add_study(sub)
    add_eval(sub)
    add_report(sub)
    add_listings(sub)
    # key=value overrides may come before or after the flags (argparse alone wants them last).
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    logging.basicConfig(level=logging.INFO, format="[sslab] %(message)s")
    handler = {"pretrain": cmd_pretrain, "prepare": cmd_prepare, "preview": cmd_preview, "tune": cmd_tune,
               "study": cmd_study, "studies": cmd_studies, "eval": cmd_eval, "report": cmd_report, "objectives": cmd_objectives, "spaces": cmd_spaces,
               "presets": cmd_presets}[args.command]
    try:
        return handler(args)
    except SslabError as e:
        ours = find_sslab_error(e) or e
        message = str(ours).strip().splitlines()
        print(f"sslab: error: {message[0] if message else type(e).__name__}", file=sys.stderr)
        return ours.exit_code  # 1; 2 when another command owns the directory
    except KeyboardInterrupt:
        print("sslab: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
