#!/usr/bin/env bash
# admin.sh BASE_URL SEED.json WORK_DIR: running the platform from outside. Starts a node of its
# own (its own data directory), creates the administrator with the CLI, signs the other roles up
# through the API, then checks live settings (refusals, versions, the next checkout's fee, a
# change kept across SIGKILL), the audit trail (each action with who, what, when, from where,
# before and after; filters and pages; nothing but GET), support tickets, moderation and
# analytics across roles (admin.py).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

work=${3:-$(mktemp -d /tmp/hexmarket-admin.XXXXXX)}
# admin.py borrows the node of notifications.py, which imports receivers.py.
python3 -c 'import aiosmtpd, websockets, cryptography' 2>/dev/null ||
  pip_install "aiosmtpd==$AIOSMTPD_VERSION" "websockets==$WEBSOCKETS_VERSION" "cryptography==$CRYPTOGRAPHY_VERSION"
bin=$(hexmarket_bin)
rm -rf "$work/admin"
mkdir -p "$work/admin"
timeout 600 python3 "$PROBE_DIR/admin.py" "$bin" "$work/admin"
