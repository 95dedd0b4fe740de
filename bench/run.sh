#!/usr/bin/env bash
# make bench: fio through a mounted lunfs LUN (RAID-0, RAID-1 and RAID-5 pools whose drive files
# sit on /dev/shm, RAID-1 and RAID-5 also with one drive removed; lunfs's own native FUSE front,
# and RAID-0 once more on fuse-native) beside the two ceilings (a trivial in-memory file on
# fuse-native, fnmem, and on lunfs's native front addon, nfmem) and the peer (qemu-storage-daemon qcow2 FUSE export) of
# ../shared/bench/peers.sh: same jobs, same run. Writes the raw report and
# records under .bench/run-<UTC time>/ (gitignored; .bench/latest points at the last one), then
# BENCHMARKS.md with the ratios (bench/report.mjs). Then the snapshot measurements
# (bench/snapshots.sh, records in <run>/snapshots/, the "Snapshots" section of the report), and
# after the background and clone parts the migration (bench/migrate.sh, records in <run>/migrate/,
# the "Migration" section, bench/migrate-report.mjs).
#
#   sudo make bench                                    # full run (about 30 + 6 min on 2 cores)
#   RAND_RUNTIME=5 bash bench/run.sh                   # quicker
#   TARGETS="fnmem lunfs_r0" JOBS="randread4k" RAND_RUNTIME=5 PROFILE=0 bash bench/run.sh
#   SNAPSHOTS_ONLY=1 bash bench/run.sh                 # only the snapshot part (bench/snapshots.sh)
#   RAID_ONLY=1 bash bench/run.sh                      # only the RAID-level comparison (~12-15 min)
#   CLONES_ONLY=1 bash bench/run.sh                    # only snapclones and snapshot trees (bench/clones.sh)
#   MIGRATE_ONLY=1 bash bench/run.sh                   # only migrations under load (bench/migrate.sh)
#
# Environment (all optional):
#   TARGETS       peers.sh target ids (default below; lunfs ids: see bench/peers-extra-lunfs.sh)
#   JOBS          seqwrite seqread randwrite4k randread4k randwrite4k_qd16 randread4k_qd16
#                 (peers.sh's four psync QD1 jobs plus its optional libaio QD16 ones)
#   RAND_RUNTIME  seconds for the 4k jobs (20)     SIZE_MIB / SEQ_MIB / RANDW_MIB: peers.sh's
#   PROFILE       1 (default): also run prof_fnmem and prof_lunfs_r0 (node --cpu-prof) and put
#                 the top self-time functions per job in BENCHMARKS.md; 0: skip
#   PROBES        0 (default): skip peers.sh's fuse-native option / qemu request-size probes
#   REPEAT        1 (default): run peers.sh N times in a row; the report shows medians and ranges
#                 (the 4k jobs vary by 2x between minutes on a shared 2-vCPU VM)
#   SHARED_BENCH  folder of peers.sh (default: <repo>/../shared/bench)
#   OUT_DIR       where run folders go (default: <repo>/.bench)
#   BENCHMARKS_MD the report to write (default: <repo>/BENCHMARKS.md)
#   LUNFS_*       knobs of bench/peers-extra-lunfs.sh (LUNFS_PREFILL, LUNFS_CACHE_SIZE, ...)
#   SNAPSHOTS     1 (default): after peers.sh, run bench/snapshots.sh (about 6 min; its knobs:
#                 SNAP_*, e.g. SNAP_QUICK=1 for a short smoke run) and add its "Snapshots" section
#                 to the report; 0: skip
#   SNAPSHOTS_ONLY 1: skip peers.sh, run only bench/snapshots.sh and replace (or add) the
#                 "Snapshots" section of the existing BENCHMARKS_MD, leaving the rest as it is
#   BACKGROUND    1 (default): after the snapshot part, run bench/background-load.sh (RAID-5, then
#                 RAID-1; about 3 min): randread4k during a scrub and a rebuild against idle, the
#                 "Rebuild and scrub under load" section; 0: skip
#   BACKGROUND_ONLY 1: run only that and replace (or add) its section of the existing BENCHMARKS_MD
#   CLONES        1 (default): after the background part, run bench/clones.sh (about 3.5-4.5 min; its
#                 knobs: CLONE_*, e.g. CLONE_QUICK=1 for a short smoke run): BGCOPY throughput
#                 against seqread, randwrite4k on the source during BGCOPY against idle, seqread of
#                 a snapshot 16 levels deep against one level deep; the "Snapclones and snapshot
#                 trees" section; 0: skip
#   CLONES_ONLY   1: run only that and replace (or add) its section of the existing BENCHMARKS_MD;
#                 .bench/latest-clones points at that run
#   MIGRATE       1 (default): after the clone part, run bench/migrate.sh (about 3 min; its knobs:
#                 MIG_*, e.g. MIG_ROUNDS, MIG_RUNTIME): lunfs migrate's MB/s against seqread, and
#                 randwrite4k while migrations run back to back against idle; the "Migration"
#                 section; 0: skip
#   MIGRATE_ONLY  1: run only that and replace (or add) its section of the existing BENCHMARKS_MD
#                 (the section whose heading starts with "## Migration"); .bench/latest-migrate
#                 points at that run
#   RAID_ONLY     1: run peers.sh on the RAID comparison only (TARGETS default "fnmem nfmem qcow2
#                 lunfs_r0 lunfs_r1 lunfs_r5 lunfs_r1_deg lunfs_r5_deg", PROFILE default 0, no
#                 snapshot part) and replace (or add) the "RAID levels on the same drives" section
#                 of the existing BENCHMARKS_MD, leaving the rest as it is; .bench/latest-raid points
#                 at that run (.bench/latest stays on the last full run)
set -euo pipefail
export LC_ALL=C

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# What the caller set (for the report's "command" line), before defaults are filled in.
OVERRIDES=()
for v in TARGETS JOBS RAND_RUNTIME SIZE_MIB SEQ_MIB RANDW_MIB PROFILE PROBES REPEAT FNMEM_OPTS \
         LUNFS_PREFILL LUNFS_DRIVES LUNFS_CACHE_SIZE LUNFS_NODE_FLAGS LUNFS_SHM LUNFS_BIN SHARED_BENCH OUT_DIR BENCHMARKS_MD \
         SNAPSHOTS SNAPSHOTS_ONLY RAID_ONLY CLONES CLONES_ONLY MIGRATE MIGRATE_ONLY; do
  [ -n "${!v+x}" ] && OVERRIDES+=("$v=${!v}")
