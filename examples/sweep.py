"""A search from Python: MLM mask ratio x learning rate with ASHA, ranked by the masked-token
loss at a fixed 15 % eval masking (comparable across mask ratios), then the report.

    python examples/sweep.py                          (6 tiny trials, about 5 minutes on 2 CPUs)
    python examples/sweep.py num_samples=16 model.preset=mini

Arguments are ``key=value`` overrides: search keys (num_samples, scheduler.*, resources.*) or
the base config of every trial. Shipped spaces work too: sslab.tune("mlm_masking", ...).
"""
import sys

import sslab
from sslab.report import write_report

spec = {
    "description": "MLM mask ratio x learning rate",
    "base": {"objective": "mlm", "corpus": "synthetic", "model": {"preset": "tiny"},
             "train": {"seq_len": 64, "batch_size": 32, "max_steps": 150, "eval_every": 50,
                       "checkpoint_every": 50, "warmup_steps": 15},
             "eval": {"max_blocks": 128, "probe_docs": 200}},
    "space": {"objective.mask_ratio": {"uniform": [0.1, 0.6]}, "train.lr": {"loguniform": [1e-4, 1e-3]}},
    "metric": "eval_mlm_loss",
    "mode": "min",
    "scheduler": {"name": "asha", "grace_period": 50},
    "num_samples": 6,
    "resources": {"workers": 1, "cpus_per_worker": 1},
}

if __name__ == "__main__":
    search = sslab.tune(spec, out="runs/examples/sweep", overrides=sys.argv[1:])
    print(search.table[["trial_id", "objective.mask_ratio", "train.lr", "status", "eval_mlm_loss"]].to_string())
    print("best model:", search.best["model_dir"] if search.best else None)
    print("report:", write_report(search.search_dir))
