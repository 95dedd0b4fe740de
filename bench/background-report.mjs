#!/usr/bin/env node
// The "Rebuild and scrub under load" section of BENCHMARKS.md from the records of
// bench/background-load.sh (one JSON line per run), spliced in before "## Where the time goes"
// (or replacing the section of that name).
//
//   node bench/background-report.mjs RECORDS.jsonl [--splice BENCHMARKS.md] [--command "..."]
import fs from 'node:fs';

const args = process.argv.slice(2);
const opt = (name) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : undefined;
};
const file = args.find((arg, index) => !arg.startsWith('--') && !args[index - 1]?.startsWith('--'));
if (!file || !fs.existsSync(file)) {
  console.error('usage: background-report.mjs RECORDS.jsonl [--splice BENCHMARKS.md] [--command "..."]');
  process.exit(2);
}
const records = fs.readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line));
const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '–');
const mark = (ratio) => (ratio >= 0.7 ? ' ✅' : ' ❌');
const lines = [
  '## Rebuild and scrub under load',
  '',
  `Measured by \`bench/background-load.sh\` (run by \`bench/run.sh\` after the snapshot part; \`BACKGROUND=0\` skips it, \`BACKGROUND_ONLY=1\` runs only it), ${new Date(fs.statSync(file).mtimeMs).toISOString()}: a pool of 3 sparse drive files on /dev/shm holding one LUN written full through the mount; fio randread4k (psync, iodepth 1, O_DIRECT) runs throughout, with an IOPS log of 250 ms samples; the idle figure is the mean of 10 s before the jobs and 10 s after them (the pool healthy again); then \`lunfs scrub\`, then drive 1's file is deleted and \`lunfs drive replace\` rebuilds it onto a new file. The figure under a job is the mean of the samples inside the job's window. While foreground requests come, a job takes about 10 % of the time (src/volume/job-pacer.ts: it sleeps 9 times as long as each 5 ms of its own work); idle, it runs at full speed. "paused" is the time it slept. Issue 14's target: the load keeps at least 0.7× of its idle IOPS.`,
  '',
];
if (opt('--command')) lines.push(`Command: \`${opt('--command')}\``, '');
lines.push('| RAID | drives | idle IOPS (before, after) | during scrub: IOPS, ratio | scrub s (paused) | during rebuild: IOPS, ratio | rebuild s (paused), MB/s of drive |');
lines.push('|---|---:|---:|---:|---:|---:|---:|');
for (const r of records) {
  lines.push(
    `| RAID-${r.raid} | 3 × ${r.driveMiB} MiB | ${r.idleIops} (${r.idleBefore}, ${r.idleAfter}) | ${r.scrub.iops}, ${fmt(r.scrub.ratio, 2)}×${mark(r.scrub.ratio)} | ${fmt(r.scrub.seconds, 1)} (${fmt((r.scrub.pausedMs ?? 0) / 1000, 1)}) | ${r.rebuild.iops}, ${fmt(r.rebuild.ratio, 2)}×${mark(r.rebuild.ratio)} | ${fmt(r.rebuild.seconds, 1)} (${fmt((r.rebuild.pausedMs ?? 0) / 1000, 1)}), ${fmt(r.rebuild.mbPerS)} |`,
  );
}
lines.push('');
const section = lines.join('\n').replace(/\n+$/, '') + '\n\n';
const target = opt('--splice');
if (!target) {
  process.stdout.write(section);
  process.exit(0);
}
let md = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '# lunfs benchmarks\n\n';
const start = md.search(/^## Rebuild and scrub under load\s*$/m);
if (start >= 0) {
  const rest = md.slice(start + 3);
  const next = rest.search(/^## /m);
  md = md.slice(0, start) + section + (next >= 0 ? rest.slice(next) : '');
} else {
  const at = md.search(/^## Where the time goes\s*$/m);
  md = at >= 0 ? md.slice(0, at) + section + md.slice(at) : md.replace(/\n*$/, '\n\n') + section;
}
fs.writeFileSync(target, md);
console.log(`rebuild and scrub section: ${target}`);
