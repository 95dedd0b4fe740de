// The CLI as a new user meets it, no mount needed (lunfs issue 17): every usage error is one line
// `lunfs: ...` on stderr with exit 2 (commander's own errors included), bad pool directories are
// refused with a message and create nothing, long jobs on a pool that does not open exit instead
// of hanging, and --version and --help say what they should. Each test ran against the code
// before the fix and failed there.

import { readdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lunfsBin, run, type RunResult } from './support.js';
import { useSandbox } from './support.js';

const sandbox = useSandbox('cli-usage', 'file');

function describeRun(result: RunResult): string {
  return `\`${result.command}\` exit ${result.code} signal ${result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/** `lunfs ARGS` killed after 20 s (a command that hangs shows as signal SIGKILL), run in `cwd`. */
function lunfsWithin20s(args: string[], cwd?: string): Promise<RunResult> {
  return run(process.execPath, [lunfsBin, ...args], { timeoutMs: 20_000, cwd });
}

describe('long jobs on a pool that does not open', () => {
  it('scrub and drive replace print the error and exit (the progress bar no longer keeps them alive)', async () => {
    const box = sandbox();
    const pool = await box.createPool('broken', { drives: 2, driveSize: '64M', raid: 0 });
    await rename(join(pool, 'drive-1.img'), box.path('drive-1.away'));
    for (const args of [['scrub', pool], ['drive', 'replace', pool, '1', join(pool, 'new-1.img')], ['scrub', pool, '--json']]) {
      const result = await lunfsWithin20s(args);
      expect(result.signal, `\`lunfs ${args.join(' ')}\` hung:\n${describeRun(result)}`).toBeNull();
      expect(result.code, describeRun(result)).not.toBe(0);
      expect(result.stderr).toMatch(/lunfs: the pool cannot be served: RAID-0 cannot do without drive\(s\) 1/);
    }
    expect((await readdir(pool)).sort()).toEqual(['drive-0.img', 'pool.json']);
    for (const args of [['scrub', box.path('nowhere')], ['drive', 'replace', box.path('nowhere'), '1', box.path('new.img')]]) {
      const result = await lunfsWithin20s(args);
      expect(result.signal, `\`lunfs ${args.join(' ')}\` hung:\n${describeRun(result)}`).toBeNull();
      expect(result.code, describeRun(result)).toBe(2);
      expect(result.stderr).toMatch(/no lunfs pool at/);
    }
  });
});
