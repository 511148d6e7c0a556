# make install | make demo | make test | make test-cluster | make bench — each bootstraps .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-cluster test-bench bench gpu-check gpu-coverage clean

install: $(STAMP)

# constraints.txt pins every version the tests ran on (torch 2.13.0 is the CPU build).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# A small mask-ratio x learning-rate search with ASHA on the built-in corpus (under 10 minutes
# on 2 CPU cores): the shipped mlm_masking space, shrunk to tiny models by overrides.
DEMO_OVERRIDES := num_samples=6 model.preset=tiny train.seq_len=64 train.batch_size=32 train.max_steps=300 \
	train.warmup_steps=30 train.eval_every=100 train.checkpoint_every=100 eval.max_blocks=128 \
	eval.probe_docs=200 scheduler.grace_period=100 scheduler.reduction_factor=3 resources.cpus_per_worker=1

demo: install
	$(VENV)/bin/sslab tune mlm_masking --out runs/demo $(DEMO_OVERRIDES) \
		$(if $(wildcard runs/demo/tune),--resume)

# Everything but the multi-node and fault tests and the benchmark smoke runs (its budget: 20 minutes
# on 2 cores; see the README's Tests for the measured time).
test: install
	$(PY) -m pytest -q -rs --durations=25 -m "not cluster and not bench"

# Multi-node runs, node and worker loss, killed drivers, a 16-trial sweep, searches whose trials
# train on worker groups, training order on a topic-sorted corpus (three runs); several Ray nodes
# on this one machine. CI runs them after make test.
test-cluster: install
	$(PY) -m pytest -q --durations=25 -m cluster

# Every benchmark script at its smallest size, so none can rot (about 5 minutes). CI runs it.
test-bench: install
	$(PY) -m pytest -q --durations=10 -m bench

# The benchmarks, side by side with the alternatives: writes benchmarks/RESULTS.md (about 1 h 25 min
# on 2 cores; BENCH_ARGS="--only training --reps 5" and the like pass through to benchmarks/run.py).
bench: install
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# On a GPU machine, bare and offline (under 8 minutes on one H100/H200): pytest -m gpu, then
# benchmarks/gpu.py at a size that fits; writes benchmarks/results/gpu.json. Needs no .venv: it uses
# the machine's python3, with Ray from the .whl/ bundle (../shared/device/make-bundle.sh) if missing.
gpu-check:
	bash benchmarks/gpu_check.sh

# Which lines only a real GPU reaches: the simulated-GPU tests under coverage.py, the driver
# processes they start included, then the lines of the GPU branch's files left unrun (about 9
# minutes). Ray Train's workers end by SIGKILL and write no coverage data: the lines they run
# (train_loop's setup and loop, evaluation) show as unrun, and the tests' results vouch for them.
GPU_FILES := platform/sslab/train_loop.py,platform/sslab/models.py,platform/sslab/pipeline.py,platform/sslab/runner.py,platform/sslab/search.py,platform/sslab/accelerator.py,platform/sslab/evaluation.py
gpu-coverage: install
	rm -rf .coverage-gpu && mkdir -p .coverage-gpu
	$(PY) -m coverage run -m pytest -q -p no:cacheprovider tests/unit/test_accelerator.py tests/integration/test_simulated_gpu.py
	$(PY) -m coverage combine -q
	$(PY) -m coverage report -m --include="$(GPU_FILES)"

clean:
	rm -rf $(VENV) runs .pytest_cache
