#!/usr/bin/env bash
# lunfs demo (`make demo`, after the build): a pool of 4 sparse 2G file drives in ./demo
# (RAID-5 by default; RAID=1 or RAID=0 make demo for mirroring or striping), a 1G LUN `db` served
# through FUSE at ./demo/mnt, a loop device on it with ext4 mounted at ./demo/data, files written
# and checked, a snapshot taken with ext4 mounted (touch control/snapshot/db@demo), files changed,
# the snapshot loop-mounted read-only and checked against the checksums of the snapshot instant;
# then (RAID-1/5) a drive file deleted under the running mount, files written and read degraded,
# the drive replaced and rebuilt with `lunfs drive replace`; a clean stop, a restart in a new
# process, and every checksum (LUN and snapshot) again.
# Run as root from anywhere; it works in the repository root. A trap always unmounts, detaches
# and stops what the demo started, also on error or Ctrl-C. The pool stays in ./demo afterwards
# (`./bin/lunfs status demo`; `make clean` removes it).

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/demo
MNT=$DEMO/mnt
DATA=$DEMO/data
LOG=$DEMO/mount.log
SNAP=$DEMO/snapshot
LOOP_RECORD=$DEMO/loop-device   # "DEVICE IDENTITY" of the loop device we attached
LUNFS=./bin/lunfs
RAID=${RAID:-5}

SERVER_PID=""
LOOP=""
SNAP_LOOP=""

say() { printf 'demo: %s\n' "$*"; }

is_mounted() { awk -v mountpoint="$1" '$2 == mountpoint { found = 1 } END { exit !found }' /proc/mounts; }

