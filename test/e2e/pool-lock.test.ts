// The pool lock between real `lunfs` processes (issue 17). With a stale lunfs.lock (its process
// is dead) in the pool directory, two `lun create` run at once used to both take the lock over:
// both printed success and exited 0, and one LUN was lost (4 rounds of 30). Each round here puts
// a stale lock back and runs two at once; every command that says it created a LUN must have,
// and with the flock lock both do (the second waits for the first). Without the native addon the
// old exclusive-create lock is kept, with a warning.

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  lunfs,
  lunfsBin,
  lunfsOk,
  run,
  statusJson,
  useSandbox,
  type RunResult,
} from './support.js';

const sandbox = useSandbox('pool-lock');

/** A pid that no process has: the kernel's pid_max is at most 2^22. */
const deadPid = 4_194_304 + 12_345;

function describeRun(result: RunResult): string {
  return `\`${result.command}\` exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

describe('pool lock between processes', () => {
  it('two concurrent lun create over a stale lock file: each that reports success created its LUN (30 rounds)', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', {
      drives: 2,
      driveSize: '64M',
      raid: 0,
      extra: ['--pseg-size', '1M', '--allocation-unit', '1M'],
    });
    const rounds = 30;
    const reported: string[] = [];
    const failures: string[] = [];
    for (let round = 0; round < rounds; round += 1) {
      await writeFile(join(pool, 'lunfs.lock'), JSON.stringify({ pid: deadPid }));
      const names = [`za${round}`, `zb${round}`];
      const results = await Promise.all(
        names.map((name) => lunfs('lun', 'create', pool, name, '--size', '1M')),
      );
      results.forEach((result, index) => {
        if (result.code === 0) reported.push(names[index]!);
        else failures.push(describeRun(result));
      });
    }
    const existing = (await statusJson(pool)).luns.map((lun) => lun.name);
    const lost = reported.filter((name) => !existing.includes(name));
    expect(
      lost,
      `LUNs reported created but missing (${lost.length} of ${reported.length})`,
    ).toEqual([]);
    // The second command waits for the first: nobody is refused either.
    expect(failures).toEqual([]);
    expect(existing.length).toBe(2 * rounds);
  }, 600_000);

  it('without the native addon the exclusive-create lock is used, with a warning', async () => {
    const box = sandbox();
    const pool = await box.createPool('pool', {
      drives: 2,
      driveSize: '64M',
      raid: 0,
      extra: ['--pseg-size', '1M', '--allocation-unit', '1M'],
    });
    await writeFile(join(pool, 'lunfs.lock'), JSON.stringify({ pid: deadPid }));
    const result = await run('env', [
      'LUNFS_NO_NATIVE=1',
      process.execPath,
      lunfsBin,
      'lun',
      'create',
      pool,
      'fallback',
      '--size',
      '1M',
    ]);
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stderr).toMatch(
      /the native addon is missing: the pool lock falls back to an exclusive-create file/,
    );
    expect((await statusJson(pool)).luns.map((lun) => lun.name)).toEqual(['fallback']);
    await lunfsOk('lun', 'rm', pool, 'fallback');
  });
});
