#!/usr/bin/env bash
# lunfs migrate (issue 16), measured on its own: `bash bench/migrate.sh` (as root, after `make
# build`; fio needed). Not yet part of bench/run.sh. Every figure is compared with one of the same
# run, on the same mount:
#   - migration MB/s: a fully written LUN (MIG_LUN_SIZE, default 1G) migrated to a file on /dev/shm
#     with no other I/O (`lunfs migrate DIR lun0 --to FILE`, wall time of the command, which starts
#     the copier process), against fio seqread (psync, bs 1M, O_DIRECT) of the LUN;
#   - fio randwrite4k (psync, iodepth 1, O_DIRECT, MIG_RUNTIME s) on the LUN while migrations run
#     back to back (each to a new file, --restart), against the same job with nothing else running.
# Pool: RAID-0 of 4 sparse 1 GiB drive files on /dev/shm, `lunfs mount --front native`.
set -euo pipefail
cd "$(dirname "$0")/.."
LUNFS=./bin/lunfs
SIZE=${MIG_LUN_SIZE:-1G}
RUNTIME=${MIG_RUNTIME:-20}
WORK=$(mktemp -d /dev/shm/lunfs-migrate-bench-XXXXXX)
MNT=$WORK/mnt
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  mountpoint -q "$MNT" 2>/dev/null && fusermount -uz "$MNT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"$LUNFS" pool create "$WORK/pool" --drives 4 --drive-size 1G --raid 0 >/dev/null
"$LUNFS" lun create "$WORK/pool" lun0 --size "$SIZE" >/dev/null
mkdir -p "$MNT"
"$LUNFS" mount "$WORK/pool" "$MNT" --front native >"$WORK/mount.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do [ -e "$MNT/luns/lun0" ] && break; sleep 0.1; done
LUN=$MNT/luns/lun0
fio_json() { fio --output-format=json "$@" 2>/dev/null; }
fio_json --name=fill --filename="$LUN" --rw=write --bs=1M --ioengine=psync --direct=1 \
  --size="$SIZE" --end_fsync=1 >/dev/null
seqread=$(fio_json --name=seq --filename="$LUN" --rw=read --bs=1M --ioengine=psync --direct=1 \
  --size="$SIZE" | node -e 'const j=JSON.parse(require("fs").readFileSync(0));console.log((j.jobs[0].read.bw_bytes/1e6).toFixed(0))')
start=$(date +%s.%N)
"$LUNFS" migrate "$WORK/pool" lun0 --to "$WORK/target0.img" >"$WORK/m0.txt" 2>/dev/null
end=$(date +%s.%N)
bytes=$(stat -c %s "$WORK/target0.img")
migrate_mbs=$(node -e "console.log(($bytes/1e6/($end-$start)).toFixed(0))")
randwrite() {
  fio_json --name=rw --filename="$LUN" --rw=randwrite --bs=4k --ioengine=psync --direct=1 \
    --size="$SIZE" --time_based --runtime="$RUNTIME" |
    node -e 'const j=JSON.parse(require("fs").readFileSync(0)).jobs[0].write;console.log(j.iops.toFixed(0), (j.clat_ns.percentile["99.000000"]/1000).toFixed(0))'
}
read -r idle_iops idle_p99 < <(randwrite)
(
  n=0
  while [ ! -e "$WORK/stop" ]; do
    n=$((n + 1))
    "$LUNFS" migrate "$WORK/pool" lun0 --to "$WORK/t$n.img" --restart >>"$WORK/mloop.txt" 2>/dev/null || true
    rm -f "$WORK/t$n.img"
  done
) &
LOOP=$!
sleep 1
read -r busy_iops busy_p99 < <(randwrite)
touch "$WORK/stop"
wait "$LOOP"
migrations=$(grep -c 'migrated to' "$WORK/mloop.txt" || true)
pauses=$(grep -o 'held writes for [0-9]* ms' "$WORK/mloop.txt" "$WORK/m0.txt" | grep -o '[0-9]* ms' | tr '\n' ' ')
echo "machine: $(nproc) vCPU, $(uname -r); lunfs $(git rev-parse --short HEAD)"
echo "LUN $SIZE, RAID-0 of 4 drive files on /dev/shm, --front native"
echo "seqread of the LUN: $seqread MB/s"
echo "migration alone: $migrate_mbs MB/s ($(node -e "console.log(($migrate_mbs/$seqread).toFixed(2))")x seqread); $(tail -1 "$WORK/m0.txt")"
echo "randwrite4k idle: $idle_iops IOPS, p99 $idle_p99 us"
echo "randwrite4k during migrations: $busy_iops IOPS, p99 $busy_p99 us ($(node -e "console.log(($busy_iops/$idle_iops).toFixed(2))")x idle; $migrations migrations ran)"
echo "final-pass write pauses (ms): $pauses"
