#!/bin/sh
# Builds tests/cmake against an installed (or DESTDIR-staged) libjoin-shm and runs its clients:
# once as a C-only project, once with C++ as well.
# Usage: tests/cmake/run.sh ROOT WORK-DIR   (ROOT: the prefix, or a DESTDIR stage above it)
set -eu
root=${1:?usage: run.sh ROOT WORK-DIR}
work=${2:?usage: run.sh ROOT WORK-DIR}
source_dir=$(cd "$(dirname "$0")" && pwd)
config=$(find "$root" -name join-shmConfig.cmake | head -n 1)
[ -n "$config" ] || { echo "FAIL: no join-shmConfig.cmake under $root"; exit 1; }
# The prefix is what lies above lib/cmake/join-shm or lib/<triplet>/cmake/join-shm.
prefix=$(dirname "$config" | sed -E 's:/lib(/[^/]+)?/cmake/join-shm$::')
library_dir=$(dirname "$(find "$root" -name 'libjoin-shm.so.1' | head -n 1)")
rm -rf "$work" && mkdir -p "$work"
for cxx in OFF ON; do
    build=$work/cxx-$cxx
    cmake -S "$source_dir" -B "$build" -DWITH_CXX=$cxx -DCMAKE_PREFIX_PATH="$prefix" >"$build.log" 2>&1 &&
        cmake --build "$build" >>"$build.log" 2>&1 ||
        { cat "$build.log"; echo "FAIL: the CMake client (WITH_CXX=$cxx) did not build"; exit 1; }
    # The imported target's include directory and library are the staged ones, not the system's.
    grep -q "join-shm 1\.[0-9]*\.[0-9]* from $prefix" "$build.log" || { cat "$build.log"; echo "FAIL: not found under $prefix"; exit 1; }
    LD_LIBRARY_PATH=$library_dir "$build/c_client"
    [ "$cxx" = OFF ] || LD_LIBRARY_PATH=$library_dir "$build/facade_client"
done
echo "ok: CMake clients (C, C and C++) against $config"
