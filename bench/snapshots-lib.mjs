#!/usr/bin/env node
// Helpers of bench/snapshots.sh (the measuring side; bench/snapshots-report.mjs writes the report).
//
//   node bench/snapshots-lib.mjs create MNT LUN NAME_PREFIX FIRST COUNT INTERVAL_MS DELAY_MS OUT.json
//       takes COUNT snapshots LUN@<prefix><n> (n = FIRST, FIRST+1, ..., two digits) through the FUSE
//       control file (what `touch MNT/control/snapshot/LUN@NAME` does: open(O_CREAT|O_WRONLY) +
//       close; the open returns once the snapshot is durable), DELAY_MS after start and then every
//       INTERVAL_MS (start to start; back to back when a creation takes longer). Writes
//       {creations: [{name, startMs, endMs, ms}]} (startMs/endMs: Unix epoch ms with fractions,
//       to line up with fio's --log_unix_epoch latency logs).
//   node bench/snapshots-lib.mjs rec OUT.jsonl FIO_JSON key=value ...
//       appends one record: the key=value fields (numbers where they parse) plus the fio job's
//       summary (read or write side, whichever did I/O): iops, bw_bytes, lat/clat in µs, clat
//       percentiles, clat max, total I/Os; err when fio failed (FIO_JSON missing or unreadable:
//       pass ERR=... in the environment for the reason).
//   node bench/snapshots-lib.mjs latlog CLAT_LOG CREATIONS.json|- OUT.json
//       fio per-I/O completion latency log (--write_lat_log with --log_unix_epoch=1: "ms, ns, dir,
//       bs, offset" per line) -> max, percentiles, and the longest I/O that was in flight while a
//       snapshot was being created (its [completion - latency, completion] overlaps a creation)
//       versus the longest one that was not.
//   node bench/snapshots-lib.mjs status MNT/control/status LUN OUT.json
//       the LUN's snapshots from the status file (name, epoch, exclusive/shared bytes, size).
import fs from 'node:fs';
import readline from 'node:readline';

const [cmd, ...argv] = process.argv.slice(2);
const nowEpochMs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

async function create([mnt, lun, prefix, first, count, intervalMs, delayMs, out]) {
  const creations = [];
  const t0 = performance.now() + Number(delayMs);
  await sleep(Number(delayMs));
  for (let i = 0; i < Number(count); i++) {
    await sleep(t0 + i * Number(intervalMs) - performance.now());
    const name = `${lun}@${prefix}${String(Number(first) + i).padStart(2, '0')}`;
    const startMs = nowEpochMs();
    const a = performance.now();
    let err;
    try {
      fs.closeSync(fs.openSync(`${mnt}/control/snapshot/${name}`, fs.constants.O_WRONLY | fs.constants.O_CREAT));
    } catch (e) { err = `${e.code || ''} ${e.message}`.trim(); }
    const ms = performance.now() - a;
    creations.push({ name, startMs, endMs: startMs + ms, ms: Math.round(ms * 1000) / 1000, ...(err ? { err } : {}) });
    if (err) { console.error(`snapshot ${name}: ${err}`); break; }
  }
  fs.writeFileSync(out, JSON.stringify({ creations }, null, 1));
  const ok = creations.filter((c) => !c.err).map((c) => c.ms);
  console.log(`${ok.length} snapshot(s): ${ok.map((x) => x.toFixed(1)).join(' ')} ms`);
  if (ok.length < Number(count)) process.exit(1);
}

function rec([out, fioJson, ...kv]) {
  const r = {};
  for (const s of kv) {
    const i = s.indexOf('=');
    const k = s.slice(0, i); const v = s.slice(i + 1);
    r[k] = v !== '' && !Number.isNaN(Number(v)) ? Number(v) : v;
  }
  try {
    const j = JSON.parse(fs.readFileSync(fioJson, 'utf8')).jobs[0];
    const side = j.write.total_ios > 0 || j.write.io_bytes > 0 ? j.write : j.read;
    const pct = side.clat_ns.percentile || {};
    const p = (x) => { const k = Object.keys(pct).find((key) => Math.abs(Number(key) - x) < 1e-6); return k ? pct[k] / 1000 : null; };
    Object.assign(r, {
      iops: side.iops, bw_bytes: side.bw_bytes, total_ios: side.total_ios, runtime_ms: side.runtime, fio_elapsed_s: j.elapsed,
      lat_mean_us: side.lat_ns.mean / 1000, clat_p50_us: p(50), clat_p99_us: p(99), clat_p999_us: p(99.9), clat_p9999_us: p(99.99),
      clat_max_us: side.clat_ns.max / 1000,
    });
    if (j.error) r.err = `fio error ${j.error}`;
  } catch (e) {
    r.err = process.env.ERR || `no fio result (${e.message.slice(0, 120)})`;
  }
  if (process.env.ERR && !r.err) r.err = process.env.ERR;
  fs.appendFileSync(out, JSON.stringify(r) + '\n');
  const what = r.err ? `FAIL ${r.err}` : r.part === 'b' ? `${(r.bw_bytes / 1e6).toFixed(0)} MB/s` : `${(r.iops / 1000).toFixed(2)}k IOPS, max clat ${(r.clat_max_us / 1000).toFixed(1)} ms`;
  console.log(what);
}

