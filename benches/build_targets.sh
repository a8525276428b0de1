#!/bin/sh
# Benchmark (not a test) of issue 4's two goals, measured in one run:
#
#  1. `imgbuild --target all` against `imgbuild --target xen` on a sizeable image: the default
#     image plus the debootstrap minbase tree as a `dir` layer (about 200 MB in 6,800 entries).
#     Goal: all <= 1.5 x xen. Runs alternate (xen, all, all, xen, ...) so page cache and the
#     load of a shared machine affect both alike; medians of wall and CPU (user + sys) time.
#  2. The monolithicSparse writer against `qemu-img convert -O vmdk` on the same raw disk
#     (an MBR disk whose ext4 holds the same tree), through the vmdk_vs_qemu_img cargo bench.
#     Goal: ours <= 1.0 x qemu-img.
#
#   benches/build_targets.sh [RUNS]        (RUNS defaults to 5; needs root the first time,
#                                          to debootstrap the tree, and network for that)
set -eu
runs=${1:-5}
cache=${IMGBUILD_CACHE:-$HOME/.cache/imgbuild}
tree=$cache/debootstrap-minbase
if [ ! -f "$tree/etc/debian_version" ]; then
    command -v debootstrap >/dev/null 2>&1 || apt-get install -y debootstrap
    mkdir -p "$cache"
    rm -rf "$tree.tmp"
    debootstrap --variant=minbase bookworm "$tree.tmp" http://deb.debian.org/debian
    mv "$tree.tmp" "$tree"
fi
cd "$(dirname "$0")/.."
cargo build --release --workspace
bin=target/x86_64-unknown-linux-gnu/release/imgbuild
init=target/x86_64-unknown-linux-gnu/release/imgbuild-init
work=$(mktemp -d "${TMPDIR:-/tmp}/build_targets.XXXXXX")
trap 'rm -rf "$work"' EXIT

one() { # target
    rm -rf "$work/$1"
    /usr/bin/time -f "%e %U %S" -o "$work/time" \
        "$bin" build -q --target "$1" --out "$work/$1" --init "$init" --layer "dir=$tree"
    read -r wall user sys < "$work/time"
    echo "$wall $(echo "$user + $sys" | bc)" >> "$work/$1.times"
}

median() { # file column
    sort -n -k "$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}

echo "tree: $tree ($(du -sm "$tree" | cut -f1) MB), $runs runs per target, alternating"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
one xen # warm the page cache; not counted
rm -f "$work/xen.times"
i=0
while [ "$i" -lt "$runs" ]; do
    if [ $((i % 2)) -eq 0 ]; then one xen; one all; else one all; one xen; fi
    i=$((i + 1))
done
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
for t in xen all; do
    printf '%-4s wall %s s (runs: %s)  cpu %s s\n' "$t" "$(median "$work/$t.times" 1)" \
        "$(cut -d' ' -f1 "$work/$t.times" | tr '\n' ' ' | sed 's/ $//')" \
        "$(median "$work/$t.times" 2)"
done
xw=$(median "$work/xen.times" 1); aw=$(median "$work/all.times" 1)
xc=$(median "$work/xen.times" 2); ac=$(median "$work/all.times" 2)
printf 'all/xen: wall %.2f, cpu %.2f (goal: wall <= 1.5)\n' \
    "$(echo "$aw / $xw" | bc -l)" "$(echo "$ac / $xc" | bc -l)"
echo "outputs of the last all build:"
( cd "$work/all" && ls -l --block-size=1 */* | awk '{ printf "  %12d  %s\n", $5, $9 }' )

echo
echo "monolithicSparse writer against qemu-img convert -O vmdk, same raw disk:"
cargo bench -p imgbuild --bench vmdk_vs_qemu_img -- "$runs" "$tree"
