#!/usr/bin/env bash
# Builds and installs Citus 13 into the system PostgreSQL 15, for the Citus tests and demo.
# Skipped when citus.so is already installed. Never downloads: the source is a release tarball
# on this machine (CITUS_SOURCE, default ../shared/vendor/citus/citus-13.2.2.tar.gz next to the
# repository); without it, this script says so and exits 0, and the Citus tests are skipped.
#
# Users install Citus 13 for PostgreSQL 15 from Citus's own packages instead, or build it the
# same way from github.com/citusdata/citus at tag v13.2.2.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
HERE=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${CITUS_SOURCE:-}" ]; then
    for candidate in "$HERE/../shared/vendor/citus/citus-13.2.2.tar.gz" /work/shared/vendor/citus/citus-13.2.2.tar.gz; do
        if [ -f "$candidate" ]; then CITUS_SOURCE=$candidate; break; fi
    done
    CITUS_SOURCE=${CITUS_SOURCE:-$HERE/../shared/vendor/citus/citus-13.2.2.tar.gz}
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

if [ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ]; then
    exit 0
fi
if [ ! -f "$CITUS_SOURCE" ]; then
    echo "==> Citus is not installed and no source tarball at $CITUS_SOURCE: Citus tests will be skipped"
    exit 0
fi

need_apt=()
for pkg in libzstd-dev liblz4-dev libkrb5-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> apt-get install ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

BUILD=$(mktemp -d /tmp/citus-build.XXXXXX)
trap 'rm -rf "$BUILD"' EXIT
echo "==> building Citus from $CITUS_SOURCE (about 6 minutes on 2 cores)"
tar xzf "$CITUS_SOURCE" -C "$BUILD"
cd "$BUILD"/citus-*
# PostgreSQL 15.18 exports have_createdb_privilege(), which Citus 13.2.2 still defines as a static
# inline for PostgreSQL < 16: without this the build fails (fixed upstream after 13.2.2).
PATCH=$(dirname "$CITUS_SOURCE")/pg15.18-have_createdb_privilege.patch
if [ -f "$PATCH" ] && "$PG_CONFIG" --version | grep -qE ' 15\.(1[8-9]|[2-9][0-9])'; then
    patch -p1 --forward --quiet < "$PATCH"
fi
./configure --without-libcurl PG_CONFIG="$PG_CONFIG" >/dev/null
make -j"$(nproc)" >/dev/null
$SUDO make install >/dev/null
echo "==> Citus installed: $("$PG_CONFIG" --pkglibdir)/citus.so"
