#!/usr/bin/env bash
# signin.sh BASE_URL SEED.json WORK_DIR: sign-in with an OpenID Connect provider from outside.
# Starts a real provider on loopback (oauth2-mock-server from .ci/package.json) and a node of its
# own configured for it, then signs up, signs in, links and unlinks through the public API, and
# checks each refusal: replayed callback and code, wrong nonce, audience and issuer, expired
# token, unpublished key, provider error, a link finished by another client; the provider
# rotates its key midway; a flow survives a SIGKILL between its halves (signin.mjs).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

work=${3:-$(mktemp -d /tmp/hexmarket-signin.XXXXXX)}
bin=$(hexmarket_bin)
rm -rf "$work/signin"
mkdir -p "$work/signin"
cd "$REPO_DIR/.ci"
timeout 300 node probe/signin.mjs "$bin" "$work/signin"
