#!/usr/bin/env node
// Writes BENCHMARKS.md from one bench/run.sh run folder: machine, exact command, a table per fio
// job with every target's figure and, for the lunfs targets, the ratios to the ceiling (the
// trivial fuse-native file, fnmem) and to the peer (qemu-storage-daemon qcow2) measured in the
// same run; the 0.8x target is marked. Only figures from the run's records are printed. When the run
// has the RAID targets (lunfs_r1, lunfs_r5, lunfs_r1_deg, lunfs_r5_deg beside lunfs_r0), the
// section "RAID levels on the same drives" gives them as ratios to lunfs_r0 with issue 4's target
// (RAID-5 seqwrite at least 0.5x RAID-0). When the run folder has snapshots/
// (bench/snapshots.sh), its "Snapshots" section comes from bench/snapshots-report.mjs. A "Byte
// kernels" section already in the output file (bench/kernels.mjs --splice) is kept as it is.
//
//   node bench/report.mjs --run .bench/latest --out BENCHMARKS.md
//   node bench/report.mjs --run .bench/latest-raid --raid-only --splice BENCHMARKS.md
//       (RAID_ONLY=1 bash bench/run.sh: only the RAID section, self-contained (machine, command,
//       absolute figures, ceiling and peer ratios), replacing that section of the file or inserted
//       before "## Results per job" / "## Snapshots" / ...; the rest of the file is left as it is)
import fs from 'node:fs';
import path from 'node:path';
import { snapshotSection } from './snapshots-report.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : def; };
const runDir = path.resolve(opt('--run', '.bench/latest'));
const out = opt('--out', 'BENCHMARKS.md');
const TARGET_RATIO = Number(opt('--target', '0.8'));
const RAID5_TARGET = Number(opt('--raid5-target', '0.5')); // issue 4: RAID-5 seqwrite >= 0.5x RAID-0
const RAID_ONLY = args.includes('--raid-only');
const SPLICE = opt('--splice', null);

const readJson = (p) => (fs.existsSync(p) ? JSON.parse(fs.readFileSync(p, 'utf8')) : null);
// One peers.sh run (peers.jsonl) or REPEAT runs (peers-1.jsonl, peers-2.jsonl, ...).
const runFiles = fs.readdirSync(runDir).filter((f) => /^peers(-\d+)?\.jsonl$/.test(f))
  .sort((a, b) => Number((a.match(/\d+/) || [0])[0]) - Number((b.match(/\d+/) || [0])[0]));
