# Two commands on a fresh machine: `make demo` trains the CPU demo, `make test` runs the tests.
# Both create the virtual environment from requirements.txt first if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Added to every `pip install` of the requirements into $(VENV) (test-newest sets it).
PIP_FLAGS ?=
# CI's second leg (`make test-newest`): the suite on Python 3.12 in its own .venv312 with the
# newest jax, jaxlib, flax, optax, orbax-checkpoint, chex... that requirements*.txt admit,
# resolved by pip when the venv is built (jax >= 0.11 needs Python >= 3.12; python3 here is 3.11).
PYTHON_NEWEST ?= $(or $(wildcard $(HOME)/.pyenv/versions/3.12.1/bin/python),python3.12)
NEWEST := VENV=.venv312 PYTHON=$(PYTHON_NEWEST) PIP_FLAGS="--upgrade --upgrade-strategy eager"
WORKDIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: docs docs-serve docs-venv
.PHONY: demo demo-compare accuracy-finetune test venv test-venv clean-venv test-newest \
        test-newest-venv

venv: $(VENV)/.installed
test-venv: $(VENV)/.installed-test

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_FLAGS) -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt requirements-export.txt \
                         requirements-index.txt
	$(PY) -m pip install --quiet $(PIP_FLAGS) -r requirements.txt -r requirements-test.txt \
	    -r requirements-export.txt -r requirements-index.txt
	$(PY) -m pip install --quiet $(PIP_FLAGS) --no-deps "jax2onnx>=0.17.1,<0.18"
	touch $@

demo: venv
	$(PY) -m dnc_jax.main --config=configs/demo.py --workdir=$(WORKDIR)

# The demo beside its K=1 baseline (same config, divide.num_learners=1), 3 seeds each: one
# table with means, stds and the difference with its standard error.
demo-compare: venv
	$(PY) bench/accuracy.py --grid=demo --epochs=0 --seeds=0,1,2 --out=runs/demo-compare-$(shell date +%Y%m%d-%H%M%S)

# The accuracy grid from a pretrained start: the backbone pretrained on the disjoint 'pretrain'
# glyph corpus (once: ~6 min on 2 cores), then every setting swept over 4 points of rate and
# batch on seed 0 and run at its best point on seeds 0-2 (~50 min on 2 cores).
PRETRAINED ?= runs/pretrained/model.safetensors
$(PRETRAINED): | venv
	$(PY) -m dnc_jax.main --config=configs/pretrain_glyphs.py --workdir=runs/pretrain
	$(PY) -m dnc_jax.inference.backbone --workdir=runs/pretrain --out=$@

accuracy-finetune: venv $(PRETRAINED)
	$(PY) bench/accuracy.py --config=configs/demo_finetune.py --grid=finetune \
	    --pretrained=$(PRETRAINED) --sweep=0.3:1,1:1,3:1,1:2 --seeds=0,1,2 --epochs=0 \
	    --out=runs/accuracy-finetune

test: test-venv
	JAX_PLATFORMS=cpu $(PY) -m pytest -q -rs tests

test-newest-venv:
	$(MAKE) $(NEWEST) test-venv

test-newest:
	$(MAKE) $(NEWEST) test

# The documentation site (mkdocs.yml, docs/): `make docs` installs requirements-docs.txt into
# $(VENV) and builds the site into site/ with --strict (a broken link or anchor, or any
# warning, fails); `make docs-serve` serves it at http://127.0.0.1:8000 while you edit.
# NO_MKDOCS_2_WARNING=1 keeps Material's end-of-life banner (a notice, not a build warning)
# out of the log.
docs-venv: $(VENV)/.installed-docs

$(VENV)/.installed-docs: $(VENV)/.installed requirements-docs.txt
	$(PY) -m pip install --quiet -r requirements-docs.txt
	touch $@

docs: docs-venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: docs-venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean-venv:
	rm -rf $(VENV)

# docs/images/report.png, the README's picture of `dnc-jax evaluate --report`: a short demo run
# (kept in runs/report-demo, reused when there), its report, and headless Chromium's shot of it.
REPORT_RUN ?= runs/report-demo
.PHONY: report-screenshot
report-screenshot: venv
	test -f $(REPORT_RUN)/summary.json || $(PY) -m dnc_jax.main --config=configs/demo.py \
	    --workdir=$(REPORT_RUN) --config.num_epochs=4 --config.progress=False
	$(PY) -m dnc_jax.inference.evaluate --workdir=$(REPORT_RUN) --report --report_queries=8
	mkdir -p docs/images
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2200 \
	    --virtual-time-budget=10000 --screenshot=docs/images/report.png \
	    "file://$(abspath $(REPORT_RUN))/report/report.html"
