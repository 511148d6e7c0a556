"""The run directory: created and checked before anything else, reused to resume.

A directory that already holds a run resumes it, but only with a compatible config: changing
what shapes the model or the data under a run's checkpoints would silently mix two runs.
A start that fails before training leaves the directory as it found it (:func:`starting`), and
a run has one owner for its whole life (:func:`owned`).
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import yaml

from sslab import checkpoint, owner
from sslab.config import Config
from sslab.errors import RunError

# Keys a rerun may change and still resume: how long, how often, where and on what it runs
# (train.compile too: a compiled model keeps its state dict's keys).
RESUMABLE_CHANGES = ("train.max_steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
                     "train.keep_checkpoints", "train.prefetch_batches", "train.compile", "train.max_nonfinite",
                     "scaling.", "run.", "track.", "eval.probe_docs", "eval.sts_")


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_changes(old: dict, new: dict) -> list[str]:
    """Keys whose values differ, other than those a resume may change."""
    a, b = flatten(old), flatten(new)
    return [k for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES)]


def directory(cfg: Config) -> Path:
    """The run directory ``run.out`` names (absolute)."""
    return Path(cfg.run.out).expanduser().resolve()


RESTART_WAIT_S = 120.0
"""How long a PBT restart waits for the process of its trial's previous attempt to end (Tune
stops that one as it restarts the trial, and its lock goes with it)."""


def owned(cfg: Config, restart: bool = False):
    """Own the run directory while the run lives (:func:`sslab.owner.hold`): another command
    on it is refused with :class:`~sslab.errors.DirectoryInUse` before it touches anything
    there. ``restart``: a PBT restart, which waits for its trial's previous attempt to let go."""
    return owner.hold(directory(cfg), f"run.out={cfg.run.out!r}", RESTART_WAIT_S if restart else 0.0)


def prepare(cfg: Config, replace: bool = False) -> Path:
    """Create (or reopen) ``run.out`` and write the resolved ``config.yaml`` into it.

    ``replace``: the config may differ from the saved one (a PBT restart with perturbed knobs)."""
    run_dir = directory(cfg)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".sslab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunError(f"run.out={cfg.run.out!r} is not a writable directory ({e.strerror})") from None
    saved = run_dir / "config.yaml"
    new = yaml.safe_load(cfg.to_yaml())
    if saved.is_file() and not replace:
        old = yaml.safe_load(saved.read_text()) or {}
        changed = config_changes(old, new)
        if changed:
            shown = ", ".join(f"{k}: {flatten(old).get(k)!r} -> {flatten(new).get(k)!r}" for k in changed[:3])
            raise RunError(f"{run_dir} holds a run with a different config ({shown}); "
                           f"resume it unchanged or choose another run.out")
    check_checkpoint_owner(cfg, run_dir)
    saved.write_text(cfg.to_yaml())
    return run_dir


def check_checkpoint_owner(cfg: Config, run_dir: Path) -> None:
    """A run resumes on the path that wrote its checkpoints: a worker group (Ray Train registers
    them) or this process (sslab does). ``scaling.in_process`` unset follows the run; set, it must agree."""
    asked, written = cfg.scaling.in_process, checkpoint.trained_in_process(run_dir)
    if asked is not None and written is not None and asked != written:
        by = "in process (sslab's checkpoints.json)" if written else "by a worker group (Ray Train's snapshot)"
        raise RunError(f"scaling.in_process={str(asked).lower()} cannot resume {run_dir}: its checkpoints were "
                       f"written {by}; leave scaling.in_process unset to resume it as it ran, or choose another run.out")


@contextlib.contextmanager
def starting(cfg: Config, replace: bool = False):
    """:func:`prepare` the run directory for the start of a run; if the start fails, undo it.

    Everything that happens before training (Ray, the resource check, reading the corpus, the
    tokenizer) may still fail. Then the previous ``config.yaml`` comes back and a ``tokenizer/``
    or ``config.yaml`` this start wrote goes, so a failed start neither changes a run that was
    there nor makes the corrected command look like "a different config"."""
    run_dir = directory(cfg)
    existed, saved, tokenizer = run_dir.is_dir(), run_dir / "config.yaml", run_dir / "tokenizer"
    old = saved.read_bytes() if saved.is_file() else None
    had_tokenizer = tokenizer.exists()
    prepare(cfg, replace)
    try:
        yield run_dir
    except BaseException:
        if old is None:
            saved.unlink(missing_ok=True)
        else:
            saved.write_bytes(old)
        if not had_tokenizer:
            shutil.rmtree(tokenizer, ignore_errors=True)
        if not existed:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only when empty
        raise
