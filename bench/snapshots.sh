#!/usr/bin/env bash
# Snapshot measurements of `make bench` (bench/run.sh calls this after peers.sh; SNAPSHOTS=0
# skips it, SNAPSHOTS_ONLY=1 runs only this). Every figure is compared with the same measurement
# without snapshots taken in the same run:
#
#   a  randwrite4k (peers.sh's job: fio psync iodepth 1, 4 KiB random writes over the whole LUN,
#      RANDW_MIB MiB or RAND_RUNTIME s, end_fsync) on a fully written 1 GiB LUN with 0, 1 and
#      SNAP_COUNT (32) snapshots taken just before the job; each on a fresh copy of a prefilled
#      template pool (cold cache), SNAP_REPEAT rounds interleaved; also the qcow2 peer
#      (qemu-storage-daemon FUSE export) without and with one internal snapshot (qemu-img
#      snapshot -c) when SNAP_QCOW2=1. Each lunfs run also records the originals preserved
#      (control/status luns[].preservations) and the report gives the server CPU per
#      preservation: the run's CPU beyond what as many writes cost without snapshots, over them.
#   b  sequential read (bs=1M, O_DIRECT, the whole snapshot) of the oldest and the newest of
#      SNAP_COUNT snapshots, taken with a random-write job (4 KiB writes to SNAP_CHANGE_PCT % of
#      the LUN's 128 KiB chunks, a new seed each time, end_fsync) after each snapshot: the oldest
#      reads mostly preserved copies in the target, the newest mostly the live LUN; the live LUN
#      itself is read alongside as the no-snapshot figure; SNAP_READ_REPEAT rounds interleaved.
#   c  snapshot creation latency (touch MNT/control/snapshot/LUN@NAME, timed open+close) on a
#      1 GiB LUN and on a SNAP_BIG_GIB (1024) GiB thin LUN (pool of 4 sparse drive files on
#      /dev/shm; first 1 GiB written and one 4 KiB write in every further GiB, so its map spans
#      the LUN), SNAP_CREATES creations every SNAP_INTERVAL_MS ms under a running fio randwrite 4k
#      load (psync iodepth 1, SNAP_LOAD_MIB MiB region, SNAP_LOAD_S s), plus the LUN's first
#      snapshot (idle; creates the target volume).
#   d  the same load jobs with a per-I/O completion latency log: the longest write latency while
#      snapshots were being created, versus the same job on the same kind of pool without any.
#
#   bash bench/snapshots.sh                     # as root, ~6 min on 2 cores; SNAP_QUICK=1: ~2.5 min
#   SNAPSHOTS_ONLY=1 bash bench/run.sh          # through run.sh: updates BENCHMARKS.md's section
#
# Environment (all optional): SNAP_DIR (where records go; run.sh passes <run>/snapshots),
#   SNAP_QUICK (0; 1 = short settings for a smoke test), SIZE_MIB (1024), RANDW_MIB (200),
#   RAND_RUNTIME (20), SNAP_PARTS ("a b c"; c includes d), SNAP_COUNT (32), SNAP_REPEAT (2),
#   SNAP_QCOW2 (1), SNAP_CHANGE_PCT (10), SNAP_READ_REPEAT (3), SNAP_BIG_GIB (1024),
#   SNAP_LOAD_S (15), SNAP_LOAD_MIB (256), SNAP_CREATES (6), SNAP_INTERVAL_MS (2000),
#   SNAP_KEEP_LOGS (0: per-I/O latency logs are summarised and deleted), LUNFS_BIN, LUNFS_SHM
#   (/dev/shm), LUNFS_CACHE_SIZE, LUNFS_NODE_FLAGS.
set -euo pipefail
export LC_ALL=C

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
log() { printf '[snap %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# What the caller set (for the report's command line), before defaults are filled in.
OVERRIDES=()
for v in SNAP_QUICK SIZE_MIB RANDW_MIB RAND_RUNTIME SNAP_PARTS SNAP_COUNT SNAP_REPEAT SNAP_QCOW2 SNAP_CHANGE_PCT \
         SNAP_READ_REPEAT SNAP_BIG_GIB SNAP_LOAD_S SNAP_LOAD_MIB SNAP_CREATES SNAP_INTERVAL_MS LUNFS_CACHE_SIZE LUNFS_NODE_FLAGS; do
  [ -n "${!v+x}" ] && OVERRIDES+=("$v=${!v}")