done
for v in $(compgen -v | grep '^SNAP_' || true); do OVERRIDES+=("$v=${!v}"); done # bench/snapshots.sh's knobs
for v in $(compgen -v | grep '^CLONE_' || true); do OVERRIDES+=("$v=${!v}"); done # bench/clones.sh's knobs
for v in $(compgen -v | grep '^MIG_' || true); do OVERRIDES+=("$v=${!v}"); done # bench/migrate.sh's knobs

if [ "${SNAPSHOTS_ONLY:-0}" != 1 ] && [ "${CLONES_ONLY:-0}" != 1 ] && [ "${MIGRATE_ONLY:-0}" != 1 ]; then
  SHARED_BENCH=$(cd "${SHARED_BENCH:-$REPO/../shared/bench}" 2>/dev/null && pwd) \
    || die "shared/bench not found at $REPO/../shared/bench (set SHARED_BENCH)"
  [ -f "$SHARED_BENCH/peers.sh" ] || die "no peers.sh in $SHARED_BENCH"
fi
[ "$(id -u)" = 0 ] || die "run as root (peers.sh mounts, attaches loop devices and drops caches)"
[ -f "$REPO/dist/bin.js" ] || die "lunfs is not built: run make build (or make bench)"

RAID_ONLY=${RAID_ONLY:-0}
RAID_TARGETS="fnmem nfmem qcow2 lunfs_r0 lunfs_r1 lunfs_r5 lunfs_r1_deg lunfs_r5_deg"
if [ "$RAID_ONLY" = 1 ]; then
  [ "${SNAPSHOTS_ONLY:-0}" = 1 ] && die "RAID_ONLY=1 and SNAPSHOTS_ONLY=1 exclude each other"
  TARGETS=${TARGETS:-$RAID_TARGETS}
  PROFILE=${PROFILE:-0}
  SNAPSHOTS=0
