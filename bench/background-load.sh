#!/usr/bin/env bash
# Rebuild and scrub under a foreground load (issue 14): what a 4 KiB random-read job keeps of its
# idle IOPS while lunfs scrubs the pool, and while it rebuilds a replaced drive.
#
# A RAID-$RAID pool of 3 sparse drive files of DRIVE_MIB MiB on /dev/shm, one LUN filling most of
# it, written through the mount. fio randread4k (psync, iodepth 1, O_DIRECT, 4 KiB reads over the
# LUN, time based) runs with an IOPS log (log_avg_msec=250): first IDLE_S seconds alone (the idle
# figure), then while `lunfs scrub` runs, then while `lunfs drive replace` rebuilds drive 1 (its
# file is deleted first; lunfs notices and fails it), then IDLE_S seconds alone again (the idle
# figure is the mean of both idle windows). The figure under a job is the mean of the
# log's samples that fall inside the job's window (start to end, from control/status). Prints one
# line per phase and, with OUT=FILE, a JSON record.
#
#   bash bench/background-load.sh                 # as root; about 2 min
#   RAID=1 DRIVE_MIB=1024 bash bench/background-load.sh
set -euo pipefail
export LC_ALL=C

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
BIN=${LUNFS_BIN:-$REPO/dist/bin.js}
RAID=${RAID:-5}
DRIVE_MIB=${DRIVE_MIB:-1024}
IDLE_S=${IDLE_S:-10}
SHM=${LUNFS_SHM:-/dev/shm}
WORK=$(mktemp -d "$SHM/lunfs-bg.XXXXXX")
POOL=$WORK/pool
MNT=$(mktemp -d /tmp/lunfs-bg-mnt.XXXXXX)
SERVER=""
FIO=""
log() { printf '[bg %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() {
  set +e
  [ -n "$FIO" ] && kill "$FIO" 2>/dev/null
  [ -n "$SERVER" ] && kill -TERM "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  mountpoint -q "$MNT" && fusermount -u -z "$MNT"
  rmdir "$MNT" 2>/dev/null
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
lunfs() { node "$BIN" "$@"; }
status() { cat "$MNT/control/status"; }
now_ms() { date +%s%3N; }

case $RAID in 1) data_drives=1 ;; 5) data_drives=2 ;; *) echo "RAID must be 1 or 5" >&2; exit 2 ;; esac
lun_mib=$(( DRIVE_MIB * data_drives * 85 / 100 ))
lunfs pool create "$POOL" --drives 3 --drive-size $(( DRIVE_MIB << 20 )) --raid "$RAID" >/dev/null
lunfs lun create "$POOL" lun0 --size $(( lun_mib << 20 )) >/dev/null
node "$BIN" mount "$POOL" "$MNT" >"$WORK/mount.log" 2>&1 &
SERVER=$!
until grep -q 'mounted at' "$WORK/mount.log"; do
  kill -0 "$SERVER" 2>/dev/null || { echo "mount failed: $(tail -n 3 "$WORK/mount.log")" >&2; exit 1; }
  sleep 0.1
done
log "RAID-$RAID, 3 drives of $DRIVE_MIB MiB, LUN $lun_mib MiB: writing it"
head -c $(( lun_mib << 20 )) /dev/urandom | dd of="$MNT/luns/lun0" bs=1M oflag=direct conv=notrunc,fsync status=none

# fio in the background for the whole measurement; its IOPS log is cut into windows afterwards.
fio_start=$(now_ms)
fio --name=bg --filename="$MNT/luns/lun0" --ioengine=psync --iodepth=1 --direct=1 --rw=randread --bs=4k \
    --size=$(( lun_mib << 20 )) --time_based --runtime=600 --randrepeat=1 \
    --write_iops_log="$WORK/iops" --log_avg_msec=250 --output-format=json --output="$WORK/fio.json" >/dev/null 2>&1 &
FIO=$!
sleep 1
idle_start=$(now_ms); sleep "$IDLE_S"; idle_end=$(now_ms)

wait_job() { # KIND -> prints the time (ms) once no job of KIND runs; one process polls, so that
  # the polling itself takes next to no CPU from the load being measured
  node -e '
    const fs = require("fs");
    const [file, kind] = process.argv.slice(1);
    const tick = () => {
      const s = JSON.parse(fs.readFileSync(file, "utf8"));
      if (s.jobs.some((j) => j.kind === kind && j.state === "running")) return setTimeout(tick, 100);
      console.log(Date.now());
    };
    tick();
  ' "$MNT/control/status" "$1"
}
log "scrub"
scrub_start=$(now_ms)
lunfs scrub "$POOL" --no-wait >/dev/null
scrub_end=$(wait_job scrub)