done

SNAP_QUICK=${SNAP_QUICK:-0}
if [ "$SNAP_QUICK" = 1 ]; then
  : "${RANDW_MIB:=48}" "${RAND_RUNTIME:=5}" "${SNAP_REPEAT:=1}" "${SNAP_READ_REPEAT:=1}" \
    "${SNAP_LOAD_S:=6}" "${SNAP_CREATES:=3}" "${SNAP_INTERVAL_MS:=1500}" "${SNAP_CHANGE_PCT:=5}"
fi
SIZE_MIB=${SIZE_MIB:-1024}
RANDW_MIB=${RANDW_MIB:-200}
RAND_RUNTIME=${RAND_RUNTIME:-20}
SNAP_PARTS=${SNAP_PARTS:-"a b c"}
SNAP_COUNT=${SNAP_COUNT:-32}
SNAP_REPEAT=${SNAP_REPEAT:-2}
SNAP_QCOW2=${SNAP_QCOW2:-1}
SNAP_CHANGE_PCT=${SNAP_CHANGE_PCT:-10}
SNAP_READ_REPEAT=${SNAP_READ_REPEAT:-3}
SNAP_BIG_GIB=${SNAP_BIG_GIB:-1024}
SNAP_LOAD_S=${SNAP_LOAD_S:-15}
SNAP_LOAD_MIB=${SNAP_LOAD_MIB:-256}
SNAP_CREATES=${SNAP_CREATES:-6}
SNAP_INTERVAL_MS=${SNAP_INTERVAL_MS:-2000}
SNAP_KEEP_LOGS=${SNAP_KEEP_LOGS:-0}
LUNFS_BIN=${LUNFS_BIN:-$REPO/dist/bin.js}
LUNFS_SHM=${LUNFS_SHM:-/dev/shm}
LUNFS_CACHE_SIZE=${LUNFS_CACHE_SIZE:-}
LUNFS_NODE_FLAGS=${LUNFS_NODE_FLAGS:-}
SNAP_DIR=${SNAP_DIR:-$REPO/.bench/snapshots-$(date -u +%Y%m%dT%H%M%SZ)}
LIB="$BENCH/snapshots-lib.mjs"

[ "$(id -u)" = 0 ] || die "run as root (drops caches, mounts FUSE)"
[ -f "$LUNFS_BIN" ] || die "lunfs is not built ($LUNFS_BIN missing)"
for c in fio node fusermount; do command -v "$c" >/dev/null || die "$c is missing (make bench installs fio and qemu)"; done
if [ "$SNAP_QCOW2" = 1 ] && [[ " $SNAP_PARTS " == *" a "* ]]; then
  command -v qemu-storage-daemon >/dev/null && command -v qemu-img >/dev/null \
    || { log "qemu-storage-daemon / qemu-img missing: the qcow2 peer is not measured"; SNAP_QCOW2=0; }
fi
SIZE_BYTES=$(( SIZE_MIB << 20 ))
CHUNK=131072
(( SNAP_LOAD_MIB > SIZE_MIB )) && SNAP_LOAD_MIB=$SIZE_MIB

mkdir -p "$SNAP_DIR"
SNAP_DIR=$(cd "$SNAP_DIR" && pwd)
RECS="$SNAP_DIR/snapshots.jsonl"
: > "$RECS"

