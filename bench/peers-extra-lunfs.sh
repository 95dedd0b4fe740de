# shellcheck shell=bash disable=SC2034,SC2154
# PEERS_EXTRA file for ../shared/bench/peers.sh: adds lunfs as targets measured in the same run
# as the ceiling (fnmem) and the peer (qcow2). Sourced by peers.sh (bash, set -euo pipefail);
# bench/run.sh passes it. By hand:
#   PEERS_EXTRA=$PWD/bench/peers-extra-lunfs.sh TARGETS="fnmem lunfs_r0" OUT_MD=/tmp/x.md \
#     bash ../shared/bench/peers.sh
#
# Targets (every lunfs target names its FUSE front: `lunfs mount --front native`, lunfs's own
# front on libfuse3, unless the id ends in _fn: `--front fuse-native`):
#   lunfs_r0 / lunfs_r1     a pool of 4 drive files on /dev/shm (RAID-0 / RAID-1 mirrored pairs),
#                           one LUN of SIZE_BYTES, mounted with `lunfs mount`; fio on luns/lun0
#   lunfs_r0_fn             lunfs_r0 served through fuse-native (libfuse2), to compare the fronts
#   nfmem                   the native front's ceiling: bench/nfmem-server.mjs, lunfs's FUSE addon
#                           (the build of LUNFS_BIN) serving an in-memory file, as fnmem does on
#                           fuse-native; loop_nfmem / ext4_nfmem: the loop / ext4 stackings on it
#   lunfs_r5                the same with RAID-5 (rotating parity over the 4 drives)
#   lunfs_r1_deg / _r5_deg  lunfs_r1 / lunfs_r5 degraded: the fresh copy of the (healthy, prefilled)
#                           template loses drive-1.img (`rm POOL/drive-1.img`) before the mount, so
#                           lunfs mounts the pool with drive 1 missing: reads of drive 1's data are
#                           served from the mirror / reconstructed from parity, writes (made while
#                           degraded) go to the drives that are left
#   loop_lunfs_r0 / _r1     losetup (direct-io=off, what `mount -o loop` does) on it
#   loopdio_lunfs_r0        losetup --direct-io=on on it
#   ext4_lunfs_r0 / _r1     mkfs.ext4 on the loop device, fio on a file of half the disk
#   prof_lunfs_r0, prof_fnmem   lunfs_r0 / fnmem with `node --cpu-prof` (one .cpuprofile per job
#                           in $LUNFS_PROF_DIR/<target>-<job>/); slower, for profiling only
#
# Like the qcow2 peer, the LUN is fully allocated with the same non-zero content as raw.img:
# one template pool per RAID level is made on first use (pool create, lun create, mount,
# dd raw.img into the LUN with O_DIRECT, clean unmount) and every (target, job) pair gets a
# fresh copy of it, so each job starts with a cold lunfs cache and no dirty data. The degraded
# targets use the same template as the healthy ones (the data is laid down on the healthy pool);
# only their copy loses a drive, so seqread / randread4k read data written before the drive went
# and seqwrite / randwrite4k write while the pool is degraded.
#
# Knobs (environment): LUNFS_PREFILL (1; 0 = empty thin LUN, reads of unwritten units are
#   zeros without drive I/O and first writes allocate), LUNFS_DRIVES (4), LUNFS_CACHE_SIZE
#   (empty = lunfs default), LUNFS_NODE_FLAGS (extra node flags for the server),
#   LUNFS_PROF_DIR (where prof_* targets put their profiles), LUNFS_SHM (/dev/shm),
#   LUNFS_BIN (the lunfs entry point, default <repo>/dist/bin.js: point it at a patched copy to
#   measure an experiment beside the same ceiling).

# This file's folder is <repo>/bench; evaluate at source time (BASH_SOURCE[0] = this file).
LUNFS_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LUNFS_BIN=${LUNFS_BIN:-"$LUNFS_REPO/dist/bin.js"}
LUNFS_PREFILL=${LUNFS_PREFILL:-1}
LUNFS_DRIVES=${LUNFS_DRIVES:-4}
LUNFS_CACHE_SIZE=${LUNFS_CACHE_SIZE:-}
LUNFS_NODE_FLAGS=${LUNFS_NODE_FLAGS:-}
LUNFS_PROF_DIR=${LUNFS_PROF_DIR:-$LUNFS_REPO/.bench/cpuprof}
LUNFS_SHM=${LUNFS_SHM:-/dev/shm}
LUNFS_FRONT=native # the front of the next lunfs_start (the _fn setups set fuse-native for their call)
LUNFS_CLEAN_DIRS=()

