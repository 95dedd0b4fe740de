#!/usr/bin/env node
// The "Snapshots" section of BENCHMARKS.md from the records of bench/snapshots.sh (a folder with
// snapshots.jsonl, meta.json, command.txt, create-*.json, latlog-*.json, status-b.json). Every
// figure is printed beside the same measurement without snapshots from the same run.
//
//   node bench/snapshots-report.mjs --dir .bench/latest/snapshots --out /tmp/section.md
//   node bench/snapshots-report.mjs --dir .bench/latest/snapshots --splice BENCHMARKS.md
//       (--splice replaces the file's "## Snapshots" section, or inserts it before "## Where the
//       time goes" / "## Targets" / at the end; a missing file gets the section alone)
// bench/report.mjs imports snapshotSection() for the full report.
import fs from 'node:fs';
import path from 'node:path';
import { fmt, readJson, runSectionCli, spliceSection as splice } from './report-common.mjs';

const ok = (r) => r && !r.err && r.bw_bytes !== undefined;
// lower median (always one measured value)
const median = (xs) => { const s = xs.filter((x) => x !== null && x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : null; };
const mdn = (xs) => median(xs);
const range = (xs, d = 0, k = 1) => (xs.length > 1 ? `${fmt(Math.min(...xs) / k, d)}–${fmt(Math.max(...xs) / k, d)}` : '');
const rx = (x, d = 2) => (x === null ? '–' : `${x.toFixed(d)}×`);
const ms = (us, d = 1) => (us === null || us === undefined ? '–' : fmt(us / 1000, d));
const la = (s) => (s ? s.split(' ').slice(0, 3).join(' ') : '?');
const mib = (b) => (b >= 2 ** 40 ? `${fmt(b / 2 ** 40, b % 2 ** 40 ? 1 : 0)} TiB` : b >= 2 ** 30 ? `${fmt(b / 2 ** 30, b % 2 ** 30 ? 1 : 0)} GiB` : `${fmt(b / 2 ** 20)} MiB`);

export function snapshotSection(dir, { runName } = {}) {
  const recsFile = path.join(dir, 'snapshots.jsonl');
  if (!fs.existsSync(recsFile)) return [];
  const recs = fs.readFileSync(recsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const meta = readJson(path.join(dir, 'meta.json')) || {};
  const P = meta.params || {};
  const command = fs.existsSync(path.join(dir, 'command.txt')) ? fs.readFileSync(path.join(dir, 'command.txt'), 'utf8').trim() : 'bash bench/snapshots.sh';
  const creations = (f) => ((readJson(path.join(dir, f)) || {}).creations || []).filter((c) => !c.err);
  const name = runName || path.basename(path.dirname(fs.realpathSync(dir)));
  const L = [];
  L.push('## Snapshots');
  L.push('');
  const big = meta.otherLoad ? meta.otherLoad.filter((x) => x.cpuS >= 5) : [];
  L.push(`Measured by \`bench/snapshots.sh\` (run by \`bench/run.sh\` after peers.sh; \`SNAPSHOTS=0\` skips it, \`SNAPSHOTS_ONLY=1\` runs only it) in run \`${name}\`${meta.date ? `, finished ${meta.date.replace(/\.\d+Z$/, 'Z')}` : ''}, ${meta.wallS ?? '?'} s of wall time${meta.phasesS ? ` (setup ${meta.phasesS.setup} s, a ${meta.phasesS.a} s, b ${meta.phasesS.b} s, c/d ${meta.phasesS.cd} s)` : ''}. Every ratio below is to the same measurement without snapshots taken in the same run. lunfs: RAID-0 pool of 4 sparse drive files on /dev/shm (${P.smallPoolBytes ? mib(P.smallPoolBytes) : '?'} in total, room for the preserved copies), write-back cache ${!P.cache || P.cache === 'default' ? 'default (256 MiB)' : P.cache}, one LUN of ${mib((P.sizeMiB || 1024) * 2 ** 20)} fully written with the same incompressible data as peers.sh's raw.img; copy-on-write chunk 128 KiB; each measurement on a fresh copy of that template pool, mounted anew (cold cache, no dirty data). Snapshots are taken the way a user does (\`touch MNT/control/snapshot/LUN@NAME\`: the open returns once the snapshot is durable). ${meta.node ? `node ${meta.node}, ${meta.fio}, qemu-storage-daemon ${meta.qemu}, lunfs dist sha1 ${meta.distSha1}; ` : ''}load average before / after: ${la(meta.loadavgBefore)} / ${la(meta.loadavgAfter)}; other processes: ${big.length ? big.map((x) => `\`${x.args.replace(/\S*node_modules\/([^/\s]+)\S*/g, '…$1').slice(0, 60)}\` ${x.cpuS} CPU-s`).join('; ') + ' (the figures are disturbed by that load)' : 'none used 5 CPU-s or more'}.${P.quick ? ' **Quick settings (SNAP_QUICK=1): short jobs, one round; a smoke test, not a measurement.**' : ''}`);
  L.push('');
  L.push(`Command (what \`bench/run.sh\` ran; \`SNAPSHOTS_ONLY=1 ${command.replace(/ ?bash bench\/snapshots\.sh$/, '')}${command === 'bash bench/snapshots.sh' ? '' : ' '}bash bench/run.sh\` runs it alone and replaces this section; \`SNAP_QUICK=1\` is a short smoke run):`);
  L.push('');
  L.push('```');
  L.push(command);
  L.push('```');
  L.push('');

  // ---- a
  const A = recs.filter((r) => r.part === 'a');
  if (A.length) {
    const rounds = [...new Set(A.map((r) => r.repeat))].sort((a, b) => a - b);
    const R = rounds.length;
    const get = (t, n, k) => A.find((r) => r.target === t && r.snapshots === n && r.repeat === k);
    const ratios = (t, n) => rounds.map((k) => { const a = get(t, n, k); const b = get(t, 0, k); return ok(a) && ok(b) ? a.iops / b.iops : null; }).filter((x) => x !== null);
    const counts = [...new Set(A.filter((r) => r.target === 'lunfs_r0').map((r) => r.snapshots))].sort((a, b) => a - b);
    const maxN = Math.max(...counts);
    L.push(`### a. 4 KiB random writes right after taking snapshots`);
    L.push('');
    L.push(`peers.sh's randwrite4k job (fio psync, iodepth 1, 4 KiB random writes over the whole ${mib((P.sizeMiB || 1024) * 2 ** 20)} LUN, ${P.randwMiB} MiB or ${P.randRuntimeS} s, O_DIRECT, end_fsync) on the fully written LUN, started right after taking ${counts.join(', ')} snapshots of it. After a snapshot, the first destage of each 128 KiB chunk copies the chunk's original to the target volume (once for all snapshots that need it), so most of the job's writes pay for a copy. ${R} round${R > 1 ? 's' : ''}, the targets interleaved within each; figure = median over the rounds (lower median), ratio = within each round to the no-snapshot run of that round, then the median${R > 1 ? ' (range in brackets)' : ''}.`);
    L.push('');
    L.push(`| target | snapshots before the job | IOPS | ${R > 1 ? 'range | ' : ''}ratio to no snapshots | mean lat µs | p99 clat µs | p99 ratio | max clat ms | srv CPU µs/IO | preservations (batches) | srv CPU µs/preservation |`);
    L.push(`|---|---:|---:|${R > 1 ? '---:|' : ''}---:|---:|---:|---:|---:|---:|---:|---:|`);
    // The CPU one preservation costs: the server CPU of the run beyond what the same number of
    // writes cost in the no-snapshot run of the same round, over the originals it preserved.
    const noneOf = (t, rec) => A.find((x) => x.target === t && x.snapshots === 0 && x.repeat === rec.repeat);
    const perPreservation = (t, rec) => {
      const none = noneOf(t, rec);
      const count = Number(rec.preservations);
      if (!none || !ok(none) || !count || rec.srv_cpu_s === '' || none.srv_cpu_s === '') return null;
      const extra = Number(rec.srv_cpu_s) - (Number(none.srv_cpu_s) / none.total_ios) * rec.total_ios;
      return (1e6 * extra) / count;
    };
    const p99Ratio = (t, rec) => {
      const none = noneOf(t, rec);
      return none && ok(none) ? rec.clat_p99_us / none.clat_p99_us : null;
    };
    const rowsFor = [['lunfs_r0', 'lunfs RAID-0'], ['qcow2', 'qemu-storage-daemon qcow2 (peer)']];
    for (const [t, label] of rowsFor) {
      const ns = [...new Set(A.filter((r) => r.target === t).map((r) => r.snapshots))].sort((a, b) => a - b);
      for (const n of ns) {
        const rs = A.filter((r) => r.target === t && r.snapshots === n);
        const good = rs.filter(ok).sort((a, b) => a.iops - b.iops);
        if (!good.length) { L.push(`| ${label} | ${n}${t === 'qcow2' && n ? ' (internal, qemu-img snapshot -c)' : ''} | FAIL: ${String(rs[0].err || '').replace(/\|/g, '/').slice(0, 100)} |${R > 1 ? ' |' : ''} | | | | | | | |`); continue; }
        const r = good[Math.floor((good.length - 1) / 2)];
        const rr = n === 0 ? null : ratios(t, n);
        const rcell = n === 0 ? '1 (reference)' : `${rx(median(rr))}${rr.length > 1 ? ` (${Math.min(...rr).toFixed(2)}–${Math.max(...rr).toFixed(2)})` : ''}${t === 'lunfs_r0' && n === maxN ? (median(rr) >= 0.8 ? ' ✅' : ' ❌') : ''}`;
        const cpu = r.srv_cpu_s !== '' && r.srv_cpu_s !== undefined && r.total_ios ? fmt(1e6 * r.srv_cpu_s / r.total_ios, 1) : '–';
        const pp = n === 0 ? null : perPreservation(t, r);
        const p99r = n === 0 ? null : p99Ratio(t, r);
        const preserved = r.preservations ? `${fmt(Number(r.preservations))} (${fmt(Number(r.batches))})` : '–';
        L.push(`| ${label} | ${n}${t === 'qcow2' && n ? ' (internal, qemu-img snapshot -c)' : ''} | ${fmt(r.iops)} | ${R > 1 ? `${range(good.map((x) => x.iops))} | ` : ''}${rcell} | ${fmt(r.lat_mean_us, 1)} | ${fmt(r.clat_p99_us)} | ${p99r === null ? (n === 0 ? '1' : '–') : `${p99r.toFixed(2)}×${t === 'lunfs_r0' ? (p99r <= 2 ? ' ✅' : ' ❌') : ''}`} | ${ms(r.clat_max_us)} | ${cpu} | ${t === 'lunfs_r0' && n > 0 ? preserved : '–'} | ${pp === null ? '–' : `${fmt(pp, 0)}${pp <= 130 ? ' ✅' : ' ❌'}`} |`);
      }
    }
    L.push('');
    const rMax = median(ratios('lunfs_r0', maxN));
    const r1 = counts.includes(1) ? median(ratios('lunfs_r0', 1)) : null;
    const q1 = A.some((r) => r.target === 'qcow2' && r.snapshots === 1) ? median(ratios('qcow2', 1)) : null;
    L.push(`**Target (with ${maxN} snapshots at least 0.8× the no-snapshot figure):** ${rMax === null ? 'not measured' : `${rMax >= 0.8 ? 'met' : 'missed'}, ${rx(rMax)}`}${r1 !== null ? `; with one snapshot ${rx(r1)}` : ''}. qcow2 peer with one internal snapshot: ${q1 !== null ? `${rx(q1)} of its own no-snapshot figure, same run and job` : 'not measured in this run (SNAP_QCOW2=0 or qemu missing)'}.`);
    const bb = A.filter((r) => r.target === 'lunfs_r0' && r.snapshots === maxN).map((r) => creations(`create-a-${maxN}-${r.repeat}.json`)).flat();
    if (bb.length) L.push(`Taking the ${maxN} snapshots back to back (idle, no dirty data) took ${fmt(mdn(bb.map((c) => c.ms)), 1)} ms per snapshot (median; max ${fmt(Math.max(...bb.map((c) => c.ms)), 1)} ms, the first of each LUN creates its target volume).`);
    L.push('');
  }

  // ---- b
  const B = recs.filter((r) => r.part === 'b');
  if (B.length) {
    const rounds = [...new Set(B.map((r) => r.repeat))].sort((a, b) => a - b);
    const R = rounds.length;
    const st = readJson(path.join(dir, 'status-b.json'));
    const snaps = st ? st.snapshots : [];
    const share = (s) => (s ? `${fmt(100 * (s.exclusiveBytes + s.sharedBytes) / s.sizeBytes, 1)} %` : '–');
    const get = (f, k) => B.find((r) => r.file === f && r.repeat === k);
    const pr = (f, g) => rounds.map((k) => { const a = get(f, k); const b = get(g, k); return ok(a) && ok(b) ? a.bw_bytes / b.bw_bytes : null; }).filter((x) => x !== null);
    L.push('### b. Sequential read of the oldest and the newest snapshot');
    L.push('');
    L.push(`${P.count} snapshots of the fully written LUN, each followed by a random-write job (fio, 4 KiB writes at random offsets, a new seed each time, ${P.changePct} % of the LUN's 128 KiB chunks, end_fsync so the copies are made before the next snapshot). Then fio seqread (psync, iodepth 1, bs 1 MiB, O_DIRECT, the whole ${mib((P.sizeMiB || 1024) * 2 ** 20)}) of the oldest snapshot (its data is mostly preserved copies in the target volume), the newest (mostly read from the live LUN) and, as the no-snapshot figure, the LUN itself on the same mount; ${R} round${R > 1 ? 's' : ''}, the three reads interleaved within each. "preserved" = the snapshot's data held in the target volume (exclusive + shared bytes from \`lunfs status\`) over its size.`);
    L.push('');
    L.push(`| file | preserved in the target | MB/s | ${R > 1 ? 'range | ' : ''}ratio to the live LUN |`);
    L.push(`|---|---:|---:|${R > 1 ? '---:|' : ''}---:|`);
    const label = { live: 'the LUN (luns/lun0)', oldest: `oldest snapshot (${snaps[0] ? snaps[0].name : 'first'})`, newest: `newest snapshot (${snaps.length ? snaps[snaps.length - 1].name : 'last'})` };
    for (const f of ['live', 'oldest', 'newest']) {
      const good = B.filter((r) => r.file === f && ok(r)).sort((a, b) => a.bw_bytes - b.bw_bytes);
      if (!good.length) { const e = B.find((r) => r.file === f); L.push(`| ${label[f]} | | FAIL: ${String(e ? e.err : 'not run').replace(/\|/g, '/').slice(0, 100)} |${R > 1 ? ' |' : ''} |`); continue; }
      const r = good[Math.floor((good.length - 1) / 2)];
      const rr = f === 'live' ? null : pr(f, 'live');
      L.push(`| ${label[f]} | ${f === 'live' ? '–' : share(f === 'oldest' ? snaps[0] : snaps[snaps.length - 1])} | ${fmt(r.bw_bytes / 1e6)} | ${R > 1 ? `${range(good.map((x) => x.bw_bytes / 1e6))} | ` : ''}${f === 'live' ? '1 (reference)' : `${rx(median(rr))}${rr.length > 1 ? ` (${Math.min(...rr).toFixed(2)}–${Math.max(...rr).toFixed(2)})` : ''}`} |`);
    }
    L.push('');
    const on = pr('oldest', 'newest');
    const m = median(on);
    // noise: the largest relative spread of repeated reads of one file in this run, at least 10 %
    const spreads = ['live', 'oldest', 'newest'].map((f) => { const xs = B.filter((r) => r.file === f && ok(r)).map((r) => r.bw_bytes); return xs.length > 1 ? (Math.max(...xs) - Math.min(...xs)) / median(xs) : 0; });
    const noise = Math.max(0.1, ...spreads);
    L.push(`**Target (oldest and newest equal within noise):** oldest / newest = ${rx(m)}${on.length > 1 ? ` (per round ${on.map((x) => x.toFixed(2)).join(', ')})` : ''}; noise taken as the largest spread of repeated reads of one file in this run, at least ±10 %: ±${fmt(100 * noise)} % → ${m === null ? 'not measured' : Math.abs(m - 1) <= noise ? 'met (equal within noise)' : `missed (the ${m < 1 ? 'oldest' : 'newest'} is slower)`}.${R < 2 ? ' One round only: the noise is not measured.' : ''}`);
    const bc = [];
    for (let i = 1; i <= (P.count || 0); i++) bc.push(...creations(`create-b-${i}.json`));
    if (bc.length) L.push(`Creating these ${bc.length} snapshots (each right after the previous random-write job's fsync; 0 to ${bc.length - 1} snapshots existing): median ${fmt(mdn(bc.map((c) => c.ms)), 1)} ms, max ${fmt(Math.max(...bc.map((c) => c.ms)), 1)} ms.`);
    L.push('');
  }

  // ---- c + d
  const C = recs.filter((r) => r.part === 'cd');
  if (C.length) {
    const luns = ['small', 'big'].filter((l) => C.some((r) => r.lun === l));
    const lunBytes = (l) => (C.find((r) => r.lun === l) || {}).lun_bytes;
    const poolOf = (l) => (l === 'small' ? P.smallPoolBytes : P.bigPoolBytes);
    const lunDesc = (l) => `${mib(lunBytes(l))} LUN${l === 'big' ? ' (thin: first 1 GiB written, one 4 KiB write in every further GiB)' : ' (fully written)'}`;
    L.push('### c. Snapshot creation latency under a write load');
    L.push('');
    L.push(`While fio randwrite 4 KiB (psync, iodepth 1, O_DIRECT, random over the first ${P.loadMiB} MiB of the LUN, ${P.loadS} s, unthrottled) runs on the LUN, ${P.creates} snapshots are taken ${P.intervalMs} ms apart; latency = the open of \`MNT/control/snapshot/LUN@NAME\` plus its close, i.e. until the snapshot is durable (it includes flushing the LUN's write-back cache up to that instant). Before the load, the LUN's first snapshot is taken on the idle LUN and reported apart: it creates the LUN's snapshot target volume. The 1 TiB LUN sits on a pool of 4 sparse drive files (${poolOf('big') ? mib(poolOf('big')) : '?'} in total) on /dev/shm, only its written parts take memory. Target: under 10 ms, independent of the LUN's size.`);
    L.push('');
    L.push('| LUN | pool | first snapshot of the LUN (idle) ms | creations under load | median ms | max ms | all (ms) | target < 10 ms |');
    L.push('|---|---:|---:|---:|---:|---:|---|---|');
    const med = {};
    for (const l of luns) {
      const first = creations(`create-${l}-first.json`);
      const cs = creations(`create-${l}-load.json`).map((c) => c.ms);
      med[l] = mdn(cs);
      const mx = cs.length ? Math.max(...cs) : null;
      L.push(`| ${lunDesc(l)} | ${poolOf(l) ? mib(poolOf(l)) : '?'} | ${first.length ? fmt(first[0].ms, 1) : '–'} | ${cs.length} | ${fmt(med[l], 1)} | ${fmt(mx, 1)} | ${cs.map((x) => fmt(x, 1)).join(', ')} | ${!cs.length ? '–' : mx < 10 ? '✅ median and max' : med[l] < 10 ? '❌ max (median ✅)' : '❌'} |`);
    }
    L.push('');
    if (luns.length === 2 && med.small && med.big) L.push(`Median creation time ${mib(lunBytes('big'))} / ${mib(lunBytes('small'))}: ${rx(med.big / med.small)} (1× = independent of the LUN's size; both under the same kind of load, measured one after the other).`);
    L.push('');

    L.push('### d. Longest write pause while snapshots are taken');
    L.push('');
    L.push(`The load jobs of (c) with a per-I/O completion latency log (fio --write_lat_log, --log_unix_epoch), beside the same job on a fresh copy of the same pool with no snapshot at all. "while a creation was in progress" = the writes whose [completion − latency, completion] overlaps a creation's open…close (±1 ms, the log's resolution). The jobs with snapshots also pay the copy-on-write of the first write to each chunk after each snapshot (IOPS column).`);
    L.push('');
    L.push('| LUN | snapshots during the job | IOPS | p99 µs | p99.9 µs | p99.99 µs | max ms | max while a creation was in progress ms | max ratio to no snapshots | slowest write |');
    L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---|');
    for (const l of luns) {
      const none = C.find((r) => r.lun === l && r.mode === 'none');
      const lnone = readJson(path.join(dir, `latlog-cd-${l}-none.json`));
      for (const mode of ['none', 'snap']) {
        const r = C.find((x) => x.lun === l && x.mode === mode);
        if (!r) continue;
        const lg = readJson(path.join(dir, `latlog-cd-${l}-${mode}.json`));
        if (!ok(r)) { L.push(`| ${mib(lunBytes(l))} | ${mode} | FAIL: ${String(r.err).replace(/\|/g, '/').slice(0, 100)} | | | | | | | |`); continue; }
        const maxUs = lg ? lg.maxUs : r.clat_max_us;
        const noneMax = lnone ? lnone.maxUs : none && ok(none) ? none.clat_max_us : null;
        const worst = lg && lg.worst ? (lg.worst.nearest ? `${ms(lg.worst.us)} ms, ${lg.worst.duringCreation ? 'during' : 'not during'} a creation (${lg.worst.nearest.dMs >= 0 ? '+' : ''}${lg.worst.nearest.dMs} ms from the start of ${lg.worst.nearest.name.replace(/^.*@/, '')})` : `${ms(lg.worst.us)} ms`) : '–';
        L.push(`| ${mib(lunBytes(l))} | ${mode === 'none' ? 'none' : `${P.creates}, every ${P.intervalMs} ms`} | ${fmt(r.iops)} | ${fmt(lg ? lg.p99Us : r.clat_p99_us)} | ${fmt(lg ? lg.p999Us : r.clat_p999_us)} | ${fmt(lg ? lg.p9999Us : r.clat_p9999_us)} | ${ms(maxUs)} | ${mode === 'snap' && lg ? ms(lg.maxDuringCreationUs) : '–'} | ${mode === 'none' ? '1 (reference)' : noneMax ? rx(maxUs / noneMax) : '–'} | ${worst} |`);
      }
    }
    L.push('');
    L.push('The max of a single job is one sample: on this shared 2-core machine a write can also wait for a descheduled server thread, so compare it with the no-snapshot row of the same LUN and with the p99.99 column.');
    L.push('');
  }
  return L;
}

// Replaces or inserts the section in an existing markdown file.
export const spliceSection = (md, lines) => splice(md, lines, /^## Snapshots\s*$/m);

runSectionCli(import.meta.url, {
  defaultDir: '.bench/latest/snapshots',
  records: 'snapshots.jsonl',
  label: 'snapshots section',
  section: (dir, opt) => snapshotSection(dir, { runName: opt('--run-name') }),
  splice: spliceSection,
});
