#!/usr/bin/env bash
# Figures for issue 6 and issue 3 (not a test):
#  1. wall time of scripts/compare on a warm machine (tools installed, workspace built: one
#     warm-up pass first), broken down by stage (build, each engine, report);
#  2. boot to the first workload per engine, over BOOTS more boots of each: on the host's clock
#     from the engine's start until the guest's first record appears on the results disk
#     (`first_record_s`, polled every 25 ms), and in the guest's own uptime (the recorded
#     phases: kernel handoff, modules loaded, root mounted, digest checked, run start, first
#     workload). Host time minus guest uptime at run start is what passes before the kernel's
#     clock starts (QEMU, firmware, boot loader, kernel decompression).
#
#   BOOTS=5 benches/boot_and_compare.sh      (needs python3 for the tables)
set -euo pipefail
cd "$(dirname "$0")/.."
boots=${BOOTS:-5}
out=${COMPARE_OUT:-out/bench-compare}
bin=target/x86_64-unknown-linux-gnu/release/imgbuild
command -v python3 >/dev/null || { echo "boot_and_compare: needs python3" >&2; exit 1; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"; echo
COMPARE_OUT=$out scripts/compare >/dev/null 2>&1 || true   # warm-up
COMPARE_OUT=$out scripts/compare >/dev/null 2>"$out.log" || echo "compare exited $? (see $out.log)" >&2
echo "## scripts/compare on a warm machine, by stage"
echo
echo "| stage | seconds |"
echo "|---|---|"
awk -F'\t' '{ printf "| %s | %s |\n", $1, $2 }' "$out/stages.tsv"
echo

sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo=sudo
for engine in qemu vmware xen-image openvz host; do
  pre=()
  [ "$engine" = openvz ] && pre=($sudo)
  "${pre[@]}" "$bin" run "$out" --on "$engine" --repeat "$boots" >/dev/null 2>&1 ||
    echo "run --on $engine exited $?" >&2
done
[ -n "$sudo" ] && $sudo chown -R "$(id -u):$(id -g)" "$out/results"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$out/results" <<'EOF'
import glob, json, os, statistics, sys

runs = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    try:
        r = json.load(open(path))
    except Exception:
        continue
    if not isinstance(r, dict) or "engine" not in r or not r.get("collected"):
        continue
    runs.setdefault(r["engine"], []).append(r)

def fmt(x):
    return "-" if x is None else f"{x:.2f}"

def both(xs):
    xs = [x for x in xs if x is not None]
    return f"{fmt(min(xs))} / {fmt(statistics.median(xs))}" if xs else "-"

print("## Boot to the first workload (seconds; each cell: min / median over every boot)")
print()
print("| engine | boots | host: start → first record | guest: kernel handoff | modules loaded | root mounted | digest checked | first workload | before the kernel's clock |")
print("|---|---|---|---|---|---|---|---|---|")
for engine in ["qemu", "vmware", "xen-image", "openvz", "host"]:
    rs = runs.get(engine, [])
    if not rs:
        continue
    first = [r.get("first_record_s") for r in rs]
    phases, w0, pre = {}, [], []
    for r in rs:
        recs = r["collected"]["records"]
        start = next((x for x in recs if x["type"] == "run_start"), None)
        work = next((x for x in recs if x["type"] == "workload"), None)
        if not start:
            continue
        # Containers and the host count from the init's start, VMs from the kernel's.
        base = start["phases"][0]["at_s"] if engine in ("openvz", "host") else 0.0
        for p in start["phases"]:
            phases.setdefault(p["name"], []).append(p["at_s"] - base)
        if work:
            w0.append(work["start_s"] - base)
        rs_at = next((p["at_s"] for p in start["phases"] if p["name"] == "run_start"), None)
        if r.get("first_record_s") is not None and rs_at is not None and base == 0.0:
            pre.append(r["first_record_s"] - rs_at)
    print(f"| {engine} | {len(rs)} | {both(first)} | "
          f"{both(phases.get('kernel_handoff', []))} | {both(phases.get('modules_loaded', []))} | "
          f"{both(phases.get('root_mounted', []))} | {both(phases.get('digest_checked', []))} | "
          f"{both(w0)} | {both(pre)} |")
print()
print("Guest columns: the guest's uptime (VMs), seconds since the init started (openvz, host).")
EOF
echo
echo "load average after: $load_after"
