#!/usr/bin/env bash
# `npm test`: set up what the tests need, typecheck, then run every test file one at a time
# (they share 2 cores, a temporal CLI and the engine). `npm test -- FILE...` runs only those.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
npx tsc --noEmit -p .
# The lint gate (eslint.config.js): type-aware promise rules among others, and prettier's check
# (width 100; `npm run format` fixes it).
npm run --silent lint
npm run --silent format:check
if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi
# A hung test fails after 15 minutes instead of holding CI until its limit.
exec node --import tsx --test --test-concurrency=1 --test-timeout=900000 --test-reporter=spec "${files[@]}"
