// What the report scripts that own a section of BENCHMARKS.md share (snapshots-report.mjs,
// clones-report.mjs, migrate-report.mjs): figures, the section splice and their command line.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** A JSON file's contents, or null when it is missing. */
export const readJson = (p) => (fs.existsSync(p) ? JSON.parse(fs.readFileSync(p, 'utf8')) : null);

/** n with d decimals; '–' for a figure that was not measured. */
export const fmt = (n, d = 0) =>
  n === null || n === undefined || Number.isNaN(n) || !Number.isFinite(n)
    ? '–'
    : Number(n).toFixed(d);

// One section of BENCHMARKS.md replaced or inserted: the section whose heading matches
// heading (a RegExp with the m flag, anchored at ^) is replaced up to the next "## " heading; a
// file without one gets the section before "## Where the time goes" / "## Targets" / "## Notes",
// or at its end.
export function spliceSection(md, lines, heading) {
  const section = lines.join('\n').replace(/\n+$/, '') + '\n\n';
  const start = md.search(heading);
  if (start >= 0) {
    const rest = md.slice(start + 3);
    const next = rest.search(/^## /m);
    return md.slice(0, start) + section + (next >= 0 ? rest.slice(next) : '');
  }
  for (const h of ['## Where the time goes', '## Targets', '## Notes']) {
    const i = md.search(new RegExp(`^${h}\\s*$`, 'm'));
    if (i >= 0) return md.slice(0, i) + section + md.slice(i);
  }
  return md.replace(/\n*$/, '\n\n') + section;
}

/**
 * The command line of a report script, when that script is the one node runs (not imported):
 * `--dir DIR` (records; default defaultDir), then `--splice FILE` (replace or insert the section in
 * FILE), `--out FILE` (the section alone) or standard output. section(dir, opt) makes the lines
 * (opt(name) is the value after a flag); an empty result exits 1 naming the records file.
 */
export function runSectionCli(moduleUrl, { defaultDir, records, label, section, splice }) {
  if (!process.argv[1] || path.resolve(process.argv[1]) !== fileURLToPath(moduleUrl)) return;
  const args = process.argv.slice(2);
  const opt = (n) => {
    const i = args.indexOf(n);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const dir = path.resolve(opt('--dir') || defaultDir);
  const lines = section(dir, opt);
  if (!lines.length) {
    console.error(`no ${records} in ${dir}`);
    process.exit(1);
  }
  if (opt('--splice')) {
    const f = opt('--splice');
    const md = fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '# lunfs benchmarks\n\n';
    fs.writeFileSync(f, splice(md, lines));
    console.log(`${label}: ${f}`);
  } else if (opt('--out')) {
    fs.writeFileSync(opt('--out'), lines.join('\n') + '\n');
    console.log(`${label}: ${opt('--out')}`);
  } else {
    process.stdout.write(lines.join('\n') + '\n');
  }
}
