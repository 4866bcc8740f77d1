#!/usr/bin/env bash
# docs.sh BASE_URL [SEED.json] [WORK_DIR]: opens BASE_URL/docs in Debian's headless Chromium
# (driven by playwright-core from npm, pinned in .ci/package.json) and fails unless the
# operations render with every request to 127.0.0.1. Leaves a screenshot in WORK_DIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

base=$1
work=${3:-$(mktemp -d /tmp/hexmarket-docs.XXXXXX)}

if [ ! -x /usr/bin/chromium ]; then
  log "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 900 apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d "$REPO_DIR/.ci/node_modules/playwright-core" ]; then
  log "installing playwright-core (npm ci in .ci/)"
  # The browser is Debian's: playwright must not download one of its own.
  (cd "$REPO_DIR/.ci" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 300 npm ci --no-audit --no-fund --loglevel=error)
fi

timeout 180 node "$PROBE_DIR/docs.mjs" "$base" "$work/docs.png"