[ -f "$LUNFS_BIN" ] || die "lunfs is not built ($LUNFS_BIN missing): run make build"

LABEL[lunfs_r0]="L0 lunfs RAID-0 ($LUNFS_DRIVES drives on /dev/shm)"
LABEL[lunfs_r1]="L1 lunfs RAID-1 ($LUNFS_DRIVES drives on /dev/shm)"
LABEL[lunfs_r5]="L5 lunfs RAID-5 ($LUNFS_DRIVES drives on /dev/shm)"
LABEL[lunfs_r1_deg]="L1d lunfs RAID-1 degraded (drive 1 of $LUNFS_DRIVES removed)"
LABEL[lunfs_r5_deg]="L5d lunfs RAID-5 degraded (drive 1 of $LUNFS_DRIVES removed)"
LABEL[loop_lunfs_r0]="DL0 loop → L0"
LABEL[loop_lunfs_r1]="DL1 loop → L1"
LABEL[loopdio_lunfs_r0]="DL0' loop dio=on → L0"
LABEL[ext4_lunfs_r0]="EL0 ext4 → loop → L0"
LABEL[ext4_lunfs_r1]="EL1 ext4 → loop → L1"
LABEL[lunfs_r0_fn]="L0fn lunfs RAID-0 on fuse-native ($LUNFS_DRIVES drives on /dev/shm)"
LABEL[nfmem]="N native-front-mem (lunfs's FUSE addon, in-memory file)"
LABEL[loop_nfmem]="DN loop → N"
LABEL[ext4_nfmem]="EN ext4 → loop → N"
LABEL[prof_lunfs_r0]="P-L0 lunfs RAID-0 under node --cpu-prof"
LABEL[prof_fnmem]="P-B fuse-native-mem under node --cpu-prof"

# Per drive: the LUN's share of the data (RAID-0 stripes over all drives, RAID-1 keeps mirrored
# pairs, so capacity is half the drives, RAID-5 keeps one parity unit per row of N units, so
# capacity is N - 1 drives) plus room for the header, the metadata area and slack.
lunfs_drive_bytes() { # raid -> bytes per drive (whole MiB)
  local data
  case $1 in
    0) data=$(( (SIZE_BYTES + LUNFS_DRIVES - 1) / LUNFS_DRIVES )) ;;
    1) data=$(( (2 * SIZE_BYTES + LUNFS_DRIVES - 1) / LUNFS_DRIVES )) ;;
    5) (( LUNFS_DRIVES >= 3 )) || { log "RAID-5 needs LUNFS_DRIVES >= 3"; return 1; }
       data=$(( (SIZE_BYTES + LUNFS_DRIVES - 2) / (LUNFS_DRIVES - 1) )) ;;
    *) log "unknown RAID level $1"; return 1 ;;
  esac
  local mib=$(( (data >> 20) + (data >> 24) + 64 ))   # + 1/16 + 64 MiB
  echo $(( mib << 20 ))
}

# Starts `lunfs mount DIR MNT` in the background; sets LUNFS_PID. Logs to $2.log.
lunfs_start() { # pooldir mountpoint log [node flags...]
  local dir=$1 mnt=$2 logf=$3 i; shift 3
  local cache=()
  [ -n "$LUNFS_CACHE_SIZE" ] && cache=(--cache-size "$LUNFS_CACHE_SIZE")
  mkdir -p "$mnt"
  : > "$logf"
  # shellcheck disable=SC2086
  node $LUNFS_NODE_FLAGS "$@" "$LUNFS_BIN" mount "$dir" "$mnt" --front "$LUNFS_FRONT" "${cache[@]}" >>"$logf" 2>&1 &
  LUNFS_PID=$!
  CLEAN_PIDS+=("$LUNFS_PID"); CLEAN_FUSE+=("$mnt")
  for ((i = 0; i < 600; i++)); do
    grep -q 'mounted at' "$logf" 2>/dev/null && break
    alive "$LUNFS_PID" || { log "lunfs mount exited: $(tail -n 3 "$logf")"; return 1; }
    sleep 0.1
  done
  grep -q 'mounted at' "$logf" || { log "lunfs mount did not come up: $(tail -n 3 "$logf")"; return 1; }
  wait_size "$mnt/luns/lun0" "$SIZE_BYTES" 30 || { log "lunfs LUN has the wrong size"; return 1; }
}

