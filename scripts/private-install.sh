#!/usr/bin/env bash
# A private PostgreSQL 15 installation under ROOT that runs a given shardcast build, without
# installing it system-wide: the binaries are copied (PostgreSQL finds $libdir and its share
# directory relative to its own binary), everything else is a symlink to the system's, and the
# package's files (`cargo pgrx package --out-dir PACKAGE`) are copied over. Benchmarks and tests
# use it with SHARDCAST_PG_BINDIR=ROOT/usr/lib/postgresql/15/bin (see pg_test/cluster.py), so that
# two builds can be measured side by side while the system one stays as it is.
#
#   scripts/private-install.sh target/package-release /tmp/shardcast-private
set -euo pipefail

package=$(realpath "${1:?usage: private-install.sh PACKAGE_DIR ROOT}")
root=${2:?usage: private-install.sh PACKAGE_DIR ROOT}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$("$PG_CONFIG" --bindir)
libdir=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)

rm -rf "$root"
mkdir -p "$root$bindir" "$root$libdir" "$root$sharedir/extension"
cp -a "$bindir"/. "$root$bindir"/
for entry in "$libdir"/*; do ln -s "$entry" "$root$libdir/"; done
for entry in "$sharedir"/*; do
    [ "$(basename "$entry")" = extension ] || ln -s "$entry" "$root$sharedir/"
done
for entry in "$sharedir"/extension/*; do ln -s "$entry" "$root$sharedir/extension/"; done
# The package's files replace the system's links.
(cd "$package" && find . -type f) | while read -r file; do
    dest="$root/${file#./}"
    rm -f "$dest"
    mkdir -p "$(dirname "$dest")"
    cp "$package/$file" "$dest"
done
# Released versions' full scripts (for upgrades) come from the repository.
for f in "$(dirname "$0")"/../sql/shardcast--*.sql; do
    case "$f" in *--*--*) continue ;; esac
    [ -e "$root$sharedir/extension/$(basename "$f")" ] && [ ! -L "$root$sharedir/extension/$(basename "$f")" ] && continue
    rm -f "$root$sharedir/extension/$(basename "$f")"
    cp "$f" "$root$sharedir/extension/"
done
chmod -R a+rX "$root"
echo "$root$bindir"
