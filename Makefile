# Two commands on a fresh machine: `make demo` runs the main job, `make test` the tests.
# Each creates .venv if missing and installs what it needs. The CPU torch pin can be
# overridden, e.g. `make test TORCH="torch==2.13.0 --index-url ..."` on a GPU machine.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo demo-full test docs bench bench-gpu bench-pymgrit test-gpu lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test,diffusion,kdiffusion]"
	# k-diffusion's own dependencies pull torchvision, CLIP and wandb: its samplers need none.
	$(BIN)/python -m pip install -q --no-deps "k-diffusion==0.1.1.post1"
	touch $@

# The main job in about 3 minutes on 2 CPU cores; demo-full adds the 1000-step runs.
demo: $(STAMP)
	$(BIN)/pint-diffusion demo --out demo-output

demo-full: $(STAMP)
	$(BIN)/pint-diffusion demo --full --out demo-output

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

$(VENV)/.installed-docs: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[docs]"
	touch $@

# The documentation, offline, warnings as errors; the gallery examples run during the build.
docs: $(VENV)/.installed-docs
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

# Quick mode of every benchmark (about an hour on 2 CPU cores, most of it the N = 1000 runs of
# benchmarks/quasi_newton.py); rewrites benchmarks/results/.
# torchdyn (peer of the ODE benchmark) declares dependencies that pull a CUDA torch: --no-deps.
bench: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps "torchdyn==1.0.6" "torchcde==0.2.5" attrs \
		|| echo "torchdyn not installed: benchmarks/torchdyn_ode.py will skip it"
	$(BIN)/python benchmarks/parareal_ode.py --quick
	$(BIN)/python benchmarks/torchdyn_ode.py --quick
	$(BIN)/python benchmarks/diffusion.py --quick
	$(BIN)/python benchmarks/quasi_newton.py --quick
	$(BIN)/python benchmarks/sd.py --quick
	$(BIN)/python benchmarks/srds_default_tol.py
	$(BIN)/python benchmarks/srds_limits.py --quick
	$(BIN)/python benchmarks/overhead.py --quick
	$(BIN)/python benchmarks/families.py
	$(BIN)/python benchmarks/summary.py

# On a machine with a CUDA GPU (install a CUDA torch with TORCH=..., see docs/howto/gpu.md).
# The CUDA-marked tests; the marker includes the NCCL test of tests/pint/test_distributed.py, which
# also needs two GPUs (-rs prints why a test was skipped).
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -rs -m cuda $(PYTEST_ARGS)

# The GPU benchmark (under 8 minutes on one H100): benchmarks/results/gpu_<device>.{json,md}.
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py
# The peer check against PyMGRIT (benchmarks/pymgrit_heat.py, one thread on both sides, about
# 6 minutes): PyMGRIT 1.0.6 needs numpy<2 and mpi4py (its MPI from the mpich wheel), so it gets
# a venv of its own, created here once.
PYMGRIT_VENV ?= .venv-pymgrit
$(PYMGRIT_VENV)/.installed:
	test -x $(PYMGRIT_VENV)/bin/python || $(PYTHON) -m venv $(PYMGRIT_VENV)
	$(PYMGRIT_VENV)/bin/python -m pip install -q "pymgrit==1.0.6" "numpy<2" mpich
	touch $@

bench-pymgrit: $(STAMP) $(PYMGRIT_VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/pymgrit_heat.py --threads 1 \
		--peer-python $(PYMGRIT_VENV)/bin/python

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(PYMGRIT_VENV) demo-output .pytest_cache .hypothesis docs/_build docs/auto_examples docs/sg_execution_times.rst
