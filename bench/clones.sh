#!/usr/bin/env bash
# Snapclones and snapshot trees (issue 15) for `make bench` (bench/run.sh calls this after the
# background part; CLONES=0 skips it, CLONES_ONLY=1 runs only it). Every figure is compared with a
# figure measured in the same run:
#
#   a  BGCOPY throughput on an idle pool: a clone of a fully written LUN is made (touch
#      MNT/control/snapclone/lun0@c1) right after the mount, before any other I/O, and its
#      background copy is followed in control/status until it is done: MB/s = the bytes it copied
#      over the time from the clone's creation to the job's finishedAt. Against fio seqread (psync,
#      iodepth 1, bs 1 MiB, O_DIRECT, the whole LUN) of the source LUN on the same mount right
#      after, and of the clone (now luns/c1) beside it. CLONE_REPEAT rounds, each on a fresh copy
#      of the template pool.
#   b  randwrite4k on the source LUN (snapshots.sh part a's job: fio psync iodepth 1, 4 KiB random
#      writes over the whole LUN, RANDW_MIB MiB or RAND_RUNTIME s, O_DIRECT, end_fsync); as soon as
#      the job has sent its first write (fio's job process's syscw in /proc), a clone of the LUN is
#      made, so the job runs while the clone's BGCOPY does, paced from its first unit (made before
#      fio starts, BGCOPY would copy at full speed during fio's start-up, ~100 MiB). Against the
#      same job with no clone (idle) and, with CLONE_SNAP_ROW=1, with a plain snapshot taken the
#      same way (the clone's base is a snapshot of the source: the source's first write to each
#      chunk preserves its original, what a snapshot alone costs). Each on a fresh copy of the
#      template pool; CLONE_REPEAT rounds, the variants interleaved within each. BGCOPY's state and
#      progress are read from control/status right after the clone's creation and right after the
#      job ends: it must still run at the end (else a WARNING, and the report says so).
#   c  sequential read (as in a) of the snapshot CLONE_DEPTH (16) levels deep against the one
#      level deep, in chains lun0@s01 (of the LUN), lun0@s02 (of s01), ..., taken with
#      touch MNT/control/snapshot/lun0@s01@s02 and so on; the LUN itself is read alongside.
#      CLONE_CHAINS kinds, each on a fresh copy: "plain" (no writes: every level holds the LUN's
#      data), "lun" (after every level, random 4 KiB writes to CLONE_CHANGE_PCT % of the LUN's
#      128 KiB chunks: every level still holds the same data, the LUN's at s01, more and more of
#      it preserved copies in the target volume shared by the whole chain), "levels" (each level
#      itself written, CLONE_CHANGE_PCT % of its chunks, before the next is taken of it: the levels
#      differ, the deep one carries the writes of all the levels above it). CLONE_READ_REPEAT
#      rounds: s01, the LUN, the deep one; then the other way round.
#   With CLONE_VERIFY=1 (the default) the script also checks data, outside the timed jobs: the clone
#   after BGCOPY (a) and the deep snapshot of the plain and lun chains (c) must read what was
#   written to lun0 (cmp against the template's data, kept on /dev/shm); the clone of (b), made
#   while the job wrote, must read that data with exactly the job's first K writes laid over it,
#   for some K (the job's offsets from the same fio job on a scratch file with --write_iolog). A
#   mismatch is a WARNING and a record; the report marks it.
#
#   bash bench/clones.sh                        # as root, ~3.5-4.5 min on 2 cores
#   CLONES_ONLY=1 bash bench/run.sh             # through run.sh: updates BENCHMARKS.md's section
#   CLONE_QUICK=1 bash bench/clones.sh          # smoke test, ~40 s
#
# Environment (all optional): CLONE_DIR (where records go; run.sh passes <run>/clones),
#   CLONE_QUICK (0), SIZE_MIB (1024), RANDW_MIB (200), RAND_RUNTIME (20), CLONE_PARTS ("a b c"),
#   CLONE_REPEAT (2), CLONE_SNAP_ROW (1), CLONE_DEPTH (16), CLONE_CHAINS ("plain lun levels"),
#   CLONE_CHANGE_PCT (5), CLONE_READ_REPEAT (4), CLONE_VERIFY (1), LUNFS_BIN, LUNFS_SHM (/dev/shm), LUNFS_CACHE_SIZE,
#   LUNFS_NODE_FLAGS.
set -euo pipefail
export LC_ALL=C

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
log() { printf '[clones %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# What the caller set (for the report's command line), before defaults are filled in.
OVERRIDES=()
for v in CLONE_QUICK SIZE_MIB RANDW_MIB RAND_RUNTIME CLONE_PARTS CLONE_REPEAT CLONE_SNAP_ROW CLONE_DEPTH \
         CLONE_CHAINS CLONE_CHANGE_PCT CLONE_READ_REPEAT CLONE_VERIFY LUNFS_CACHE_SIZE LUNFS_NODE_FLAGS; do
  [ -n "${!v+x}" ] && OVERRIDES+=("$v=${!v}")
