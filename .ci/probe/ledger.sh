#!/usr/bin/env bash
# ledger.sh BASE_URL SEED.json WORK_DIR: the money ledger end to end, with three crashes.
# Starts a node of its own (its own data directory; a payout hold of two seconds, payouts only
# when an admin runs them, unpaid orders expiring after four seconds), seeds it through the CLI
# and the API, moves LEDGER_ORDERS orders (default 300) of three stores through payment, late
# payment, cancellation, rejection, line refunds and delivery with couriers on /ws/courier,
# runs payouts (one to a destination the provider refuses), SIGKILLs the node three times and
# starts it again, then checks every transaction, balance, payout and the reconciliation
# against the orders' logs (ledger.py).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

work=${3:-$(mktemp -d /tmp/hexmarket-ledger.XXXXXX)}
# ledger.py borrows the couriers and the node of notifications.py, which imports receivers.py.
python3 -c 'import aiosmtpd, websockets, cryptography' 2>/dev/null ||
  pip_install "aiosmtpd==$AIOSMTPD_VERSION" "websockets==$WEBSOCKETS_VERSION" "cryptography==$CRYPTOGRAPHY_VERSION"
bin=$(hexmarket_bin)
rm -rf "$work/ledger"
mkdir -p "$work/ledger"
timeout 900 python3 "$PROBE_DIR/ledger.py" "$bin" "$work/ledger"