# SIGTERM (flush + unmount) and wait for the server; used for the template only (the job
# servers are stopped by peers.sh's teardown through CLEAN_PIDS / CLEAN_FUSE).
lunfs_stop() { # pid mountpoint
  local i
  kill -TERM "$1" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do alive "$1" || break; sleep 0.1; done
  if alive "$1"; then log "lunfs pid $1 ignored SIGTERM, SIGKILL"; kill -KILL "$1" 2>/dev/null || true; fi
  wait "$1" 2>/dev/null || true
  if is_mounted "$2"; then fusermount -u -z "$2" 2>/dev/null || umount -l "$2" 2>/dev/null || true; fi
}

# The template pool of one RAID level: created, LUN prefilled, cleanly unmounted; made once.
# Sets LUNFS_TMPL (not echoed: a $(...) subshell would lose track of the server it starts).
lunfs_template() { # raid
  local raid=$1 dir="$DATA/lunfs-r$1.tmpl" mnt="$WORK/lunfs-tmpl.mnt" drive pid
  LUNFS_TMPL=$dir
  [ -f "$dir/.ready" ] && return 0
  rm -rf "$dir"
  drive=$(lunfs_drive_bytes "$raid") || return 1
  log "lunfs: template pool RAID-$raid, $LUNFS_DRIVES drives of $((drive >> 20)) MiB, LUN $((SIZE_BYTES >> 20)) MiB, prefill=$LUNFS_PREFILL"
  node "$LUNFS_BIN" pool create "$dir" --drives "$LUNFS_DRIVES" --drive-size "$drive" --raid "$raid" || return 1
  node "$LUNFS_BIN" lun create "$dir" lun0 --size "$SIZE_BYTES" || return 1
  if [ "$LUNFS_PREFILL" = 1 ]; then
    lunfs_start "$dir" "$mnt" "$WORK/lunfs-tmpl.log" || return 1
    pid=$LUNFS_PID
    dd if="$DATA/raw.img" of="$mnt/luns/lun0" bs=1M oflag=direct conv=notrunc,fsync status=none || { lunfs_stop "$pid" "$mnt"; return 1; }
    lunfs_stop "$pid" "$mnt"
    grep -q 'unmounted cleanly' "$WORK/lunfs-tmpl.log" || { log "lunfs template did not unmount cleanly: $(tail -n 3 "$WORK/lunfs-tmpl.log")"; return 1; }
  fi
  node "$LUNFS_BIN" status "$dir" || true
  touch "$dir/.ready"
}

# A fresh copy of the template, mounted: sets T_FILE / T_PID / T_REGION / T_NOTE.
start_lunfs() { # raid [node flags...]
  local raid=$1; shift
  start_lunfs_pool "$raid" "" "$@"
}

# The same with drive <index> of the copy deleted before the mount (the template stays whole), so
# the pool mounts degraded; the pool and drive states lunfs reports after the mount go into T_NOTE.
start_lunfs_degraded() { # raid drive-index [node flags...]
  local raid=$1 gone=$2; shift 2
  start_lunfs_pool "$raid" "$gone" "$@"
}

start_lunfs_pool() { # raid drive-to-remove ("" = none) [node flags...]
  local raid=$1 gone=$2 dir mnt drive st; shift 2
  lunfs_template "$raid" || return 1
  drive=$(lunfs_drive_bytes "$raid") || return 1
  dir=$(mktemp -d "$LUNFS_SHM/lunfs-bench.XXXXXX")
  LUNFS_CLEAN_DIRS+=("$dir")
  cp -a --sparse=always "$LUNFS_TMPL/." "$dir/" || return 1
  rm -f "$dir/.ready"
  if [ -n "$gone" ]; then
    [ -f "$dir/drive-$gone.img" ] || { log "lunfs: no drive-$gone.img in the pool copy $dir"; return 1; }
    rm "$dir/drive-$gone.img"
  fi
  mnt="$WORK/lunfs.mnt"
  lunfs_start "$dir" "$mnt" "$WORK/lunfs.log" "$@" || return 1
  T_FILE="$mnt/luns/lun0"; T_PID=$LUNFS_PID; T_REGION=$SIZE_BYTES; T_STATS=""
  T_NOTE+="front $LUNFS_FRONT, RAID-$raid ${LUNFS_DRIVES}×$(( drive >> 20 )) MiB drives on $LUNFS_SHM"
  T_NOTE+=", cache ${LUNFS_CACHE_SIZE:-default}, LUN $([ "$LUNFS_PREFILL" = 1 ] && echo 'prefilled' || echo 'empty (thin)'); "
  if [ -n "$gone" ]; then
    # what the mounted pool says about itself (through its control socket)
    st=$(node "$LUNFS_BIN" status "$dir" --json 2>/dev/null | node -e '
      let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
        try {
          const j = JSON.parse(s), d = (j.drives || []).find((x) => x.index === Number(process.argv[1]));
          console.log(`pool state ${j.pool && j.pool.state}, drive ${process.argv[1]} ${d ? d.state : "not listed"}`);
        } catch { console.log("status unreadable"); }
      });' "$gone" 2>/dev/null) || st="status failed"
    log "lunfs: mounted with drive-$gone.img removed: $st"
    T_NOTE+="drive-$gone.img deleted from the copy before the mount ($([ "$LUNFS_PREFILL" = 1 ] && echo 'LUN data laid down on the healthy pool' || echo 'no prefill')), $st; "
  fi
}