# ---------------------------------------------------------------- cleanup
WORK=""; DATA=""
PIDS=(); MOUNTS=(); DIRS=()
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [ -n "$st" ] && [ "$st" != Z ]; }
is_mounted() { awk -v m="$1" '$2==m{f=1} END{exit !f}' /proc/mounts; }
stop_pid() { # pid: SIGTERM (lunfs flushes and unmounts), SIGKILL after 30 s
  local i
  alive "$1" || { wait "$1" 2>/dev/null || true; return 0; }
  kill -TERM "$1" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do alive "$1" || break; sleep 0.1; done
  if alive "$1"; then log "pid $1 ignored SIGTERM, SIGKILL"; kill -KILL "$1" 2>/dev/null || true; fi
  wait "$1" 2>/dev/null || true
}
forget() { # pid: no longer ours to stop (its id may be reused)
  local x keep=()
  for x in "${PIDS[@]}"; do [ "$x" = "$1" ] || keep+=("$x"); done
  PIDS=("${keep[@]}")
}
cleanup() {
  local rc=$? p m d
  set +e
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  for m in "${MOUNTS[@]}"; do
    if is_mounted "$m"; then fusermount -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; fi
  done
  # --one-file-system: never descend into a mount point that failed to go away
  for d in "${DIRS[@]}"; do rm -rf --one-file-system "$d"; done
  [ -n "$DATA" ] && rm -rf --one-file-system "$DATA"
  [ -n "$WORK" ] && rm -rf --one-file-system "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK=$(mktemp -d /tmp/lunfs-snapbench.XXXXXX)
DATA=$(mktemp -d "$LUNFS_SHM/lunfs-snapbench.XXXXXX")

# ---------------------------------------------------------------- helpers
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
proc_cpu() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo ""; return; }; s=${s##*) }; set -- $s; echo $(( ${12} + ${13} )); }
CLK_TCK=$(getconf CLK_TCK)
drive_bytes() { # pool capacity bytes -> bytes per drive (RAID-0 over 4 drives), whole MiB
  echo $(( ( ($1 / 4) >> 20 ) << 20 ))
}

# lunfs_up DIR -> mounts the pool at $WORK/mnt-N; sets SRV_PID, MNT
MNT_N=0
lunfs_up() {
  local dir=$1 logf cache=() i
  MNT_N=$((MNT_N + 1)); MNT="$WORK/mnt-$MNT_N"; logf="$WORK/lunfs-$MNT_N.log"
  mkdir -p "$MNT"
  [ -n "$LUNFS_CACHE_SIZE" ] && cache=(--cache-size "$LUNFS_CACHE_SIZE")
  # shellcheck disable=SC2086
  # the front named, as for peers-extra-lunfs.sh's targets (not whatever --front auto finds)
  node $LUNFS_NODE_FLAGS "$LUNFS_BIN" mount "$dir" "$MNT" --front native "${cache[@]}" >"$logf" 2>&1 &
  SRV_PID=$!
  PIDS+=("$SRV_PID"); MOUNTS+=("$MNT")
  for ((i = 0; i < 600; i++)); do
    grep -q 'mounted at' "$logf" 2>/dev/null && return 0
    alive "$SRV_PID" || die "lunfs mount exited: $(tail -n 3 "$logf")"
    sleep 0.1
  done
  die "lunfs mount did not come up: $(tail -n 3 "$logf")"
}
lunfs_down() { # stops the current server; checks the clean unmount
  stop_pid "$SRV_PID"; forget "$SRV_PID"
  if is_mounted "$MNT"; then fusermount -u -z "$MNT" 2>/dev/null || true; fi
  grep -q 'unmounted cleanly' "$WORK/lunfs-$MNT_N.log" || log "WARNING: lunfs did not report a clean unmount: $(tail -n 2 "$WORK/lunfs-$MNT_N.log" | tr '\n' ' ')"
}

# make_template NAME LUN_BYTES POOL_BYTES PREFILL_BYTES SCATTER(0|1) -> $DATA/NAME (unmounted)
make_template() {
  local name=$1 lun=$2 cap=$3 prefill=$4 scatter=$5 dir="$DATA/$1"
  log "template $name: pool RAID-0 4 × $(( $(drive_bytes "$cap") >> 20 )) MiB sparse drives, LUN $((lun >> 20)) MiB, first $((prefill >> 20)) MiB written$([ "$scatter" = 1 ] && echo ', one 4 KiB write per further GiB')"
  node "$LUNFS_BIN" pool create "$dir" --drives 4 --drive-size "$(drive_bytes "$cap")" --raid 0 >/dev/null
  node "$LUNFS_BIN" lun create "$dir" lun0 --size "$lun" >/dev/null
  lunfs_up "$dir"
  dd if="$DATA/raw.img" of="$MNT/luns/lun0" bs=1M count=$((prefill >> 20)) oflag=direct conv=notrunc,fsync status=none
  if [ "$scatter" = 1 ] && (( lun > prefill + (1 << 30) )); then
    fio --name=scatter --filename="$MNT/luns/lun0" --ioengine=psync --direct=1 --rw=write:$(( (1 << 30) - 4096 )) \
        --bs=4k --offset="$prefill" --size=$(( lun - prefill )) --io_size=$(( ((lun - prefill) >> 30) * 4096 )) \
        --end_fsync=1 --output=/dev/null >/dev/null
  fi
  lunfs_down
}
# fresh_copy TEMPLATE -> COPY (a new pool dir on $LUNFS_SHM)
fresh_copy() {
  COPY=$(mktemp -d "$LUNFS_SHM/lunfs-snapbench.XXXXXX")
  DIRS+=("$COPY")
  cp -a --sparse=always "$DATA/$1/." "$COPY/"
}
drop_copy() { rm -rf "$COPY"; }

FIO_COMMON=(--ioengine=psync --iodepth=1 --numjobs=1 --direct=1 --invalidate=1 --randrepeat=1 --output-format=json)
randwrite4k_args() { # region -> peers.sh's randwrite4k job
  printf '%s\n' --rw=randwrite --bs=4k --size="$1" --io_size=$(( RANDW_MIB << 20 )) --runtime="$RAND_RUNTIME" --end_fsync=1
}
# run_fio TAG FILE SRV_PID RECORD_FIELDS... -- FIO_ARGS...: one fio job, one record
run_fio() {
  local tag=$1 file=$2 pid=$3 json="$SNAP_DIR/fio-$1.json" fields=() c0 c1 rc=0 w0 w1 cpu=""
  shift 3
  while [ $# -gt 0 ] && [ "$1" != -- ]; do fields+=("$1"); shift; done
  shift
  drop_caches
  c0=$(proc_cpu "$pid"); w0=$(date +%s.%N)
  fio --name="$tag" --filename="$file" "${FIO_COMMON[@]}" --output="$json" "$@" 2>"$WORK/fio.err" || rc=$?
  w1=$(date +%s.%N); c1=$(proc_cpu "$pid")
  # lunfs: the originals the job preserved (control/status, luns[0].preservations), for the CPU
  # one preservation costs
  if [ -n "${STATUS_OF:-}" ]; then
    fields+=("preservations=$(node -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); const p = s.luns[0].preservations; console.log(p ? `${p.count}` : "")' "$STATUS_OF/control/status" 2>/dev/null || true)")
    fields+=("batches=$(node -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); const p = s.luns[0].preservations; console.log(p ? `${p.batches}` : "")' "$STATUS_OF/control/status" 2>/dev/null || true)")
  fi
  [ -n "$c0" ] && [ -n "$c1" ] && cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/t}')
  local err=""
  [ $rc -ne 0 ] && err="fio rc=$rc: $(tr '\n' ' ' < "$WORK/fio.err" | cut -c1-200)"
  printf '  %-28s ' "$tag" >&2
  ERR=$err node "$LIB" rec "$RECS" "$json" "${fields[@]}" tag="$tag" srv_cpu_s="$cpu" \
    wall_s="$(awk -v a="$w0" -v b="$w1" 'BEGIN{printf "%.2f", b-a}')" >&2
}
take_snapshots() { # MNT PREFIX FIRST COUNT INTERVAL DELAY OUT
  node "$LIB" create "$1" lun0 "$2" "$3" "$4" "$5" "$6" "$7" >&2
}

qsd_up() { # image -> QSD_PID, QSD_FILE
  local mp="$WORK/qsd.img" pidf="$WORK/qsd.pid"
  : > "$mp"; rm -f "$pidf"
  qemu-storage-daemon \
    --blockdev "driver=file,node-name=file0,filename=$1,cache.direct=off" \
    --blockdev "driver=qcow2,node-name=disk0,file=file0" \
    --export "type=fuse,id=exp0,node-name=disk0,mountpoint=$mp,writable=on" \
    --pidfile "$pidf" --daemonize >>"$WORK/qsd.log" 2>&1 || die "qemu-storage-daemon failed: $(tail -n 3 "$WORK/qsd.log")"
  QSD_PID=$(cat "$pidf"); PIDS+=("$QSD_PID"); MOUNTS+=("$mp"); QSD_FILE=$mp
  local i
  for ((i = 0; i < 300; i++)); do [ "$(stat -c %s "$mp")" = "$SIZE_BYTES" ] && return 0; sleep 0.1; done
  die "qemu-storage-daemon export has the wrong size"
}
qsd_down() { stop_pid "$QSD_PID"; forget "$QSD_PID"; if is_mounted "$QSD_FILE"; then fusermount3 -u -z "$QSD_FILE" 2>/dev/null || umount -l "$QSD_FILE" 2>/dev/null || true; fi; }

# ---------------------------------------------------------------- run
START=$(date +%s)
DIST_SHA=$(cd "$(dirname "$LUNFS_BIN")" && find . -name '*.js' -type f | LC_ALL=C sort | xargs cat | sha1sum | cut -c1-12)
node "$BENCH/host-cpu.mjs" snapshot "$WORK/host-cpu.start.json" 2>/dev/null || true
LOAD_BEFORE=$(cat /proc/loadavg)
BIG_BYTES=$(( SNAP_BIG_GIB << 30 ))
# Space: the small pool holds the LUN plus the preserved copies (part b copies ~SNAP_CHANGE_PCT %
# of the LUN per snapshot); drive files are sparse, so only what is written takes memory.
SMALL_CAP=$(( SIZE_BYTES * 2 + SIZE_BYTES * SNAP_COUNT * SNAP_CHANGE_PCT / 100 * 3 / 2 ))
(( SMALL_CAP < SIZE_BYTES * 4 )) && SMALL_CAP=$(( SIZE_BYTES * 4 ))
BIG_CAP=$(( BIG_BYTES + BIG_BYTES / 5 ))
avail_kb=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
shm_kb=$(df -k --output=avail "$LUNFS_SHM" | tail -n 1 | tr -d ' ')
need_kb=$(( SIZE_MIB * 1024 * 9 ))
(( avail_kb > need_kb && shm_kb > need_kb )) || die "needs about $((need_kb >> 20)) GiB of memory and of $LUNFS_SHM (have $((avail_kb >> 20)) / $((shm_kb >> 20)) GiB); lower SIZE_MIB"
{
  [ ${#OVERRIDES[@]} -gt 0 ] && printf "%q " "${OVERRIDES[@]}"
  printf 'bash bench/snapshots.sh\n'
} > "$SNAP_DIR/command.txt"
log "records: $SNAP_DIR (parts: $SNAP_PARTS)"

log "raw image ${SIZE_MIB} MiB"
fio --name=fill --filename="$DATA/raw.img" --size=$SIZE_BYTES --rw=write --bs=1M --ioengine=psync --output=/dev/null >/dev/null 2>&1 \
  || die "fio fill failed"
make_template small "$SIZE_BYTES" "$SMALL_CAP" "$SIZE_BYTES" 0
if [[ " $SNAP_PARTS " == *" c "* ]]; then make_template big "$BIG_BYTES" "$BIG_CAP" "$SIZE_BYTES" 1; fi
if [ "$SNAP_QCOW2" = 1 ] && [[ " $SNAP_PARTS " == *" a "* ]]; then
  qemu-img convert -f raw -O qcow2 "$DATA/raw.img" "$DATA/base.qcow2" || die "qemu-img convert failed"
  CLUSTER=$(qemu-img info --output=json "$DATA/base.qcow2" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)["cluster-size"]))')
fi
rm -f "$DATA/raw.img"
t_setup=$(( $(date +%s) - START ))

# ---- a: randwrite4k with 0 / 1 / SNAP_COUNT snapshots taken just before the job
if [[ " $SNAP_PARTS " == *" a "* ]]; then
  mapfile -t RW < <(randwrite4k_args "$SIZE_BYTES")
  for ((r = 1; r <= SNAP_REPEAT; r++)); do
    log "a: randwrite4k, round $r/$SNAP_REPEAT"
    for n in 0 1 "$SNAP_COUNT"; do
      fresh_copy small
      lunfs_up "$COPY"
      if [ "$n" -gt 0 ]; then take_snapshots "$MNT" a "1" "$n" 0 0 "$SNAP_DIR/create-a-$n-$r.json"; fi
      STATUS_OF=$MNT run_fio "a-lunfs-$n-r$r" "$MNT/luns/lun0" "$SRV_PID" part=a target=lunfs_r0 snapshots="$n" repeat="$r" -- "${RW[@]}"
      lunfs_down; drop_copy
    done
    if [ "$SNAP_QCOW2" = 1 ]; then
      for n in 0 1; do
        cp "$DATA/base.qcow2" "$DATA/work.qcow2"
        [ "$n" = 1 ] && qemu-img snapshot -c s1 "$DATA/work.qcow2"
        qsd_up "$DATA/work.qcow2"
        run_fio "a-qcow2-$n-r$r" "$QSD_FILE" "$QSD_PID" part=a target=qcow2 snapshots="$n" repeat="$r" -- "${RW[@]}"
        qsd_down; rm -f "$DATA/work.qcow2"
      done
    fi
  done
  rm -f "$DATA/base.qcow2"
fi
t_a=$(( $(date +%s) - START ))

# ---- b: sequential read of the oldest vs the newest of SNAP_COUNT snapshots
if [[ " $SNAP_PARTS " == *" b "* ]]; then
  writes=$(( SIZE_BYTES / CHUNK * SNAP_CHANGE_PCT / 100 ))
  log "b: $SNAP_COUNT snapshots, each followed by $writes random 4 KiB writes (${SNAP_CHANGE_PCT} % of the 128 KiB chunks)"
  fresh_copy small
  lunfs_up "$COPY"
  for ((i = 1; i <= SNAP_COUNT; i++)); do
    take_snapshots "$MNT" b "$i" 1 0 0 "$SNAP_DIR/create-b-$i.json" 2>"$WORK/create.log" \
      || die "snapshot b$i failed: $(cat "$WORK/create.log")"
    # (--randrepeat=0: fio 3.33 ignores --randseed while randrepeat=1, the same offsets every time)
    fio --name=change --filename="$MNT/luns/lun0" "${FIO_COMMON[@]}" --rw=randwrite --bs=4k --size="$SIZE_BYTES" \
        --io_size=$(( writes * 4096 )) --randrepeat=0 --randseed="$i" --end_fsync=1 --output=/dev/null >/dev/null
  done
  node "$LIB" status "$MNT/control/status" lun0 "$SNAP_DIR/status-b.json" >&2
  oldest="lun0@b01"; newest="lun0@b$(printf '%02d' "$SNAP_COUNT")"
  for ((r = 1; r <= SNAP_READ_REPEAT; r++)); do
    log "b: seqread round $r/$SNAP_READ_REPEAT"
    for f in live oldest newest; do
      case $f in live) path="$MNT/luns/lun0" ;; oldest) path="$MNT/snapshots/$oldest" ;; newest) path="$MNT/snapshots/$newest" ;; esac
      run_fio "b-$f-r$r" "$path" "$SRV_PID" part=b file="$f" repeat="$r" -- --rw=read --bs=1M --size="$SIZE_BYTES"
    done
  done
  lunfs_down; drop_copy
