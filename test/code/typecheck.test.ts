// The code's own rules, checked by `make test` like any behaviour (issue 13): here, that the tests
// and vitest.config.ts type-check against the sources under the same strict compiler options
// (tsconfig.test.json extends tsconfig.json, which covers src/ only and emits dist/).

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

describe('code rules', () => {
  it('tsc --noEmit over src, test and vitest.config.ts (tsconfig.test.json) reports no error', () => {
    const result = spawnSync(
      process.execPath,
      ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.test.json'],
      { cwd: repoRoot, encoding: 'utf8', timeout: 170_000 },
    );
    expect(result.error, 'tsc could not be started').toBeUndefined();
    expect(result.status, `tsc -p tsconfig.test.json:\n${result.stdout}${result.stderr}`).toBe(0);
  }, 180_000);
});
