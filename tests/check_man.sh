#!/bin/sh
# The manual pages format without a warning (groff -ww), and every function <join/shm.h> declares
# is named in the NAME line of a section 3 page (so it has a page and a `man` link).
# Usage: check_man.sh PATH-OF-shm.h PAGE...
set -u
header=${1:?usage: check_man.sh HEADER PAGE...}
shift
command -v groff >/dev/null 2>&1 || { echo "SKIP: no groff (Debian: groff-base)"; exit 77; }
status=0
for page in "$@"; do
    warnings=$(groff -ww -z -man "$page" 2>&1)
    if [ -n "$warnings" ]; then
        echo "FAIL: groff on $page:"; printf '%s\n' "$warnings"; status=1
    fi
done

# A declaration is a join_shm_ name followed by "(", as in check_header_exports.sh.
declared=$(grep -oE 'join_shm_[a-z0-9_]+[[:space:]]*\(' "$header" | sed 's/[[:space:]]*($//' | sort -u)
named=$(for page in "$@"; do
    case "$page" in *.3) sed -n '/^\.SH NAME/{n;p;}' "$page" | sed 's/ \\-.*//' | tr ',' '\n' ;; esac
done | tr -d ' ' | sort -u)
[ "$(printf '%s\n' "$declared" | grep -c .)" -ge 10 ] || { echo "FAIL: could not parse $header"; status=1; }
missing=$(printf '%s\n' "$declared" | grep -vxF -e "$named" || true)
if [ -n "$missing" ]; then
    echo "FAIL: declared in $header but named in no manual page:"; printf '  %s\n' $missing; status=1
fi
[ "$status" -eq 0 ] && echo "ok: $# pages, $(printf '%s\n' "$declared" | wc -l) calls documented"
exit "$status"
