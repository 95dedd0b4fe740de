// What the report scripts that own a section of BENCHMARKS.md share (snapshots-report.mjs,
// clones-report.mjs, migrate-report.mjs).
import fs from 'node:fs';

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