fi
t_b=$(( $(date +%s) - START ))

# ---- c + d: creation latency under a write load, and the longest write pause
if [[ " $SNAP_PARTS " == *" c "* ]]; then
  delay=$(( (SNAP_LOAD_S * 1000 - (SNAP_CREATES - 1) * SNAP_INTERVAL_MS) / 2 ))
  (( delay < 500 )) && delay=500
  LOADJOB=(--rw=randwrite --bs=4k --size=$(( SNAP_LOAD_MIB << 20 )) --runtime="$SNAP_LOAD_S" --time_based=1
           --percentile_list=50:99:99.9:99.99 --log_unix_epoch=1)
  for which in small big; do
    if [ "$which" = small ]; then lunsize=$SIZE_BYTES; else lunsize=$BIG_BYTES; fi
    for mode in none snap; do
      log "c/d: $((lunsize >> 20)) MiB LUN, randwrite 4k load ${SNAP_LOAD_S} s, $([ $mode = none ] && echo 'no snapshots' || echo "$SNAP_CREATES snapshots every $SNAP_INTERVAL_MS ms")"
      fresh_copy "$which"
      lunfs_up "$COPY"
      tag="cd-$which-$mode"
      if [ "$mode" = snap ]; then
        # the LUN's first snapshot (idle): creates its target volume
        take_snapshots "$MNT" first 0 1 0 0 "$SNAP_DIR/create-$which-first.json"
      fi
      drop_caches
      lat="$WORK/lat-$tag"
      fio --name="$tag" --filename="$MNT/luns/lun0" "${FIO_COMMON[@]}" --output="$SNAP_DIR/fio-$tag.json" \
          "${LOADJOB[@]}" --write_lat_log="$lat" 2>"$WORK/fio.err" &
      FIO_PID=$!; PIDS+=("$FIO_PID")
      creations=-
      if [ "$mode" = snap ]; then
        creations="$SNAP_DIR/create-$which-load.json"
        take_snapshots "$MNT" s 1 "$SNAP_CREATES" "$SNAP_INTERVAL_MS" "$delay" "$creations" || log "WARNING: snapshot creation failed"
      fi
      rc=0; wait "$FIO_PID" || rc=$?
      forget "$FIO_PID"
      err=""; [ $rc -ne 0 ] && err="fio rc=$rc: $(tr '\n' ' ' < "$WORK/fio.err" | cut -c1-200)"
      printf '  %-28s ' "$tag" >&2
      node "$LIB" latlog "${lat}_clat.1.log" "$creations" "$SNAP_DIR/latlog-$tag.json" >&2 || log "WARNING: no latency log"
      printf '  %-28s ' "" >&2
      ERR=$err node "$LIB" rec "$RECS" "$SNAP_DIR/fio-$tag.json" part=cd lun="$which" lun_bytes="$lunsize" mode="$mode" tag="$tag" >&2
      if [ "$SNAP_KEEP_LOGS" = 1 ]; then gzip -c "${lat}_clat.1.log" > "$SNAP_DIR/lat-$tag.clat.log.gz"; fi
      rm -f "$lat"_*.log
      lunfs_down; drop_copy
    done
  done
