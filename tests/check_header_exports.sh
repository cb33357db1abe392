#!/bin/sh
# Every function <join/shm.h> declares is exported by the library, and the library exports no
# join_shm_* function the header does not declare.
# Usage: check_header_exports.sh PATH-OF-shm.h PATH-OF-THE-LIBRARY
set -u
header=${1:?usage: check_header_exports.sh HEADER LIBRARY}
lib=${2:?usage: check_header_exports.sh HEADER LIBRARY}
NM=${NM:-nm}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

# A declaration is a join_shm_ name followed by "(": types, enums and macros are not.
grep -oE 'join_shm_[a-z0-9_]+[[:space:]]*\(' "$header" | sed 's/[[:space:]]*($//' | sort -u >"$tmp/declared"
"$NM" -D --defined-only "$lib" | awk '$2 == "T" || $2 == "W" || $2 == "i" { print $3 }' | sed 's/@.*//' |
    grep '^join_shm_' | sort -u >"$tmp/exported"

status=0
if ! grep -qx 'join_shm_version' "$tmp/declared" || [ "$(wc -l <"$tmp/declared")" -lt 10 ]; then
    echo "FAIL: could not parse the declarations of $header"; status=1
fi
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
extra=$(comm -13 "$tmp/declared" "$tmp/exported")
if [ -n "$missing" ]; then
    echo "FAIL: declared in $header but not exported by $lib:"; printf '  %s\n' $missing; status=1
fi
if [ -n "$extra" ]; then
    echo "FAIL: exported by $lib but not declared in $header:"; printf '  %s\n' $extra; status=1
fi
[ "$status" -eq 0 ] && echo "ok: all $(wc -l <"$tmp/declared") declared functions are exported, and no others"
exit "$status"
