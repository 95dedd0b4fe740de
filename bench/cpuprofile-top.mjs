#!/usr/bin/env node
// Summarises V8 .cpuprofile files (node --cpu-prof) of FUSE servers: per profile, the top
// self-time functions and the time per source file ("area"), over the I/O window only (from the
// first to the last sample taken inside a fuse-native _op_read/_op_write handler or a native
// front's onBatch), so mount, pool open and unmount do not count. dist/*.js positions are mapped
// back to src/*.ts through the source maps next to them.
//
//   node bench/cpuprofile-top.mjs [--top N] [--json out.json] [--md out.md] DIR|FILE...
// A DIR is searched for *.cpuprofile (bench/run.sh puts one folder per <target>-<job>).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
let top = 12; let jsonOut = null; let mdOut = null; const inputs = [];
for (let i = 0; i < args.length; i += 1) {
  if (args[i] === '--top') top = Number(args[++i]);
  else if (args[i] === '--json') jsonOut = args[++i];
  else if (args[i] === '--md') mdOut = args[++i];
  else inputs.push(args[i]);
}
if (!inputs.length) { console.error('usage: cpuprofile-top.mjs [--top N] [--json f] [--md f] DIR|FILE...'); process.exit(2); }

function findProfiles(p) {
  const st = fs.statSync(p);
  if (st.isFile()) return [p];
  return fs.readdirSync(p).sort().flatMap((e) => {
    const q = path.join(p, e);
    return fs.statSync(q).isDirectory() ? findProfiles(q) : (e.endsWith('.cpuprofile') ? [q] : []);
  });
}

// ---- source maps (VLQ) -------------------------------------------------------------------
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const mapCache = new Map();
function loadMap(jsFile) {
  if (mapCache.has(jsFile)) return mapCache.get(jsFile);
  let result = null;
  try {
    const raw = JSON.parse(fs.readFileSync(jsFile + '.map', 'utf8'));
    const lines = []; let src = 0; let oLine = 0; let oCol = 0;
    for (const lineText of raw.mappings.split(';')) {
      const segs = []; let gCol = 0;
      for (const seg of lineText.split(',')) {
        if (!seg) continue;
        const vals = []; let shift = 0; let value = 0;
        for (const ch of seg) {
          const d = B64.indexOf(ch);
          value += (d & 31) << shift;
          if (d & 32) shift += 5;
          else { vals.push(value & 1 ? -(value >>> 1) : value >>> 1); value = 0; shift = 0; }
        }
        gCol += vals[0];
        if (vals.length >= 4) { src += vals[1]; oLine += vals[2]; oCol += vals[3]; segs.push([gCol, src, oLine, oCol]); }
      }
      lines.push(segs);
    }
    result = { lines, sources: raw.sources.map((s) => path.resolve(path.dirname(jsFile), raw.sourceRoot || '', s)) };
  } catch { result = null; }
  mapCache.set(jsFile, result);
  return result;
}
function originalPosition(jsFile, line, col) { // 0-based in, 1-based line out
  const m = loadMap(jsFile);
  if (!m) return null;
  const segs = m.lines[line];
  if (!segs || !segs.length) return null;
  let best = segs[0];
  for (const s of segs) if (s[0] <= col) best = s; else break;
  return { file: m.sources[best[1]], line: best[2] + 1 };
}

// ---- naming --------------------------------------------------------------------------------
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
function rel(file) {
  const copy = file.match(/\/build\/(src\/.+)$/); // bench/run.sh measures a copy of the build
  if (copy) return copy[1];
  if (file.startsWith(repoRoot + '/')) return file.slice(repoRoot.length + 1);
  const nm = file.lastIndexOf('/node_modules/');
  if (nm >= 0) return file.slice(nm + 1);
  return file;
}
function frameInfo(cf) {
  const name = cf.functionName || '(anonymous)';
  if (!cf.url) return { key: name, name, file: '', area: name.startsWith('(') ? name : '(native / V8 builtins)' };
  let file = cf.url.startsWith('file://') ? fileURLToPath(cf.url) : cf.url;
  let line = cf.lineNumber + 1;
  if (file.endsWith('.js') && file.includes('/dist/')) {
    const o = originalPosition(file, cf.lineNumber, cf.columnNumber);
    if (o) { file = o.file; line = o.line; }
  }
  const r = rel(file);
  let area = r;
  if (r.startsWith('node:')) area = r.replace(/^node:internal\/(fs\/promises|fs\/utils|process\/task_queues|streams|buffer|timers|util).*$/, 'node:internal/$1');
  return { key: `${name} ${r}:${line}`, name, file: `${r}:${line}`, area };
}

