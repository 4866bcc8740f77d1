#!/usr/bin/env bash
# notifications.sh BASE_URL SEED.json WORK_DIR: order notifications as their recipients meet
# them, on every channel, with a crash in the middle. Starts a node of its own (its own data
# directory) wired to receivers on loopback (receivers.py: an SMTP sink, a Twilio Messages API, a
# Web Push service that checks VAPID and decrypts, a webhook receiver that checks signatures),
# seeds it through the CLI and the API, moves 200 orders through their states with couriers on
# /ws/courier, SIGKILLs the node midway and starts it again, then counts what every receiver and
# every in-app feed holds against the README's table (notifications.py).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

work=${3:-$(mktemp -d /tmp/hexmarket-notifications.XXXXXX)}
python3 -c 'import aiosmtpd, websockets, cryptography' 2>/dev/null ||
  pip_install "aiosmtpd==$AIOSMTPD_VERSION" "websockets==$WEBSOCKETS_VERSION" "cryptography==$CRYPTOGRAPHY_VERSION"
bin=$(hexmarket_bin)
rm -rf "$work/notifications"
mkdir -p "$work/notifications"
timeout 900 python3 "$PROBE_DIR/notifications.py" "$bin" "$work/notifications"
