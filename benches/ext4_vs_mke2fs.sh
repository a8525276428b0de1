#!/bin/sh
# Builds the debootstrap minbase tree once (cached outside the repository) and runs the
# ext4-vs-mke2fs benchmark: interleaved runs, medians, ratio, and the writer's peak RSS on a
# tree with 1 GiB of file data. Needs root (debootstrap, ownership) and network the first time.
set -eu
CACHE=${IMGBUILD_CACHE:-$HOME/.cache/imgbuild}
TREE=$CACHE/debootstrap-minbase
if [ ! -f "$TREE/etc/debian_version" ]; then
    command -v debootstrap >/dev/null 2>&1 || apt-get install -y debootstrap
    mkdir -p "$CACHE"
    rm -rf "$TREE.tmp"
    debootstrap --variant=minbase bookworm "$TREE.tmp" http://deb.debian.org/debian
    mv "$TREE.tmp" "$TREE"
fi
cd "$(dirname "$0")/.."
exec cargo bench -p imgbuild --bench ext4_vs_mke2fs
