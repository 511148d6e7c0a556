"""Bad input, one row each (the table in the README): exit code 1 and one line naming the problem,
before Ray starts wherever it can be found without Ray, and nothing already written damaged.

Each row runs as its own ``sslab`` process, as a user runs it: no Ray running and no ``RAY_ADDRESS``,
so sslab would start a Ray of this machine's size itself. Rows refused before Ray starts must
not start one (nor say anything but their line); rows about a cluster, and those that need Ray
Data to read the corpus, join the tests' own 4-CPU Ray through ``RAY_ADDRESS``, and one row
starts its own local Ray. The processes fork from one that imported sslab once (each would
spend ~10 s importing torch, Ray and transformers; one real ``python -m sslab.cli`` runs too).
Every row runs against a run directory that already holds a run (config, tokenizer, a
checkpoint, metrics): after the refusal each of its files is byte for byte what it was, and
nothing is new.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import logging
import math
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from transformers import BertConfig

from sslab import capacity, cluster, runner, runs, synthetic
from sslab.cli import main
from sslab.config import SyntheticConfig
from sslab.errors import RunError

WORDPIECE_1000 = Path(__file__).resolve().parents[1] / "unit" / "data" / "wordpiece_1000"
BEFORE_RAY, WITH_RAY = "before Ray starts", "once Ray runs"
LOCAL, JOINED = "sslab starts Ray on this machine", "RAY_ADDRESS names the tests' 4-CPU Ray"


class Row(NamedTuple):
    argv: list[str]
    needle: str
    caught: str = BEFORE_RAY
    corpus: dict | None = None
    """Files that replace the run's corpus folder before the command (the corpus changed under the run)."""
    ray: str = LOCAL
    """Where the command finds Ray: none to join (sslab would start one here), or a cluster to join."""


def pretrain(*args: str) -> list[str]:
    """The command of the run in ``{run}``, with ``args`` on top (a later flag wins)."""
    return ["pretrain", "--corpus", "{corpus}", "--out", "{run}", "--preset", "tiny", "--max-steps", "5", "--quiet",
            "train.seq_len=64", "train.batch_size=4", "train.warmup_steps=1", "eval.probe_docs=0", *args]


def tune(*args: str) -> list[str]:
    return ["tune", *args]


LATE_BINARY = b"a line of perfectly good text\n" * 400 + bytes(range(256)) * 40  # past what the driver sniffs
CORES = capacity.machine_cpus()
NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}  # what "on CPUs" means on any machine: the local Ray sees no GPU

