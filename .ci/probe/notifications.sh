#!/usr/bin/env bash
# notifications.sh BASE_URL SEED.json WORK_DIR: order notifications as their recipients meet
# them, with a crash in the middle. Starts a node of its own (its own data directory, email to
# an SMTP sink on loopback, aiosmtpd from PyPI), seeds it through the CLI and the API, moves 30
# orders through payment and the store's answer, SIGKILLs the node halfway and starts it again,
# then counts what every mailbox and every in-app feed received (notifications.py).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

work=${3:-$(mktemp -d /tmp/hexmarket-notifications.XXXXXX)}
python3 -c 'import aiosmtpd' 2>/dev/null || pip_install "aiosmtpd==$AIOSMTPD_VERSION"
bin=$(hexmarket_bin)
rm -rf "$work/notifications"
mkdir -p "$work/notifications"
timeout 600 python3 "$PROBE_DIR/notifications.py" "$bin" "$work/notifications"
