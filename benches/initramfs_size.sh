#!/bin/sh
# Measures the initramfs imgbuild builds for the host's kernel, per driver set and compression,
# next to the distribution's own initramfs for the same kernel.
#
#   benches/initramfs_size.sh [INIT_BINARY]
#
# INIT_BINARY defaults to the workspace's release imgbuild-init (built if missing).
set -eu
cd "$(dirname "$0")/.."
target=target/x86_64-unknown-linux-gnu/release
init=${1:-$target/imgbuild-init}
if [ ! -x "$init" ]; then
    cargo build --release -p imgbuild-init
fi
cargo build --release -p imgbuild --example kernel_initramfs
tool=$target/examples/kernel_initramfs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n 1)
release=${kernel#/boot/vmlinuz-}
echo "kernel:  $release"
echo "init:    $init ($(stat -c %s "$init") bytes)"
if [ -f "/boot/initrd.img-$release" ]; then
    echo "distribution initramfs: $(stat -c %s "/boot/initrd.img-$release") bytes (/boot/initrd.img-$release)"
fi

measure() { # label, extra args…
    label=$1; shift
    "$tool" --kernel "$kernel" --init "$init" "$@" "$work/img" > "$work/report.json"
    size=$(stat -c %s "$work/img")
    modules=$(grep -c '"reason"' "$work/report.json" || true)
    printf '%-28s %9d bytes  %7.2f MiB  %2d modules\n' "$label" "$size" \
        "$(echo "$size / 1048576" | bc -l)" "$modules"
}

measure "default set, gzip"
measure "default set, xz" --xz
measure "default set, uncompressed" --none
measure "xen only" --drivers xen-blkfront,xen-netfront,ext4
measure "vmware only" --drivers vmw_pvscsi,sd_mod,vmxnet3,ext4
measure "qemu only" --drivers virtio_pci,virtio_blk,virtio_net,virtio_scsi,ext4
# Two builds must be identical.
"$tool" --kernel "$kernel" --init "$init" "$work/a" > /dev/null
"$tool" --kernel "$kernel" --init "$init" "$work/b" > /dev/null
cmp "$work/a" "$work/b" && echo "reproducible: two builds are byte-identical"
