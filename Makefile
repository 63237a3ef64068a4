# Everything runs inside a local virtualenv that `make` creates on first use.
#   make train   - train a DDPM on the embedded MNIST digits (CPU, about 10 minutes) into ddpm-digits/
#   make test    - the test suite
#   make lint    - the style check (ruff.toml)
# GPU users: make train TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu126"  (or any torch build)

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
OUTPUT_DIR ?= ddpm-digits
# torch threads of the training process: every core but one, at least one. On 2 cores two threads train 1.3x faster
# than one on an idle machine but 2.5x slower beside another CPU job (benchmarks.bench_threads, docs/training.md).
CPU_THREADS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n > 1 ? n - 1 : 1 )))
# pytest-xdist processes for `make test`; each test file runs whole on one of them (its fixtures are per module).
TEST_WORKERS ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test lint bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# --quiet: a failed run prints its one-line error once (accelerate otherwise repeats it under a traceback; it exits 1).
train: $(STAMP)
	$(BIN)/accelerate launch --quiet --num_processes 1 --num_machines 1 --num_cpu_threads_per_process $(CPU_THREADS) \
		--mixed_precision no --dynamo_backend no training/train.py --output_dir $(OUTPUT_DIR) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=15 $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_scheduler
	$(BIN)/python -m benchmarks.bench_sampling
	$(BIN)/python -m benchmarks.bench_train

clean:
	rm -rf $(VENV) build *.egg-info
