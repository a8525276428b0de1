#!/bin/sh
# Compares the built-in workloads with the real tools on this host, with medians of several
# runs and ratios (a benchmark, not a test):
#   - crypto sha256/8192 single thread vs `openssl speed -evp sha256 -bytes 8192` (CPU-timed
#     vs openssl's user time, and wall-timed vs -elapsed); target within +-20 %;
#   - http: a real `ab -n 20000 -c 8` (and -c 1) against the built-in server with 0 failures,
#     and the built-in load generator's requests/s against the same server; target +-20 %;
#   - unixbench: single-copy scores, index and CV over the repetitions (shortened test
#     lengths by default; targets 5 % / 10 %);
#   - disk: block write/rewrite/read vs `bonnie++ -D` with the same file size, chunk and
#     directory; with --disk-2xram also both buffered with a file of twice the RAM (slow:
#     tens of GiB on a big host); target within a factor of 1.5.
#
#   benches/workloads_vs_tools.sh [--reps N] [--only crypto,http,unixbench,disk]
#       [--disk-mib M] [--disk-2xram] [--dir DIR] [--unixbench-long-s S] [--unixbench-short-s S]
#
# BENCH_NICE=-20 runs everything (both sides) at that niceness, which keeps other load on a
# shared host from dominating the CVs; BENCH_DIR picks the directory for the disk tests.
#
# Needs openssl, ab (apache2-utils) and bonnie++ (apt-get install -y openssl apache2-utils
# bonnie++). Run as root for bonnie++ (-u root is passed).
set -eu
cd "$(dirname "$0")/.."
cargo build --release -p imgbuild-init --bin imgbuild-init --example workloads_vs_tools
target=target/x86_64-unknown-linux-gnu/release
for tool in openssl ab bonnie++; do
    command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
    command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool" >&2; exit 1; }
done
echo "host: $(nproc) CPUs, $(grep MemTotal /proc/meminfo | tr -s ' '), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "niceness: ${BENCH_NICE:-0}"
# BENCH_MEMORY_MIB=M: run everything in a cgroup whose memory, page cache included, is limited
# to M MiB (cgroup v2 at /sys/fs/cgroup, else v1's memory controller), and add a buffered disk
# comparison with a file of 2*M MiB, so that neither bonnie++ nor the built-in disk workload
# reads from the page cache.
if [ -n "${BENCH_MEMORY_MIB:-}" ]; then
    bytes=$((BENCH_MEMORY_MIB * 1024 * 1024))
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
        cg=/sys/fs/cgroup/imgbuild-bench
        mkdir -p "$cg"
        echo "$bytes" > "$cg/memory.max"
    elif [ -d /sys/fs/cgroup/memory ]; then
        cg=/sys/fs/cgroup/memory/imgbuild-bench
        mkdir -p "$cg"
        echo "$bytes" > "$cg/memory.limit_in_bytes"
    else
        echo "BENCH_MEMORY_MIB: no cgroup memory controller here" >&2
        exit 1
    fi
    echo $$ > "$cg/cgroup.procs"
    echo "memory limit: $BENCH_MEMORY_MIB MiB (cgroup $cg)"
    set -- "$@" --disk-buffered-mib "$((BENCH_MEMORY_MIB * 2))"
fi
exec nice -n "${BENCH_NICE:-0}" "$target/examples/workloads_vs_tools" --init "$target/imgbuild-init" --dir "${BENCH_DIR:-/var/tmp}" "$@"
