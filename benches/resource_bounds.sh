#!/bin/sh
# Peak memory of the builder on huge inputs: `imgbuild build --target xen` of the default image
# plus one dir layer holding (a) nothing, (b) one 10 GiB sparse file, (c) one million small files,
# measured with /usr/bin/time -v (GNU time). Prints peak RSS, wall time, and the memory per
# entry of (c) over (a).
#
#   benches/resource_bounds.sh [WORKDIR] [FILES]
#
# WORKDIR (default: a new directory under /tmp) holds the inputs and outputs and is removed at
# the end; it needs a few GiB of real space for the million files (4 KiB blocks each) and the
# images (sparse). FILES defaults to 1000000. Uses the release builds of imgbuild and
# imgbuild-init (built if missing) and the host's kernel (Xen needs one).
set -eu
cd "$(dirname "$0")/.."
root=$PWD
target=$root/target/x86_64-unknown-linux-gnu/release
files=${2:-1000000}
if [ ! -x /usr/bin/time ]; then
    echo "resource_bounds: GNU time is missing (apt-get install -y time)" >&2
    exit 1
fi
[ -x "$target/imgbuild" ] || cargo build --release -p imgbuild
[ -x "$target/imgbuild-init" ] || cargo build --release -p imgbuild-init
work=${1:-$(mktemp -d /tmp/resource-bounds.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# (a) nothing, (b) a 10 GiB file with 4 KiB of data at each end, (c) FILES files of 1–64 bytes
# in directories of 1000.
mkdir -p "$work/empty" "$work/sparse" "$work/many"
head -c 4096 /dev/urandom > "$work/sparse/big"
truncate -s 10G "$work/sparse/big"
head -c 4096 /dev/urandom >> "$work/sparse/big"
python3 - "$work/many" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.mkdir(d)
    with open(os.path.join(d, "f%04d" % (i % 1000)), "wb") as f:
        f.write(b"x" * (1 + i % 64))
PY

measure() { # label, layer dir
    label=$1
    out=$work/out-$label
    /usr/bin/time -v "$target/imgbuild" build --target xen --quiet --out "$out" \
        --init "$target/imgbuild-init" --layer "dir=$2" 2> "$work/time-$label"
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time-$label")
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time-$label")
    fs=$(du -s --apparent-size -B1M "$out/xen" | cut -f1)
    printf '%-8s peak RSS %8d KiB  wall %9s  xen/ %7d MiB apparent\n' "$label" "$rss" "$wall" "$fs"
    rm -rf "$out"
    eval "rss_$label=$rss"
}

echo "imgbuild $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs"
measure empty "$work/empty"
measure sparse "$work/sparse"
measure many "$work/many"
# shellcheck disable=SC2154 # set by measure through eval
echo "per entry: $(( (rss_many - rss_empty) * 1024 / files )) bytes of peak RSS for $files files"
