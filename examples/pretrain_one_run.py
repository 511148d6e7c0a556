"""Pretrain one model from Python, evaluate it downstream, and write its report.

    python examples/pretrain_one_run.py                      (tiny model, about 2 minutes on 2 CPUs)
    python examples/pretrain_one_run.py model.preset=mini train.max_steps=2000 scaling.num_workers=2

Arguments are ``key=value`` overrides, as on the command line. Rerun the same command to resume.
"""
import sys

import pandas as pd

import sslab
from sslab import downstream, synthetic
from sslab.config import SyntheticConfig
from sslab.report import write_report

config = {
    "objective": {"name": "mlm", "mask_ratio": 0.3},  # any of `sslab objectives`
    "corpus": {"source": "synthetic"},  # or a folder, a glob, a .jsonl/.parquet file, an s3:// URI
    "model": {"preset": "tiny"},
    "train": {"seq_len": 64, "batch_size": 32, "max_steps": 200, "eval_every": 100, "warmup_steps": 20},
    "run": {"out": "runs/examples/one_run"},
}

if __name__ == "__main__":
    result = sslab.pretrain(config, overrides=sys.argv[1:])
    print({k: round(v, 4) for k, v in result.fixed_protocol_metrics.items()})

    # Downstream: topic classification of labelled documents the pretraining never saw (the corpus
    # holds documents 0..3999; the generator makes any others of the same topics).
    docs = synthetic.generate(SyntheticConfig(), 10_000, 10_600)  # {"text": [...], "label": [...]}
    scores = downstream.classify(result.run_dir / "model", pd.DataFrame(docs), epochs=1)
    print({k: round(v, 3) for k, v in scores.items() if isinstance(v, float)})
    print("report:", write_report(result.run_dir))
