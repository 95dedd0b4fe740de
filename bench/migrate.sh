#!/usr/bin/env bash
# lunfs migrate (issue 16) under load: `bash bench/migrate.sh` (as root, after `make build`; fio
# needed), or as the migration part of `make bench` (bench/run.sh). Every figure is compared with
# one of the same run, on the same mount:
#   - migration MB/s: a fully written LUN (MIG_LUN_SIZE, default 1G) migrated to a file on /dev/shm
#     with no other I/O (`lunfs migrate DIR lun0 --to FILE`, wall time of the command, which starts
#     the copier process), against fio seqread (psync, bs 1M, O_DIRECT) of the LUN;
#   - fio randwrite4k (psync, iodepth 1, O_DIRECT, MIG_RUNTIME s) on the LUN while migrations run
#     back to back (each to a new file, --restart), against the same job with nothing else
#     running. MIG_ROUNDS rounds of idle then migrating, one after the other, so that a machine
#     whose speed drifts over minutes (a shared VM) weighs on both sides alike.
# Pool: RAID-0 of 4 sparse 1 GiB drive files on /dev/shm, `lunfs mount --front native`.
# Records: MIG_DIR/migrate.jsonl (one JSON object per measurement) and MIG_DIR/meta.json;
# bench/migrate-report.mjs makes the "Migration" section of BENCHMARKS.md from them.
set -euo pipefail
cd "$(dirname "$0")/.."
LUNFS_BIN=${LUNFS_BIN:-$PWD/dist/bin.js}
[ -f "$LUNFS_BIN" ] || { echo "lunfs is not built ($LUNFS_BIN missing): make build" >&2; exit 1; }
SIZE=${MIG_LUN_SIZE:-1G}
RUNTIME=${MIG_RUNTIME:-15}
ROUNDS=${MIG_ROUNDS:-5}
OUT=${MIG_DIR:-$(mktemp -d /tmp/lunfs-migrate-records-XXXXXX)}
mkdir -p "$OUT"
: >"$OUT/migrate.jsonl"
WORK=$(mktemp -d /dev/shm/lunfs-migrate-bench-XXXXXX)
MNT=$WORK/mnt
SERVER=
LOOP=
log() { printf '[migrate %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() {
  [ -n "$LOOP" ] && touch "$WORK/stop" && wait "$LOOP" 2>/dev/null || true
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  mountpoint -q "$MNT" 2>/dev/null && fusermount -uz "$MNT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
record() { printf '%s\n' "$1" >>"$OUT/migrate.jsonl"; }

node "$LUNFS_BIN" pool create "$WORK/pool" --drives 4 --drive-size 1G --raid 0 >/dev/null
node "$LUNFS_BIN" lun create "$WORK/pool" lun0 --size "$SIZE" >/dev/null
mkdir -p "$MNT"
node "$LUNFS_BIN" mount "$WORK/pool" "$MNT" --front native >"$WORK/mount.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do [ -e "$MNT/luns/lun0" ] && break; sleep 0.1; done
[ -e "$MNT/luns/lun0" ] || { cat "$WORK/mount.log" >&2; exit 1; }
LUN=$MNT/luns/lun0
node -e '
  const os = require("os"), fs = require("fs");
  const [out, commit, size, runtime, rounds] = process.argv.slice(1);
  fs.writeFileSync(out, JSON.stringify({
    date: new Date().toISOString(), commit, cpus: os.cpus().length, cpu: os.cpus()[0].model,
    kernel: os.release(), node: process.version,
    fio: require("child_process").execSync("fio --version").toString().trim(),
    params: { size, runtimeS: Number(runtime), rounds: Number(rounds), raid: 0, drives: 4,
              front: "native" },
  }, null, 1));
' "$OUT/meta.json" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" "$SIZE" "$RUNTIME" "$ROUNDS"

fio_json() { fio --output-format=json "$@" 2>/dev/null; }
# The server's CPU seconds so far (utime + stime of the mount process).
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$SERVER/stat"; }

log "filling the LUN ($SIZE)"
fio_json --name=fill --filename="$LUN" --rw=write --bs=1M --ioengine=psync --direct=1 \
  --size="$SIZE" --end_fsync=1 >/dev/null
seqread=$(fio_json --name=seq --filename="$LUN" --rw=read --bs=1M --ioengine=psync --direct=1 \
  --size="$SIZE" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0)).jobs[0].read.bw_bytes)')
record "{\"kind\":\"seqread\",\"bw_bytes\":$seqread}"

