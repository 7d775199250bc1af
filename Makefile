# siamdog: `make demo` and `make test` are all a newcomer needs. Paths are variables:
#   make organize SRC=photos/ [LABELS=labels.csv] DST=data [TEST=0.2]
#   make train DATA=data RUN=weights/run1 [CONFIG=configs/default.yaml, the best recipe measured] [TRAIN_ARGS="--weights none"]
#   make lr-find DATA=data [CONFIG=...] [LR_OUT=build/lr-find] [LR_ARGS="--stage finetune --init-from RUN/best.keras"]
#   make evaluate MODEL=weights/run1 EVAL_DATA=data/valid [EVAL_TRAIN=data/train] [EVAL_ARGS="--tta"]
#                 (MODEL="weights/run1 weights/run2": an ensemble, which needs EVAL_ARGS="--out DIR")
#   make bench [PROFILE=cpu|full]    (needs ../shared; see bench/quality.py)
#   make bench-ablation               (needs ../shared; see bench/ablation.py)
#   make test-backends                (the end-to-end run under JAX and PyTorch)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

SRC ?=
LABELS ?=
DST ?= data
FORMAT ?= auto
VALID ?= 0.1
TEST ?= 0
DATA ?= $(DST)
RUN ?= weights/run
CONFIG ?= configs/default.yaml
TRAIN_ARGS ?=
MODEL ?= $(RUN)
EVAL_DATA ?= $(DATA)/valid
EVAL_TRAIN ?=
EVAL_ARGS ?=
LR_OUT ?= build/lr-find
LR_ARGS ?=
DEMO ?= build/demo
PYTEST_ARGS ?=
PROFILE ?= cpu

.PHONY: install organize train lr-find evaluate demo test test-backends clean bench bench-scale bench-speed bench-ablation

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

organize: install
	@test -n "$(SRC)" || { echo "usage: make organize SRC=photos/ [LABELS=labels.csv] [DST=data]"; exit 2; }
	$(BIN)/siamdog organize "$(SRC)" "$(DST)" --format $(FORMAT) --valid-fraction $(VALID) --test-fraction $(TEST) $(if $(LABELS),--labels "$(LABELS)")

train: install
	$(BIN)/siamdog train --data "$(DATA)" --run "$(RUN)" --config "$(CONFIG)" $(TRAIN_ARGS)

lr-find: install
	$(BIN)/siamdog lr-find --data "$(DATA)" --config "$(CONFIG)" --out "$(LR_OUT)" $(LR_ARGS)

evaluate: install
	$(BIN)/python tools/evaluate.py --model $(MODEL) --data "$(EVAL_DATA)" $(if $(EVAL_TRAIN),--train-data "$(EVAL_TRAIN)") $(EVAL_ARGS)

demo: install
	rm -rf "$(DEMO)"
	$(BIN)/siamdog demo-data "$(DEMO)/raw" --test "$(DEMO)/test"
	$(BIN)/siamdog organize "$(DEMO)/raw" "$(DEMO)/data"
	$(BIN)/siamdog train --data "$(DEMO)/data" --run "$(DEMO)/run" --config configs/demo.yaml
	$(BIN)/python tools/evaluate.py --model "$(DEMO)/run" --data "$(DEMO)/test" --train-data "$(DEMO)/data/train"

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The end-to-end run under KERAS_BACKEND=jax and torch, and data-parallel training on JAX.
# torch==2.13.0 is the CPU build (an unpinned torch would pull a CUDA build of several GB).
TORCH ?= torch==2.13.0
test-backends: install
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pytest -m other_backends $(PYTEST_ARGS)

clean:
	rm -rf build .pytest_cache .hypothesis

bench-scale: install
	$(BIN)/python bench/scale.py --files 200000 --classes 1000

bench-speed: install
	$(BIN)/python bench/speed.py --image-size 299 --batch-size 32
	$(BIN)/python bench/frozen_pass.py --image-size 299

# Quality on held-out real photos (bench/configs/$(PROFILE).yaml), over seeds, after bench-speed.
bench: bench-speed
	$(BIN)/python bench/quality.py --profile $(PROFILE)

# Every technique on and off from one shared cached pass (bench/configs/ablation.yaml), then
# one table of every row's latest figures (bench/results/ablation-summary.md).
bench-ablation: install
	$(BIN)/python bench/ablation.py
	$(BIN)/python bench/ablation_summary.py