fi
TARGETS=${TARGETS:-"raw fnmem nfmem qcow2 lunfs_r0 lunfs_r0_fn lunfs_r1 lunfs_r5 lunfs_r1_deg lunfs_r5_deg loop_fnmem loop_nfmem loop_qcow2 loop_lunfs_r0 ext4_fnmem ext4_nfmem ext4_qcow2 ext4_lunfs_r0"}
JOBS=${JOBS:-"seqwrite seqread randwrite4k randread4k randwrite4k_qd16 randread4k_qd16"}
RAND_RUNTIME=${RAND_RUNTIME:-20}
PROFILE=${PROFILE:-1}
PROBES=${PROBES:-0}
REPEAT=${REPEAT:-1}
OUT_DIR=${OUT_DIR:-$REPO/.bench}
BENCHMARKS_MD=${BENCHMARKS_MD:-$REPO/BENCHMARKS.md}
SNAPSHOTS=${SNAPSHOTS:-1}
SNAPSHOTS_ONLY=${SNAPSHOTS_ONLY:-0}
BACKGROUND=${BACKGROUND:-1}
BACKGROUND_ONLY=${BACKGROUND_ONLY:-0}
CLONES=${CLONES:-1}
CLONES_ONLY=${CLONES_ONLY:-0}
MIGRATE=${MIGRATE:-1}
MIGRATE_ONLY=${MIGRATE_ONLY:-0}
if [ "$MIGRATE_ONLY" = 1 ]; then
  [ "$SNAPSHOTS_ONLY" = 1 ] || [ "$RAID_ONLY" = 1 ] || [ "$BACKGROUND_ONLY" = 1 ] || [ "$CLONES_ONLY" = 1 ] \
    && die "MIGRATE_ONLY=1 excludes SNAPSHOTS_ONLY=1, RAID_ONLY=1, BACKGROUND_ONLY=1 and CLONES_ONLY=1"
  MIGRATE=1
  CLONES=0
elif [ "$SNAPSHOTS_ONLY" = 1 ] || [ "$RAID_ONLY" = 1 ] || [ "$BACKGROUND_ONLY" = 1 ] || [ "$CLONES_ONLY" = 1 ]; then
  MIGRATE=0
fi
if [ "$MIGRATE_ONLY" = 1 ]; then
  :
elif [ "$CLONES_ONLY" = 1 ]; then
  [ "$SNAPSHOTS_ONLY" = 1 ] || [ "$RAID_ONLY" = 1 ] || [ "$BACKGROUND_ONLY" = 1 ] \
    && die "CLONES_ONLY=1 excludes SNAPSHOTS_ONLY=1, RAID_ONLY=1 and BACKGROUND_ONLY=1"
  CLONES=1
elif [ "$SNAPSHOTS_ONLY" = 1 ] || [ "$RAID_ONLY" = 1 ] || [ "$BACKGROUND_ONLY" = 1 ]; then
  CLONES=0
fi
[ "$SNAPSHOTS_ONLY" = 1 ] && SNAPSHOTS=1
if [ "$PROFILE" = 1 ]; then
  for t in prof_fnmem prof_lunfs_r0; do [[ " $TARGETS " == *" $t "* ]] || TARGETS+=" $t"; done
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN_DIR="$OUT_DIR/run-$STAMP"
mkdir -p "$RUN_DIR"