TABLE = {
    # config: built and validated before anything else
    "unknown objective": Row(pretrain("--objective", "nope"), "objective 'nope' is unknown"),
    "unknown preset": Row(pretrain("--preset", "huge"), "model.preset='huge'"),
    "unknown key": Row(pretrain("train.lrr=1"), "unknown config key 'train.lrr'"),
    "unknown section": Row(pretrain("trian.lr=1"), "unknown config key 'trian'"),
    "wrong type": Row(pretrain("train.lr=fast"), "train.lr='fast'"),
    "out of range": Row(pretrain("objective.mask_ratio=1.5"), "objective.mask_ratio=1.5"),
    "out of range workers": Row(pretrain("--workers", "0"), "scaling.num_workers=0"),
    "negative lr": Row(pretrain("train.lr=-1"), "train.lr=-1"),
    "seq_len above max positions": Row(pretrain("train.seq_len=1024"),
                                       "train.seq_len=1024 is invalid: expected at most model.max_positions=512"),
    "missing config file": Row(pretrain("--config", "{d}/nope.yaml"), "nope.yaml' does not exist"),
    # corpus: files are found, typed and sniffed on the driver
    "missing corpus": Row(pretrain("--corpus", "{d}/missing"), "missing' does not exist"),
    "empty corpus folder": Row(pretrain("--corpus", "{d}/empty"), "empty' holds no files"),
    "glob matching nothing": Row(pretrain("--corpus", "{d}/*.nothing"), "matches no files"),
    "zero-byte corpus": Row(pretrain("--corpus", "{d}/zero.txt"), "zero.txt' is empty"),
    "binary text file": Row(pretrain("--corpus", "{d}/binary.txt"), "binary.txt: not UTF-8 text"),
    "corrupt parquet": Row(pretrain("--corpus", "{d}/corrupt.parquet"), "corrupt.parquet: not a readable Parquet"),
    "parquet without the column": Row(pretrain("--corpus", "{d}/body.parquet"), "body.parquet: no column 'text'"),
    "mixed formats": Row(pretrain("--corpus", "{d}/mixed"), "mixes file formats"),
    # the run directory
    "out under a file": Row(pretrain("--out", "{run}/config.yaml/run"), "is not a writable directory (Not a directory)"),
    "out is a file": Row(pretrain("--out", "{run}/metrics.jsonl"), "is not a writable directory (File exists)"),
    "out read-only": Row(pretrain("--out", "{readonly}"), "is not a writable directory (Permission denied)"),
    "out holds another run": Row(pretrain("--preset", "mini"), "different config (model.preset: 'tiny' -> 'mini')"),
    # the data cache
    "cache under a file": Row(pretrain("data.cache_dir={run}/config.yaml/cache"), "config.yaml/cache is not writable"),
    "search cache under a file": Row(tune("mlm_masking", "--out", "{fresh}", "data.cache_dir={run}/config.yaml/cache"),
                                     "config.yaml/cache is not writable"),
    # continued pretraining
    "tokenizer larger than init_from": Row(
        pretrain("--out", "{fresh}", "model.init_from={d}/small_model", "tokenizer.path={tok}"),
        "has 500 token embeddings but tokenizer.path="),
    "tokenizer not init_from's": Row(
        pretrain("--out", "{fresh}", "model.init_from={d}/bert_model", f"tokenizer.path={WORDPIECE_1000}"),
        "does not match model.init_from="),
    # searches: the spec, its bounds and every corner of the space, before Ray
    "unknown space": Row(tune("no_such_space", "--out", "{run}"), "'no_such_space' is neither a file"),
    "metric not comparable": Row(tune("mlm_masking", "--out", "{run}", "metric=loss"), "not comparable"),
    "unknown search key": Row(tune("mlm_masking", "--out", "{run}", "space_typo=1"), "space_typo"),
    "base the config refuses": Row(tune("mlm_masking", "--out", "{run}", "objective.mask_ratio=2"),
                                   "objective.mask_ratio=2"),
    "no samples": Row(tune("mlm_masking", "--out", "{run}", "--num-samples", "0"), "num_samples=0"),
    "scheduler out of range": Row(tune("mlm_masking", "--out", "{run}", "scheduler.grace_period=0"),
                                  "scheduler.grace_period=0"),
    "bounds low > high": Row(tune("{d}/reversed.yaml", "--out", "{run}"),
                             "space.train.lr={'loguniform': [0.001, 0.0001]} is invalid: expected loguniform with low < high"),
    "bound the config refuses": Row(tune("{d}/too_far.yaml", "--out", "{run}"),
                                    "space.objective.mask_ratio: uniform [0.1, 1.5] reaches a value the config refuses"),
    "unknown space field": Row(tune("{d}/typo.yaml", "--out", "{run}"), "space.train.lrr: unknown config field"),
    # this machine: without a cluster to join, sslab would start Ray here, so its cores bound the workers
    "more workers than this machine has": Row(
        pretrain("--workers", "64"),
        f"scaling.num_workers=64 x scaling.cpus_per_worker=1 needs 64 CPUs but this machine has {CORES} "
        "(no RAY_ADDRESS or run.ray_address: sslab starts Ray on this machine)"),
    "more CPUs per worker than this machine has": Row(
        pretrain("scaling.cpus_per_worker=64"),
        f"scaling.num_workers=1 x scaling.cpus_per_worker=64 needs 64 CPUs but this machine has {CORES} "),
    "a trial larger than this machine": Row(
        tune("mlm_masking", "--out", "{fresh}", "resources.cpus_per_worker=64"),
        f"a trial of resources.workers=1 x resources.cpus_per_worker=64 needs 64 CPUs but this machine has {CORES} "
        "(no RAY_ADDRESS or run.ray_address: sslab starts Ray on this machine)"),
    # a cluster: what it can hold is known once it is joined
    "more workers than the cluster holds": Row(
        pretrain("--workers", "64"),
        "scaling.num_workers=64 x scaling.cpus_per_worker=1 cannot fit on the Ray cluster: its 1 node(s) with 4 CPUs "
        "in all hold at most 3 such workers beside 1 CPU for Ray Data", WITH_RAY, ray=JOINED),
    "more CPUs per worker than a node has": Row(
        pretrain("scaling.cpus_per_worker=64"),
        "scaling.num_workers=1 x scaling.cpus_per_worker=64 cannot fit on the Ray cluster: no node has 64 CPUs for "
        "one worker (the most any node has: 4 CPUs)", WITH_RAY, ray=JOINED),
    "a trial the cluster cannot hold": Row(
        tune("mlm_masking", "--out", "{fresh}", "resources.cpus_per_worker=64", "resources.gpus_per_worker=0"),
        "a trial of resources.workers=1 x resources.cpus_per_worker=64 cannot fit on the Ray cluster: no node has "
        "64 CPUs", WITH_RAY, ray=JOINED),
    # GPUs: the local Ray counts them as it starts
    "GPUs on a cluster without": Row(
        pretrain("scaling.use_gpu=true"),
        "scaling.num_workers=1 x scaling.cpus_per_worker=1 x scaling.gpus_per_worker=1 (scaling.use_gpu=true) cannot "
        "fit on the Ray cluster: no node has 1 CPU and 1 GPU for one worker (the most any node has: "
        f"{max(CORES, 2)} CPUs and 0 GPUs)", WITH_RAY),  # the local Ray: the cores, and 2 for 1 worker at least
    "a trial's GPUs on a cluster without": Row(
        tune("mlm_masking", "--out", "{fresh}", "resources.cpus_per_worker=1", "resources.gpus_per_worker=1"),
        "resources.gpus_per_worker=1 cannot fit on the Ray cluster: no node has 1 CPU and 1 GPU", WITH_RAY,
        ray=JOINED),
    # documents: read, cleaned and parsed in Ray Data workers
    "blank corpus": Row(pretrain(), "is empty after cleaning", WITH_RAY, {"blank.txt": b"\n   \n\t\n"}, JOINED),
    "bad JSON line": Row(pretrain(), "bad.jsonl:2: not valid JSON", WITH_RAY,
                         {"bad.jsonl": b'{"text": "fine"}\n{"text": oops}\n'}, JOINED),
    "JSON without the field": Row(pretrain(), "nofield.jsonl:1: no string field 'text'", WITH_RAY,
                                  {"nofield.jsonl": b'{"body": "no text field"}\n'}, JOINED),
    "binary past the sniffed bytes": Row(pretrain(), "late.txt: not UTF-8 text", WITH_RAY, {"late.txt": LATE_BINARY},
                                         JOINED),
}


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def d(tmp_path, tokenizer_dir) -> Path:
    """A folder of bad inputs (and the models and search spaces the rows name)."""
    d = tmp_path / "inputs"
    (d / "empty").mkdir(parents=True)
    (d / "zero.txt").write_bytes(b"")
    (d / "binary.txt").write_bytes(gzip.compress(random.Random(0).randbytes(4096), mtime=0))  # a .txt that is gzip
    (d / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    pq.write_table(pa.table({"body": ["a document"]}), d / "body.parquet")
    (d / "mixed").mkdir()
    (d / "mixed" / "a.txt").write_text("some text\n")
    (d / "mixed" / "b.jsonl").write_text('{"text": "some text"}\n')
    tiny_bert = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertConfig(vocab_size=500, **tiny_bert).save_pretrained(d / "small_model")
    BertConfig(vocab_size=2000, **tiny_bert).save_pretrained(d / "bert_model")
    for f in tokenizer_dir.iterdir():  # the model's own tokenizer: 2000 tokens, not WORDPIECE_1000's
        shutil.copy(f, d / "bert_model" / f.name)
    space = "base: {objective: mlm, model: {preset: tiny}}\nmetric: eval_mlm_loss\nspace:\n  "
    (d / "reversed.yaml").write_text(space + "train.lr: {loguniform: [1.0e-3, 1.0e-4]}\n")
    (d / "too_far.yaml").write_text(space + "objective.mask_ratio: {uniform: [0.1, 1.5]}\n")
    (d / "typo.yaml").write_text(space + "train.lrr: {uniform: [0.1, 0.2]}\n")
    return d


@pytest.fixture
def run(tmp_path, tokenizer_dir) -> Path:
    """A run directory holding a run of ``pretrain()``'s command: its files are what must survive."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("\n".join(synthetic.generate(SyntheticConfig(num_docs=300), 0, 300)["text"]))
    out = tmp_path / "run"
    cfg = runner.resolve(None, [f"corpus.source={corpus}", f"run.out={out}", "model.preset=tiny",
                                  "train.max_steps=5", "run.quiet=true", "train.seq_len=64", "train.batch_size=4",
                                  "train.warmup_steps=1", "eval.probe_docs=0"])
    runs.prepare(cfg)
    shutil.copytree(tokenizer_dir, out / "tokenizer")
    (out / "checkpoint_00000010").mkdir()
    (out / "checkpoint_00000010" / "state.pt").write_bytes(b"the state at step 10")
    (out / "metrics.jsonl").write_text('{"step": 10, "loss": 6.5}\n')
    return out


# Forks one process per command from one that imported sslab (and with it torch, Ray and
# transformers) once: each row still runs in a process of its own, which no Ray has touched.
FORKER = r"""
import ctypes, json, os, sys, traceback
import ray
import sslab.cli, sslab.runner, sslab.search


def respect_file_modes():
    # Root writes into a read-only directory through CAP_DAC_OVERRIDE; without it (and
    # CAP_DAC_READ_SEARCH), root is refused one like any other user (capabilities(7)).
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc, header, data = ctypes.CDLL(None, use_errno=True), Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0].effective &= ~((1 << 1) | (1 << 2))  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def run(job):
    os.environ.update(job["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    if job["respect_file_modes"] and os.geteuid() == 0:
        respect_file_modes()
    try:
        return sslab.cli.main(job["argv"])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    finally:
        if ray.is_initialized():
            ray.shutdown()


for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = run(job)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Forker:
    """``sslab`` commands, each in a fresh process forked from one that imported sslab."""

    def __init__(self, cwd: Path):
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # Ray 2.60 starts a local Ray with token authentication (~/.ray/auth_token), and a process
        # joins one by address only with RAY_AUTH_MODE=token from its start (Ray reads it on import).
        env.setdefault("RAY_AUTH_MODE", "token")
        self.cwd = cwd
        self.proc = subprocess.Popen([sys.executable, "-c", FORKER], cwd=cwd, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.replies = queue.Queue()
        threading.Thread(target=lambda: [self.replies.put(line) for line in self.proc.stdout], daemon=True).start()

    def reply(self, timeout_s: float) -> dict:
        try:
            return json.loads(self.replies.get(timeout=timeout_s))
        except queue.Empty:
            raise TimeoutError(f"no reply in {timeout_s:g} s (exit code {self.proc.poll()})") from None

    def run(self, argv: list[str], out_dir: Path, env: dict, respect_file_modes: bool = False,
            timeout_s: float = 240) -> tuple[int, str]:
        """Run ``sslab argv``; its exit code and stderr."""
        job = {"argv": argv, "env": env, "respect_file_modes": respect_file_modes,
               "stdout": str(out_dir / "stdout"), "stderr": str(out_dir / "stderr")}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        pid = self.reply(120)["pid"]  # the imports before the first fork take a while
        try:
            code = self.reply(timeout_s)["code"]
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.reply(60)  # its exit code: the next command's replies come next
            raise
        return code, (out_dir / "stderr").read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def forker(tmp_path_factory):
    forker = Forker(tmp_path_factory.mktemp("cwd"))
    yield forker
    forker.close()


def files_under(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def command(row: Row, d: Path, run: Path, tmp_path: Path, tokenizer_dir: Path) -> list[str]:
    """``row``'s argv with its places filled in (and the corpus it names written)."""
    if row.corpus is not None:
        corpus = tmp_path / "corpus"
        shutil.rmtree(corpus)
        corpus.mkdir()
        for name, data in row.corpus.items():
            (corpus / name).write_bytes(data)
    places = {"{d}": d, "{run}": run, "{readonly}": run, "{fresh}": tmp_path / "fresh",
              "{corpus}": tmp_path / "corpus", "{tok}": tokenizer_dir}
    argv = list(row.argv)
    for key, value in places.items():
        argv = [a.replace(key, str(value)) for a in argv]
    return argv


@pytest.fixture(scope="module")
def ray_tmp_root():
    """Short, for Ray's socket paths (at most 107 bytes); removed once every Ray in it has stopped."""
    root = Path(tempfile.mkdtemp(prefix="sslab-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def ray_tmp(ray_tmp_root, tmp_path) -> Path:
    """``RAY_TMPDIR`` of the test's command: where a Ray it started would keep its session."""
    return ray_tmp_root / f"{zlib.crc32(bytes(tmp_path)):08x}"


# ---------------------------------------------------------------- the table


@pytest.mark.parametrize("name", list(TABLE))
def test_refused_with_one_line_and_nothing_written(name, forker, d, run, tmp_path, tokenizer_dir, ray_tmp, request):
    row = TABLE[name]
    argv = command(row, d, run, tmp_path, tokenizer_dir)
    env = {"RAY_TMPDIR": str(ray_tmp), **NO_GPU}
    if row.ray == JOINED:
        request.getfixturevalue("ray_cluster")
        env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    before = files_under(run)
    if "{readonly}" in row.argv:
        run.chmod(0o500)
    try:
        code, err = forker.run(argv, tmp_path, env, respect_file_modes="{readonly}" in row.argv)
    finally:
        run.chmod(0o700)
    ours = [line for line in err.splitlines() if line.startswith("sslab")]
    assert code == 1, err
    assert len(ours) == 1 and ours[0].startswith("sslab: error: ") and row.needle in ours[0], err
    assert files_under(run) == before  # the previous run's files, byte for byte, and nothing new
    assert not list(forker.cwd.iterdir())  # nothing written where the command ran
    if row.caught == BEFORE_RAY:
        assert err.splitlines() == ours, err  # nothing else said: no Ray, no log line
        assert not ray_tmp.exists(), "Ray started"
    if row.caught == BEFORE_RAY or argv[0] == "pretrain":
        assert not (tmp_path / "fresh").exists()
    else:  # a search refused once Ray runs leaves its search.yaml, and no trial started
        assert not (tmp_path / "fresh" / "tune").exists()


def test_the_sslab_command_refuses_more_workers_than_this_machine_has(run, tmp_path, ray_tmp):
    """The real entry point, with no Ray running and no RAY_ADDRESS: refused before Ray starts."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_tmp)
    before = files_under(run)
    argv = command(TABLE["more workers than this machine has"], None, run, tmp_path, None)
    done = subprocess.run([sys.executable, "-m", "sslab.cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"sslab: error: {TABLE['more workers than this machine has'].needle}"]
    assert files_under(run) == before and not ray_tmp.exists()


# ---------------------------------------------------------------- a failed start, then the corrected command


def test_a_missing_corpus_writes_nothing_so_the_corrected_command_runs(run, tmp_path, capsys):
    out = tmp_path / "new"
    assert main(pretrain("--corpus", str(tmp_path / "typo"), "--out", str(out))) == 1
    assert "typo' does not exist" in capsys.readouterr().err
    assert not out.exists()
    corrected = runner.resolve(None, [f"corpus.source={tmp_path / 'corpus'}", f"run.out={out}"])
    assert runs.prepare(corrected) == out  # not refused as "a different config"


def test_a_start_that_fails_in_ray_leaves_no_config_or_tokenizer_behind(ray_cluster, tmp_path, capsys):
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "good.txt").write_text("\n".join(synthetic.generate(SyntheticConfig(num_docs=50), 0, 50)["text"]))
    out = tmp_path / "new"
    argv = ["pretrain", "--out", str(out), "--preset", "tiny", "--quiet", "tokenizer.vocab_size=200"]
    assert main([*argv, "--corpus", str(tmp_path / "blank.txt")]) == 1  # trains a tokenizer on nothing, then fails
    assert "is empty after cleaning" in capsys.readouterr().err
    assert not out.exists()
    corrected = runner.resolve(None, [f"corpus.source={tmp_path / 'good.txt'}", f"run.out={out}"])
    runs.prepare(corrected)  # not refused; and the run will train its tokenizer on the good corpus
    assert not (out / "tokenizer").exists()


# ---------------------------------------------------------------- what the cluster can ever hold


def node(cpus: float, gpus: float = 0, count: float = 1) -> capacity.NodeKind:
    return capacity.NodeKind({"CPU": cpus, **({"GPU": gpus} if gpus else {})}, count)


@pytest.mark.parametrize("bundle, workers, nodes, strategy, refused", [
    ({"CPU": 3}, 2, [node(4), node(4)], "PACK", None),  # one worker per node, a CPU left for Ray Data
    ({"CPU": 3}, 3, [node(4), node(4)], "PACK", "hold at most 2 such workers"),  # 8 CPUs, yet no room for a third
    ({"CPU": 6}, 1, [node(4), node(4)], "PACK", "no node has 6 CPUs"),  # the totals would hide this
    ({"CPU": 2}, 4, [node(4), node(4)], "PACK", "hold at most 3"),  # all 8 CPUs leave none for Ray Data
    ({"CPU": 1, "GPU": 1}, 2, [node(8, 1), node(8, 1)], "PACK", None),
    ({"CPU": 1, "GPU": 1}, 3, [node(8, 1), node(8, 1)], "PACK", "hold at most 2"),
    ({"CPU": 1, "GPU": 1}, 1, [node(64)], "PACK", "no node has 1 CPU and 1 GPU"),
    ({"CPU": 1, "GPU": 0.5}, 4, [node(8, 1), node(8, 1)], "PACK", None),  # fractions pack
    ({"CPU": 1}, 5, [node(4), node(4)], "STRICT_PACK", "hold at most 4 such workers placed STRICT_PACK"),
    ({"CPU": 1}, 3, [node(4), node(4)], "STRICT_SPREAD", "hold at most 2 such workers placed STRICT_SPREAD"),
    ({"CPU": 8, "GPU": 1}, 64, [node(2), node(16, 2, count=math.inf)], "PACK", None),  # autoscaled
    ({"CPU": 8, "GPU": 1}, 64, [node(2), node(16, 2, count=10)], "PACK", "hold at most 20"),  # up to max_count
])
def test_each_worker_must_fit_on_one_node_and_the_nodes_hold_them_all(bundle, workers, nodes, strategy, refused):
    reason = capacity.shortfall(bundle, workers, nodes, strategy=strategy)
    assert reason is None if refused is None else refused in reason, reason


def test_an_autoscaler_without_published_node_types_is_waited_for_not_refused(monkeypatch, caplog):
    cfg = runner.resolve(None, ["scaling.num_workers=64", "scaling.use_gpu=false"])
    monkeypatch.setattr(capacity, "published_node_types", lambda: [])
    monkeypatch.setattr(capacity, "autoscaler_running", lambda: True)
    with caplog.at_level(logging.INFO, logger="sslab"):
        cluster.check_resources(cfg)  # no error, no Ray call
    assert "autoscales: waiting for nodes with room for 64 workers of 1 CPU" in caplog.text
    monkeypatch.setattr(capacity, "published_node_types", lambda: [node(4, count=2)])
    with pytest.raises(RunError, match=r"^scaling.num_workers=64 x scaling.cpus_per_worker=1 cannot fit .* "
                                       r"hold at most 7 such workers"):
        cluster.check_resources(cfg)
