"""One progress line per report: step, loss, throughput and ETA (rank 0 only)."""
from __future__ import annotations

import sys
import time


def fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Throughput over the last reporting window (evaluation time excluded) and an ETA."""

    def __init__(self, total_steps: int, start_step: int, quiet: bool = False):
        self.total, self.step, self.quiet = total_steps, start_step, quiet
        self.window_start = self.last_tick = time.perf_counter()
        self.window_tokens, self.train_seconds, self.session_steps = 0, 0.0, 0
        self.tokens_per_s = 0.0

    def tick(self, tokens: int) -> None:
        """Count one finished optimizer step of ``tokens`` tokens (all workers)."""
        self.step += 1
        self.session_steps += 1
        self.window_tokens += tokens
        self.last_tick = time.perf_counter()
        elapsed = self.last_tick - self.window_start
        if elapsed > 0:
            self.tokens_per_s = self.window_tokens / elapsed

    def line(self, metrics: dict) -> None:
        """Print the progress line, then start a new window (so report time is not counted)."""
        self.train_seconds += self.last_tick - self.window_start
        if not self.quiet:
            per_step = self.train_seconds / max(1, self.session_steps)
            # The objective's parts (gen_loss, nsp_loss …), then the fixed-protocol metrics.
            extra = "".join(f" | {k} {v:.4g}" for k, v in metrics.items()
                            if (k.startswith(("eval_", "probe_")) or k.endswith(("_loss", "_acc")))
                            and isinstance(v, float))
            print(f"[sslab] step {self.step}/{self.total} | loss {metrics['loss']:.4f} | lr {metrics['lr']:.2e} "
                  f"| {self.tokens_per_s / 1e3:.1f}k tok/s{extra} | eta {fmt_duration(per_step * (self.total - self.step))}",
                  file=sys.__stdout__, flush=True)  # past Ray Train's print-to-logger patch
        self.window_start, self.window_tokens = time.perf_counter(), 0