done

CLONE_QUICK=${CLONE_QUICK:-0}
if [ "$CLONE_QUICK" = 1 ]; then
  : "${SIZE_MIB:=256}" "${RANDW_MIB:=48}" "${RAND_RUNTIME:=5}" "${CLONE_REPEAT:=1}" "${CLONE_READ_REPEAT:=1}" \
    "${CLONE_CHAINS:=plain}"
fi
SIZE_MIB=${SIZE_MIB:-1024}
RANDW_MIB=${RANDW_MIB:-200}
RAND_RUNTIME=${RAND_RUNTIME:-20}
CLONE_PARTS=${CLONE_PARTS:-"a b c"}
CLONE_REPEAT=${CLONE_REPEAT:-2}
CLONE_SNAP_ROW=${CLONE_SNAP_ROW:-1}
CLONE_DEPTH=${CLONE_DEPTH:-16}
CLONE_CHAINS=${CLONE_CHAINS:-"plain lun levels"}
CLONE_CHANGE_PCT=${CLONE_CHANGE_PCT:-5}
CLONE_READ_REPEAT=${CLONE_READ_REPEAT:-4}
CLONE_VERIFY=${CLONE_VERIFY:-1}
LUNFS_BIN=${LUNFS_BIN:-$REPO/dist/bin.js}
LUNFS_SHM=${LUNFS_SHM:-/dev/shm}
LUNFS_CACHE_SIZE=${LUNFS_CACHE_SIZE:-}
LUNFS_NODE_FLAGS=${LUNFS_NODE_FLAGS:-}
CLONE_DIR=${CLONE_DIR:-$REPO/.bench/clones-$(date -u +%Y%m%dT%H%M%SZ)}
LIB="$BENCH/snapshots-lib.mjs"

[ "$(id -u)" = 0 ] || die "run as root (drops caches, mounts FUSE)"
[ -f "$LUNFS_BIN" ] || die "lunfs is not built ($LUNFS_BIN missing)"
for c in fio node fusermount; do command -v "$c" >/dev/null || die "$c is missing (make bench installs fio)"; done
(( CLONE_DEPTH >= 2 && CLONE_DEPTH <= 99 )) || die "CLONE_DEPTH must be 2..99"
SIZE_BYTES=$(( SIZE_MIB << 20 ))
CHUNK=131072

mkdir -p "$CLONE_DIR"
CLONE_DIR=$(cd "$CLONE_DIR" && pwd)
RECS="$CLONE_DIR/clones.jsonl"
: > "$RECS"