log "migration alone"
start=$(date +%s.%N)
node "$LUNFS_BIN" migrate "$WORK/pool" lun0 --to "$WORK/target0.img" >"$WORK/m0.txt" 2>/dev/null
end=$(date +%s.%N)
bytes=$(stat -c %s "$WORK/target0.img")
rm -f "$WORK/target0.img"
node -e '
  const [bytes, start, end, line] = process.argv.slice(1);
  const pause = /held writes for (\d+) ms/.exec(line);
  const passes = /: (\d+) passes/.exec(line);
  console.log(JSON.stringify({ kind: "migrate-alone", bytes: Number(bytes),
    seconds: Number(end) - Number(start), passes: passes ? Number(passes[1]) : null,
    pause_ms: pause ? Number(pause[1]) : null, report: line }));
' "$bytes" "$start" "$end" "$(tail -1 "$WORK/m0.txt")" >>"$OUT/migrate.jsonl"

randwrite() {
  fio_json --name=rw --filename="$LUN" --rw=randwrite --bs=4k --ioengine=psync --direct=1 \
    --size="$SIZE" --time_based --runtime="$RUNTIME" |
    node -e 'const j=JSON.parse(require("fs").readFileSync(0)).jobs[0].write;console.log(j.iops.toFixed(0), (j.clat_ns.percentile["99.000000"]/1000).toFixed(0), j.total_ios)'
}

for round in $(seq 1 "$ROUNDS"); do
  log "round $round/$ROUNDS: randwrite4k idle"
  c0=$(server_cpu)
  read -r iops p99 ios < <(randwrite)
  c1=$(server_cpu)
  record "{\"kind\":\"randwrite\",\"phase\":\"idle\",\"round\":$round,\"iops\":$iops,\"p99_us\":$p99,\"ios\":$ios,\"server_cpu_s\":$(node -e "console.log(($c1-$c0).toFixed(2))")}"

  log "round $round/$ROUNDS: randwrite4k while migrations run"
  rm -f "$WORK/stop"
  : >"$WORK/mloop.txt"
  (
    n=0
    while [ ! -e "$WORK/stop" ]; do
      n=$((n + 1))
      node "$LUNFS_BIN" migrate "$WORK/pool" lun0 --to "$WORK/t$n.img" --restart >>"$WORK/mloop.txt" 2>/dev/null || true
      rm -f "$WORK/t$n.img"
    done
  ) &
  LOOP=$!
  sleep 1
  c0=$(server_cpu)
  read -r iops p99 ios < <(randwrite)
  c1=$(server_cpu)
  touch "$WORK/stop"
  wait "$LOOP"
  LOOP=
  migrations=$(grep -c 'migrated to' "$WORK/mloop.txt" || true)
  pauses=$(grep -o 'held writes for [0-9]* ms' "$WORK/mloop.txt" | grep -o '[0-9]*' | paste -sd, -)
  record "{\"kind\":\"randwrite\",\"phase\":\"migrating\",\"round\":$round,\"iops\":$iops,\"p99_us\":$p99,\"ios\":$ios,\"server_cpu_s\":$(node -e "console.log(($c1-$c0).toFixed(2))"),\"migrations\":$migrations,\"pauses_ms\":[${pauses}]}"
done

node -e '
  const recs = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean).map(JSON.parse);
  const seq = recs.find((r) => r.kind === "seqread").bw_bytes / 1e6;
  const alone = recs.find((r) => r.kind === "migrate-alone");
  const mbs = alone.bytes / 1e6 / alone.seconds;
  console.log(`seqread of the LUN: ${seq.toFixed(0)} MB/s`);
  console.log(`migration alone: ${mbs.toFixed(0)} MB/s (${(mbs / seq).toFixed(2)}x seqread); ${alone.report}`);
  let idle = 0, busy = 0;
  for (const r of recs.filter((r) => r.kind === "randwrite")) {
    console.log(`round ${r.round} ${r.phase}: ${r.iops} IOPS, p99 ${r.p99_us} us, server ${(1e6 * r.server_cpu_s / r.ios).toFixed(0)} us CPU/IO${r.phase === "migrating" ? `, ${r.migrations} migrations, pauses ${r.pauses_ms.join(" ")} ms` : ""}`);
    if (r.phase === "idle") idle += r.iops; else busy += r.iops;
  }
  console.log(`randwrite4k during migrations: ${(busy / idle).toFixed(2)}x idle (sum over the rounds)`);
' "$OUT/migrate.jsonl"
log "records: $OUT"
