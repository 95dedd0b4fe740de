#!/usr/bin/env node
// The "Migration" section of BENCHMARKS.md from the records of bench/migrate.sh (a folder with
// migrate.jsonl and meta.json). Every figure is printed beside the figure it is compared with,
// measured in the same run, on the same mount.
//
//   node bench/migrate-report.mjs --dir .bench/latest-migrate/migrate            # to stdout
//   node bench/migrate-report.mjs --dir DIR --out /tmp/section.md
//   node bench/migrate-report.mjs --dir DIR --splice BENCHMARKS.md [--command "..."]
//       (--splice replaces the file's section whose heading starts with "## Migration" (so also
//       an older "## Migration (issue 16): ..." section), or inserts it before "## Where the time
//       goes" / "## Targets" / "## Notes" / at the end; a missing file gets the section alone)
import fs from 'node:fs';
import path from 'node:path';
import { fmt, readJson, runSectionCli, spliceSection as splice } from './report-common.mjs';

const TITLE = '## Migration';
/** Issue 16: the foreground keeps at least this share of its idle IOPS while migrations run. */
const LOAD_TARGET = 0.8;

const rx = (x, d = 2) =>
  x === null || x === undefined || !Number.isFinite(x) ? '–' : `${x.toFixed(d)}×`;
// µs of the mount process's CPU per I/O fio completed
const cpuPerIo = (r) => (r.ios ? (1e6 * Number(r.server_cpu_s)) / r.ios : null);
// migrate.sh's MIG_LUN_SIZE as fio / lunfs read it ("1G" = 1 GiB)
const size = (s) => {
  const m = /^(\d+(?:\.\d+)?)([KMGT])i?B?$/i.exec(String(s ?? '1G'));
  return m ? `${m[1]} ${m[2].toUpperCase()}iB` : String(s);
};

