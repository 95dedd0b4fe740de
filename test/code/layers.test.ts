// The dependency rule of issue 13: src/ folders form layers, and a file imports only from its own
// folder or from a folder below it. The order is the one docs/architecture.md opens with. An
// import that points up (or a folder that is in no layer) fails make test, so no cycle between
// folders can come back. Every relative import counts, `import type` included: a type is a
// dependency of the reader too.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const srcRoot = fileURLToPath(new URL('../../src/', import.meta.url));

/**
 * Bottom to top. bin.ts (the entry point) and types/ (declarations for untyped packages) stand
 * outside.
 */
export const layers = [
  'util',
  'native',
  'block',
  'meta',
  'drive',
  'raid',
  'pool',
  'map',
  'snapshot',
  'destage',
  'cache',
  'volume',
  'fuse',
  'cli',
];
const outside = new Set(['bin.ts', 'types']);

function sourceFiles(folder: string): string[] {
  return readdirSync(folder).flatMap((name) => {
    const path = join(folder, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

function folderOf(path: string): string {
  return relative(srcRoot, path).split(sep)[0]!;
}

/** Every relative module specifier of a file: static imports and exports, and dynamic import(). */
export function relativeImports(text: string): string[] {
  const found: string[] = [];
  for (const match of text.matchAll(
    /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"](\.{1,2}\/[^'"]+)['"]/gm,
  ))
    found.push(match[1]!);
  return found;
}

/** The imports of src/ that break the rule, as "file -> target (from folder to folder)". */
export function upwardImports(files: Array<{ path: string; text: string }>): string[] {
  const problems: string[] = [];
  for (const { path, text } of files) {
    const from = folderOf(path);
    if (outside.has(from)) continue;
    if (!layers.includes(from)) {
      problems.push(
        `${relative(srcRoot, path)}: folder ${from}/ is in no layer (add it to the order in test/code/layers.test.ts and docs/architecture.md)`,
      );
      continue;
    }
    for (const specifier of relativeImports(text)) {
      const to = folderOf(resolve(dirname(path), specifier));
      if (to === from || to === 'types') continue;
      if (!layers.includes(to) || layers.indexOf(to) > layers.indexOf(from)) {
        problems.push(
          `${relative(srcRoot, path)} -> ${specifier} (${from}/ imports ${to}/, which is ${layers.includes(to) ? 'above it' : 'in no layer'})`,
        );
      }
    }
  }
  return problems;
}

describe('code rules', () => {
  it('every src/ folder imports only from the layers below it', () => {
    const files = sourceFiles(srcRoot).map((path) => ({ path, text: readFileSync(path, 'utf8') }));
    expect(files.length).toBeGreaterThan(50);
    expect(upwardImports(files)).toEqual([]);
  });

  it('the rule sees an upward import, a type import, a re-export and a dynamic import', () => {
    const at = (folder: string, text: string): { path: string; text: string } => ({
      path: join(srcRoot, folder, 'x.ts'),
      text,
    });
    expect(
      upwardImports([at('raid', "import { SnapshotSet } from '../snapshot/snapshot-set.js';")]),
    ).toHaveLength(1);
    expect(
      upwardImports([at('drive', "import type { Pool } from '../volume/pool.js';")]),
    ).toHaveLength(1);
    expect(
      upwardImports([at('meta', "export { ThinVolume } from '../map/thin-volume.js';")]),
    ).toHaveLength(1);
    expect(upwardImports([at('util', "const m = await import('../cli/main.js');")])).toHaveLength(
      1,
    );
    expect(
      upwardImports([
        at(
          'cache',
          "import { x } from '../block/block-device.js';\nimport { y } from './page-buffer-pool.js';",
        ),
      ]),
    ).toEqual([]);
    expect(upwardImports([at('newfolder', "import { x } from '../util/assert.js';")])[0]).toMatch(
      /in no layer/,
    );
  });
});