# peers.sh installs fuse-native into a temp dir with npm; the repo has the same version (the one
# lunfs runs on), so the ceiling and lunfs use one binding and the run needs no registry.
FN_ENV=()
fnv=$(node -p "require('$REPO/node_modules/fuse-native/package.json').version" 2>/dev/null || true)
if [ -z "${FUSE_NATIVE_DIR:-}" ] && [ "$fnv" = 2.2.6 ]; then FN_ENV=(FUSE_NATIVE_DIR="$REPO"); fi
[ -n "${FUSE_NATIVE_DIR:-}" ] && FN_ENV=(FUSE_NATIVE_DIR="$FUSE_NATIVE_DIR")

# peers_cmd <repeat number> -> CMD (array); the profiled targets run in the first repeat only.
peers_cmd() {
  local n=$1 suffix="" targets=$TARGETS
  if [ "$REPEAT" -gt 1 ]; then suffix="-$n"; fi
  if [ "$n" -gt 1 ]; then targets=$(tr ' ' '\n' <<< "$TARGETS" | grep -v '^prof_' | tr '\n' ' '); targets=${targets% }; fi
  CMD=(env PEERS_EXTRA="$BENCH/peers-extra-lunfs.sh" TARGETS="$targets" JOBS="$JOBS"
       RAND_RUNTIME="$RAND_RUNTIME" PROBES="$PROBES" OUT_MD="$RUN_DIR/peers$suffix.md"
       LUNFS_PROF_DIR="$RUN_DIR/cpuprof" LUNFS_THREADS_DIR="$RUN_DIR/threads$suffix" "${FN_ENV[@]}")
  local v
  for v in SIZE_MIB SEQ_MIB RANDW_MIB FNMEM_OPTS; do [ -n "${!v+x}" ] && CMD+=("$v=${!v}"); done
  CMD+=(bash "$SHARED_BENCH/peers.sh")
}