async function latlog([logFile, creationsFile, out]) {
  const creations = creationsFile && creationsFile !== '-' && fs.existsSync(creationsFile)
    ? JSON.parse(fs.readFileSync(creationsFile, 'utf8')).creations.filter((c) => !c.err) : [];
  // windows in epoch ms; fio logs whole ms, so widen each by 1 ms on both sides
  const win = creations.map((c) => [c.startMs - 1, c.endMs + 1]).sort((a, b) => a[0] - b[0]);
  const lats = [];
  let maxIn = 0; let maxOut = 0; let nIn = 0; let firstMs = Infinity; let lastMs = 0; let worst = null;
  const rl = readline.createInterface({ input: fs.createReadStream(logFile), crlfDelay: Infinity });
  for await (const line of rl) {
    const f = line.split(',');
    if (f.length < 2) continue;
    const endMs = Number(f[0]); const ns = Number(f[1]);
    if (!Number.isFinite(endMs) || !Number.isFinite(ns)) continue;
    const us = ns / 1000;
    lats.push(us);
    firstMs = Math.min(firstMs, endMs); lastMs = Math.max(lastMs, endMs);
    const startMs = endMs - ns / 1e6;
    const overlaps = win.some(([a, b]) => startMs <= b && endMs >= a);
    if (overlaps) { nIn++; if (us > maxIn) maxIn = us; } else if (us > maxOut) maxOut = us;
    if (!worst || us > worst.us) worst = { us, endMs, overlaps };
  }
  lats.sort((a, b) => a - b);
  const q = (x) => (lats.length ? lats[Math.min(lats.length - 1, Math.floor(x * lats.length))] : null);
  const res = {
    ios: lats.length, spanS: lats.length ? (lastMs - firstMs) / 1000 : 0,
    p50Us: q(0.5), p99Us: q(0.99), p999Us: q(0.999), p9999Us: q(0.9999), maxUs: lats.length ? lats[lats.length - 1] : null,
    creations: creations.length, iosDuringCreations: nIn,
    maxDuringCreationUs: win.length ? maxIn : null, maxOutsideCreationUs: win.length ? maxOut : null,
    worst: worst && { us: worst.us, duringCreation: worst.overlaps,
      // which creation (if any) and how far from it the slowest I/O completed
      nearest: creations.length ? creations.map((c) => ({ name: c.name, dMs: Math.round(worst.endMs - c.startMs) })).sort((a, b) => Math.abs(a.dMs) - Math.abs(b.dMs))[0] : null },
  };
  fs.writeFileSync(out, JSON.stringify(res, null, 1));
  console.log(`${res.ios} I/Os: max ${(res.maxUs / 1000).toFixed(2)} ms${win.length ? `, max while a snapshot was being created ${(maxIn / 1000).toFixed(2)} ms (${nIn} I/Os), otherwise ${(maxOut / 1000).toFixed(2)} ms` : ''}`);
}

function status([statusFile, lun, out]) {
  const st = JSON.parse(fs.readFileSync(statusFile, 'utf8'));
  const snaps = (st.snapshots || []).filter((s) => s.lun === lun)
    .map((s) => ({ name: s.name, epoch: s.epoch, sizeBytes: s.sizeBytes, exclusiveBytes: s.exclusiveBytes, sharedBytes: s.sharedBytes, state: s.state }))
    .sort((a, b) => a.epoch - b.epoch);
  fs.writeFileSync(out, JSON.stringify({ pool: st.pool, snapshots: snaps }, null, 1));
  const pctOf = (s) => (100 * (s.exclusiveBytes + s.sharedBytes) / s.sizeBytes).toFixed(1);
  if (snaps.length) console.log(`${snaps.length} snapshots; preserved data: oldest ${pctOf(snaps[0])} %, newest ${pctOf(snaps[snaps.length - 1])} % of the LUN`);
}

const cmds = { create, rec, latlog, status };
if (!cmds[cmd]) { console.error('usage: snapshots-lib.mjs create|rec|latlog|status ...'); process.exit(2); }
await cmds[cmd](argv);
