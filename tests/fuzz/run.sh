#!/usr/bin/env bash
# Runs the fuzz_segment libFuzzer target for a while, from a copy of the committed seed corpus.
#   tests/fuzz/run.sh BUILD_DIR SECONDS
# BUILD_DIR is a clang build configured with -Dfuzz=true (see tests/fuzz/meson.build). Exits
# non-zero when the fuzzer finds a crash, a hang or a leak; the input that did it is kept under
# BUILD_DIR/fuzz-artifacts/ (replay: BUILD_DIR/tests/fuzz/fuzz_segment FILE, with
# JOIN_SHM_FUZZ_TRACE=1 to see each step). Ends with one summary line.
set -u
if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$1
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
fuzzer=$build/tests/fuzz/fuzz_segment
if [ ! -x "$fuzzer" ]; then
    echo "fuzz: $fuzzer is not built (configure with CXX=clang++ -Dfuzz=true, then ninja -C $build tests/fuzz/fuzz_segment)" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/join-shm-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$here"/corpus/* "$work"/
artifacts=$build/fuzz-artifacts
mkdir -p "$artifacts"
log=$build/fuzz.log

# LeakSanitizer on; UBSan stops at its first report, so that libFuzzer keeps the input.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
    "$fuzzer" "$work" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=256 -len_control=0 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 &
pid=$!
wait "$pid"
rc=$?
# The segment of an input that crashed the process (names carry the fuzzer's pid) is left behind.
rm -rf /dev/shm/jshm-fuzz-"$pid"-*

execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -n 1)
if [ "$rc" -ne 0 ]; then
    echo "fuzz: FAILED (exit $rc) after ${execs:-?} runs; log $log; input:" $(ls -t "$artifacts" | head -n 1 | sed "s|^|$artifacts/|")
    grep -E -A12 'VIOLATION|did not return|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' "$log" | head -n 60
    exit 1
fi
echo "fuzz: ok, ${execs:-?} runs in ${seconds} s, coverage ${cov#cov: }, ${corpus#corp: } inputs in the corpus"