log "drive 1 deleted; waiting for lunfs to fail it"
drive1=$(status | node -e 'const s = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(s.drives[1].path)')
rm -f "$drive1"
node -e '
  const fs = require("fs");
  const tick = () => (JSON.parse(fs.readFileSync(process.argv[1], "utf8")).drives[1].state === "failed" ? undefined : setTimeout(tick, 100));
  tick();
' "$MNT/control/status"
log "rebuild onto a new drive"
rebuild_start=$(now_ms)
lunfs drive replace "$POOL" 1 "$WORK/new-drive.img" --no-wait >/dev/null
rebuild_end=$(wait_job rebuild)
sleep 1
idle2_start=$(now_ms); sleep "$IDLE_S"; idle2_end=$(now_ms)
status > "$WORK/status-end.json"
kill -INT "$FIO"; wait "$FIO" || true; FIO=""

node - "$WORK/iops_iops.1.log" "$WORK/status-end.json" "$fio_start" "$idle_start" "$idle_end" "$scrub_start" "$scrub_end" "$rebuild_start" "$rebuild_end" "$idle2_start" "$idle2_end" "$RAID" "$DRIVE_MIB" "${OUT:-}" <<'EOF'
const fs = require('fs');
const [file, statusFile, fioStart, idleStart, idleEnd, scrubStart, scrubEnd, rebuildStart, rebuildEnd, idle2Start, idle2End, raid, driveMib, out] = process.argv.slice(2);
const samples = fs.readFileSync(file, 'utf8').trim().split('\n').map((line) => line.split(',').map(Number)).map(([t, v]) => ({ at: Number(fioStart) + t, iops: v }));
const mean = (from, to) => {
  // samples are averages over the 250 ms before their time stamp: keep those wholly inside
  const inside = samples.filter((s) => s.at - 250 >= Number(from) && s.at <= Number(to));
  return inside.length ? { iops: inside.reduce((a, s) => a + s.iops, 0) / inside.length, samples: inside.length } : { iops: NaN, samples: 0 };
};
// Idle before the jobs and after them (the pool healthy again), averaged: the figure drifts
// as the read cache fills.
const idleBefore = mean(idleStart, idleEnd);
const idleAfter = mean(idle2Start, idle2End);
const idle = { iops: (idleBefore.iops + idleAfter.iops) / 2 };
const scrub = mean(scrubStart, scrubEnd);
const rebuild = mean(rebuildStart, rebuildEnd);
const jobs = JSON.parse(fs.readFileSync(statusFile, 'utf8')).jobs;
const paused = (kind) => (jobs.find((job) => job.kind === kind) || {}).pausedMs;
const record = {
  raid: Number(raid), driveMiB: Number(driveMib),
  idleIops: Math.round(idle.iops), idleBefore: Math.round(idleBefore.iops), idleAfter: Math.round(idleAfter.iops),
  scrub: { pausedMs: paused('scrub'), seconds: (scrubEnd - scrubStart) / 1000, iops: Math.round(scrub.iops), ratio: scrub.iops / idle.iops, samples: scrub.samples },
  rebuild: { pausedMs: paused('rebuild'), seconds: (rebuildEnd - rebuildStart) / 1000, iops: Math.round(rebuild.iops), ratio: rebuild.iops / idle.iops, samples: rebuild.samples, mbPerS: Number(driveMib) / ((rebuildEnd - rebuildStart) / 1000) },
};
console.log(`RAID-${raid}: randread4k idle ${record.idleIops} IOPS (before the jobs ${record.idleBefore}, after ${record.idleAfter})`);
console.log(`  during scrub   (${record.scrub.seconds.toFixed(1)} s, paused ${((record.scrub.pausedMs ?? 0) / 1000).toFixed(1)} s): ${record.scrub.iops} IOPS, ${record.scrub.ratio.toFixed(2)}x idle`);
console.log(`  during rebuild (${record.rebuild.seconds.toFixed(1)} s, paused ${((record.rebuild.pausedMs ?? 0) / 1000).toFixed(1)} s, ${record.rebuild.mbPerS.toFixed(0)} MB/s of drive): ${record.rebuild.iops} IOPS, ${record.rebuild.ratio.toFixed(2)}x idle`);
if (out) fs.appendFileSync(out, JSON.stringify(record) + '\n');
EOF
