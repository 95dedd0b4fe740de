#!/usr/bin/env node
// The "Snapclones and snapshot trees" section of BENCHMARKS.md from the records of bench/clones.sh
// (a folder with clones.jsonl, meta.json, command.txt, create-c-*.json). Every figure is printed
// beside the figure it is compared with, measured in the same run.
//
//   node bench/clones-report.mjs --dir .bench/latest-clones/clones              # to stdout
//   node bench/clones-report.mjs --dir DIR --out /tmp/section.md
//   node bench/clones-report.mjs --dir DIR --splice BENCHMARKS.md [--command "..."]
//       (--splice replaces the file's "## Snapclones and snapshot trees" section, or inserts it
//       before "## Where the time goes" / "## Targets" / "## Notes" / at the end; a missing file
//       gets the section alone)
import fs from 'node:fs';
import path from 'node:path';
import { fmt, readJson, runSectionCli, spliceSection as splice } from './report-common.mjs';

const TITLE = '## Snapclones and snapshot trees';
const LOAD_TARGET = 0.7;

const ok = (r) => r && !r.err && r.bw_bytes !== undefined;
// lower median (always one measured value)
const median = (xs) => {
  const s = xs
    .filter((x) => x !== null && x !== undefined && !Number.isNaN(x))
    .sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : null;
};
const rx = (x, d = 2) => (x === null || x === undefined ? '–' : `${x.toFixed(d)}×`);
const spread = (xs, d = 2) =>
  xs.length > 1 ? ` (${Math.min(...xs).toFixed(d)}–${Math.max(...xs).toFixed(d)})` : '';
const range = (xs, d = 0) =>
  xs.length > 1 ? `${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)}` : '–';
const la = (s) => (s ? s.split(' ').slice(0, 3).join(' ') : '?');
const mib = (b) =>
  b >= 2 ** 30 ? `${fmt(b / 2 ** 30, b % 2 ** 30 ? 1 : 0)} GiB` : `${fmt(b / 2 ** 20)} MiB`;
const pct = (x) => `${fmt(100 * x, 1)} %`;
const mbps = (r) => r.bw_bytes / 1e6;