# ---------------------------------------------------------------- cleanup (as in snapshots.sh)
WORK=""; DATA=""
PIDS=(); MOUNTS=(); DIRS=()
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [ -n "$st" ] && [ "$st" != Z ]; }
is_mounted() { awk -v m="$1" '$2==m{f=1} END{exit !f}' /proc/mounts; }
stop_pid() { # pid: SIGTERM (lunfs flushes and unmounts; a BGCOPY stops, resumed at the next mount), SIGKILL after 30 s
  local i
  alive "$1" || { wait "$1" 2>/dev/null || true; return 0; }
  kill -TERM "$1" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do alive "$1" || break; sleep 0.1; done
  if alive "$1"; then log "pid $1 ignored SIGTERM, SIGKILL"; kill -KILL "$1" 2>/dev/null || true; fi
  wait "$1" 2>/dev/null || true
}
forget() {
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

WORK=$(mktemp -d /tmp/lunfs-clonebench.XXXXXX)
DATA=$(mktemp -d "$LUNFS_SHM/lunfs-clonebench.XXXXXX")

# ---------------------------------------------------------------- helpers
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
proc_cpu() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo ""; return; }; s=${s##*) }; set -- $s; echo $(( ${12} + ${13} )); }
CLK_TCK=$(getconf CLK_TCK)

# The status helpers (one node process each; the polling one sleeps 100 ms between reads, so it
# takes next to no CPU from the server).
#   timed-touch FILE              open(O_CREAT|O_WRONLY) + close, what touch does: "startEpochMs ms"
#   job MNT/control/status CLONE [LUN]   BGCOPY's job of CLONE as JSON, with at (epoch ms),
#                                  pendingBytes and LUN's preservations (count, batches)
#   wait-job MNT/control/status CLONE TIMEOUT_S   the same once it is no longer running
#   snaps MNT/control/status NAME...   {name: {depth, source, sizeBytes, exclusiveBytes, sharedBytes, state}}
HELPER='
const fs = require("fs");
const [cmd, file, ...rest] = process.argv.slice(1);
const now = () => performance.timeOrigin + performance.now();
const status = () => JSON.parse(fs.readFileSync(file, "utf8"));
const jobOf = (s, clone) => {
  const job = s.jobs.filter((j) => j.kind === "bgcopy" && j.lun === clone).at(-1);
  const lun = s.luns.find((l) => l.name === clone);
  return { at: now(), ...(job || { state: "none" }), pendingBytes: lun && lun.clone ? lun.clone.pendingBytes : null };
};
if (cmd === "timed-touch") {
  const start = now();
  fs.closeSync(fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT));
  console.log(`${start.toFixed(3)} ${(now() - start).toFixed(3)}`);
} else if (cmd === "job") {
  const s = status();
  const lun = rest[1] && s.luns.find((l) => l.name === rest[1]);
  console.log(JSON.stringify({ ...jobOf(s, rest[0]), ...(lun ? { lunPreservations: lun.preservations } : {}) }));
} else if (cmd === "wait-job") {
  const until = now() + Number(rest[1]) * 1000;
  const tick = () => {
    const j = jobOf(status(), rest[0]);
    if (j.state === "running" && now() < until) return setTimeout(tick, 100);
    console.log(JSON.stringify(j));
  };
  tick();
} else if (cmd === "snaps") {
  const s = status();
  const out = {};
  for (const name of rest) {
    const x = s.snapshots.find((y) => y.name === name);
    out[name] = x ? { depth: x.depth, source: x.source, sizeBytes: x.sizeBytes, exclusiveBytes: x.exclusiveBytes, sharedBytes: x.sharedBytes, state: x.state } : null;
  }
  console.log(JSON.stringify(out));
}'
helper() { node -e "$HELPER" "$@"; }
# add_rec key=value... / JSON fields (raw): one record line in clones.jsonl
add_rec() {
  node -e '
    const fs = require("fs");
    const r = {};
    for (const s of process.argv.slice(2)) {
      const i = s.indexOf("="); const k = s.slice(0, i); const v = s.slice(i + 1);
      if (k.startsWith("json:")) { r[k.slice(5)] = v ? JSON.parse(v) : null; continue; }
      r[k] = v !== "" && !Number.isNaN(Number(v)) ? Number(v) : v;
    }
    fs.appendFileSync(process.argv[1], JSON.stringify(r) + "\n");
  ' "$RECS" "$@"
}

