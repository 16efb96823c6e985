#!/usr/bin/env bash
# Regenerates docs/screenshots/*.png: the Web UI browser tests, saving each step they check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
OPSR_SCREENSHOTS="$PWD/docs/screenshots" exec node --import tsx --test --test-reporter=spec test/scenarios/browser.test.ts
