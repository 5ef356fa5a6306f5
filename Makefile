# Korean GPT-2 pretraining: the user's entry points.
#
#   make demo                       install, then the whole pipeline on the sample corpus (CPU, 2 processes)
#   make test                       install, then every test (what CI runs)
#   make corpus CONFIG=configs/base.yaml    clean -> tokenizer (unless tokenizer.model is set) -> shards
#   make train  CONFIG=configs/base.yaml NP=8
#
# Every stage reads the same YAML (CONFIG) and skips work it has finished with the same inputs and
# settings (each checks that itself), so rerunning a target after an edit redoes only what changed.

CONFIG ?= configs/demo.yaml
SET ?=
NP ?= 1
PY := .venv/bin/python
VENV_STAMP := .venv/.install-stamp
SET_ARGS := $(foreach s,$(SET),--set $(s))
# OpenMPI refuses to run as root without these; harmless otherwise (containers often run as root).
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1

# Resolved config values (evaluated only when a target needs them, after install).
cfg = $(shell $(PY) -m common.config get $(1) --config $(CONFIG) $(SET_ARGS))
TOK_MODEL = $(call cfg,tokenizer.model)

.PHONY: help install demo test test-fast corpus clean-docs tokenizer shards train generate export bench lint distclean

help:
	@sed -n '1,10p' Makefile | sed 's/^# \{0,1\}//'
	@echo "targets: install demo test test-fast corpus clean-docs tokenizer shards train generate export bench lint distclean"

install: $(VENV_STAMP)
$(VENV_STAMP): setup.cfg scripts/install.sh
	bash scripts/install.sh

demo: install
	bash scripts/demo.sh

test: install
	$(PY) -m pytest -q -ra tests

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow" tests

# --- data stages -----------------------------------------------------------------------------------
# Always run: each stage compares its inputs and settings with what it wrote last time and returns in
# seconds when nothing changed, while a changed setting, SET= or input file redoes what it affects.
corpus: install
	$(PY) -m corpus clean --config $(CONFIG) $(SET_ARGS)
	$(if $(TOK_MODEL),@echo "tokenizer.model=$(TOK_MODEL): not training a tokenizer",$(PY) -m corpus tokenizer --config $(CONFIG) $(SET_ARGS))
	$(PY) -m corpus shards --config $(CONFIG) $(SET_ARGS)

clean-docs: install
	$(PY) -m corpus clean --config $(CONFIG) $(SET_ARGS)

tokenizer: clean-docs
	$(PY) -m corpus tokenizer --config $(CONFIG) $(SET_ARGS)

shards: corpus

# --- training and after -----------------------------------------------------------------------------
train: install
	bash launch/single_node.sh --np $(NP) --config $(CONFIG) $(SET_ARGS)

generate: install
	$(PY) -m pretrain.generate --config $(CONFIG) $(SET_ARGS) --prompt "$(or $(PROMPT),2019년 한해를 보내며,)"

export: install
	$(PY) -m pretrain.export --config $(CONFIG) $(SET_ARGS) --checkpoint $(call cfg,checkpoint.root) \
		--to hf $(or $(OUT),work/export/hf)

bench: install
	$(PY) bench/run_all.py

lint: install
	$(PY) -m ruff check common corpus pretrain bench tests

distclean:
	rm -rf .venv work