# lunfs_up DIR -> mounts the pool at $WORK/mnt-N (--front native, as every lunfs target); sets SRV_PID, MNT
MNT_N=0
lunfs_up() {
  local dir=$1 logf cache=() i
  MNT_N=$((MNT_N + 1)); MNT="$WORK/mnt-$MNT_N"; logf="$WORK/lunfs-$MNT_N.log"
  mkdir -p "$MNT"
  [ -n "$LUNFS_CACHE_SIZE" ] && cache=(--cache-size "$LUNFS_CACHE_SIZE")
  # shellcheck disable=SC2086
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
fresh_copy() { # -> COPY (a new pool dir on $LUNFS_SHM, a copy of the template)
  COPY=$(mktemp -d "$LUNFS_SHM/lunfs-clonebench.XXXXXX")
  DIRS+=("$COPY")
  cp -a --sparse=always "$DATA/template/." "$COPY/"
}
drop_copy() { rm -rf "$COPY"; }

FIO_COMMON=(--ioengine=psync --iodepth=1 --numjobs=1 --direct=1 --invalidate=1 --randrepeat=1 --output-format=json)
RW=(--rw=randwrite --bs=4k --size="$SIZE_BYTES" --io_size=$(( RANDW_MIB << 20 )) --runtime="$RAND_RUNTIME" --end_fsync=1)
SEQREAD=(--rw=read --bs=1M --size="$SIZE_BYTES")
wait_first_write() { # fio's PID: returns once its job process (its child) has made a write system call
  local i child="" k v
  for ((i = 0; i < 2000; i++)); do
    [ -n "$child" ] || child=$(pgrep -P "$1" | head -n 1 || true)
    if [ -n "$child" ] && [ -r "/proc/$child/io" ]; then
      while read -r k v; do [ "$k" = syscw: ] && [ "$v" -gt 0 ] && return 0; done < "/proc/$child/io"
    fi
    alive "$1" || return 1
    sleep 0.005
  done
  return 1
}
# run_fio TAG FILE RECORD_FIELDS... -- FIO_ARGS...: one fio job, one record (snapshots-lib.mjs rec)
run_fio() {
  local tag=$1 file=$2 json="$CLONE_DIR/fio-$1.json" fields=() c0 c1 rc=0 w0 w1 cpu="" err=""
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do fields+=("$1"); shift; done
  shift
  [ "${NO_DROP:-0}" = 1 ] || drop_caches
  c0=$(proc_cpu "$SRV_PID"); w0=$(date +%s.%N)
  if [ -n "${ON_START:-}" ]; then
    # ON_START (a function) runs once the job has issued its first write
    local fpid
    fio --name="$tag" --filename="$file" "${FIO_COMMON[@]}" --output="$json" "$@" 2>"$WORK/fio.err" &
    fpid=$!; PIDS+=("$fpid")
    wait_first_write "$fpid" || log "WARNING: $tag: no write seen from fio's job process within 10 s"
    "$ON_START"
    wait "$fpid" || rc=$?
    forget "$fpid"
  else
    fio --name="$tag" --filename="$file" "${FIO_COMMON[@]}" --output="$json" "$@" 2>"$WORK/fio.err" || rc=$?
  fi
  w1=$(date +%s.%N); c1=$(proc_cpu "$SRV_PID")
  # ON_END (a function) runs right after fio has exited, before anything else
  if [ -n "${ON_END:-}" ]; then "$ON_END"; fi
  [ -n "$c0" ] && [ -n "$c1" ] && cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/t}')
  [ $rc -ne 0 ] && err="fio rc=$rc: $(tr '\n' ' ' < "$WORK/fio.err" | cut -c1-200)"
  ERR=$err node "$LIB" rec "$RECS" "$json" "${fields[@]}" tag="$tag" srv_cpu_s="$cpu" \
    wall_s="$(awk -v a="$w0" -v b="$w1" 'BEGIN{printf "%.2f", b-a}')" >/dev/null
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").pop());
    const what = r.err ? `FAIL ${r.err}` : r.total_ios && r.bw_bytes / r.iops > 65536 ? `${(r.bw_bytes / 1e6).toFixed(0)} MB/s` : `${(r.iops / 1000).toFixed(2)}k IOPS, p99 ${r.clat_p99_us} µs`;
    console.error(`  ${r.tag.padEnd(24)} ${what}`);
  ' "$RECS"
}
# verify_prefix TAG FILE FIO_NAME: FILE must hold raw.img's data with the first K writes of the
# randwrite4k job FIO_NAME laid over it, for some K (a clone made while that job ran). The job's
# offsets (randrepeat=1: the same every time) come from the same job run on a scratch file on
# $LUNFS_SHM with --write_iolog; the blocks where FILE differs from raw.img must be exactly the
# offsets of the job's first K writes.
verify_prefix() {
  local res
  rm -f "$DATA/seq.img" "$WORK/seq.iolog"
  truncate -s "$SIZE_BYTES" "$DATA/seq.img"
  fio --name="$3" --filename="$DATA/seq.img" "${FIO_COMMON[@]}" --direct=0 --output=/dev/null "${RW[@]}" \
      --write_iolog="$WORK/seq.iolog" >/dev/null 2>"$WORK/fio.err" || { log "WARNING: verify_prefix: fio failed: $(head -c 200 "$WORK/fio.err")"; return 0; }
  rm -f "$DATA/seq.img"
  res=$(node -e '
    const fs = require("fs");
    const [file, raw, iolog] = process.argv.slice(1);
    const first = new Map(); const seq = [];
    for (const line of fs.readFileSync(iolog, "utf8").split("\n")) {
      const f = line.split(" "); // (version 3: "time file write offset length")
      if (f.at(-3) !== "write") continue;
      const off = Number(f.at(-2));
      if (!first.has(off)) first.set(off, seq.length);
      seq.push(off);
    }
    // BGCOPY may end (clones/c1 moves to luns/c1) between the caller'"'"'s test and this open
    const openClone = () => { try { return fs.openSync(file, "r"); } catch (e) {
      if (e.code !== "ENOENT") throw e; return fs.openSync(file.replace("/clones/", "/luns/"), "r"); } };
    const a = openClone(); const b = fs.openSync(raw, "r");
    const A = Buffer.alloc(1 << 20); const B = Buffer.alloc(1 << 20);
    const differ = []; const size = fs.fstatSync(b).size;
    for (let at = 0; at < size; at += A.length) {
      const n = fs.readSync(a, A, 0, A.length, at); fs.readSync(b, B, 0, B.length, at);
      if (n < Math.min(A.length, size - at)) { differ.push(-1); break; }
      for (let o = 0; o < n; o += 4096) if (A.compare(B, o, o + 4096, o, o + 4096) !== 0) differ.push(at + o);
    }
    const unknown = differ.filter((o) => !first.has(o)).length;
    const k = differ.reduce((m, o) => Math.max(m, (first.get(o) ?? -1) + 1), 0);
    const prefix = new Set(seq.slice(0, k));
    const differing = new Set(differ);
    const missing = [...prefix].filter((o) => !differing.has(o)).length;
    console.log(unknown === 0 && missing === 0 ? `same-as-prefix ${k}` : `differs ${k} ${unknown} ${missing}`);
  ' "$2" "$DATA/raw.img" "$WORK/seq.iolog")
  set -- "$1" "$2" "$res"
  add_rec part=verify tag="$1" file="${2#"$MNT"/}" result="${3%% *}" detail="${3#* }"
  case $3 in same-as-prefix*) ;; *) log "WARNING: ${2#"$MNT"/} is not the source's data at any instant of the job (K, blocks not written by the job, blocks of the first K writes not seen: ${3#differs })" ;; esac
}
# verify TAG FILE: FILE must hold raw.img's data (what the template's LUN holds); one record
verify() {
  local res=same
  cmp -s "$2" "$DATA/raw.img" || res=differs
  add_rec part=verify tag="$1" file="${2#"$MNT"/}" result="$res"
  [ "$res" = same ] || log "WARNING: ${2#"$MNT"/} differs from the data written to lun0 (cmp: $(cmp "$2" "$DATA/raw.img" 2>&1 | head -n 1))"
}

