# Two commands on a fresh machine: `make demo` trains the CPU demo, `make test` runs the tests.
# Both create the virtual environment from requirements.txt first if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo demo-compare accuracy-finetune test venv test-venv clean-venv

venv: $(VENV)/.installed
test-venv: $(VENV)/.installed-test

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt requirements-export.txt \
                         requirements-index.txt
	$(PY) -m pip install --quiet -r requirements-test.txt -r requirements-export.txt \
	    -r requirements-index.txt
	$(PY) -m pip install --quiet --no-deps "jax2onnx>=0.17.1,<0.18"
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
	$(PY) -m dnc_jax.backbone --workdir=runs/pretrain --out=$@

accuracy-finetune: venv $(PRETRAINED)
	$(PY) bench/accuracy.py --config=configs/demo_finetune.py --grid=finetune \
	    --pretrained=$(PRETRAINED) --sweep=0.3:1,1:1,3:1,1:2 --seeds=0,1,2 --epochs=0 \
	    --out=runs/accuracy-finetune

test: test-venv
	JAX_PLATFORMS=cpu $(PY) -m pytest -q -rs tests

clean-venv:
	rm -rf $(VENV)
