#!/bin/sh
# Builds tests/subproject with this source tree as its subprojects/join-shm, runs the clients, and
# checks that none of our tests, benchmarks, examples or tool were built there.
# Usage: tests/subproject/run.sh WORK-DIR
set -eu
work=${1:?usage: run.sh WORK-DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rm -rf "$work" && mkdir -p "$work/subprojects"
cp "$here/meson.build" "$root/tests/c11_client.c" "$root/tests/facade_client.cpp" "$work/"
ln -s "$root" "$work/subprojects/join-shm"
# forcefallback: the subproject even where a join-shm.pc is installed on the machine.
(cd "$work" && meson setup build --wrap-mode=forcefallback >setup.log 2>&1 && ninja -C build >build.log 2>&1) ||
    { cat "$work/setup.log" "$work/build.log" 2>/dev/null; echo "FAIL: the subproject client did not build"; exit 1; }
targets=$(meson introspect --targets "$work/build" | python3 -c '
import json, sys
print("\n".join(t["name"] for t in json.load(sys.stdin) if t["type"] == "executable"))')
for unwanted in test_capi c11_client ping_pong join-shm join-shm-bench join-shm-demo peer; do
    if printf '%s\n' "$targets" | grep -qx -- "$unwanted"; then
        echo "FAIL: the subproject built $unwanted"; exit 1
    fi
done
"$work/build/c_client"
"$work/build/facade_client"
echo "ok: meson subproject clients"