# ---------------------------------------------------------------- run
START=$(date +%s)
DIST_SHA=$(cd "$(dirname "$LUNFS_BIN")" && find . -name '*.js' -type f | LC_ALL=C sort | xargs cat | sha1sum | cut -c1-12)
node "$BENCH/host-cpu.mjs" snapshot "$WORK/host-cpu.start.json" 2>/dev/null || true
LOAD_BEFORE=$(cat /proc/loadavg)
# Space: the LUN, the clone's copy, and the originals the source's writes preserve for the
# clone's base (reserved for it while BGCOPY runs) or for a snapshot chain: at most 3 LUN sizes
# written; 4.5 LUN sizes of sparse drive files (RAID-0, 4 drives) leave room for the metadata.
CAP=$(( SIZE_BYTES * 9 / 2 ))
DRIVE_BYTES=$(( ( (CAP / 4) >> 20 ) << 20 ))
avail_kb=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
shm_kb=$(df -k --output=avail "$LUNFS_SHM" | tail -n 1 | tr -d ' ')
need_kb=$(( SIZE_MIB * 1024 * 7 ))
(( avail_kb > need_kb && shm_kb > need_kb )) || die "needs about $((need_kb >> 20)) GiB of memory and of $LUNFS_SHM (have $((avail_kb >> 20)) / $((shm_kb >> 20)) GiB); lower SIZE_MIB"
{
  [ ${#OVERRIDES[@]} -gt 0 ] && printf "%q " "${OVERRIDES[@]}"
  printf 'bash bench/clones.sh\n'
} > "$CLONE_DIR/command.txt"
log "records: $CLONE_DIR (parts: $CLONE_PARTS)"

log "template: RAID-0 pool of 4 × $((DRIVE_BYTES >> 20)) MiB sparse drives, LUN lun0 of $SIZE_MIB MiB written full"
fio --name=fill --filename="$DATA/raw.img" --size=$SIZE_BYTES --rw=write --bs=1M --ioengine=psync --output=/dev/null >/dev/null 2>&1 \
  || die "fio fill failed"
node "$LUNFS_BIN" pool create "$DATA/template" --drives 4 --drive-size "$DRIVE_BYTES" --raid 0 >/dev/null
node "$LUNFS_BIN" lun create "$DATA/template" lun0 --size "$SIZE_BYTES" >/dev/null
lunfs_up "$DATA/template"
dd if="$DATA/raw.img" of="$MNT/luns/lun0" bs=1M oflag=direct conv=notrunc,fsync status=none
lunfs_down
t_setup=$(( $(date +%s) - START ))

# ---- a: BGCOPY of an idle pool vs seqread of its source
if [[ " $CLONE_PARTS " == *" a "* ]]; then
  for ((r = 1; r <= CLONE_REPEAT; r++)); do
    log "a: BGCOPY on an idle pool, then seqread of the source and of the clone, round $r/$CLONE_REPEAT"
    fresh_copy
    lunfs_up "$COPY"
    # right after the mount: no LUN I/O yet, so the pacer sees an idle pool from BGCOPY's first step
    read -r c_start c_ms < <(helper timed-touch "$MNT/control/snapclone/lun0@c1") || die "clone creation failed"
    j0=$(helper job "$MNT/control/status" c1)
    jend=$(helper wait-job "$MNT/control/status" c1 600)
    state=$(node -e 'console.log(JSON.parse(process.argv[1]).state)' "$jend")
    add_rec part=a repeat="$r" tag="a-bgcopy-r$r" create_start_ms="$c_start" create_ms="$c_ms" \
      "json:job_start=$j0" "json:job=$jend" lun_bytes="$SIZE_BYTES"
    node -e '
      const [c0, j] = [Number(process.argv[1]), JSON.parse(process.argv[2])];
      const s = (Date.parse(j.finishedAt) - c0) / 1000;
      console.error(`  BGCOPY ${j.state}: ${(j.doneBytes / 2 ** 20).toFixed(0)} MiB in ${s.toFixed(2)} s from the clone creation (${(j.doneBytes / s / 1e6).toFixed(0)} MB/s), paused ${(j.pausedMs / 1000).toFixed(2)} s`);
    ' "$c_start" "$jend" || true
    [ "$state" = done ] || log "WARNING: BGCOPY ended $state"
    [ -e "$MNT/luns/c1" ] || log "WARNING: luns/c1 missing after BGCOPY"
    run_fio "a-seqread-lun-r$r" "$MNT/luns/lun0" part=a repeat="$r" file=lun -- "${SEQREAD[@]}"
    run_fio "a-seqread-clone-r$r" "$MNT/luns/c1" part=a repeat="$r" file=clone -- "${SEQREAD[@]}"
    [ "$CLONE_VERIFY" = 1 ] && verify "a-r$r" "$MNT/luns/c1"
    lunfs_down; drop_copy
  done
fi
t_a=$(( $(date +%s) - START ))

# ---- b: randwrite4k on the source while BGCOPY runs, against idle (and after a plain snapshot)
if [[ " $CLONE_PARTS " == *" b "* ]]; then
  variants="idle clone"
  [ "$CLONE_SNAP_ROW" = 1 ] && variants="idle snapshot clone"
  on_start_idle() { :; }
  on_end_b() { after=$(helper job "$MNT/control/status" c1 lun0); }
  on_start_snapshot() {
    local c_start c_ms
    read -r c_start c_ms < <(helper timed-touch "$MNT/control/snapshot/lun0@s1") || die "snapshot failed"
    EXTRA+=(create_ms="$c_ms")
  }
  on_start_clone() {
    local c_start c_ms
    read -r c_start c_ms < <(helper timed-touch "$MNT/control/snapclone/lun0@c1") || die "clone creation failed"
    BG_BEFORE=$(helper job "$MNT/control/status" c1)
    EXTRA+=(create_ms="$c_ms" "json:bg_before=$BG_BEFORE")
  }
  for ((r = 1; r <= CLONE_REPEAT; r++)); do
    log "b: randwrite4k on the source ($variants), round $r/$CLONE_REPEAT"
    for v in $variants; do
      fresh_copy
      lunfs_up "$COPY"
      drop_caches
      EXTRA=()
      tag="b-$v-r$r"
      # the clone (or the snapshot) is made once the job's first write was sent: BGCOPY is paced
      # from its first unit on, and does not copy at full speed while fio starts
      ON_START=on_start_$v ON_END=on_end_b NO_DROP=1 run_fio "$tag" "$MNT/luns/lun0" part=b variant="$v" repeat="$r" -- "${RW[@]}"
      # (the preservations counter of lun0 restarts when BGCOPY's end removes the clone's base,
      # the LUN's last snapshot: read right after fio, before that)
      read -r pc pb < <(node -e 'const p = JSON.parse(process.argv[1]).lunPreservations; console.log(p ? `${p.count} ${p.batches}` : "- -")' "$after")
      if [ "$v" = clone ]; then
        EXTRA+=("json:bg_after=$after")
        node -e '
          const [b, a] = [JSON.parse(process.argv[1]), JSON.parse(process.argv[2])];
          const f = (j) => `${(100 * j.doneBytes / j.totalBytes).toFixed(1)} % (${j.state})`;
          console.error(`  BGCOPY during the job: ${f(b)} -> ${f(a)}, ${((a.doneBytes - b.doneBytes) / (a.at - b.at) / 1e3).toFixed(0)} MB/s, paused ${(100 * (a.pausedMs - b.pausedMs) / (a.at - b.at)).toFixed(0)} % of the time`);
        ' "$BG_BEFORE" "$after" || true
        case $after in *'"state":"running"'*) ;; *) log "WARNING: BGCOPY was not running any more at the end of the job: $after" ;; esac
      fi
      # the job's record (written by run_fio) gets the creation, BGCOPY and preservation fields
      node -e '
        const fs = require("fs");
        const [file, tag, ...kv] = process.argv.slice(1);
        const lines = fs.readFileSync(file, "utf8").trim().split("\n");
        const at = lines.findLastIndex((line) => JSON.parse(line).tag === tag);
        const r = JSON.parse(lines[at]);
        for (const s of kv) {
          const i = s.indexOf("="); const k = s.slice(0, i); const v = s.slice(i + 1);
          if (k.startsWith("json:")) r[k.slice(5)] = JSON.parse(v); else r[k] = v !== "" && !Number.isNaN(Number(v)) ? Number(v) : v;
        }
        lines[at] = JSON.stringify(r);
        fs.writeFileSync(file, lines.join("\n") + "\n");
      ' "$RECS" "$tag" "${EXTRA[@]}" preservations="$pc" batches="$pb"
      # the clone holds the source's data of its instant: the template's data with a prefix of the
      # job's writes (those acknowledged before the creation), whatever the source got after it
      # (clones/c1 while BGCOPY still runs, else luns/c1)
      if [ "$v" = clone ] && [ "$CLONE_VERIFY" = 1 ]; then
        if [ -e "$MNT/clones/c1" ]; then verify_prefix "b-r$r" "$MNT/clones/c1" "$tag"; else verify_prefix "b-r$r" "$MNT/luns/c1" "$tag"; fi
      fi
      lunfs_down; drop_copy
    done
  done