export function migrateSection(dir, { runName, command: commandOpt } = {}) {
  const recsFile = path.join(dir, 'migrate.jsonl');
  if (!fs.existsSync(recsFile)) return [];
  const recs = fs
    .readFileSync(recsFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
  const meta = readJson(path.join(dir, 'meta.json')) || {};
  const P = meta.params || {};
  const parent = path.basename(path.dirname(fs.realpathSync(dir)));
  const name = runName || (parent.startsWith('run-') ? parent : null);
  const seq = recs.find((r) => r.kind === 'seqread');
  const alone = recs.find((r) => r.kind === 'migrate-alone');
  const RW = recs.filter((r) => r.kind === 'randwrite');
  const rounds = [...new Set(RW.map((r) => r.round))].sort((a, b) => a - b);
  const L = [];
  L.push(TITLE);
  L.push('');
  L.push(
    `Measured by \`bench/migrate.sh\` (issue 16; run by \`bench/run.sh\` after the clone part; \`MIGRATE=0\` skips it, \`MIGRATE_ONLY=1\` runs only it)${name ? ` in run \`${name}\`` : ''}${meta.date ? `, started ${meta.date.replace(/\.\d+Z$/, 'Z')}` : ''} (lunfs ${meta.commit || '?'}). Every figure is compared with one of the same run, on the same mount. Pool: RAID-${P.raid ?? 0} of ${P.drives ?? 4} sparse 1 GiB drive files on /dev/shm, \`lunfs mount --front ${P.front || 'native'}\`, one LUN \`lun0\` of ${size(P.size)} written full (fio seqwrite, bs 1 MiB, O_DIRECT).`,
  );
  L.push('');
  L.push(
    `- **Migration MB/s**: the LUN migrated to a file on /dev/shm with no other I/O (\`lunfs migrate DIR lun0 --to FILE\`; wall time of the command, which starts the copier, a process of its own), against fio seqread (psync, bs 1 MiB, O_DIRECT, the whole LUN) of the LUN.`,
  );
  L.push(
    `- **randwrite4k during migrations**: fio randwrite4k (psync, iodepth 1, O_DIRECT, ${P.runtimeS ?? '?'} s, over the whole LUN) on the LUN while migrations run back to back (each to a new file, \`--restart\`; the first starts 1 s before fio), against the same job with nothing else running. ${P.rounds ?? rounds.length} round${(P.rounds ?? rounds.length) === 1 ? '' : 's'} of idle then migrating, one after the other, so that a machine whose speed drifts over minutes (a shared VM) weighs on both sides alike. Server CPU: the mount process's user + system time over the fio job, per I/O fio completed (the copier's process is not counted). Pauses: what each migration's final pass reported ("held writes for N ms").`,
  );
  L.push('');
  L.push(
    `Machine: ${meta.cpu || '?'}, ${meta.cpus || '?'} vCPUs, kernel ${meta.kernel || '?'}; node ${meta.node || '?'}, ${meta.fio || 'fio ?'}.`,
  );
  L.push('');
  const knobs = [
    P.size !== undefined ? `MIG_LUN_SIZE=${P.size}` : null,
    P.runtimeS !== undefined ? `MIG_RUNTIME=${P.runtimeS}` : null,
    P.rounds !== undefined ? `MIG_ROUNDS=${P.rounds}` : null,
  ].filter(Boolean);
  L.push(
    `Command (${commandOpt ? 'how this section was made, then what it ran' : 'the settings of this run'}; \`MIGRATE_ONLY=1 bash bench/run.sh\` runs it alone and replaces this section):`,
  );
  L.push('');
  L.push('```');
  if (commandOpt) L.push(commandOpt);
  L.push(`${knobs.join(' ')}${knobs.length ? ' ' : ''}bash bench/migrate.sh`);
  L.push('```');
  L.push('');

  if (seq || alone) {
    const seqMBs = seq ? seq.bw_bytes / 1e6 : null;
    const mbs = alone && alone.seconds > 0 ? alone.bytes / 1e6 / alone.seconds : null;
    const passBytes = alone ? /passes \((.*)\);/.exec(alone.report || '') : null;
    L.push(
      '| seqread of the LUN MB/s | migration alone: bytes | s | MB/s | migration / seqread | passes (bytes copied per pass) | final-pass write pause ms |',
    );
    L.push('|---:|---:|---:|---:|---:|---|---:|');
    L.push(
      `| ${fmt(seqMBs)} | ${alone ? `${fmt(alone.bytes / 2 ** 20)} MiB` : 'not recorded'} | ${alone ? fmt(alone.seconds, 2) : '–'} | ${fmt(mbs)} | ${rx(mbs !== null && seqMBs ? mbs / seqMBs : null)} | ${alone?.passes ?? '–'}${passBytes ? ` (${passBytes[1]})` : ''} | ${alone?.pause_ms ?? '–'} |`,
    );
    L.push('');
  }

  if (rounds.length) {
    L.push(
      '| round | idle IOPS | p99 µs | server µs CPU/IO | migrating IOPS | p99 µs | server µs CPU/IO | migrations | final-pass pauses ms | migrating / idle |',
    );
    L.push('|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|');
  }
  let idleSum = 0;
  let busySum = 0;
  const ratios = [];
  const missing = [];
  for (const k of rounds) {
    const idle = RW.find((r) => r.round === k && r.phase === 'idle');
    const busy = RW.find((r) => r.round === k && r.phase === 'migrating');
    if (!idle || !busy) missing.push(k);
    const ratio = idle && busy ? busy.iops / idle.iops : null;
    if (ratio !== null) {
      idleSum += idle.iops;
      busySum += busy.iops;
      ratios.push(ratio);
    }
    const side = (r) =>
      r ? `${fmt(r.iops)} | ${fmt(r.p99_us)} | ${fmt(cpuPerIo(r))}` : 'not recorded | | ';
    L.push(
      `| ${k} | ${side(idle)} | ${side(busy)} | ${busy ? fmt(busy.migrations) : '–'} | ${busy && busy.pauses_ms && busy.pauses_ms.length ? busy.pauses_ms.join(', ') : '–'} | ${rx(ratio)} |`,
    );
  }
  if (rounds.length) L.push('');
  if (ratios.length) {
    const total = busySum / idleSum;
    const met = total >= LOAD_TARGET;
    const mark = met ? '✅' : '❌';
    // a third decimal when two would round across the target (0.797 is not "0.80×")
    const d = Number(total.toFixed(2)) >= LOAD_TARGET === met ? 2 : 3;
    L.push(
      `**randwrite4k during migrations: ${rx(total, d)} of idle** ${mark} (target ${LOAD_TARGET}×, issue 16): ${fmt(busySum)} IOPS migrating against ${fmt(idleSum)} idle, summed over ${ratios.length === 1 ? 'the round' : `the ${ratios.length} rounds`}${ratios.length > 1 ? `; per round ${ratios.map((x) => x.toFixed(2)).join(', ')} (spread ${fmt(Math.min(...ratios), 2)}–${fmt(Math.max(...ratios), 2)})` : ''}.${missing.length ? ` Round${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not complete (left out of the sum).` : ''}`,
    );
    L.push('');
  } else if (rounds.length) {
    L.push('**randwrite4k during migrations: not measured** (no round has both phases).');
    L.push('');
  }
  return L;
}

// Replaces the section whose heading starts with "## Migration" (up to the next "## " heading),
// or inserts the section.
export const spliceSection = (md, lines) => splice(md, lines, /^## Migration\b.*$/m);

runSectionCli(import.meta.url, {
  defaultDir: '.bench/latest-migrate/migrate',
  records: 'migrate.jsonl',
  label: 'migration section',
  section: (dir, opt) => migrateSection(dir, { runName: opt('--run-name'), command: opt('--command') }),
  splice: spliceSection,
});
