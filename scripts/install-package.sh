#!/usr/bin/env bash
# Installs a package directory made by `cargo pgrx package` into the file system root, each file
# written beside its destination and renamed over it. A rename gives the library a new inode:
# PostgreSQL processes that have the old shardcast.so mapped keep its pages, where `cargo pgrx
# install` rewrites the file in place, under them, and crashes every cluster that loaded it.
# (A server started before the install should still be restarted: its backends load the new
# file, beside the old one, for functions they have not called yet.)
set -euo pipefail

package=${1:?usage: install-package.sh PACKAGE_DIR}
cd "$package"
find . -type f | while read -r file; do
    dest="/${file#./}"
    mkdir -p "$(dirname "$dest")"
    mode=644
    case "$dest" in *.so) mode=755 ;; esac
    install -m "$mode" "$file" "$dest.installing.$$"
    mv -f "$dest.installing.$$" "$dest"
    echo "install $dest"
done
