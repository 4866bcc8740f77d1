#!/usr/bin/env bash
# passkeys.sh BASE_URL SEED.json WORK_DIR: passkeys in Debian's headless Chromium with a virtual
# authenticator (Playwright's CDP session): registration, sign-in naming the account and not,
# step-up, a cloned authenticator refused, another origin refused (passkeys.mjs). Starts a node
# of its own at http://localhost:PORT.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

work=${3:-$(mktemp -d /tmp/hexmarket-passkeys.XXXXXX)}
bin=$(hexmarket_bin)
rm -rf "$work/passkeys"
mkdir -p "$work/passkeys"
cd "$REPO_DIR/.ci"
timeout 300 node probe/passkeys.mjs "$bin" "$work/passkeys"
