#!/usr/bin/env bash
# Installs what building and testing shardcast needs, skipping what is already there.
# Safe to run again; runs as root (CI, a fresh Debian machine) or with sudo.
set -euo pipefail

PGRX_VERSION=0.18.1
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

need_apt=()
for pkg in postgresql-15 postgresql-server-dev-15 postgresql-client-15 libclang-dev clang sudo; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> apt-get install ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "$(cargo pgrx --version 2>/dev/null || true)" != "cargo-pgrx $PGRX_VERSION" ]; then
    echo "==> cargo install cargo-pgrx $PGRX_VERSION (about 4 minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi
if ! grep -q pg15 "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
    echo "==> cargo pgrx init --pg15"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

if ! python3 -c 'import psycopg, pytest' 2>/dev/null; then
    echo "==> pip install psycopg pytest"
    python3 -m pip install --quiet --disable-pip-version-check -r pg_test/requirements.txt
fi
