#!/bin/bash
# A/B of two lunfs builds on the snapshot randwrite4k job, interleaved so that both see the same
# machine: for each round and each snapshot count, build A then build B. Each run mounts a fresh
# copy of a template pool (RAID-0, or RAID-5 with RAID=5; 4 sparse drive files on /dev/shm, one
# fully written 1 GiB LUN),
# takes N snapshots through control/snapshot/, runs fio (psync, iodepth 1, O_DIRECT, 4 KiB random
# writes over the LUN, 200 MiB or 20 s, end_fsync) and prints IOPS, mean and p99 latency and the
# server's CPU per write (/proc/PID/stat around the job). Prints one line per run; the ratio to
# no snapshots is only meaningful within a round on a noisy machine.
#
#   bash bench/ab-randwrite.sh A_CHECKOUT [B_CHECKOUT]     # checkouts with dist/ built
#   ROUNDS=3 COUNTS="0 1 32" bash bench/ab-randwrite.sh . /tmp/old-checkout
#
# A checkout may be a `git worktree add` of another commit with node_modules and
# native/build/Release linked from this one (then `npx tsc -p tsconfig.json` in it). The two builds
# must share the on-disk format version (one template pool serves both). Needs root, fio, FUSE.
# LUNFS_NODE_FLAGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") is passed to each server's node.
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,14p' "$0"; exit 2; }
CHECKOUTS=("$@")
ROUNDS=${ROUNDS:-2}
COUNTS=${COUNTS:-"0 1 32"}
SHM=${LUNFS_SHM:-/dev/shm}
WORK=$(mktemp -d /tmp/lunfs-ab.XXXXXX)
TEMPLATE="$SHM/lunfs-ab-template.$$"
POOL="$SHM/lunfs-ab-pool.$$"
SERVER=""
MNT=""
cleanup() {
  set +e
  [ -n "$SERVER" ] && kill -TERM "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  [ -n "$MNT" ] && mountpoint -q "$MNT" && fusermount -u -z "$MNT"
  rm -rf --one-file-system "$WORK" "$TEMPLATE" "$POOL"
}
trap cleanup EXIT
for checkout in "${CHECKOUTS[@]}"; do
  [ -f "$checkout/dist/bin.js" ] || { echo "ab-randwrite: $checkout/dist/bin.js missing (build it first)" >&2; exit 2; }
done

up() { # BIN DIR -> SERVER, MNT
  MNT=$(mktemp -d "$WORK/mnt.XXXX")
  local log="$MNT.log"
  # shellcheck disable=SC2086 # LUNFS_NODE_FLAGS is a list of flags
  node ${LUNFS_NODE_FLAGS:-} "$1" mount "$2" "$MNT" >"$log" 2>&1 &
  SERVER=$!
  until grep -q 'mounted at' "$log"; do
    kill -0 "$SERVER" 2>/dev/null || { echo "ab-randwrite: mount failed: $(tail -n 2 "$log")" >&2; exit 1; }
    sleep 0.1
  done
}
down() {
  kill -TERM "$SERVER"; wait "$SERVER" || true
  SERVER=""; rmdir "$MNT" 2>/dev/null || true; MNT=""
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

first_bin="${CHECKOUTS[0]}/dist/bin.js"
node "$first_bin" pool create "$TEMPLATE" --drives 4 --drive-size $((1700 << 20)) --raid "${RAID:-0}" >/dev/null
node "$first_bin" lun create "$TEMPLATE" lun0 --size $((1 << 30)) >/dev/null
up "$first_bin" "$TEMPLATE"
head -c $((1 << 30)) /dev/urandom | dd of="$MNT/luns/lun0" bs=1M oflag=direct conv=notrunc,fsync status=none
down

ticks_per_s=$(getconf CLK_TCK)
for ((round = 1; round <= ROUNDS; round++)); do
  for count in $COUNTS; do
    for checkout in "${CHECKOUTS[@]}"; do
      rm -rf "$POOL"; cp -a --sparse=always "$TEMPLATE" "$POOL"
      up "$checkout/dist/bin.js" "$POOL"
      for ((s = 0; s < count; s++)); do touch "$MNT/control/snapshot/lun0@s$s"; done
      c0=$(cpu_ticks "$SERVER")
      fio --name=ab --filename="$MNT/luns/lun0" --ioengine=psync --iodepth=1 --direct=1 --randrepeat=1 \
          --rw=randwrite --bs=4k --size=1g --io_size=200m --runtime=20 --end_fsync=1 \
          --output-format=json --output="$WORK/fio.json" >/dev/null
      c1=$(cpu_ticks "$SERVER")
      node -e '
        const [file, label, count, ticks, hz] = process.argv.slice(1);
        const w = JSON.parse(require("fs").readFileSync(file, "utf8")).jobs[0].write;
        const cpu = (Number(ticks) * 1e6 / Number(hz)) / w.total_ios;
        console.log(`${label}  snapshots=${count}  iops=${w.iops.toFixed(0)}  lat=${(w.lat_ns.mean / 1e3).toFixed(1)}us  p99=${(w.clat_ns.percentile["99.000000"] / 1e3).toFixed(0)}us  ios=${w.total_ios}  server_cpu=${cpu.toFixed(1)}us/write`);
      ' "$WORK/fio.json" "round $round $checkout" "$count" $((c1 - c0)) "$ticks_per_s"
      down
    done
  done
done