fi
t_cd=$(( $(date +%s) - START ))

other=$(node "$BENCH/host-cpu.mjs" diff "$WORK/host-cpu.start.json" $$ 2>/dev/null || echo '[]')
node - "$SNAP_DIR/meta.json" "$other" <<EOF
const fs = require('fs')
fs.writeFileSync(process.argv[2], JSON.stringify({
  date: new Date().toISOString(), wallS: $(( $(date +%s) - START )),
  phasesS: { setup: $t_setup, a: $((t_a - t_setup)), b: $((t_b - t_a)), cd: $((t_cd - t_b)) },
  loadavgBefore: '$LOAD_BEFORE', loadavgAfter: fs.readFileSync('/proc/loadavg', 'utf8').trim(),
  otherLoad: JSON.parse(process.argv[3] || '[]'), cores: require('os').cpus().length,
  memGiB: +(require('os').totalmem() / 2 ** 30).toFixed(1), node: process.version, fio: '$(fio --version 2>/dev/null || echo '?')',
  qemu: '$(qemu-storage-daemon --version 2>/dev/null | head -n 1 | awk '{print $3}' || echo '?')', distSha1: '$DIST_SHA',
  params: { sizeMiB: $SIZE_MIB, randwMiB: $RANDW_MIB, randRuntimeS: $RAND_RUNTIME, parts: '$SNAP_PARTS', count: $SNAP_COUNT,
    repeat: $SNAP_REPEAT, qcow2: $SNAP_QCOW2, changePct: $SNAP_CHANGE_PCT, readRepeat: $SNAP_READ_REPEAT, bigGiB: $SNAP_BIG_GIB,
    loadS: $SNAP_LOAD_S, loadMiB: $SNAP_LOAD_MIB, creates: $SNAP_CREATES, intervalMs: $SNAP_INTERVAL_MS, quick: $SNAP_QUICK,
    smallPoolBytes: $(( $(drive_bytes "$SMALL_CAP") * 4 )), bigPoolBytes: $(( $(drive_bytes "$BIG_CAP") * 4 )),
    cache: '${LUNFS_CACHE_SIZE:-default}', bin: '$LUNFS_BIN', shm: '$LUNFS_SHM', qcow2Cluster: ${CLUSTER:-null} },
}, null, 1))
EOF
log "snapshot part finished in $(( $(date +%s) - START )) s; records: $RECS"