# peers.sh tears down after every job; also remove the pool copies then.
if declare -F teardown_all >/dev/null && ! declare -F _peers_teardown_all >/dev/null; then
  eval "$(declare -f teardown_all | sed '1s/^teardown_all/_peers_teardown_all/')"
  teardown_all() {
    _peers_teardown_all
    local d
    for d in "${LUNFS_CLEAN_DIRS[@]}"; do rm -rf "$d"; done
    LUNFS_CLEAN_DIRS=()
  }
fi

# Per-thread CPU of the server around each fio run (every target with a server pid): peers.sh
# calls fnmem_stats_reset right before fio starts and fnmem_stats_dump right after it ends, so
# wrap both to snapshot /proc/PID/task/*/{schedstat,stat,status} there. The diff goes to
# $LUNFS_THREADS_DIR/<kind>-<target>-<job>.tsv: tid, role (main = the process's main thread (the
# JS thread for node), fuse = a thread blocked reading /dev/fuse before or after the job (libfuse2
# loop threads), other = libuv pool / V8 helpers / qemu threads; threads born during the job count
# from zero),
# on-CPU ns, minor faults, voluntary and involuntary context switches; plus a "0 process" line
# with the whole process's CPU (ticks, so also threads that exited during the job).
LUNFS_THREADS_DIR=${LUNFS_THREADS_DIR:-}
lunfs_threads_snap() { # pid -> "tid role cpu_ns minflt vcsw nvcsw" per thread
  local pid=$1 task tid st f role ns
  for task in /proc/"$pid"/task/*; do
    tid=${task##*/}
    st=$(cat "$task/stat" 2>/dev/null) || continue
    st=${st##*) }
    read -r -a f <<< "$st"
    role=other
    if [ "$tid" = "$pid" ]; then role=main
    elif grep -q fuse_dev "$task/stack" 2>/dev/null; then role=fuse; fi
    ns=0; read -r ns _ < "$task/schedstat" 2>/dev/null || true
    printf '%s %s %s %s %s\n' "$tid" "$role" "$ns" "${f[7]}" \
      "$(awk '/^voluntary_ctxt_switches/{v=$2} /^nonvoluntary_ctxt_switches/{n=$2} END{print v+0, n+0}' "$task/status" 2>/dev/null)"
  done
  # the whole process (includes threads that exited), in clock ticks from /proc/PID/stat
  st=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
  st=${st##*) }
  read -r -a f <<< "$st"
  printf '0 process %s %s 0 0\n' "$(( (f[11] + f[12]) * 1000000000 / CLK_TCK ))" "${f[7]}"
}
if [ -n "$LUNFS_THREADS_DIR" ] && declare -F fnmem_stats_reset >/dev/null && ! declare -F _peers_fnmem_stats_reset >/dev/null; then
  mkdir -p "$LUNFS_THREADS_DIR"
  eval "$(declare -f fnmem_stats_reset | sed '1s/^fnmem_stats_reset/_peers_fnmem_stats_reset/')"
  eval "$(declare -f fnmem_stats_dump | sed '1s/^fnmem_stats_dump/_peers_fnmem_stats_dump/')"
  fnmem_stats_reset() {
    LUNFS_SNAP_PID="" # the original calls fnmem_stats_dump: no thread diff from that call
    _peers_fnmem_stats_reset
    LUNFS_SNAP_PID=${T_PID:-}
    [ -n "$LUNFS_SNAP_PID" ] && lunfs_threads_snap "$LUNFS_SNAP_PID" > "$WORK/threads.before" 2>/dev/null
    return 0
  }
  fnmem_stats_dump() { # runs in $(...): may only write files
    if [ -n "${LUNFS_SNAP_PID:-}" ] && [ -n "${job:-}" ]; then
      lunfs_threads_snap "$LUNFS_SNAP_PID" > "$WORK/threads.after" 2>/dev/null
      awk 'NR==FNR {role[$1]=$2; c[$1]=$3; m[$1]=$4; v[$1]=$5; n[$1]=$6; next}
           { r = ($1 in role && role[$1] != "other") ? role[$1] : $2; printf "%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\n", $1, r, $3-c[$1], $4-m[$1], $5-v[$1], $6-n[$1] }' \
        "$WORK/threads.before" "$WORK/threads.after" > "$LUNFS_THREADS_DIR/${kind:-job}-${t:-x}-$job.tsv" 2>/dev/null || true
    fi
    _peers_fnmem_stats_dump
  }
fi

setup_lunfs_r0() { start_lunfs 0; }
setup_lunfs_r0_fn() { LUNFS_FRONT=fuse-native start_lunfs 0; }
setup_lunfs_r1() { start_lunfs 1; }
setup_lunfs_r5() { start_lunfs 5; }
setup_lunfs_r1_deg() { start_lunfs_degraded 1 1; }
setup_lunfs_r5_deg() { start_lunfs_degraded 5 1; }
setup_loop_lunfs_r0() { setup_lunfs_r0 && attach_loop off; }
setup_loop_lunfs_r1() { setup_lunfs_r1 && attach_loop off; }
setup_loopdio_lunfs_r0() { setup_lunfs_r0 && attach_loop on; }
setup_ext4_lunfs_r0() { setup_loop_lunfs_r0 && mount_ext4; }
setup_ext4_lunfs_r1() { setup_loop_lunfs_r1 && mount_ext4; }

# The native front's ceiling: lunfs's FUSE addon (of the LUNFS_BIN build) over an in-memory file.
setup_nfmem() {
  local mnt="$WORK/nfmem.mnt" pid
  mkdir -p "$mnt"
  T_STATS="$WORK/nfmem.stats.json"
  node "$LUNFS_REPO/bench/nfmem-server.mjs" "$mnt" "$SIZE_BYTES" "$T_STATS" "$(dirname "$LUNFS_BIN")" >>"$WORK/nfmem.log" 2>&1 &
  pid=$!
  CLEAN_PIDS+=("$pid"); CLEAN_FUSE+=("$mnt")
  wait_size "$mnt/disk.img" "$SIZE_BYTES" 60 || { log "nfmem did not come up: $(tail -n 3 "$WORK/nfmem.log")"; return 1; }
  T_FILE="$mnt/disk.img"; T_PID=$pid; T_REGION=$SIZE_BYTES
  T_NOTE+="lunfs's native FUSE addon (libfuse3), in-memory file; "
}
setup_loop_nfmem() { setup_nfmem && attach_loop off; }
setup_ext4_nfmem() { setup_loop_nfmem && mount_ext4; }

# Profiled variants. run_one's local $job is visible here (bash locals are dynamically scoped),
# so each job's profile lands in a folder of its own.
lunfs_prof_dir() { # target -> dir
  local d="$LUNFS_PROF_DIR/$1-${job:-job}"
  rm -rf "$d"; mkdir -p "$d"; echo "$d"
}
setup_prof_lunfs_r0() {
  local d; d=$(lunfs_prof_dir lunfs_r0)
  start_lunfs 0 --cpu-prof --cpu-prof-dir="$d" || return 1
  T_NOTE+="node --cpu-prof; "
}
setup_prof_fnmem() {
  local mnt="$WORK/fnmem-prof.mnt" pid d
  d=$(lunfs_prof_dir fnmem)
  mkdir -p "$mnt"
  T_STATS="$WORK/fnmem-prof.stats.json"
  node --cpu-prof --cpu-prof-dir="$d" "$HERE/fnmem-server.js" "$mnt" "$SIZE_BYTES" "$T_STATS" "$FNMEM_OPTS" >>"$WORK/fnmem-prof.log" 2>&1 &
  pid=$!
  CLEAN_PIDS+=("$pid"); CLEAN_FUSE+=("$mnt")
  wait_size "$mnt/disk.img" "$SIZE_BYTES" 60 || { log "fnmem (profiled) did not come up"; return 1; }
  T_FILE="$mnt/disk.img"; T_PID=$pid; T_REGION=$SIZE_BYTES
  T_NOTE+="opts=${FNMEM_OPTS:-none}, node --cpu-prof; "
}