# One build for the whole run: a copy of dist/ (with src/ for the source maps and the native
# addon) in the run folder, so a rebuild by someone else while the run goes does not mix builds.
if [ -z "${LUNFS_BIN:-}" ]; then
  B="$RUN_DIR/build"
  mkdir -p "$B/native/build/Release" "$B/native/fuse/build/Release"
  cp -a "$REPO/dist" "$B/dist"
  cp -a "$REPO/src" "$B/src"
  cp "$REPO/package.json" "$B/"
  ln -s "$REPO/node_modules" "$B/node_modules"
  cp "$REPO"/native/build/Release/*.node "$B/native/build/Release/" 2>/dev/null || true
  # the native FUSE front's addon (lunfs mount --front native, and the nfmem ceiling load it)
  cp "$REPO"/native/fuse/build/Release/*.node "$B/native/fuse/build/Release/" 2>/dev/null \
    || log "WARNING: native/fuse/build/Release/*.node missing: the native-front targets will fail"
  export LUNFS_BIN="$B/dist/bin.js"
fi
dist_sha=$(cd "$(dirname "$LUNFS_BIN")" && find . -name '*.js' -type f | LC_ALL=C sort | xargs cat | sha1sum | cut -c1-12)

# Machine and build, recorded before the run.
git_head=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
git_dirty=$(git -C "$REPO" status --porcelain -- src native package.json 2>/dev/null | wc -l | tr -d ' ')
node - "$RUN_DIR/machine.json" <<EOF
const fs = require('fs'), os = require('os')
const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) || [])[1] || os.cpus()[0]?.model || '?'
fs.writeFileSync(process.argv[2], JSON.stringify({
  cpu, cores: os.cpus().length, memGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
  kernel: os.release(), node: process.version,
  distro: fs.existsSync('/etc/debian_version') ? 'Debian ' + fs.readFileSync('/etc/debian_version', 'utf8').trim() : '?',
  fio: \`$(fio --version 2>/dev/null || echo '?')\`,
  qemu: \`$(qemu-storage-daemon --version 2>/dev/null | head -n 1 | awk '{print $3}' || echo '?')\`,
  fuseNative: '${fnv:-?}',
  git: { head: '$git_head', dirtyFiles: $git_dirty, distSha1: '$dist_sha', bin: '$LUNFS_BIN' },
  loadavgBefore: fs.readFileSync('/proc/loadavg', 'utf8').trim(),
}, null, 1))
EOF
{
  [ ${#OVERRIDES[@]} -gt 0 ] && printf "%q " "${OVERRIDES[@]}"; printf "bash bench/run.sh\n"
  if [ "$SNAPSHOTS_ONLY" != 1 ] && [ "$CLONES_ONLY" != 1 ] && [ "$MIGRATE_ONLY" != 1 ]; then
    for ((n = 1; n <= REPEAT; n++)); do peers_cmd "$n"; printf '%q ' "${CMD[@]}"; printf '\n'; done
  fi
  if [ "$SNAPSHOTS" = 1 ] && [ "$CLONES_ONLY" != 1 ] && [ "$MIGRATE_ONLY" != 1 ]; then printf 'SNAP_DIR=%q LUNFS_BIN=%q bash bench/snapshots.sh\n' "$RUN_DIR/snapshots" "$LUNFS_BIN"; fi
  if [ "$CLONES" = 1 ]; then printf 'CLONE_DIR=%q LUNFS_BIN=%q bash bench/clones.sh\n' "$RUN_DIR/clones" "$LUNFS_BIN"; fi
  if [ "$MIGRATE" = 1 ]; then printf 'MIG_DIR=%q LUNFS_BIN=%q bash bench/migrate.sh\n' "$RUN_DIR/migrate" "$LUNFS_BIN"; fi
} > "$RUN_DIR/command.txt"

# The snapshot part (bench/snapshots.sh): its records go to $RUN_DIR/snapshots; a failure there
# is reported but does not lose the peers.sh report.
run_snapshots() {
  local t0 src=0
  t0=$(date +%s)
  log "snapshots: bash bench/snapshots.sh (records in $RUN_DIR/snapshots)"
  SNAP_DIR="$RUN_DIR/snapshots" LUNFS_BIN="$LUNFS_BIN" bash "$BENCH/snapshots.sh" \
    2> >(tee -a "$RUN_DIR/snapshots.log" >&2) || src=$?
  log "snapshots finished in $(( $(date +%s) - t0 )) s (rc $src)"
  left=$(awk '$2 ~ /^\/tmp\/lunfs-snapbench\./ {print $2}' /proc/mounts)
  if [ -n "$left" ]; then log "WARNING: still mounted after the snapshot part: $left"; fi
  return $src
}

# Rebuild and scrub under a randread4k load (bench/background-load.sh), RAID-5 then RAID-1; records
# in $RUN_DIR/background.jsonl, the "Rebuild and scrub under load" section of the report.
run_background() {
  local raid brc=0
  for raid in 5 1; do
    log "background: RAID=$raid bash bench/background-load.sh"
    OUT="$RUN_DIR/background.jsonl" RAID=$raid LUNFS_BIN="$LUNFS_BIN" bash "$BENCH/background-load.sh" \
      2> >(tee -a "$RUN_DIR/background.log" >&2) || brc=$?
  done
  return $brc
}
splice_background() {
  [ -s "$RUN_DIR/background.jsonl" ] || return 0
  node "$BENCH/background-report.mjs" "$RUN_DIR/background.jsonl" --splice "$BENCHMARKS_MD" \
    --command "BACKGROUND_ONLY=1 bash bench/run.sh (RAID=5, then RAID=1: bash bench/background-load.sh)"
}
# Snapclones and snapshot trees (bench/clones.sh): records in $RUN_DIR/clones, the "Snapclones and
# snapshot trees" section of the report.
run_clones() {
  local t0 crc=0 left
  t0=$(date +%s)
  log "clones: bash bench/clones.sh (records in $RUN_DIR/clones)"
  CLONE_DIR="$RUN_DIR/clones" LUNFS_BIN="$LUNFS_BIN" bash "$BENCH/clones.sh" \
    2> >(tee -a "$RUN_DIR/clones.log" >&2) || crc=$?
  log "clones finished in $(( $(date +%s) - t0 )) s (rc $crc)"
  left=$(awk '$2 ~ /^\/tmp\/lunfs-clonebench\./ {print $2}' /proc/mounts)
  if [ -n "$left" ]; then log "WARNING: still mounted after the clone part: $left"; fi
  return $crc
}
splice_clones() {
  [ -s "$RUN_DIR/clones/clones.jsonl" ] || return 0
  node "$BENCH/clones-report.mjs" --dir "$RUN_DIR/clones" --splice "$BENCHMARKS_MD" --command "$(head -n 1 "$RUN_DIR/command.txt")"
}
# Migrations under load (bench/migrate.sh): records in $RUN_DIR/migrate, the "Migration" section.
run_migrate() {
  local t0 mrc=0 left
  t0=$(date +%s)
  log "migrate: bash bench/migrate.sh (records in $RUN_DIR/migrate)"
  MIG_DIR="$RUN_DIR/migrate" LUNFS_BIN="$LUNFS_BIN" bash "$BENCH/migrate.sh" \
    2> >(tee -a "$RUN_DIR/migrate.log" >&2) > "$RUN_DIR/migrate.txt" || mrc=$?
  log "migrate finished in $(( $(date +%s) - t0 )) s (rc $mrc)"
  left=$(awk '$2 ~ /^\/dev\/shm\/lunfs-migrate-bench-/ {print $2}' /proc/mounts)
  if [ -n "$left" ]; then log "WARNING: still mounted after the migration part: $left"; fi
  return $mrc
}
splice_migrate() {
  [ -s "$RUN_DIR/migrate/migrate.jsonl" ] || return 0
  node "$BENCH/migrate-report.mjs" --dir "$RUN_DIR/migrate" --splice "$BENCHMARKS_MD" --command "$(head -n 1 "$RUN_DIR/command.txt")"
}
if [ "$MIGRATE_ONLY" = 1 ]; then
  log "run folder: $RUN_DIR (MIGRATE_ONLY=1: only migrations under load)"
  run_migrate || die "the migration part failed; see $RUN_DIR/migrate.log"
  ln -sfn "run-$STAMP" "$OUT_DIR/latest-migrate"
  splice_migrate
  log "replaced the Migration section of $BENCHMARKS_MD (records: $RUN_DIR/migrate)"
  exit 0
fi
if [ "$CLONES_ONLY" = 1 ]; then
  log "run folder: $RUN_DIR (CLONES_ONLY=1: only the snapclones and snapshot trees)"
  run_clones || die "the clone part failed; see $RUN_DIR/clones.log"
  ln -sfn "run-$STAMP" "$OUT_DIR/latest-clones"
  splice_clones
  log "replaced the Snapclones and snapshot trees section of $BENCHMARKS_MD (records: $RUN_DIR/clones)"
  exit 0
fi
if [ "$BACKGROUND_ONLY" = 1 ]; then
  log "run folder: $RUN_DIR (BACKGROUND_ONLY=1: only the rebuild and scrub under load)"
  run_background || die "the background part failed; see $RUN_DIR/background.log"
  splice_background
  exit 0
fi

if [ "$SNAPSHOTS_ONLY" = 1 ]; then
  log "run folder: $RUN_DIR (SNAPSHOTS_ONLY=1: peers.sh is not run)"
  run_snapshots || die "the snapshot part failed; see $RUN_DIR/snapshots.log"
  node "$BENCH/snapshots-report.mjs" --dir "$RUN_DIR/snapshots" --splice "$BENCHMARKS_MD"
  log "replaced the Snapshots section of $BENCHMARKS_MD (records: $RUN_DIR/snapshots)"
  exit 0
fi

node "$BENCH/host-cpu.mjs" snapshot "$RUN_DIR/host-cpu.start.json" || true
log "run folder: $RUN_DIR"
start=$(date +%s)
rc=0
for ((n = 1; n <= REPEAT; n++)); do
  peers_cmd "$n"
  log "peers.sh ($n/$REPEAT): ${CMD[*]}"
  set +e
  "${CMD[@]}" > "$RUN_DIR/peers-stdout-$n.txt" 2> >(tee -a "$RUN_DIR/peers.log" >&2)
  rc=$?
  set -e
  [ $rc -eq 0 ] || break
done
log "peers.sh finished in $(( $(date +%s) - start )) s (rc $rc)"
other=$(node "$BENCH/host-cpu.mjs" diff "$RUN_DIR/host-cpu.start.json" $$ 2>/dev/null || echo '[]')
node -e "const f='$RUN_DIR/machine.json',fs=require('fs'),m=JSON.parse(fs.readFileSync(f));m.loadavgAfter=fs.readFileSync('/proc/loadavg','utf8').trim();m.wallS=$(( $(date +%s) - start ));m.otherLoad=JSON.parse(process.argv[1]);fs.writeFileSync(f,JSON.stringify(m,null,1))" "$other"
[ "$other" != '[]' ] && log "other processes used CPU during the run: $other"

# Nothing of ours may stay mounted (peers.sh's trap tears down; check anyway).
left=$(awk '$2 ~ /^\/tmp\/peers\./ {print $2}' /proc/mounts)
if [ -n "$left" ]; then log "WARNING: still mounted after the run: $left"; fi
left_dirs=$(ls -d "${LUNFS_SHM:-/dev/shm}"/lunfs-bench.* 2>/dev/null || true)
[ -n "$left_dirs" ] && log "WARNING: pool copies left behind: $left_dirs"

[ $rc -eq 0 ] || die "peers.sh failed (rc $rc); see $RUN_DIR/peers.log"
ls "$RUN_DIR"/peers*.jsonl >/dev/null 2>&1 || die "no records in $RUN_DIR"

if [ "$PROFILE" = 1 ] && [ -d "$RUN_DIR/cpuprof" ]; then
  node "$BENCH/cpuprofile-top.mjs" --json "$RUN_DIR/profile.json" --md "$RUN_DIR/profile.md" "$RUN_DIR/cpuprof" \
    || log "WARNING: profile summary failed"
fi
if [ "$RAID_ONLY" = 1 ]; then
  ln -sfn "run-$STAMP" "$OUT_DIR/latest-raid"
  node "$BENCH/report.mjs" --run "$RUN_DIR" --raid-only --splice "$BENCHMARKS_MD"
  log "replaced the RAID levels section of $BENCHMARKS_MD (raw reports and records: $RUN_DIR)"
  exit 0
fi
if [ "$SNAPSHOTS" = 1 ]; then run_snapshots || log "WARNING: the snapshot part failed (rc $?); see $RUN_DIR/snapshots.log"; fi
if [ "$BACKGROUND" = 1 ]; then run_background || log "WARNING: the background part failed; see $RUN_DIR/background.log"; fi
if [ "$CLONES" = 1 ]; then run_clones || log "WARNING: the clone part failed; see $RUN_DIR/clones.log"; fi
if [ "$MIGRATE" = 1 ]; then run_migrate || log "WARNING: the migration part failed; see $RUN_DIR/migrate.log"; fi
ln -sfn "run-$STAMP" "$OUT_DIR/latest"

node "$BENCH/report.mjs" --run "$RUN_DIR" --out "$BENCHMARKS_MD"
splice_background
splice_clones
splice_migrate
log "wrote $BENCHMARKS_MD (raw reports and records: $RUN_DIR)"
