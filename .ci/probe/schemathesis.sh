#!/usr/bin/env bash
# schemathesis.sh BASE_URL SEED.json [WORK_DIR]: schemathesis (PyPI, pinned in lib.sh) against
# the served document, once with each seeded role's token, then once for the operations that
# end a session or an account (with an account of their own). Seeded and bounded in time and
# count; the checks are in schemathesis.toml beside this script.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

base=$1
seed=$2
work=${3:-$(mktemp -d /tmp/hexmarket-schemathesis.XXXXXX)}
per_role_secs=${PROBE_SCHEMATHESIS_SECS:-45}

python3 -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '$SCHEMATHESIS_VERSION')" 2>/dev/null \
  || pip_install "schemathesis==$SCHEMATHESIS_VERSION"

if [ -f "$PROBE_DIR/hooks.py" ]; then
  export SCHEMATHESIS_HOOKS=hooks
  export PYTHONPATH="$PROBE_DIR${PYTHONPATH:+:$PYTHONPATH}"
fi
export SCHEMATHESIS_CONFIG="$PROBE_DIR/schemathesis.toml"

run() { # run NAME TOKEN [st options...]
  local name=$1 token=$2
  shift 2
  log "schemathesis as $name"
  local auth=()
  [ -n "$token" ] && auth=(-H "Authorization: Bearer $token")
  # schemathesis keeps a cache in its working directory: the run's own.
  (cd "$work" && timeout $((per_role_secs + 120)) st --config-file "$SCHEMATHESIS_CONFIG" run \
    "$base/api/v1/openapi.json" "${auth[@]}" \
    --max-time "$per_role_secs" --seed 20261204 \
    --report junit --report-junit-path "$work/schemathesis-$name.xml" \
    --no-color "$@")
}

# Operations that would end the caller's session or account for the rest of its run.
session_enders=(--exclude-path /api/v1/auth/logout-all --exclude-path /api/v1/me/password
  --exclude-path /api/v1/me/email --exclude-path /api/v1/auth/password/reset)
erase_me=(--exclude-by 'method == "DELETE" and path == "/api/v1/me"')

tokens=$(python3 "$PROBE_DIR/seed.py" "$base" tokens "$seed")
status=0
for role in customer vendor courier admin; do
  token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$tokens" "$role")
  run "$role" "$token" "${session_enders[@]}" "${erase_me[@]}" || status=1
done

# The session enders, with an account made for them.
throwaway=$(python3 - "$base" <<'EOF'
import json, sys, uuid, urllib.request
base = sys.argv[1]
email = f"probe-throwaway-{uuid.uuid4().hex[:10]}@example.com"
body = {"email": email, "password": "probe-password-2026", "name": "Throwaway", "role": "customer"}
def post(path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
post("/api/v1/auth/register", body)
print(post("/api/v1/auth/login", {"email": email, "password": body["password"]})["access_token"])
EOF
)
run enders "$throwaway" --include-path /api/v1/auth/logout-all --include-path /api/v1/me/password \
  --include-path /api/v1/me/email --include-path /api/v1/auth/password/reset \
  --include-path /api/v1/me || status=1
exit $status
