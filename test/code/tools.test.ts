// The code's own rules (issue 13), run by make test like any behaviour, each by its tool:
// - the tests and vitest.config.ts type-check against the sources under the same strict options
//   (tsconfig.test.json extends tsconfig.json, which covers src/ only and emits dist/);
// - eslint (typescript-eslint's recommended rules, eslint.config.js) finds no problem;
// - every source file is formatted as prettier formats it (.prettierrc.json: 100 columns, single
//   quotes, trailing commas). Fix with `npx eslint --fix src test` and `npx prettier --write`.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

/** The files prettier keeps formatted (globs, as prettier takes them). */
export const formattedFiles = [
  'src/**/*.ts',
  'test/**/*.ts',
  'test/**/*.mjs',
  'test/**/*.mts',
  'eslint.config.js',
  'vitest.config.ts',
];

function runNode(script: string, args: string[]): { status: number | null; output: string } {
  const result = spawnSync(process.execPath, [script, ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 170_000,
  });
  if (result.error) throw result.error;
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('code rules', () => {
  it('tsc --noEmit over src, test and vitest.config.ts (tsconfig.test.json) reports no error', () => {
    const { status, output } = runNode('node_modules/typescript/bin/tsc', [
      '-p',
      'tsconfig.test.json',
    ]);
    expect(status, `tsc -p tsconfig.test.json:\n${output}`).toBe(0);
  }, 180_000);

  it('eslint reports no problem in src/ and test/', () => {
    const { status, output } = runNode('node_modules/eslint/bin/eslint.js', [
      '--max-warnings=0',
      'src',
      'test',
    ]);
    expect(status, `eslint src test:\n${output}`).toBe(0);
  }, 180_000);

  it('every source file is formatted by prettier', () => {
    const { status, output } = runNode('node_modules/prettier/bin/prettier.cjs', [
      '--list-different',
      ...formattedFiles,
    ]);
    expect(status, `files prettier would change (npx prettier --write them):\n${output}`).toBe(0);
  }, 180_000);
});