# An attached loop device's disk sequence number, which the kernel bumps at every attach and detach
# (empty if it is not attached). It identifies our attachment even once the FUSE server below is
# dead and the kernel can no longer stat the backing file.
loop_identity() {
  local sys=/sys/block/${1#/dev/}
  if [[ -r $sys/loop/backing_file ]]; then cat "$sys/diskseq" 2>/dev/null || true; fi
}

detach_loop() {
  [[ -n $LOOP ]] || return 0
  local device=${LOOP%% *} identity=${LOOP##* }
  # Only if the device still has our backing file: its number may have been reused by someone else.
  if [[ $(loop_identity "$device") == "$identity" ]]; then losetup -d "$device"; fi
  LOOP=""
  rm -f "$LOOP_RECORD"
}

detach_snapshot_loop() {
  [[ -n $SNAP_LOOP ]] || return 0
  local device=${SNAP_LOOP%% *} identity=${SNAP_LOOP##* }
  if [[ $(loop_identity "$device") == "$identity" ]]; then losetup -d "$device"; fi
  SNAP_LOOP=""
}

# Stops a `lunfs mount` process: SIGTERM (flush, unmount, clean checkpoint), SIGKILL after 60 s.
stop_server() {
  local pid=$1 status=0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 600); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "lunfs mount (pid $pid) did not stop after SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    status=1
  fi
  if [[ $pid == "$SERVER_PID" ]]; then
    wait "$pid" 2>/dev/null || status=$?
    SERVER_PID=""
  fi
  if is_mounted "$MNT"; then fusermount -uz "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  return "$status"
}

start_server() {
  : > "$LOG"
  # In its own session: a Ctrl-C reaches this script, whose trap stops the server in the right order.
  setsid "$LUNFS" mount "$DEMO" "$MNT" >> "$LOG" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 300); do
    if grep -q 'mounted at' "$LOG"; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      SERVER_PID=""
      say "lunfs mount failed:"; cat "$LOG" >&2
      return 1
    fi
    sleep 0.1
  done
  say "lunfs mount not ready after 30 s:"; cat "$LOG" >&2
  return 1
}

# Checks recorded sha256 sums (default: the LUN's first files) against a directory; names any mismatch.
verify_checksums() {
  local when=$1 directory=${2:-$DATA} sums=${3:-$DEMO/checksums.sha256}
  if ! (cd "$directory" && sha256sum --check --quiet "$sums"); then
    say "checksum MISMATCH $when (the lines above name the files)"
    return 1
  fi
}

# The snapshot file on a read-only loop device, its ext4 mounted read-only without journal replay.
mount_snapshot() {
  local device
  device=$(losetup -r -f --show "$MNT/snapshots/db@demo")
  SNAP_LOOP="$device $(loop_identity "$device")"
  mkdir -p "$SNAP"
  mount -o ro,noload "$device" "$SNAP"
}

unmount_snapshot() {
  umount "$SNAP"
  detach_snapshot_loop
}

attach_ext4() {
  local device
  device=$(losetup -f --show "$MNT/luns/db")
  LOOP="$device $(loop_identity "$device")"
  echo "$LOOP" > "$LOOP_RECORD"
}

# Everything undone in the safe order: ext4 (lazily if the FUSE server below is gone), the loop
# device, the server, a stale FUSE mount.
cleanup() {
  local status=$?
  set +e
  if is_mounted "$DATA"; then umount "$DATA" 2>/dev/null || umount -l "$DATA"; fi
  if is_mounted "$SNAP"; then umount "$SNAP" 2>/dev/null || umount -l "$SNAP"; fi
  detach_loop
  detach_snapshot_loop
  if [[ -n $SERVER_PID ]]; then stop_server "$SERVER_PID"; fi
  if is_mounted "$MNT"; then fusermount -uz "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  if [[ $status -eq 130 || $status -eq 143 ]]; then
    say "interrupted; everything the demo started is stopped"
  elif [[ $status -ne 0 ]]; then
    say "FAILED (exit $status); everything the demo started is stopped"
    [[ -s $LOG ]] && { say "last lines of $LOG:"; tail -n 5 "$LOG" >&2; }
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftovers of an earlier demo that was interrupted before its trap could run (kill -9, reboot of
# the shell...): its ext4 mount, loop device, server and FUSE mount.
clean_leftovers() {
  local found=0 pid record device identity
  if is_mounted "$DATA"; then found=1; umount -l "$DATA"; fi
  if is_mounted "$SNAP"; then found=1; umount -l "$SNAP"; fi
  if [[ -f $LOOP_RECORD ]]; then
    read -r device identity < "$LOOP_RECORD" || true
    if [[ -n ${device:-} && $(loop_identity "$device") == "${identity:-x}" ]]; then found=1; losetup -d "$device" || true; fi
  fi
  while read -r device record; do
    if [[ $record == "$MNT"/* ]]; then found=1; losetup -d "$device" || true; fi
  done < <(losetup --list --noheadings --output NAME,BACK-FILE 2>/dev/null)
  if [[ -f $DEMO/lunfs.lock ]]; then
    pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$DEMO/lunfs.lock")
    if [[ -n $pid && -r /proc/$pid/cmdline ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q 'lunfs.* mount'; then
      found=1; stop_server "$pid" || true
    fi
  fi
  if is_mounted "$MNT"; then found=1; fusermount -uz "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  if [[ $found -eq 1 ]]; then say "cleaned up leftovers of an earlier, interrupted demo"; fi
  if awk -v prefix="$DEMO/" 'index($2, prefix) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    say "something is still mounted under $DEMO; not removing it"; return 1
  fi
  rm -rf "$DEMO"
}

[[ $(id -u) -eq 0 ]] || { echo "demo: run as root (FUSE, losetup and mount need it)" >&2; exit 1; }
[[ -f dist/bin.js ]] || { echo "demo: dist/bin.js is missing: run \`make build\` first" >&2; exit 1; }

clean_leftovers

# ---- pool and LUN
say "creating a RAID-$RAID pool of 4 sparse 2G file drives in ./demo"
"$LUNFS" pool create "$DEMO" --drives 4 --drive-size 2G --raid "$RAID" > /dev/null
say "creating LUN db (1G, thin: nothing allocated yet)"
"$LUNFS" lun create "$DEMO" db --size 1G > /dev/null

# ---- mount, loop device, ext4
start_server
say "lunfs mount running (pid $SERVER_PID): ./demo/mnt/luns/db is the LUN as a file"
attach_ext4
say "attached ${LOOP%% *} to ./demo/mnt/luns/db"
mkfs.ext4 -q "${LOOP%% *}"
mkdir -p "$DATA"
mount "${LOOP%% *}" "$DATA"
say "made ext4 on ${LOOP%% *} and mounted it at ./demo/data"

# ---- write files and record their checksums
mkdir -p "$DATA/files"
{ echo "lunfs demo, written $(date -u +%FT%TZ)"; echo "RAID-$RAID pool, LUN db"; } > "$DATA/files/notes.txt"
for size in 1 8 32; do
  head -c "${size}M" /dev/urandom > "$DATA/files/random-${size}M.bin"
done
(cd "$DATA" && sha256sum files/*) > "$DEMO/checksums.sha256"
sync -f "$DATA"
FILES=$(wc -l < "$DEMO/checksums.sha256")
say "wrote $FILES files (41 MiB) and recorded their sha256 in ./demo/checksums.sha256"

# Read back through a fresh ext4 mount (no cached file pages).
umount "$DATA"
mount "${LOOP%% *}" "$DATA"
verify_checksums "on read-back"
say "read back $FILES files: every checksum matches"

# ---- the pool as lunfs sees it (through the running mount's control socket)
say "./bin/lunfs status demo:"
"$LUNFS" status demo | sed 's/^/    /'

# ---- a snapshot while ext4 is mounted, then the LUN changes; the snapshot keeps the old files
sync -f "$DATA"
touch "$MNT/control/snapshot/db@demo"
say "took snapshot db@demo (touch ./demo/mnt/control/snapshot/db@demo) with ext4 mounted"
dd if=/dev/urandom of="$DATA/files/random-8M.bin" bs=1M count=8 conv=notrunc,fsync status=none # in place: the snapshot keeps the originals
rm "$DATA/files/random-1M.bin"
echo "added after the snapshot" > "$DATA/files/added.txt"
(cd "$DATA" && sha256sum files/*) > "$DEMO/checksums-after.sha256"
sync -f "$DATA"
say "changed the LUN: overwrote random-8M.bin in place, removed random-1M.bin, added added.txt"
mount_snapshot
verify_checksums "in the snapshot" "$SNAP" "$DEMO/checksums.sha256"
[[ ! -e $SNAP/files/added.txt ]] || { say "the snapshot shows a file added after it"; exit 1; }
say "snapshot ./demo/mnt/snapshots/db@demo, loop-mounted read-only (ro,noload): the $FILES files of the snapshot instant, every checksum matches"
unmount_snapshot
verify_checksums "on the LUN after the change" "$DATA" "$DEMO/checksums-after.sha256"
say "./bin/lunfs snapshot ls demo:"
"$LUNFS" snapshot ls demo | sed 's/^/    /'

# ---- a drive lost under the running mount, then replaced and rebuilt (RAID-1 and RAID-5)
if [[ $RAID != 0 ]]; then
  rm "$DEMO/drive-2.img"
  say "deleted ./demo/drive-2.img while ext4 is mounted on the LUN"
  for _ in $(seq 50); do
    [[ $("$LUNFS" status demo --json | node -e 'let t="";process.stdin.on("data",d=>t+=d).on("end",()=>console.log(JSON.parse(t).pool.state))') == degraded ]] && break
    sleep 0.1
  done
  head -c 16M /dev/urandom > "$DATA/files/written-degraded.bin"
  sync -f "$DATA"
  (cd "$DATA" && sha256sum files/*) > "$DEMO/checksums-after.sha256"
  umount "$DATA"
  mount "${LOOP%% *}" "$DATA"
  verify_checksums "degraded" "$DATA" "$DEMO/checksums-after.sha256"
  say "the pool is degraded (drive 2 failed): wrote 16 MiB more and read every file back, checksums match"
  "$LUNFS" status demo | sed -n '1,2p;/^drives:/,/^checksums:/p' | sed 's/^/    /'
  "$LUNFS" drive replace demo 2 "$DEMO/drive-2-new.img"
  say "lunfs drive replace demo 2 ./demo/drive-2-new.img: rebuilt while the LUN stayed mounted"
  [[ $("$LUNFS" status demo --json | node -e 'let t="";process.stdin.on("data",d=>t+=d).on("end",()=>console.log(JSON.parse(t).pool.state))') == online ]] || { say "the pool is not online after the rebuild"; exit 1; }
  "$LUNFS" scrub demo | sed 's/^/    /'
  umount "$DATA"
  mount "${LOOP%% *}" "$DATA"
  verify_checksums "after the rebuild" "$DATA" "$DEMO/checksums-after.sha256"
  say "after the rebuild: the pool is online again, scrub is clean, every checksum matches"
fi

# ---- clean stop: ext4, loop device, SIGTERM to lunfs mount
umount "$DATA"
detach_loop
pid=$SERVER_PID
stop_server "$SERVER_PID"
grep -q 'unmounted cleanly' "$LOG" || { say "lunfs mount did not report a clean unmount"; exit 1; }
say "stopped: ext4 unmounted, loop device detached, lunfs mount (pid $pid) flushed and unmounted cleanly"

# ---- restart in a new process and verify
start_server
say "lunfs mount restarted (pid $SERVER_PID)"
attach_ext4
if ! fsck_output=$(fsck.ext4 -fn "${LOOP%% *}" 2>&1); then
  echo "$fsck_output" >&2
  say "fsck.ext4 found problems"
  exit 1
fi
say "fsck.ext4 -fn: clean"
mount "${LOOP%% *}" "$DATA"
verify_checksums "after the restart" "$DATA" "$DEMO/checksums-after.sha256"
say "after the restart: every checksum of the LUN's files matches"
mount_snapshot
verify_checksums "in the snapshot after the restart" "$SNAP" "$DEMO/checksums.sha256"
say "after the restart: the snapshot still holds the $FILES files of its instant"
unmount_snapshot

umount "$DATA"
detach_loop
stop_server "$SERVER_PID"
say "stopped cleanly; the pool stays in ./demo (make clean removes it)"
echo "demo succeeded: RAID-$RAID pool, LUN db, ext4 data and its snapshot intact across a clean restart"
