#!/usr/bin/env bash
# Regenerates docs/screenshots/*.png from a real run: the Web UI browser tests (real dev server,
# real workflows, Debian's Chromium) save each step they check. Works from a clean checkout:
# installs the npm packages when missing, then what the browser tests need (setup.sh browser).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
bash scripts/setup.sh browser
shots=docs/screenshots
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Into a fresh folder first: a failing run leaves the committed screenshots as they were.
OPSR_SCREENSHOTS="$tmp" node --import tsx --test --test-reporter=spec test/scenarios/browser.test.ts
mkdir -p "$shots"
cp "$tmp"/*.png "$shots"/
ls -l "$shots"
