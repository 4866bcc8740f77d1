#!/usr/bin/env bash
# client.sh BASE_URL SEED.json [WORK_DIR]: generates a Python client from the served document
# with openapi-python-client (PyPI, pinned in lib.sh; any generator warning fails), then runs a
# customer's purchase through it alone (client_flow.py).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

base=$1
seed=$2
work=${3:-$(mktemp -d /tmp/hexmarket-client.XXXXXX)}

command -v openapi-python-client >/dev/null \
  && openapi-python-client --version 2>/dev/null | grep -q "$OPENAPI_PYTHON_CLIENT_VERSION" \
  || pip_install "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION"

curl -fsS --max-time 30 "$base/api/v1/openapi.json" -o "$work/openapi.json"
rm -rf "$work/generated"
timeout 300 openapi-python-client generate --path "$work/openapi.json" --meta none \
  --config "$PROBE_DIR/client-config.yaml" --output-path "$work/generated/hexmarket_client" \
  --fail-on-warning
PYTHONPATH="$work/generated" timeout 120 python3 "$PROBE_DIR/client_flow.py" "$base" "$seed"