// ---- one profile -----------------------------------------------------------------------------
function summarise(file) {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8'));
  const nodes = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of prof.nodes) for (const c of n.children || []) parent.set(c, n.id);
  const info = new Map(prof.nodes.map((n) => [n.id, frameInfo(n.callFrame)]));
  const inHandler = new Map();
  const isHandler = (id) => {
    if (inHandler.has(id)) return inHandler.get(id);
    const n = nodes.get(id);
    const fn = n.callFrame.functionName;
    const url = n.callFrame.url;
    const v = ((fn === '_op_read' || fn === '_op_write') && url.includes('fuse-native'))
      || (fn === 'onBatch' && (url.includes('native-front') || url.includes('nfmem-server'))) // the native front's batches
      || (parent.has(id) && isHandler(parent.get(id)));
    inHandler.set(id, v);
    return v;
  };
  const { samples, timeDeltas } = prof;
  const t = new Array(samples.length); let acc = prof.startTime;
  for (let i = 0; i < samples.length; i += 1) { acc += timeDeltas[i]; t[i] = acc; }
  let first = -1; let last = -1;
  for (let i = 0; i < samples.length; i += 1) if (isHandler(samples[i])) { if (first < 0) first = i; last = i; }
  if (first < 0) { first = 0; last = samples.length - 1; }
  const self = new Map(); const total = new Map(); const areas = new Map();
  let idle = 0; let busy = 0; let gc = 0;
  for (let i = first; i <= last; i += 1) {
    const w = i + 1 < samples.length ? timeDeltas[i + 1] : 0;
    const id = samples[i];
    const inf = info.get(id);
    if (inf.name === '(idle)') { idle += w; continue; }
    busy += w;
    if (inf.name === '(garbage collector)') gc += w;
    self.set(inf.key, (self.get(inf.key) || 0) + w);
    areas.set(inf.area, (areas.get(inf.area) || 0) + w);
    const seen = new Set();
    for (let n = id; n !== undefined; n = parent.get(n)) {
      const k = info.get(n).key;
      if (seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) || 0) + w);
    }
  }
  const windowUs = t[last] - t[first];
  const rows = (m) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  const name = path.basename(path.dirname(file));
  return {
    name, file,
    windowS: windowUs / 1e6,
    busyS: busy / 1e6, idleS: idle / 1e6, gcS: gc / 1e6,
    busyPct: windowUs > 0 ? 100 * busy / windowUs : 0,
    samples: last - first + 1,
    self: rows(self).slice(0, top).map(([k, v]) => ({ fn: k, ms: v / 1e3, pctBusy: 100 * v / busy })),
    areas: rows(areas).slice(0, top).map(([k, v]) => ({ area: k, ms: v / 1e3, pctBusy: 100 * v / busy })),
    inclusive: rows(total).filter(([k]) => /\bsrc\//.test(k) || /fuse-native/.test(k)).slice(0, top)
      .map(([k, v]) => ({ fn: k, ms: v / 1e3, pctBusy: 100 * v / busy })),
  };
}

const results = inputs.flatMap(findProfiles).map(summarise);
const f1 = (x) => x.toFixed(1);
const L = [];
for (const r of results) {
  L.push(`### ${r.name}`);
  L.push('');
  L.push(`I/O window ${r.windowS.toFixed(2)} s, JS thread busy ${f1(r.busyPct)} % of it (${r.busyS.toFixed(2)} s; GC ${r.gcS.toFixed(2)} s), ${r.samples} samples.`);
  L.push('');
  L.push('| self time: function (file:line) | ms | % of busy |');
  L.push('|---|---:|---:|');
  for (const s of r.self) L.push(`| \`${s.fn}\` | ${f1(s.ms)} | ${f1(s.pctBusy)} |`);
  L.push('');
  L.push('| self time by file / area | ms | % of busy |');
  L.push('|---|---:|---:|');
  for (const s of r.areas) L.push(`| ${s.area} | ${f1(s.ms)} | ${f1(s.pctBusy)} |`);
  L.push('');
  L.push('| inclusive time (project and fuse-native frames) | ms | % of busy |');
  L.push('|---|---:|---:|');
  for (const s of r.inclusive) L.push(`| \`${s.fn}\` | ${f1(s.ms)} | ${f1(s.pctBusy)} |`);
  L.push('');
}
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(results, null, 1));
if (mdOut) fs.writeFileSync(mdOut, L.join('\n'));
if (!jsonOut && !mdOut) process.stdout.write(L.join('\n') + '\n');