fi
t_b=$(( $(date +%s) - START ))

# ---- c: seqread of the snapshot CLONE_DEPTH levels deep vs the one level deep
if [[ " $CLONE_PARTS " == *" c "* ]]; then
  writes=$(( SIZE_BYTES / CHUNK * CLONE_CHANGE_PCT / 100 ))
  last=$(printf 's%02d' "$CLONE_DEPTH")
  change() { # FILE SEED: random 4 KiB writes to CLONE_CHANGE_PCT % of the chunks, a new seed each time
    # (--randrepeat=0: fio 3.33 ignores --randseed while randrepeat=1)
    fio --name=change --filename="$1" "${FIO_COMMON[@]}" --rw=randwrite --bs=4k --size="$SIZE_BYTES" \
        --io_size=$(( writes * 4096 )) --randrepeat=0 --randseed="$2" --end_fsync=1 --output=/dev/null >/dev/null
  }
  for kind in $CLONE_CHAINS; do
    case $kind in
      plain) how="no writes" ;;
      lun) how="$writes random 4 KiB writes to the LUN after each level" ;;
      levels) how="$writes random 4 KiB writes to each level before the next is taken of it" ;;
      *) die "unknown chain kind $kind (plain, lun, levels)" ;;
    esac
    log "c: chain of $CLONE_DEPTH snapshots ($kind: $how)"
    fresh_copy
    lunfs_up "$COPY"
    node "$LIB" create "$MNT" lun0 s 1 1 0 0 "$CLONE_DIR/create-c-$kind-01.json" >/dev/null 2>"$WORK/create.log" \
      || die "snapshot lun0@s01 failed: $(cat "$WORK/create.log")"
    for ((i = 1; i <= CLONE_DEPTH; i++)); do
      cur=$(printf 's%02d' "$i")
      case $kind in lun) change "$MNT/luns/lun0" "$i" ;; levels) change "$MNT/snapshots/lun0@$cur" "$i" ;; esac
      if (( i < CLONE_DEPTH )); then
        node "$LIB" create "$MNT" "lun0@$cur" s $((i + 1)) 1 0 0 "$CLONE_DIR/create-c-$kind-$(printf '%02d' $((i + 1))).json" >/dev/null 2>"$WORK/create.log" \
          || die "snapshot lun0@$cur@$(printf 's%02d' $((i + 1))) failed: $(cat "$WORK/create.log")"
      fi
    done
    snaps=$(helper snaps "$MNT/control/status" lun0@s01 "lun0@$last")
    add_rec part=c-tree chain="$kind" depth="$CLONE_DEPTH" change_writes="$( [ "$kind" = plain ] && echo 0 || echo "$writes")" "json:snapshots=$snaps"
    node -e '
      const s = JSON.parse(process.argv[1]);
      console.error("  " + Object.entries(s).map(([n, x]) => x ? `${n}: depth ${x.depth}, of ${x.source}, in the target ${(100 * (x.exclusiveBytes + x.sharedBytes) / x.sizeBytes).toFixed(1)} %` : `${n}: missing`).join("; "));
    ' "$snaps" || true
    # s01 and the deep one swap places every other round, the LUN between them
    for ((r = 1; r <= CLONE_READ_REPEAT; r++)); do
      if (( r % 2 )); then order="s01 lun $last"; else order="$last lun s01"; fi
      for f in $order; do
        if [ "$f" = lun ]; then path="$MNT/luns/lun0"; else path="$MNT/snapshots/lun0@$f"; fi
        run_fio "c-$kind-$f-r$r" "$path" part=c chain="$kind" file="$f" level="$([ "$f" = lun ] && echo 0 || echo $((10#${f#s})))" repeat="$r" -- "${SEQREAD[@]}"
      done
    done
    # plain and lun: every level holds the data of lun0 at s01's instant
    if [ "$CLONE_VERIFY" = 1 ] && [ "$kind" != levels ]; then verify "c-$kind" "$MNT/snapshots/lun0@$last"; fi
    lunfs_down; drop_copy
  done
