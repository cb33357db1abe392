#!/bin/sh
# The dynamic symbol table of libjoin-shm exports only join_shm_* functions, each with the default
# version JOIN_SHM_1.0 or (calls added later) JOIN_SHM_1.1 or JOIN_SHM_1.2 (the version nodes may appear as absolute symbols),
# and the SONAME is libjoin-shm.so.1.
# Usage: check_exports.sh PATH-OF-THE-LIBRARY
set -u
lib=${1:?usage: check_exports.sh PATH-OF-THE-LIBRARY}
NM=${NM:-nm}
READELF=${READELF:-readelf}

symbols=$("$NM" -D --defined-only --with-symbol-versions "$lib") || { echo "FAIL: $NM cannot read $lib"; exit 1; }
status=0
functions=0
# nm prints: ADDRESS TYPE NAME[@@VERSION]
while read -r address type name; do
    [ -n "$address" ] || continue
    case "$type $name" in
        "A JOIN_SHM_1.0" | "A JOIN_SHM_1.1" | "A JOIN_SHM_1.2") ;;  # the version nodes
        "T join_shm_"*@@JOIN_SHM_1.[012])
            base=${name%@@JOIN_SHM_1.[012]}
            if printf '%s\n' "$base" | grep -Eq '^join_shm_[a-z0-9_]+$'; then
                functions=$((functions + 1))
            else
                echo "FAIL: odd exported name: $address $type $name"; status=1
            fi ;;
        *) echo "FAIL: unexpected export: $address $type $name"; status=1 ;;
    esac
done <<EOT
$symbols
EOT

if [ "$functions" -eq 0 ]; then
    echo "FAIL: no join_shm_* function exported with version JOIN_SHM_1.0/1.1/1.2"; status=1
fi

soname=$("$READELF" -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
if [ "$soname" != "libjoin-shm.so.1" ]; then
    echo "FAIL: SONAME is '$soname', expected libjoin-shm.so.1"; status=1
fi

[ "$status" -eq 0 ] && echo "ok: $functions join_shm_* functions, all JOIN_SHM_1.0, 1.1 or 1.2; SONAME $soname"
exit "$status"