export function clonesSection(dir, { runName, command: commandOpt } = {}) {
  const recsFile = path.join(dir, 'clones.jsonl');
  if (!fs.existsSync(recsFile)) return [];
  const recs = fs
    .readFileSync(recsFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
  const meta = readJson(path.join(dir, 'meta.json')) || {};
  const P = meta.params || {};
  const command = fs.existsSync(path.join(dir, 'command.txt'))
    ? fs.readFileSync(path.join(dir, 'command.txt'), 'utf8').trim()
    : 'bash bench/clones.sh';
  const name = runName || path.basename(path.dirname(fs.realpathSync(dir)));
  const lunBytes = (P.sizeMiB || 1024) * 2 ** 20;
  const L = [];
  L.push(TITLE);
  L.push('');
  const big = meta.otherLoad ? meta.otherLoad.filter((x) => x.cpuS >= 5) : [];
  L.push(
    `Measured by \`bench/clones.sh\` (run by \`bench/run.sh\` after the background part; \`CLONES=0\` skips it, \`CLONES_ONLY=1\` runs only it) in run \`${name}\`${meta.date ? `, finished ${meta.date.replace(/\.\d+Z$/, 'Z')}` : ''}, ${meta.wallS ?? '?'} s of wall time${meta.phasesS ? ` (setup ${meta.phasesS.setup} s, a ${meta.phasesS.a} s, b ${meta.phasesS.b} s, c ${meta.phasesS.c} s)` : ''}. Every ratio below is to a figure measured in the same run. lunfs (\`lunfs mount --front native\`): RAID-0 pool of 4 sparse drive files on /dev/shm (${P.poolBytes ? mib(P.poolBytes) : '?'} in total: room for the LUN, a clone's copy and the originals preserved for the clone's base), write-back cache ${!P.cache || P.cache === 'default' ? 'default (256 MiB)' : P.cache}, allocation unit 1 MiB (BGCOPY copies whole units), copy-on-write chunk 128 KiB; one LUN \`lun0\` of ${mib(lunBytes)} written full through the mount (incompressible data); each measurement on a fresh copy of that template pool, mounted anew (cold cache, no dirty data). Clones and snapshots are made the way a user makes them: \`touch MNT/control/snapclone/lun0@c1\` (the clone is \`clones/c1\` at once, \`luns/c1\` when its BGCOPY is done), \`touch MNT/control/snapshot/lun0@s01\`, \`…/lun0@s01@s02\` (a snapshot of a snapshot).`,
  );
  L.push('');
  L.push(
    `Machine: ${meta.cpu || '?'}, ${meta.cores || '?'} cores, ${meta.memGiB || '?'} GiB, kernel ${meta.kernel || '?'}, ${meta.distro || '?'}; node ${meta.node || '?'}, ${meta.fio || 'fio ?'}; lunfs dist sha1 ${meta.distSha1 || '?'}; load average before / after: ${la(meta.loadavgBefore)} / ${la(meta.loadavgAfter)}; other processes: ${big.length ? big.map((x) => `\`${x.args.replace(/\S*node_modules\/([^/\s]+)\S*/g, '…$1').slice(0, 60)}\` ${x.cpuS} CPU-s`).join('; ') + ' (the figures are disturbed by that load)' : 'none used 5 CPU-s or more'}.${P.quick ? ' **Quick settings (CLONE_QUICK=1): a small LUN, short jobs, one round; a smoke test, not a measurement.**' : ''}`,
  );
  L.push('');
  const alone = `CLONES_ONLY=1 ${command.replace(/ ?bash bench\/clones\.sh$/, '')}${command === 'bash bench/clones.sh' ? '' : ' '}bash bench/run.sh`;
  L.push(
    `Command (${commandOpt ? 'how this section was made' : 'what `bench/run.sh` ran'}; \`${alone}\` runs it alone and replaces this section; \`CLONE_QUICK=1\` is a short smoke run):`,
  );
  L.push('');
  L.push('```');
  if (commandOpt) L.push(commandOpt);
  L.push(command);
  L.push('```');
  L.push('');

  // ---- a
  const A = recs.filter((r) => r.part === 'a');
  const aRounds = [...new Set(A.map((r) => r.repeat))].sort((a, b) => a - b);
  if (A.length) {
    L.push('### a. BGCOPY throughput on an idle pool');
    L.push('');
    L.push(
      `Right after the mount (no LUN I/O yet, so BGCOPY is not paced), a clone of the fully written ${mib(lunBytes)} LUN is made and its job (\`jobs[]\`, \`kind: 'bgcopy'\`) is followed in \`control/status\` (one read every 100 ms) until it is done. BGCOPY MB/s = the bytes it copied over the time from the start of the clone's creation (the \`touch\`) to the job's \`finishedAt\` (which includes making the copy durable and removing the clone's base). Then fio seqread (psync, iodepth 1, bs 1 MiB, O_DIRECT, the whole LUN, page cache dropped) of the source LUN on the same mount: the figure BGCOPY is compared with; and of the clone, now \`luns/c1\`. ${aRounds.length} round${aRounds.length > 1 ? 's' : ''}, each on a fresh copy; figure = median over the rounds (lower median).`,
    );
    L.push('');
    L.push(
      '| round | clone creation ms | BGCOPY copied | creation → done s | job s (paused s) | BGCOPY MB/s | seqread of the source MB/s | BGCOPY / seqread | seqread of the clone after BGCOPY MB/s | clone / source |',
    );
    L.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    const rows = [];
    for (const k of aRounds) {
      const b = A.find((r) => r.repeat === k && r.job);
      const lun = A.find((r) => r.repeat === k && r.file === 'lun');
      const clone = A.find((r) => r.repeat === k && r.file === 'clone');
      if (!b) continue;
      const j = b.job;
      const doneS = (Date.parse(j.finishedAt) - b.create_start_ms) / 1000;
      const jobS = (Date.parse(j.finishedAt) - Date.parse(j.startedAt)) / 1000;
      const bg = j.state === 'done' ? j.doneBytes / doneS / 1e6 : null;
      const ratio = bg !== null && ok(lun) ? bg / mbps(lun) : null;
      const cr = ok(lun) && ok(clone) ? mbps(clone) / mbps(lun) : null;
      rows.push({
        bg,
        ratio,
        cr,
        lun: ok(lun) ? mbps(lun) : null,
        clone: ok(clone) ? mbps(clone) : null,
        doneS,
        create: b.create_ms,
      });
      L.push(
        `| ${k} | ${fmt(b.create_ms, 1)} | ${j.state === 'done' ? mib(j.doneBytes) : `${j.state}: ${mib(j.doneBytes)} of ${mib(j.totalBytes)}${j.error ? ` (${j.error})` : ''}`} | ${fmt(doneS, 2)} | ${fmt(jobS, 2)} (${fmt(j.pausedMs / 1000, 2)}) | ${fmt(bg)} | ${ok(lun) ? fmt(mbps(lun)) : `FAIL ${lun?.err ?? ''}`} | ${rx(ratio)} | ${ok(clone) ? fmt(mbps(clone)) : `FAIL ${clone?.err ?? ''}`} | ${rx(cr)} |`,
      );
    }
    L.push('');
    const mr = median(rows.map((r) => r.ratio));
    L.push(
      `**BGCOPY on an idle pool: ${fmt(median(rows.map((r) => r.bg)))} MB/s${rows.length > 1 ? ` (${range(rows.map((r) => r.bg))})` : ''}, ${rx(mr)} the sequential read of the same LUN on the same pool${rows.length > 1 ? ` (per round ${rows.map((r) => fmt(r.ratio, 2)).join(', ')})` : ''}** (the issue asks for the figure; it sets no target). A ${mib(lunBytes)} clone is independent (\`luns/c1\`) ${fmt(median(rows.map((r) => r.doneS)), 1)} s after its creation; creating it took ${fmt(median(rows.map((r) => r.create)), 1)} ms. After BGCOPY, the clone reads at ${rx(median(rows.map((r) => r.cr)))} the speed of its source.`,
    );
    L.push('');
  }

  // ---- b
  const B = recs.filter((r) => r.part === 'b');
  if (B.length) {
    const rounds = [...new Set(B.map((r) => r.repeat))].sort((a, b) => a - b);
    const R = rounds.length;
    const get = (v, k) => B.find((r) => r.variant === v && r.repeat === k);
    const ratios = (v, ref = 'idle', f = (r) => r.iops) =>
      rounds
        .map((k) => {
          const a = get(v, k);
          const b = get(ref, k);
          return ok(a) && ok(b) ? f(a) / f(b) : null;
        })
        .filter((x) => x !== null);
    const variants = ['idle', 'snapshot', 'clone'].filter((v) => B.some((r) => r.variant === v));
    L.push('### b. 4 KiB random writes on the source while BGCOPY runs');
    L.push('');
    L.push(
      `snapshots.sh part a's randwrite4k job (fio psync, iodepth 1, 4 KiB random writes over the whole ${mib(lunBytes)} source LUN, ${P.randwMiB} MiB or ${P.randRuntimeS} s, O_DIRECT, end_fsync); as soon as the job has sent its first write, a clone of the LUN is made (\`touch\`), so that the job runs while the clone's BGCOPY copies, paced from its first unit on. Against the same job with no clone (idle)${variants.includes('snapshot') ? " and, to tell the two costs apart, with a plain snapshot taken the same way: the clone's base is a snapshot of its source, so the source's first write to each 128 KiB chunk preserves the original for it, as after any snapshot; what the clone adds beyond that is BGCOPY" : ''}. Each job on a fresh copy of the template pool; ${R} round${R > 1 ? 's' : ''}, the variants interleaved within each; figure = median over the rounds (lower median), ratio = within each round, then the median${R > 1 ? ' (range in brackets)' : ''}. While LUN I/O came in the last 200 ms, BGCOPY is paced like a rebuild (src/volume/job-pacer.ts: after each 5 ms stretch of its own work it sleeps 9 times as long, at most 100 ms); idle it runs at full speed.`,
    );
    L.push('');
    L.push(
      `| source LUN | IOPS | ${R > 1 ? 'range | ' : ''}ratio to idle | mean lat µs | p99 clat µs | p99 ratio | max clat ms | srv CPU µs/IO | preservations (batches) |`,
    );
    L.push(`|---|---:|${R > 1 ? '---:|' : ''}---:|---:|---:|---:|---:|---:|---:|`);
    const label = {
      idle: 'idle (no clone)',
      snapshot: 'after a plain snapshot (no BGCOPY)',
      clone: 'during the BGCOPY of a clone of it',
    };
    for (const v of variants) {
      const good = B.filter((r) => r.variant === v && ok(r)).sort((a, b) => a.iops - b.iops);
      if (!good.length) {
        const e = B.find((r) => r.variant === v);
        L.push(
          `| ${label[v]} | FAIL: ${String(e.err).replace(/\|/g, '/').slice(0, 100)} |${R > 1 ? ' |' : ''} | | | | | | |`,
        );
        continue;
      }
      const r = good[Math.floor((good.length - 1) / 2)];
      const rr = ratios(v);
      const p99 = ratios(v, 'idle', (x) => x.clat_p99_us);
      const cpu =
        r.srv_cpu_s !== '' && r.srv_cpu_s !== undefined && r.total_ios
          ? fmt((1e6 * r.srv_cpu_s) / r.total_ios, 1)
          : '–';
      const mark = v === 'clone' ? (median(rr) >= LOAD_TARGET ? ' ✅' : ' ❌') : '';
      L.push(
        `| ${label[v]} | ${fmt(r.iops)} | ${R > 1 ? `${range(good.map((x) => x.iops))} | ` : ''}${v === 'idle' ? '1 (reference)' : `${rx(median(rr))}${spread(rr)}${mark}`} | ${fmt(r.lat_mean_us, 1)} | ${fmt(r.clat_p99_us)} | ${v === 'idle' ? '1' : `${rx(median(p99))}${spread(p99)}`} | ${fmt(r.clat_max_us / 1000, 1)} | ${cpu} | ${v === 'idle' ? '–' : `${fmt(r.preservations)} (${fmt(r.batches)})`} |`,
      );
    }
    L.push('');
    const C = B.filter((r) => r.variant === 'clone');
    if (C.length) {
      L.push(
        "BGCOPY during the clone's jobs, read from `control/status` right after the clone's creation (fio running) and right after fio ended (BGCOPY must still run at the end, else part of the job ran without it):",
      );
      L.push('');
      L.push(
        '| round | clone creation ms (under the load) | BGCOPY after the creation | after the job | copied during the job | BGCOPY MB/s during the job | paused | still running at the end |',
      );
      L.push('|---:|---:|---:|---:|---:|---:|---:|---|');
      for (const r of C.sort((a, b) => a.repeat - b.repeat)) {
        const b0 = r.bg_before;
        const b1 = r.bg_after;
        if (!b0 || !b1) {
          L.push(`| ${r.repeat} | ${fmt(r.create_ms, 1)} | – | – | – | – | – | not recorded |`);
          continue;
        }
        const dt = (b1.at - b0.at) / 1000;
        const f = (j) => `${pct(j.doneBytes / j.totalBytes)} (${mib(j.doneBytes)})`;
        L.push(
          `| ${r.repeat} | ${fmt(r.create_ms, 1)} | ${f(b0)} | ${f(b1)} | ${mib(b1.doneBytes - b0.doneBytes)} in ${fmt(dt, 1)} s | ${fmt((b1.doneBytes - b0.doneBytes) / dt / 1e6)} | ${fmt((b1.pausedMs - b0.pausedMs) / 1000, 1)} s, ${pct((b1.pausedMs - b0.pausedMs) / 1000 / dt)} of the time | ${b1.state === 'running' ? 'yes ✅' : `no ❌ (${b1.state}${b1.finishedAt ? ` at ${b1.finishedAt}` : ''})`} |`,
        );
      }
      L.push('');
    }
    const rc = median(ratios('clone'));
    const rs = variants.includes('snapshot') ? median(ratios('snapshot')) : null;
    const cs = variants.includes('snapshot') ? median(ratios('clone', 'snapshot')) : null;
    const allRunning = C.length && C.every((r) => r.bg_after && r.bg_after.state === 'running');
    L.push(
      `**Target (the source keeps at least ${LOAD_TARGET}× its idle IOPS while BGCOPY runs):** ${rc === null ? 'not measured' : `${rc >= LOAD_TARGET ? 'met' : 'missed'}, ${rx(rc)}`}${allRunning ? ' (BGCOPY ran through every job)' : C.length ? ' (**BGCOPY was not running for the whole of every job**: see above)' : ''}.${rs !== null ? ` After a plain snapshot, with no BGCOPY, the same job keeps ${rx(rs)}: with BGCOPY against without it (clone / snapshot, per round) ${rx(cs)}${spread(ratios('clone', 'snapshot'))}.` : ''}`,
    );
    L.push('');
  }

  // ---- c
  const T = recs.filter((r) => r.part === 'c-tree');
  const Cr = recs.filter((r) => r.part === 'c');
  if (Cr.length) {
    const depth = P.depth || Math.max(...Cr.map((r) => r.level));
    const deep = `s${String(depth).padStart(2, '0')}`;
    const chains = [...new Set(Cr.map((r) => r.chain))];
    const rounds = [...new Set(Cr.map((r) => r.repeat))].sort((a, b) => a - b);
    const R = rounds.length;
    L.push(`### c. Sequential read of a snapshot ${depth} levels deep against one level deep`);
    L.push('');
    const desc = {
      plain: "no writes: every level holds the LUN's data, which they all read from the LUN",
      lun: `after each level, random 4 KiB writes to ${P.changePct} % of the LUN's 128 KiB chunks (a new seed each time, end_fsync): every level still holds the same data (the LUN's at the first snapshot), more and more of it as originals preserved in the target volume, one copy shared by the whole chain`,
      levels: `each level itself written (random 4 KiB writes to ${P.changePct} % of its 128 KiB chunks, a new seed each time) before the next is taken of it: the levels differ, the deep one carries the writes of every level above it (copied images pointing at the same slots), so the two files do not hold the same data`,
    };
    L.push(
      `A chain of ${depth} snapshots: \`lun0@s01\` of the LUN, \`lun0@s02\` of \`lun0@s01\`, …, \`lun0@${deep}\` of the one before (\`touch MNT/control/snapshot/lun0@s01@s02\` and so on; \`depth\` from \`control/status\`). Then fio seqread (psync, iodepth 1, bs 1 MiB, O_DIRECT, the whole ${mib(lunBytes)}, page cache dropped before each) of \`lun0@${deep}\` (${depth} levels deep), \`lun0@s01\` (one level deep) and the LUN itself; ${R} round${R > 1 ? 's' : ''} (\`lun0@s01\`, the LUN, \`lun0@${deep}\`; the other way round every other round). Chains, each on a fresh copy of the template pool: ${chains.map((c) => `**${c}** (${desc[c] || c})`).join('; ')}. "in the target" = the snapshot's data held in the target volume (exclusive + shared bytes from \`control/status\`) over its size.`,
    );
    L.push('');
    L.push(
      `| chain | file | depth | in the target | MB/s | ${R > 1 ? 'range | ' : ''}ratio to one level deep | ratio to the LUN | srv CPU s/GiB${R > 1 ? ' (lowest of the rounds)' : ''} |`,
    );
    L.push(`|---|---|---:|---:|---:|${R > 1 ? '---:|' : ''}---:|---:|---:|`);
    const verdicts = [];
    // the server's CPU seconds per GiB read, lowest of the rounds (the least disturbed one): a
    // figure the other load on the machine moves less than the throughput
    const cpuPerGiB = (c, f) => {
      const xs = Cr.filter(
        (r) =>
          r.chain === c && r.file === f && ok(r) && r.srv_cpu_s !== '' && r.srv_cpu_s !== undefined,
      ).map((r) => Number(r.srv_cpu_s) / ((r.bw_bytes * r.runtime_ms) / 1000 / 2 ** 30));
      return xs.length ? Math.min(...xs) : null;
    };
    for (const c of chains) {
      const tree = T.find((t) => t.chain === c);
      const get = (f, k) => Cr.find((r) => r.chain === c && r.file === f && r.repeat === k);
      const pr = (f, g) =>
        rounds
          .map((k) => {
            const a = get(f, k);
            const b = get(g, k);
            return ok(a) && ok(b) ? a.bw_bytes / b.bw_bytes : null;
          })
          .filter((x) => x !== null);
      for (const f of ['s01', deep, 'lun']) {
        const good = Cr.filter((r) => r.chain === c && r.file === f && ok(r)).sort(
          (a, b) => a.bw_bytes - b.bw_bytes,
        );
        const fileName = f === 'lun' ? 'the LUN (luns/lun0)' : `lun0@${f}`;
        const s = f === 'lun' ? null : tree?.snapshots?.[`lun0@${f}`];
        if (!good.length) {
          const e = Cr.find((r) => r.chain === c && r.file === f);
          L.push(
            `| ${c} | ${fileName} | | | FAIL: ${String(e ? e.err : 'not run')
              .replace(/\|/g, '/')
              .slice(0, 100)} |${R > 1 ? ' |' : ''} | | |`,
          );
          continue;
        }
        const r = good[Math.floor((good.length - 1) / 2)];
        const toS01 = f === 's01' ? null : pr(f, 's01');
        const toLun = f === 'lun' ? null : pr(f, 'lun');
        L.push(
          `| ${c} | ${fileName} | ${f === 'lun' ? '–' : s ? s.depth : '?'} | ${s ? pct((s.exclusiveBytes + s.sharedBytes) / s.sizeBytes) : '–'} | ${fmt(mbps(r))} | ${R > 1 ? `${range(good.map(mbps))} | ` : ''}${f === 's01' ? '1 (reference)' : `${rx(median(toS01))}${spread(toS01)}`} | ${f === 'lun' ? '1 (reference)' : `${rx(median(toLun))}${spread(toLun)}`} | ${fmt(cpuPerGiB(c, f), 2)} |`,
        );
      }
      const dr = pr(deep, 's01');
      const cpuRatio = cpuPerGiB(c, deep) / cpuPerGiB(c, 's01');
      const m = median(dr);
      // noise: the largest relative spread of repeated reads of one file of this chain, at least 10 %
      const spreads = ['s01', deep, 'lun'].map((f) => {
        const xs = Cr.filter((r) => r.chain === c && r.file === f && ok(r)).map((r) => r.bw_bytes);
        return xs.length > 1 ? (Math.max(...xs) - Math.min(...xs)) / median(xs) : 0;
      });
      const noise = Math.max(0.1, ...spreads);
      verdicts.push({ c, m, dr, noise, cpuRatio, met: m !== null && Math.abs(m - 1) <= noise });
    }
    L.push('');
    const sameData = verdicts.filter((v) => v.c !== 'levels');
    const line = (v) =>
      `${v.c}: ${depth} deep / one deep = ${rx(v.m)}${v.dr.length > 1 ? ` (per round ${v.dr.map((x) => x.toFixed(2)).join(', ')})` : ''}, noise ±${fmt(100 * v.noise)} % → ${v.m === null ? 'not measured' : v.met ? 'equal within noise' : `not equal (the ${v.m < 1 ? 'deep' : 'shallow'} one is slower)`}; server CPU per GiB ${rx(Number.isFinite(v.cpuRatio) ? v.cpuRatio : null)}`;
    L.push(
      `**Target (the snapshot ${depth} levels deep reads as fast as the one level deep, within noise):** ${sameData.length ? `${sameData.every((v) => v.met) ? 'met' : 'missed'}; ` : ''}${verdicts.map(line).join('; ')}${verdicts.some((v) => v.c === 'levels') ? ' (levels: different data, shown for the cost of the copied images, not part of the target)' : ''}. Noise = the largest spread of repeated reads of one file of that chain in this run, at least ±10 %.${R < 2 ? ' One round only: the noise is not measured.' : ''}`,
    );
    const created = [];
    for (const c of chains)
      for (let i = 2; i <= depth; i++) {
        const cr = readJson(path.join(dir, `create-c-${c}-${String(i).padStart(2, '0')}.json`));
        if (cr) created.push(...cr.creations.filter((x) => !x.err).map((x) => x.ms));
      }
    if (created.length)
      L.push(
        `Taking a snapshot of a snapshot (levels 2 to ${depth}, ${created.length} in all): median ${fmt(median(created), 1)} ms, max ${fmt(Math.max(...created), 1)} ms.`,
      );
    L.push('');
  }
  const V = recs.filter((r) => r.part === 'verify');
  if (V.length) {
    const bad = V.filter((r) => r.result !== 'same' && r.result !== 'same-as-prefix');
    const what = (r) =>
      r.result === 'same'
        ? 'the data written to lun0 ✅'
        : r.result === 'same-as-prefix'
          ? `the template's data with the job's first ${r.detail} writes, i.e. the source at the clone's instant ✅`
          : `**${r.result}** (${r.detail ?? ''}) ❌`;
    L.push(
      `Data checks (outside the timed jobs; a, c: \`cmp\` against the data written to lun0 before the clone or the first snapshot; b: the clone's blocks that differ from that data must be exactly those of the first K writes of the job, whose offsets come from the same fio job run again on a scratch file with --write_iolog): ${V.map((r) => `${r.file} (${r.tag}): ${what(r)}`).join('; ')}.${bad.length ? ' **A clone or snapshot read other data than its source held at its instant.**' : ''}`,
    );
    L.push('');
  }
  return L;
}

// Replaces or inserts the section in an existing markdown file.
export const spliceSection = (md, lines) =>
  splice(md, lines, new RegExp(`^${TITLE}\\s*$`, 'm'));

runSectionCli(import.meta.url, {
  defaultDir: '.bench/latest-clones/clones',
  records: 'clones.jsonl',
  label: 'snapclones section',
  section: (dir, opt) => clonesSection(dir, { runName: opt('--run-name'), command: opt('--command') }),
  splice: spliceSection,
});