fi
t_c=$(( $(date +%s) - START ))

other=$(node "$BENCH/host-cpu.mjs" diff "$WORK/host-cpu.start.json" $$ 2>/dev/null || echo '[]')
node - "$CLONE_DIR/meta.json" "$other" <<EOF
const fs = require('fs'), os = require('os')
const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) || [])[1] || os.cpus()[0]?.model || '?'
fs.writeFileSync(process.argv[2], JSON.stringify({
  date: new Date().toISOString(), wallS: $(( $(date +%s) - START )),
  phasesS: { setup: $t_setup, a: $((t_a - t_setup)), b: $((t_b - t_a)), c: $((t_c - t_b)) },
  loadavgBefore: '$LOAD_BEFORE', loadavgAfter: fs.readFileSync('/proc/loadavg', 'utf8').trim(),
  otherLoad: JSON.parse(process.argv[3] || '[]'),
  cpu, cores: os.cpus().length, memGiB: +(os.totalmem() / 2 ** 30).toFixed(1), kernel: os.release(),
  distro: fs.existsSync('/etc/debian_version') ? 'Debian ' + fs.readFileSync('/etc/debian_version', 'utf8').trim() : '?',
  node: process.version, fio: '$(fio --version 2>/dev/null || echo '?')', distSha1: '$DIST_SHA',
  params: { sizeMiB: $SIZE_MIB, randwMiB: $RANDW_MIB, randRuntimeS: $RAND_RUNTIME, parts: '$CLONE_PARTS', repeat: $CLONE_REPEAT,
    snapRow: $CLONE_SNAP_ROW, depth: $CLONE_DEPTH, chains: '$CLONE_CHAINS', changePct: $CLONE_CHANGE_PCT,
    readRepeat: $CLONE_READ_REPEAT, verify: $CLONE_VERIFY, quick: $CLONE_QUICK, poolBytes: $(( DRIVE_BYTES * 4 )), driveBytes: $DRIVE_BYTES,
    cache: '${LUNFS_CACHE_SIZE:-default}', bin: '$LUNFS_BIN', shm: '$LUNFS_SHM' },
}, null, 1))
EOF
log "clone part finished in $(( $(date +%s) - START )) s; records: $RECS"
