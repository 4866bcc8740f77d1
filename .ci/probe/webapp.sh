#!/usr/bin/env bash
# webapp.sh BASE_URL SEED.json WORK_DIR: the web app in Debian's headless Chromium (webapp.mjs):
# a customer, a vendor and a courier in three browser contexts through a whole order (a
# network drop on the customer's side included), every other screen of every role, axe-core on
# each page and Lighthouse on the tracking page. Starts a node of its own on a demo city.
# Screenshots and the Lighthouse report stay in .ci/out/webapp/ (WEBAPP_SHOTS to change it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

work=${3:-$(mktemp -d /tmp/hexmarket-webapp.XXXXXX)}
shots=${WEBAPP_SHOTS:-$REPO_DIR/.ci/out/webapp}
bin=$(hexmarket_bin)
rm -rf "$work/webapp" "$shots"
mkdir -p "$work/webapp" "$shots"
cd "$REPO_DIR/.ci"
timeout 600 node probe/webapp.mjs "$bin" "$work/webapp" "$shots"
log "screenshots and the Lighthouse report: $shots"
