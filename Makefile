# lora-edu: `make lab` opens the notebooks, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A machine without an NVIDIA GPU (and CI, always) gets the small CPU build of torch.
TORCH_CONSTRAINT := $(shell if [ -n "$$CI" ] || ! command -v nvidia-smi >/dev/null 2>&1; then echo "-c constraints-cpu.txt"; fi)
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

# The browser test needs Debian's chromium; install it when missing and possible, else say so loudly.
define CHROMIUM_SETUP
if [ ! -x /usr/bin/chromium ]; then \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
    echo "Installing chromium and chromium-driver for the browser test (apt-get)"; \
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "WARNING: apt-get could not install chromium: the browser test will be SKIPPED"; \
  else echo "WARNING: /usr/bin/chromium is missing and cannot be installed here: the browser test will be SKIPPED"; fi; \
fi
endef

.PHONY: setup lab test lint benchmark clean browser gpu-check gpu-budget portability answer-key

setup: $(STAMP)

$(STAMP): requirements.txt constraints-cpu.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt $(TORCH_CONSTRAINT) 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(PY) -c "import torch, jupyterlab, nbval, ipywidgets, safetensors, playwright, peft, transformers"
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)

browser:
	@$(CHROMIUM_SETUP)

test: setup browser
	$(VENV)/bin/ruff check lora_edu tests benchmarks
	$(PY) -m pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -q tests notebooks

lint: setup
	$(VENV)/bin/ruff check lora_edu tests benchmarks

benchmark: setup
	$(PY) benchmarks/lora_layer.py

# On a CUDA machine: notebooks 05, 05b, 05c, 06 and 06b in their GPU configuration from a fresh cache (pretraining timed),
# then LoRA vs full fine-tuning side by side; writes benchmarks/gpu_results.{json,md}.
# `make gpu-check GPU_CHECK_ARGS=--cuda-graphs`: the same with each step replayed from a CUDA graph (gpu_results_graphs.*).
gpu-check: setup
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# Without a GPU: notebooks 05, 05b, 05c, 06 and 06b's class-GPU time (T4, H100) from op counts, FLOPs and the H100 calibration.
gpu-budget: setup
	$(PY) benchmarks/gpu_budget.py

# The trained notebooks under other CPU kernels and one thread, against their committed outputs.
portability: setup
	$(PY) benchmarks/portability.py notebooks/05_*.ipynb notebooks/05b_*.ipynb notebooks/05c_*.ipynb notebooks/06_*.ipynb notebooks/06b_*.ipynb --settings default avx2 threads1

# For instructors: every exercise with its model solution and marking guide, a page to print (never overwrites).
ANSWER_KEY ?= answer_key.html
answer-key: setup
	$(PY) -m lora_edu.course.answer_key $(ANSWER_KEY)

clean:
	rm -rf $(VENV)