if (!runFiles.length) { console.error(`no peers*.jsonl in ${runDir}`); process.exit(1); }
const runs = runFiles.map((f, i) => ({
  n: i + 1,
  threadsDir: path.join(runDir, runFiles.length > 1 ? `threads-${i + 1}` : 'threads'),
  recs: fs.readFileSync(path.join(runDir, f), 'utf8').split('\n').filter(Boolean).map((l) => ({ ...JSON.parse(l), _run: i + 1 })),
}));
const jobsRecs = runs.flatMap((r) => r.recs).filter((r) => r.kind === 'job');
const machine = readJson(path.join(runDir, 'machine.json')) || {};
const command = fs.existsSync(path.join(runDir, 'command.txt')) ? fs.readFileSync(path.join(runDir, 'command.txt'), 'utf8').trim().split('\n') : [];
const profile = readJson(path.join(runDir, 'profile.json'));
const mdName = runFiles[0].replace(/\.jsonl$/, '.md');
const peersMd = fs.existsSync(path.join(runDir, mdName)) ? fs.readFileSync(path.join(runDir, mdName), 'utf8') : '';
const params = (peersMd.match(/^Parameters: (.*)$/m) || [])[1] || '';
const versions = (peersMd.match(/^Versions: (.*)$/m) || [])[1] || '';
const title = (peersMd.match(/^# .* — (.*)$/m) || [])[1] || '';
const R = runs.length;

const targets = []; const labels = {}; const jobNames = [];
for (const r of jobsRecs) {
  if (!targets.includes(r.target)) targets.push(r.target);
  labels[r.target] = r.label;
  if (!jobNames.includes(r.job)) jobNames.push(r.job);
}
const ok = (r) => r && !r.err && r.bw_bytes !== undefined;
const all = (t, j) => jobsRecs.filter((r) => r.target === t && r.job === j);
// The representative record: the median of the repeats by throughput (lower median for an even
// count, so it is always a measured record); a failed one only when every repeat failed.
const rec = (t, j) => {
  const rs = all(t, j); const good = rs.filter(ok).sort((a, b) => a.bw_bytes - b.bw_bytes);
  return good.length ? good[Math.floor((good.length - 1) / 2)] : rs[0];
};
const recRun = (t, j, n) => all(t, j).find((r) => r._run === n);
const is4k = (j) => /4k/.test(j);
// lunfs targets: lunfs_r<level>[_deg] on the native front, lunfs_r<level>[_deg]_fn on fuse-native
const isLunfs = (t) => /lunfs_r\d(_deg)?(_fn)?$/.test(t);
const isProf = (t) => t.startsWith('prof_');
const prefixOf = (t) => t.replace(/lunfs_r\d(_deg)?(_fn)?$/, '');
const ceilingOf = (t) => `${prefixOf(t)}fnmem`; // fuse-native's ceiling (the 0.8x target)
const nativeCeilingOf = (t) => `${prefixOf(t)}nfmem`; // the native front's ceiling (bench/nfmem-server.mjs)
const hasNative = targets.some((t) => /(^|_)nfmem$/.test(t));
const peerOf = (t) => `${prefixOf(t)}qcow2`;
const fmt = (n, d = 0) => (n === null || n === undefined || Number.isNaN(n) ? '–' : Number(n).toFixed(d));
const metric = (j, r) => (is4k(j) ? `${fmt(r.iops / 1000, 1)}k IOPS` : `${fmt(r.bw_bytes / 1e6)} MB/s`);
const ratio = (a, b) => (ok(a) && ok(b) && b.bw_bytes > 0 ? a.bw_bytes / b.bw_bytes : null);
// withMark: true = the 0.8x target, a number = that threshold, false = no mark
const mark = (x, at = TARGET_RATIO) => (x === null ? '' : x >= at ? ' ✅' : ' ❌');
const rstr = (x, withMark) => (x === null ? '–' : `${x.toFixed(2)}×${withMark ? mark(x, typeof withMark === 'number' ? withMark : TARGET_RATIO) : ''}`);
// The ratio lunfs/other for a job: paired within each peers.sh run (the two were measured
// minutes apart; the machine's speed drifts more than that between runs), then the median over
// the repeats (lower median for an even count), with the range of the per-repeat ratios.
const cached = (t, j) => /^(loop|ext4)_/.test(t) && /read/.test(j); // see the † note
const pairedRatios = (t, c, j) => runs.map((run) => ratio(recRun(t, j, run.n), recRun(c, j, run.n))).filter((x) => x !== null);
const median = (xs) => { const ys = [...xs].sort((a, b) => a - b); return ys.length ? ys[Math.floor((ys.length - 1) / 2)] : null; };
const pairedRatio = (t, c, j) => median(pairedRatios(t, c, j));
// The same across two jobs (target t job j over target c job k), paired within each run.
const crossRatios = (t, j, c, k) => runs.map((run) => ratio(recRun(t, j, run.n), recRun(c, k, run.n))).filter((x) => x !== null);
const ratioCell = (t, c, j, withMark) => {
  const main = rstr(pairedRatio(t, c, j), withMark) + (cached(t, j) ? ' †' : '');
  const xs = pairedRatios(t, c, j);
  return xs.length > 1 ? `${main} (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})` : main;
};
const perIO = (r) => (r.srv_cpu_s === null || r.srv_cpu_s === undefined || !r.total_ios ? '–' : fmt(1e6 * r.srv_cpu_s / r.total_ios, 1));
const srvPct = (r) => (r.srv_cpu_s === null || r.srv_cpu_s === undefined || !r.wall_s ? '–' : fmt(100 * r.srv_cpu_s / r.wall_s));
const rangeCell = (t, j) => {
  const xs = all(t, j).filter(ok).map((r) => (is4k(j) ? r.iops : r.bw_bytes / 1e6));
  if (xs.length < 2) return '';
  return `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}`;
};
// Per-thread CPU of the server during the job (bench/peers-extra-lunfs.sh writes the .tsv).
const threadsOf = (r) => {
  if (!r) return null;
  const run = runs.find((x) => x.n === r._run);
  const f = path.join(run.threadsDir, `job-${r.target}-${r.job}.tsv`);
  if (!fs.existsSync(f)) return null;
  const sum = { main: 0, fuse: 0, other: 0, process: null, minflt: 0, vcsw: 0, nvcsw: 0, fuseThreads: 0 };
  for (const line of fs.readFileSync(f, 'utf8').split('\n').filter(Boolean)) {
    const [, role, ns, minflt, vcsw, nvcsw] = line.split('\t');
    if (role === 'process') { sum.process = Number(ns); continue; }
    sum[role] = (sum[role] || 0) + Number(ns);
    if (role === 'fuse' && Number(ns) > 0) sum.fuseThreads += 1;
    sum.minflt += Number(minflt); sum.vcsw += Number(vcsw); sum.nvcsw += Number(nvcsw);
  }
  return sum;
};

const runName = path.basename(fs.realpathSync(runDir));
const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const runWhere = ((rel) => (rel.startsWith('..') ? fs.realpathSync(runDir) : rel))(path.relative(REPO, fs.realpathSync(runDir)));

// ---- RAID levels on the same drives (issue 4): every level as a ratio to lunfs_r0 of the same repeat
const RAID_T = [
  ['lunfs_r1', 'RAID-1 / RAID-0'], ['lunfs_r5', 'RAID-5 / RAID-0'],
  ['lunfs_r1_deg', 'RAID-1 degraded / RAID-0'], ['lunfs_r5_deg', 'RAID-5 degraded / RAID-0'],
];
const hasRaid = targets.includes('lunfs_r0') && RAID_T.some(([t]) => targets.includes(t));
// a record's error; peers.sh's "setup failed" keeps the last 2 lines of the setup log, which may
// hold the previous job's failure: keep the last logged line
const errOf = (r) => {
  const e = String((r && r.err) || '').replace(/\|/g, '/').replace(/\s+/g, ' ').trim();
  const m = e.match(/^(setup failed: ).*\[peers \d\d:\d\d:\d\d\] (.*)$/);
  return m ? m[1] + m[2] : e;
};
const metricCell = (t, j) => { const r = rec(t, j); if (!r) return 'not run'; if (!ok(r)) return 'FAIL'; const x = rangeCell(t, j); return metric(j, r) + (x ? ` (${x})` : ''); };
const raidCell = (t, j, withMark) => {
  if (!targets.includes(t)) return 'not run';
  const r = rec(t, j); const b = rec('lunfs_r0', j);
  if (!r) return 'not run';
  if (!ok(r)) return 'FAIL';
  if (!ok(b)) return '– (RAID-0 failed)';
  return ratioCell(t, 'lunfs_r0', j, withMark);
};
function raidSection({ standalone }) {
  const L = [];
  const present = RAID_T.filter(([t]) => targets.includes(t)).map(([t]) => t);
  const noteOf = (t) => (rec(t, jobNames[0]) || {}).note || '';
  const drives = ['lunfs_r0', ...present].map((t) => [t, (noteOf(t).match(/RAID-\d+ \d+×\d+ MiB drives/) || [])[0]]).filter(([, d]) => d);
  L.push('## RAID levels on the same drives');
  L.push('');
  if (standalone) {
    const other = SPLICE && fs.existsSync(SPLICE) ? (fs.readFileSync(SPLICE, 'utf8').match(/from run `(run-[^`]+)`/) || [])[1] : null;
    L.push(`Written by \`RAID_ONLY=1 bash bench/run.sh\` from run \`${runName}\`${other && other !== runName ? ` (the rest of this file comes from run \`${other}\`: compare figures across the two runs with care)` : ''}. Raw reports and records: \`${runWhere}/\` (\`${path.join(path.dirname(runWhere), 'latest-raid')}\`).`);
    L.push('');
    L.push(`- machine: ${machine.cpu || '?'}, ${machine.cores || '?'} cores, kernel ${machine.kernel || '?'}, node ${machine.node || '?'}, ${machine.fio || 'fio ?'}, qemu-storage-daemon ${machine.qemu || '?'}`);
    if (machine.git) L.push(`- lunfs build: git ${machine.git.head}${machine.git.dirtyFiles ? ` plus ${machine.git.dirtyFiles} uncommitted file(s) under src/ native/ package.json` : ' (clean tree)'}${machine.git.distSha1 ? `, dist sha1 ${machine.git.distSha1}` : ''}`);
    L.push(`- load average before / after: ${machine.loadavgBefore || '?'} / ${machine.loadavgAfter || '?'}; wall time ${machine.wallS ?? '?'} s`);
    if (machine.otherLoad) {
      const big = machine.otherLoad.filter((x) => x.cpuS >= 5);
      L.push(`- other processes during the run: ${big.length ? big.map((x) => `\`${x.args.replace(/\S*node_modules\/([^/\s]+)\S*/g, '…$1').slice(0, 80)}\` ${x.cpuS} CPU-s`).join('; ') + ' (the figures are disturbed by that load)' : 'none used 5 CPU-s or more'}`);
    }
    if (params) L.push(`- parameters: ${params}`);
    L.push('');
    L.push('```');
    for (const c of command) L.push(c);
    L.push('```');
    L.push('');
  }
  L.push(`\`lunfs_r1\` (RAID-1, mirrored pairs), \`lunfs_r5\` (RAID-5, rotating parity) and the same two with one drive removed (\`lunfs_r1_deg\`, \`lunfs_r5_deg\`) beside \`lunfs_r0\` (RAID-0, striped): the same number of drive files on /dev/shm${drives.length ? ` (${drives.map(([t, d]) => `\`${t}\` ${d}`).join(', ')}: each level's drives are sized so that the same LUN fits)` : ''}, one LUN holding the same data, the same fio jobs, each (target, job) pair on a fresh copy of that level's prefilled template pool. Each ratio is the target's figure over \`lunfs_r0\`'s in the same peers.sh run (MB/s for the 1M jobs, IOPS for the 4k jobs)${R > 1 ? `; the median of the ${R} per-repeat ratios is shown, the lowest and highest in brackets` : ''}. Degraded: \`drive-1.img\` is deleted from the copy after the data was laid down on the healthy pool and before the mount, so lunfs mounts the pool with drive 1 missing: the read jobs read data written before the drive went (RAID-1: from the other half of the mirror; RAID-5: rebuilt from the other drives' data and parity), the write jobs write while the pool is degraded.`);
  L.push('');
  // the issue's target line
  const j5 = 'seqwrite';
  const r5 = rec('lunfs_r5', j5); const r0 = rec('lunfs_r0', j5);
  const x5 = pairedRatio('lunfs_r5', 'lunfs_r0', j5);
  let verdict;
  if (!jobNames.includes(j5)) verdict = 'not measured (seqwrite was not among the jobs)';
  else if (!targets.includes('lunfs_r5')) verdict = 'not measured (lunfs_r5 was not among the targets)';
  else if (x5 === null) verdict = `❌ not measured: ${!ok(r5) ? `lunfs_r5 ${errOf(r5).slice(0, 160) || 'failed'}` : `lunfs_r0 ${errOf(r0).slice(0, 160) || 'failed'}`}`;
  else verdict = `${x5.toFixed(2)}×${mark(x5, RAID5_TARGET)}${R > 1 ? ` (per repeat ${pairedRatios('lunfs_r5', 'lunfs_r0', j5).map((y) => y.toFixed(2)).join(', ')})` : ` (${metric(j5, r5)} vs ${metric(j5, r0)})`}`;
  L.push(`**Issue 4 target, RAID-5 seqwrite at least ${RAID5_TARGET}× RAID-0:** ${verdict}.`);
  L.push('');
  L.push(`| job | RAID-0 \`lunfs_r0\`${R > 1 ? ' (range)' : ''} | ` + RAID_T.map(([t, h]) => `${h} \`${t}\``).join(' | ') + ' |');
  L.push('|---|---:|' + RAID_T.map(() => '---:').join('|') + '|');
  for (const j of jobNames) {
    L.push(`| ${j} | ${metricCell('lunfs_r0', j)} | ` + RAID_T.map(([t]) => raidCell(t, j, t === 'lunfs_r5' && j === j5 ? RAID5_TARGET : false)).join(' | ') + ' |');
  }
  L.push('');
  const fails = []; // one line per target: the jobs that failed and one error (peers.sh cuts them at 200 characters)
  for (const t of ['lunfs_r0', ...present]) {
    const bad = jobNames.map((j) => [j, rec(t, j)]).filter(([, r]) => r && !ok(r));
    const err = bad.map(([, r]) => errOf(r)).sort((a, b) => b.length - a.length)[0]; // the least cut
    if (bad.length) fails.push(`- \`${t}\` ${bad.map(([j]) => j).join(', ')}: ${(err || 'failed').slice(0, 300)}`);
  }
  if (fails.length) { L.push('Failed:'); L.push(''); L.push(...fails); L.push(''); }
  const states = present.filter((t) => /_deg$/.test(t)).map((t) => [t, (noteOf(t).match(/pool state [^;]*/) || [])[0]]).filter(([, x]) => x);
  if (states.length) { L.push(`What the degraded pools reported after the mount (\`lunfs status --json\`): ${states.map(([t, x]) => `\`${t}\` ${x}`).join('; ')}.`); L.push(''); }
  if (!standalone) {
    L.push('Ratios of these targets to the ceiling and to the peer: the tables under "Target" above; absolute figures: "Results per job" below.');
    L.push('');
    return L;
  }
  const abs = ['fnmem', 'nfmem', 'qcow2', 'lunfs_r0', ...present].filter((t) => targets.includes(t));
  L.push(`Absolute figures${R > 1 ? ` (median record of the ${R} repeats, min–max in brackets)` : ''}:`);
  L.push('');
  L.push('| target | ' + jobNames.join(' | ') + ' |');
  L.push('|---|' + jobNames.map(() => '---:').join('|') + '|');
  for (const t of abs) L.push(`| ${labels[t] || t} | ` + jobNames.map((j) => metricCell(t, j)).join(' | ') + ' |');
  L.push('');
  const refs = [['ceiling (fnmem)', ceilingOf, true], ...(hasNative ? [['native-front ceiling (nfmem)', nativeCeilingOf, false]] : []), ['peer (qcow2)', peerOf, false]];
  for (const [what, refOf, withMark] of refs) {
    L.push(`lunfs / ${what}${withMark ? `, ✅ ≥ ${TARGET_RATIO}× (the issue's 0.8× target is about RAID-0; the marks on the other rows only say where they stand)` : ''}:`);
    L.push('');
    L.push('| lunfs target | ' + jobNames.join(' | ') + ' |');
    L.push('|---|' + jobNames.map(() => '---:').join('|') + '|');
    for (const t of ['lunfs_r0', ...present]) L.push(`| ${labels[t] || t} | ` + jobNames.map((j) => (targets.includes(refOf(t)) ? ratioCell(t, refOf(t), j, withMark) : 'not run')).join(' | ') + ' |');
    L.push('');
  }
  return L;
}
// Replaces the RAID section of an existing report, or inserts it before the first of the
// sections that follow it in a full report.
function spliceRaid(md, lines) {
  const section = lines.join('\n').replace(/\n+$/, '') + '\n\n';
  const start = md.search(/^## RAID levels on the same drives\s*$/m);
  if (start >= 0) {
    const rest = md.slice(start + 3);
    const next = rest.search(/^## /m);
    return md.slice(0, start) + section + (next >= 0 ? rest.slice(next) : '');
  }
  for (const h of ['## Results per job', '## Snapshots', '## Where the time goes', '## Targets', '## Notes']) {
    const i = md.search(new RegExp(`^${h}\\s*$`, 'm'));
    if (i >= 0) return md.slice(0, i) + section + md.slice(i);
  }
  return md.replace(/\n*$/, '\n\n') + section;
}
if (RAID_ONLY) {
  if (!targets.includes('lunfs_r0')) { console.error(`no lunfs_r0 records in ${runDir}: nothing to compare the RAID levels with`); process.exit(1); }
  const lines = raidSection({ standalone: true });
  if (SPLICE) {
    const md = fs.existsSync(SPLICE) ? fs.readFileSync(SPLICE, 'utf8') : '# lunfs benchmarks\n\n';
    fs.writeFileSync(SPLICE, spliceRaid(md, lines));
    console.log(`RAID section: ${SPLICE}`);
  } else if (opt('--out', null)) {
    fs.writeFileSync(out, lines.join('\n') + '\n');
    console.log(`RAID section: ${out}`);
  } else {
    process.stdout.write(lines.join('\n') + '\n');
  }
  process.exit(0);
}

const L = [];
L.push('# lunfs benchmarks');
L.push('');
L.push(`Generated by \`make bench\` (\`bench/run.sh\` → \`../shared/bench/peers.sh\` with \`bench/peers-extra-lunfs.sh\` → \`bench/report.mjs\`) from run \`${runName}\`${title ? ` (${title})` : ''}. Every figure below comes from that run: lunfs, the ceiling and the peer ran the same fio jobs one after the other, each (target, job) pair on a freshly started target${R > 1 ? `; peers.sh ran ${R} times in a row and each figure is the median of the ${R} repeats (lower median for an even count, so always one measured value), with the range beside it` : ''}. Raw reports and per-job records: \`.bench/${runName}/${R > 1 ? 'peers-N' : 'peers'}.md\` and \`.jsonl\` (gitignored).`);
L.push('');
L.push('## Machine');
L.push('');
L.push(`- CPU: ${machine.cpu || '?'}, ${machine.cores || '?'} cores; memory ${machine.memGiB || '?'} GiB; kernel ${machine.kernel || '?'}; ${machine.distro || ''}`);
L.push(`- node ${machine.node || '?'}; ${machine.fio || 'fio ?'}; qemu-storage-daemon ${machine.qemu || '?'}; fuse-native ${machine.fuseNative || '?'}`);
if (versions) L.push(`- peers.sh versions line: ${versions}`);
if (machine.git) L.push(`- lunfs build: git ${machine.git.head}${machine.git.dirtyFiles ? ` plus ${machine.git.dirtyFiles} uncommitted file(s) under src/ native/ package.json` : ' (clean tree)'}; dist/ as built before the run${machine.git.distSha1 ? `, sha1 of its .js files ${machine.git.distSha1}` : ''}${machine.git.bin && machine.git.bin.includes('/build/dist/') ? ', copied into the run folder at the start so the whole run measures that one build' : machine.git.bin ? ` (LUNFS_BIN=${machine.git.bin})` : ''}`);
L.push(`- load average before / after the run: ${machine.loadavgBefore || '?'} / ${machine.loadavgAfter || '?'}; wall time ${machine.wallS ?? '?'} s`);
if (machine.otherLoad) {
  const big = machine.otherLoad.filter((x) => x.cpuS >= 5);
  L.push(`- other processes on the machine during the run: ${big.length ? big.map((x) => `\`${x.args.replace(/\S*node_modules\/([^/\s]+)\S*/g, '…$1').slice(0, 80)}\` ${x.cpuS} CPU-s`).join('; ') + ` (over ${machine.wallS} s on ${machine.cores} cores: the figures are disturbed by that load)` : 'none used 5 CPU-s or more'}`);
}
if (params) L.push(`- parameters: ${params}`);
L.push('');
L.push('## Command');
L.push('');
L.push('```');
for (const c of command) L.push(c);
L.push('```');
L.push('');

// ---- target summary
const lunfsT = targets.filter((t) => isLunfs(t) && !isProf(t));
L.push(`## Target: lunfs RAID-0 at least ${TARGET_RATIO}× the fuse-native ceiling`);
L.push('');
L.push(`lunfs / ceiling for every lunfs target and job (ceiling = the fnmem target with the same loop/ext4 stacking: \`lunfs_r0\` ↔ \`fnmem\`, \`loop_lunfs_r0\` ↔ \`loop_fnmem\`, …), MB/s for MB/s, IOPS for IOPS. ✅ ≥ ${TARGET_RATIO}×, ❌ below. The issue's target is the \`lunfs_r0\` row.${R > 1 ? ` Each ratio is taken within one peers.sh run (lunfs and its reference measured minutes apart) and the median of the ${R} runs is shown, with the lowest and highest in brackets: the speed of the machine drifted during the run and moved the ceiling and lunfs alike by up to 3× between repeats (see the "range" columns below).` : ''}`);
L.push('');
L.push('| lunfs target | ceiling | ' + jobNames.join(' | ') + ' |');
L.push('|---|---|' + jobNames.map(() => '---:').join('|') + '|');
for (const t of lunfsT) {
  const c = ceilingOf(t);
  L.push(`| ${labels[t]} | ${labels[c] || c + ' (not run)'} | ` + jobNames.map((j) => ratioCell(t, c, j, true)).join(' | ') + ' |');
}
L.push('');
if (hasNative) {
  L.push("lunfs / native-front ceiling (`nfmem`: lunfs's own FUSE addon, native/fuse on libfuse3, serving an in-memory file with a memcpy per request, bench/nfmem-server.mjs; same stacking: `lunfs_r0` ↔ `nfmem`, `ext4_lunfs_r0` ↔ `ext4_nfmem`, …). For the native-front lunfs targets this is what lunfs's layers below the front cost; the `_fn` rows (lunfs on fuse-native) are there for comparison only:");
  L.push('');
  L.push('| lunfs target | native ceiling | ' + jobNames.join(' | ') + ' |');
  L.push('|---|---|' + jobNames.map(() => '---:').join('|') + '|');
  for (const t of lunfsT) {
    const c = nativeCeilingOf(t);
    L.push(`| ${labels[t]} | ${labels[c] || c + ' (not run)'} | ` + jobNames.map((j) => ratioCell(t, c, j, false)).join(' | ') + ' |');
  }
  L.push('');
}
L.push('lunfs / peer (qemu-storage-daemon qcow2 FUSE export with the same stacking):');
L.push('');
L.push('| lunfs target | peer | ' + jobNames.join(' | ') + ' |');
L.push('|---|---|' + jobNames.map(() => '---:').join('|') + '|');
for (const t of lunfsT) {
  const p = peerOf(t);
  L.push(`| ${labels[t]} | ${labels[p] || p + ' (not run)'} | ` + jobNames.map((j) => ratioCell(t, p, j, false)).join(' | ') + ' |');
}
L.push('');
if (lunfsT.includes('lunfs_r0')) {
  const r0 = jobNames.map((j) => [j, pairedRatio('lunfs_r0', 'fnmem', j), rec('lunfs_r0', j), rec('fnmem', j)]);
  const met = r0.filter(([, x]) => x !== null && x >= TARGET_RATIO);
  const missed = r0.filter(([, x]) => x === null || x < TARGET_RATIO);
  const desc = ([j, x, a, b]) => `${j} ${rstr(x, false)}${R < 2 && ok(a) && ok(b) ? ` (${metric(j, a)} vs ${metric(j, b)})` : R > 1 ? ` (per repeat ${pairedRatios('lunfs_r0', 'fnmem', j).map((y) => y.toFixed(2)).join(', ')})` : ''}`;
  L.push(`**RAID-0 verdict in this run:** ${met.length ? `target met on ${met.map(desc).join(', ')}` : 'target met on no job'}${missed.length ? `; missed on ${missed.map(desc).join(', ')}` : ''}.`);
  L.push('');
}

// ---- issue 12 (lunfs's own FUSE front): RAID-0 against qemu-storage-daemon, QD16 against QD1,
// loop + ext4 against the same stacking on qemu-storage-daemon
const ISSUE12_JOBS = ['seqwrite', 'seqread', 'randwrite4k', 'randread4k', 'randwrite4k_qd16', 'randread4k_qd16'];
const QD_PAIRS = [['randread4k_qd16', 'randread4k'], ['randwrite4k_qd16', 'randwrite4k']];
const QD_TARGET = 2;
const PEER12_TARGET = 1;
const hasIssue12 = ['lunfs_r0', 'ext4_lunfs_r0'].some((t) => targets.includes(t)) && ISSUE12_JOBS.some((j) => jobNames.includes(j));
// one check: [what, ratio or null, at, detail] -> a table row
function issue12Row(what, xs, at, a, b, why) {
  const x = median(xs);
  if (x === null) return `| ${what} | – | ❌ not measured: ${why} |`;
  const detail = R > 1 ? `per repeat ${xs.map((y) => y.toFixed(2)).join(', ')}` : ok(a) && ok(b) ? `${metric(a.job, a)} vs ${metric(b.job, b)}` : '';
  return `| ${what} | ${x.toFixed(2)}× | ${x >= at ? '✅' : '❌'}${detail ? ` (${detail})` : ''} |`;
}
// why a pair has no ratio: which side is missing or failed
function missingWhy(t, j, c, k) {
  for (const [x, y] of [[t, j], [c, k]]) {
    if (!targets.includes(x)) return `\`${x}\` was not among the targets`;
    if (!jobNames.includes(y)) return `${y} was not among the jobs`;
    const r = rec(x, y);
    if (!r) return `\`${x}\` ${y} has no record`;
    if (!ok(r)) return `\`${x}\` ${y} ${errOf(r).slice(0, 120) || 'failed'}`;
  }
  return 'no paired record';
}
if (hasIssue12) {
  L.push('## Issue 12 targets');
  L.push('');
  // runs made before the targets named their front: say so rather than claim the native front
  const frontOf = (t) => ((rec(t, jobNames[0]) || {}).note || '').match(/\bfront (native|fuse-native)\b/)?.[1];
  const unnamed = ['lunfs_r0', 'ext4_lunfs_r0'].filter((t) => targets.includes(t) && frontOf(t) !== 'native');
  if (unnamed.length) L.push(`**Note:** ${unnamed.map((t) => `\`${t}\``).join(' and ')} in this run ${unnamed.length > 1 ? 'do' : 'does'} not record \`--front native\` (${unnamed.map((t) => `${t}: ${frontOf(t) ? `front ${frontOf(t)}` : 'no front named: a run made before the bench passed --front, served by whatever front lunfs mount picked then'}`).join('; ')}): the checks below are not about the native front.`, '');
  L.push(`lunfs served through its own FUSE front (\`lunfs mount --front native\`: libfuse3 low-level, several loop threads, requests handed to JS in batches, 1 MiB requests), measured in this run beside qemu-storage-daemon's qcow2 FUSE export (\`qcow2\`). ✅ = the issue's target met, ❌ = missed or not measured. Each ratio pairs figures from the same peers.sh run${R > 1 ? ` (median of the ${R} repeats, each repeat's ratio in brackets)` : ''}; MB/s for the 1M jobs, IOPS for the 4k jobs. The QD16 jobs are fio libaio with iodepth 16, the others psync with iodepth 1.`);
  L.push('');
  const rows = [];
  L.push('| check | ratio | verdict |');
  L.push('|---|---:|---|');
  for (const j of ISSUE12_JOBS) {
    rows.push(issue12Row(`lunfs RAID-0 \`lunfs_r0\` / qemu-storage-daemon \`qcow2\`, ${j} (≥ ${PEER12_TARGET}×)`, pairedRatios('lunfs_r0', 'qcow2', j), PEER12_TARGET, rec('lunfs_r0', j), rec('qcow2', j), missingWhy('lunfs_r0', j, 'qcow2', j)));
  }
  for (const [q, one] of QD_PAIRS) {
    rows.push(issue12Row(`lunfs RAID-0 \`lunfs_r0\` ${q} / its own ${one} (≥ ${QD_TARGET}×)`, crossRatios('lunfs_r0', q, 'lunfs_r0', one), QD_TARGET, rec('lunfs_r0', q), rec('lunfs_r0', one), missingWhy('lunfs_r0', q, 'lunfs_r0', one)));
  }
  for (const j of ISSUE12_JOBS) {
    rows.push(issue12Row(`ext4 → loop → lunfs \`ext4_lunfs_r0\` / ext4 → loop → qemu-storage-daemon \`ext4_qcow2\`, ${j}${cached('ext4_lunfs_r0', j) ? ' †' : ''} (≥ ${PEER12_TARGET}×)`, pairedRatios('ext4_lunfs_r0', 'ext4_qcow2', j), PEER12_TARGET, rec('ext4_lunfs_r0', j), rec('ext4_qcow2', j), missingWhy('ext4_lunfs_r0', j, 'ext4_qcow2', j)));
  }
  L.push(...rows);
  L.push('');
  const met = rows.filter((r) => r.includes('| ✅')).length;
  const unmeasured = rows.filter((r) => r.includes('not measured')).length;
  L.push(`**Issue 12 in this run:** ${met} of ${rows.length} checks met${unmeasured ? `, ${unmeasured} not measured (targets or jobs left out of this run)` : ''}. † ext4 reads over lunfs go through the page cache of the LUN file under the loop device (the native front, like fuse-native, does not set direct_io on LUN files; qemu-storage-daemon does), see the notes.`);
  L.push('');
  // the two fronts and the two ceilings side by side (no target, for reading the checks above)
  const fronts = [['lunfs_r0', 'lunfs_r0_fn', 'lunfs RAID-0, native front / fuse-native front'], ['nfmem', 'fnmem', 'ceiling, native front / fuse-native (`nfmem` / `fnmem`)'], ['lunfs_r0', 'nfmem', 'lunfs RAID-0 / its native-front ceiling']]
    .filter(([a, b]) => targets.includes(a) && targets.includes(b));
  if (fronts.length) {
    L.push('The two FUSE fronts in this run (ratios, no target):');
    L.push('');
    L.push('| pair | ' + jobNames.join(' | ') + ' |');
    L.push('|---|' + jobNames.map(() => '---:').join('|') + '|');
    for (const [a, b, what] of fronts) L.push(`| ${what} | ` + jobNames.map((j) => ratioCell(a, b, j, false)).join(' | ') + ' |');
    L.push('');
  }
}

// ---- RAID-1 / RAID-5 / degraded against RAID-0
if (hasRaid) L.push(...raidSection({ standalone: false }));

// ---- carried over from the file being replaced: "Byte kernels" comes from
// `node bench/kernels.mjs --splice BENCHMARKS.md`, not from this run
const previousReport = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
const byteKernelsStart = previousReport.search(/^## Byte kernels\s*$/m);
if (byteKernelsStart >= 0) {
  const rest = previousReport.slice(byteKernelsStart + 3);
  const next = rest.search(/^## /m);
  L.push((next >= 0 ? previousReport.slice(byteKernelsStart, byteKernelsStart + 3 + next) : previousReport.slice(byteKernelsStart)).replace(/\n+$/, ''), '');
}

// ---- per job tables
L.push('## Results per job');
L.push('');
L.push(`fio psync, iodepth 1 (the \`_qd16\` jobs: libaio, iodepth 16), numjobs 1, O_DIRECT where the target accepts it (see "I/O mode"). srv CPU = user+sys of the server process during the job (/proc/PID/stat), per I/O and as % of one core over the fio wall time. Ratios only on lunfs rows: lunfs/ceiling (fuse-native, \`fnmem\`)${hasNative ? ', lunfs/native ceiling (`nfmem`)' : ''} and lunfs/peer with the same stacking.${R > 1 ? ` Figures are the median record of the ${R} repeats; "range" = min–max over the repeats (MB/s or IOPS); ratios are the median of the per-repeat ratios, so not always the quotient of the two medians shown.` : ''}`);
L.push('');
for (const j of jobNames) {
  L.push(`### ${j}`);
  L.push('');
  L.push('| target | I/O mode | MB/s | IOPS | mean lat µs | p99 clat µs | srv CPU µs/IO | srv CPU % core |' + (R > 1 ? ' range |' : '') + ' lunfs / ceiling |' + (hasNative ? ' lunfs / native ceiling |' : '') + ' lunfs / peer |');
  L.push('|---|---|---:|---:|---:|---:|---:|---:|' + (R > 1 ? '---:|' : '') + '---:|' + (hasNative ? '---:|' : '') + '---:|');
  for (const t of targets.filter((x) => !isProf(x))) {
    const r = rec(t, j);
    if (!r) continue;
    if (!ok(r)) { L.push(`| ${labels[t]} | ${r.mode || ''} | FAIL: ${String(r.err || '').replace(/\|/g, '/').slice(0, 120)} | | | | | |` + (R > 1 ? ' |' : '') + (hasNative ? ' |' : '') + ' | |'); continue; }
    const rc = isLunfs(t) ? ratioCell(t, ceilingOf(t), j, true) : '';
    const rn = isLunfs(t) ? ratioCell(t, nativeCeilingOf(t), j, false) : '';
    const rp = isLunfs(t) ? ratioCell(t, peerOf(t), j, false) : '';
    const name = isLunfs(t) ? `**${labels[t]}**` : labels[t];
    L.push(`| ${name} | ${r.mode} | ${fmt(r.bw_bytes / 1e6)} | ${fmt(r.iops)} | ${fmt(r.lat_mean_us, 1)} | ${fmt(r.clat_p99_us)} | ${perIO(r)} | ${srvPct(r)} |` + (R > 1 ? ` ${rangeCell(t, j)} |` : '') + ` ${rc} |` + (hasNative ? ` ${rn} |` : '') + ` ${rp} |`);
  }
  L.push('');
}

// ---- snapshots (bench/snapshots.sh, run after peers.sh unless SNAPSHOTS=0)
L.push(...snapshotSection(path.join(runDir, 'snapshots'), { runName }));

// ---- where the time goes
const threadRows = targets.filter((t) => !isProf(t) && jobNames.some((j) => threadsOf(rec(t, j))));
const profT = targets.filter(isProf);
if (threadRows.length || profT.length || profile) {
  L.push('## Where the time goes');
  L.push('');
}
if (threadRows.length) {
  L.push('### Server threads (same records as above)');
  L.push('');
  L.push('On-CPU time of each server thread from /proc/PID/task/*/schedstat, taken right before fio starts and right after it ends, divided by the I/Os fio completed. main = the JS thread (node) or the main loop (qemu); FUSE = libfuse loop threads (found blocked in /dev/fuse reads: libfuse2 under fuse-native, which answers through them; libfuse3 under the native front, which only queue requests for the JS thread, whose reply() answers); other = libuv thread pool, V8 GC/compiler helpers (node) or worker threads (qemu). "threads that exited" = the CPU of the whole process (/proc/PID/stat, 10 ms ticks) minus the live threads: libfuse2 starts extra loop threads under load and ends idle ones. Context switches and minor page faults summed over the live threads.');
  L.push('');
  for (const j of jobNames) {
    const rows = threadRows.map((t) => [t, rec(t, j), threadsOf(rec(t, j))]).filter(([, r, th]) => ok(r) && th);
    if (!rows.length) continue;
    L.push(`**${j}**`);
    L.push('');
    L.push('| target | main µs/IO | FUSE threads µs/IO (threads busy) | other µs/IO | threads that exited µs/IO | process µs/IO | vol. ctx sw / IO | invol. ctx sw / IO | minor faults / IO |');
    L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const [t, r, th] of rows) {
      const n = r.total_ios; const us = (ns) => fmt(ns / 1e3 / n, 1);
      const live = th.main + th.fuse + th.other;
      const exited = th.process !== null && th.process > live ? th.process - live : 0;
      L.push(`| ${labels[t]} | ${us(th.main)} | ${us(th.fuse)} (${th.fuseThreads}) | ${us(th.other)} | ${exited ? us(exited) : '–'} | ${us(th.process ?? live)} | ${fmt(th.vcsw / n, 2)} | ${fmt(th.nvcsw / n, 2)} | ${fmt(th.minflt / n, 2)} |`);
    }
    L.push('');
  }
}
if (profT.length || profile) {
  L.push('### JS profile (node --cpu-prof)');
  L.push('');
  L.push('The `prof_*` targets repeat the jobs on `fnmem` and `lunfs_r0` with the server under `node --cpu-prof` (slower than the rows above, which are the measured figures; these only show how the JS thread splits its time). Time is counted over the I/O window of each profile (first to last sample inside a fuse-native read/write handler or the native front\'s onBatch; `prof_lunfs_r0` runs `--front native`); "% of busy" is the share of the non-idle samples of the JS thread (the FUSE and libuv threads are not in a V8 profile). Positions are src/*.ts lines through the source maps. Full tables: `node bench/cpuprofile-top.mjs .bench/latest/cpuprof`.');
  L.push('');
  if (profT.length) {
    L.push('| profiled target | ' + jobNames.join(' | ') + ' |');
    L.push('|---|' + jobNames.map(() => '---:').join('|') + '|');
    for (const t of profT) L.push(`| ${labels[t]} | ` + jobNames.map((j) => { const r = rec(t, j); return ok(r) ? `${metric(j, r)}, srv ${perIO(r)} µs/IO` : '–'; }).join(' | ') + ' |');
    L.push('');
  }
  if (profile) {
    for (const j of jobNames) {
      const pl = profile.find((p) => p.name === `lunfs_r0-${j}`);
      const pf = profile.find((p) => p.name === `fnmem-${j}`);
      if (!pl && !pf) continue;
      L.push(`**${j}**`);
      L.push('');
      for (const [who, p] of [['fnmem (ceiling)', pf], ['lunfs RAID-0', pl]]) {
        if (!p) continue;
        L.push(`${who}: I/O window ${p.windowS.toFixed(2)} s, JS thread busy ${p.busyPct.toFixed(1)} % of it (GC ${p.gcS.toFixed(2)} s).`);
        L.push('');
        L.push('| top self time: function (file:line) | % of busy |');
        L.push('|---|---:|');
        for (const s of p.self.slice(0, who.startsWith('lunfs') ? 10 : 5)) L.push(`| \`${s.fn}\` | ${s.pctBusy.toFixed(1)} |`);
        L.push('');
        if (who.startsWith('lunfs')) {
          L.push('| inclusive time (project frames) | % of busy |');
          L.push('|---|---:|');
          for (const s of p.inclusive.filter((x) => /src\//.test(x.fn)).slice(0, 8)) L.push(`| \`${s.fn}\` | ${s.pctBusy.toFixed(1)} |`);
          L.push('');
        }
      }
    }
  }
}

L.push('## Targets');
L.push('');
for (const t of targets) L.push(`- \`${t}\`: ${labels[t]}${(rec(t, jobNames[0]) || {}).note ? ` — ${rec(t, jobNames[0]).note}` : ''}`);
L.push('');
L.push('## Notes');
L.push('');
L.push('- lunfs targets: 4 drive files on /dev/shm, one LUN of the disk size. Like the qcow2 peer (made from a fully allocated image), the LUN is fully allocated and holds the same data as `raw.img`: a template pool is prefilled once per RAID level and each job gets a fresh copy, mounted anew (cold lunfs cache, no dirty data). `LUNFS_PREFILL=0` measures an empty thin LUN instead.');
if (hasRaid) L.push('- RAID targets: `lunfs_r5` is a RAID-5 pool on the same number of drive files (drives sized for the same LUN); `lunfs_r1_deg` / `lunfs_r5_deg` use the RAID-1 / RAID-5 template (data laid down on the healthy pool) with `drive-1.img` deleted from the copy before the mount, so the pool runs degraded for the whole job.');
L.push(hasNative
  ? '- The ceilings answer every request with one memcpy from a Buffer they touched in full at start-up: `fnmem` on fuse-native (libfuse2), `nfmem` on lunfs\'s own native front addon (libfuse3, bench/nfmem-server.mjs, same options and write slots as `lunfs mount --front native`); lunfs goes through its write-back cache, thin map and RAID layer to the drive files. The lunfs targets run `lunfs mount --front native` except the `_fn` ones (`--front fuse-native`).'
  : '- The ceiling (`fnmem`) answers every request with one memcpy from a Buffer it touched in full at start-up; lunfs goes through its write-back cache, thin map and RAID layer to the drive files.');
L.push('- † Reads on the loop (`losetup` direct-io=off, what `mount -o loop` does) and ext4 targets go through the page cache of the FUSE file under the loop device (neither fuse-native, nor lunfs\'s native front on LUN files, nor the two ceilings set direct_io; qemu does): repeated reads and readahead are served by the kernel without reaching the server, so those ratios measure the page cache as much as the server (compare "process µs/IO" in the thread table).');
L.push('- Seq jobs last about a second and are the noisiest; the 4k jobs run RANDW_MIB / RAND_RUNTIME. Compare rows within this run (`REPEAT=3` runs peers.sh three times and reports medians); `node ../shared/bench/peers-lib.js compare a.jsonl b.jsonl` shows run-to-run spread.');
L.push('');
fs.writeFileSync(out, L.join('\n'));
console.log(`report: ${out}`);
