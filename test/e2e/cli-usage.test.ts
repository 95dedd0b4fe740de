// The CLI as a new user meets it, no mount needed (lunfs issue 17): every usage error is one line
// `lunfs: ...` on stderr with exit 2 (commander's own errors included), bad pool directories are
// refused with a message and create nothing, long jobs on a pool that does not open exit instead
// of hanging, and --version and --help say what they should. Each test ran against the code
// before the fix and failed there.

import { readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  directoryFingerprint,
  lunfs,
  lunfsBin,
  lunfsOk,
  mountsUnder,
  repoRoot,
  run,
  type RunResult,
} from './support.js';
import { useSandbox } from './support.js';

const sandbox = useSandbox('cli-usage', 'file');

function describeRun(result: RunResult): string {
  return `\`${result.command}\` exit ${result.code} signal ${result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/**
 * Exit `code` with exactly one `lunfs: ...` line on stderr matching `message`, nothing on stdout.
 */
function expectOneLineError(result: RunResult, message: RegExp, code = 2): void {
  expect(result.code, describeRun(result)).toBe(code);
  expect(result.stderr, describeRun(result)).toMatch(/^lunfs: [^\n]+\n$/);
  expect(result.stderr, describeRun(result)).toMatch(message);
  expect(result.stdout, describeRun(result)).toBe('');
}

/** `lunfs ARGS` killed after 20 s (a command that hangs shows as signal SIGKILL), run in `cwd`. */
function lunfsWithin20s(args: string[], cwd?: string): Promise<RunResult> {
  return run(process.execPath, [lunfsBin, ...args], { timeoutMs: 20_000, cwd });
}

describe('usage errors', () => {
  it('every usage error exits 2 with one line that names the help to read', async () => {
    const cases: Array<[string[], RegExp]> = [
      [
        [],
        /missing command: use one of pool, lun, snapshot, snappoint, export, import, migrate, copier, clone, drive, scrub, status, mount.* \(see 'lunfs --help'\)/,
      ],
      [['pool'], /missing command: use one of create \(see 'lunfs pool --help'\)/],
      [['lun'], /missing command: use one of create, ls, rm, resize/],
      [['drive'], /missing command: use one of replace/],
      [['bogus'], /unknown command 'bogus' \(see 'lunfs --help'\)/],
      [['stauts', 'x'], /unknown command 'stauts' \(Did you mean status\?\)/],
      [['help', 'bogus'], /unknown command 'bogus'/],
      [['status'], /missing required argument 'dir' \(see 'lunfs status --help'\)/],
      [['status', 'a', 'b'], /too many arguments for 'status'/],
      [['status', '--bad', 'x'], /unknown option '--bad' \(see 'lunfs status --help'\)/],
      [
        ['lun', 'create', 'x', 'y'],
        /required option '--size <size>' not specified \(see 'lunfs lun create --help'\)/,
      ],
      [
        ['pool', 'create', 'x', '--drives', '2', '--drive-size', '64M'],
        /required option '--raid <level>' not specified/,
      ],
      [['--log-level', 'loud', 'status', 'x'], /argument 'loud' is invalid/],
      [['mount', 'x', 'y', '--drive-io', 'fast'], /argument 'fast' is invalid/],
      [['snapshot', 'x'], /missing required argument 'lun@name'/],
      [['snappoint', 'create', 'x'], /missing required argument 'lun@name'/],
      [['export', 'x', 'db'], /required option '-o, --output <file>' not specified/],
      [['import', 'x', 'db'], /missing required argument 'file'/],
      [['status', ''], /a directory argument is empty/],
      [['lun', 'ls', ' '], /a directory argument is empty/],
    ];
    for (const [args, message] of cases) expectOneLineError(await lunfs(...args), message);
  });

  it('--version prints the version of package.json', async () => {
    const { version } = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as {
      version: string;
    };
    for (const flag of ['--version', '-V']) {
      const result = await lunfsOk(flag);
      expect(result.stdout).toBe(`${version}\n`);
      expect(result.stderr).toBe('');
    }
  });

  it('--help gives every command a description', async () => {
    for (const group of [[], ['pool'], ['lun'], ['snapshot'], ['drive']]) {
      const help = (await lunfsOk(...group, '--help')).stdout;
      const commands = help
        .slice(help.indexOf('Commands:'))
        .split('\n')
        .slice(1)
        .filter((line) => /^ {2}\S/.test(line));
      expect(commands.length, help).toBeGreaterThan(0);
      for (const line of commands)
        expect(line, `no description in \`lunfs ${group.join(' ')} --help\`:\n${help}`).toMatch(
          /^ {2}\S.*\S {2,}\S/,
        );
    }
  });
});

describe('pool create refuses paths where no pool can be', () => {
  it('an empty path, a regular file, /proc and /sys are refused at once, and nothing is created', async () => {
    const box = sandbox();
    const file = box.path('a-file');
    await writeFile(file, 'not a directory\n');
    const before = (await readdir(box.root)).sort();
    // In the sandbox: before the fix, '' made a pool in the current directory.
    const create = (directory: string): Promise<RunResult> =>
      lunfsWithin20s(
        ['pool', 'create', directory, '--drives', '2', '--drive-size', '64M', '--raid', '0'],
        box.root,
      );
    expectOneLineError(await create(''), /a directory argument is empty/);
    expectOneLineError(await create(file), new RegExp(`${file} exists and is not a directory`));
    expectOneLineError(
      await create(join(file, 'sub')),
      /cannot create a pool in .*a-file\/sub \(ENOTDIR/,
    );
    expectOneLineError(
      await create('/proc/lunfs-e2e-nowhere'),
      /cannot create a pool in \/proc\/lunfs-e2e-nowhere \(ENOENT/,
    );
    expectOneLineError(
      await create('/proc/lunfs-e2e-nowhere/deeper'),
      /cannot create a pool in \/proc\/lunfs-e2e-nowhere\/deeper/,
    );
    expectOneLineError(
      await create('/sys/lunfs-e2e-nowhere'),
      /cannot create a pool in \/sys\/lunfs-e2e-nowhere \((EPERM|EACCES|EROFS)/,
    );
    expect((await readdir(box.root)).sort()).toEqual(before);
    expect(await readFile(file, 'utf8')).toBe('not a directory\n');
    await expect(stat('/proc/lunfs-e2e-nowhere')).rejects.toThrow(/ENOENT/);
  });

  it('--drive-size 0 says the size is the problem', async () => {
    const box = sandbox();
    const directory = box.path('zero');
    expectOneLineError(
      await lunfs('pool', 'create', directory, '--drives', '2', '--drive-size', '0', '--raid', '0'),
      /drive size must be larger than 0/,
    );
    await expect(stat(directory)).rejects.toThrow(/ENOENT/);
  });

  it('a create that fails after making missing parents removes them again', async () => {
    const box = sandbox();
    expectOneLineError(
      await lunfs(
        'pool',
        'create',
        box.path('new', 'deep', 'pool'),
        '--drives',
        '2',
        '--drive-size',
        '1M',
        '--raid',
        '0',
      ),
      /too small/,
    );
    await expect(stat(box.path('new'))).rejects.toThrow(/ENOENT/);
  });
});

describe('damaged pool.json', () => {
  it('null, a number, an array or bad drive entries are refused with a message, not a stack trace', async () => {
    const box = sandbox();
    const directory = await box.mkdir('damaged');
    for (const text of [
      'null',
      '5',
      '[]',
      '"x"',
      '{"format":"lunfs-pool","drives":null}',
      '{"format":"lunfs-pool","drives":[1]}',
      '{"format":"lunfs-pool","drives":[""]}',
    ]) {
      await writeFile(join(directory, 'pool.json'), `${text}\n`);
      for (const args of [
        ['status', directory],
        ['lun', 'ls', directory],
        ['lun', 'create', directory, 'x', '--size', '1M'],
        ['mount', directory, box.path('mnt')],
      ]) {
        expectOneLineError(
          await lunfsWithin20s(args),
          /damaged\/pool\.json is not a lunfs pool file/,
          1,
        );
      }
      expect((await readdir(directory)).sort(), `after pool.json ${text}`).toEqual(['pool.json']);
    }
    await expect(stat(box.path('mnt'))).rejects.toThrow(/ENOENT/);
  });
});

describe('long jobs on a pool that does not open', () => {
  it('scrub and drive replace print the error and exit (the progress bar no longer keeps them alive)', async () => {
    const box = sandbox();
    const pool = await box.createPool('broken', { drives: 2, driveSize: '64M', raid: 0 });
    await rename(join(pool, 'drive-1.img'), box.path('drive-1.away'));
    for (const args of [
      ['scrub', pool],
      ['drive', 'replace', pool, '1', join(pool, 'new-1.img')],
      ['scrub', pool, '--json'],
    ]) {
      const result = await lunfsWithin20s(args);
      expect(result.signal, `\`lunfs ${args.join(' ')}\` hung:\n${describeRun(result)}`).toBeNull();
      expect(result.code, describeRun(result)).not.toBe(0);
      expect(result.stderr).toMatch(
        /lunfs: the pool cannot be served: RAID-0 cannot do without drive\(s\) 1/,
      );
    }
    expect((await readdir(pool)).sort()).toEqual(['drive-0.img', 'pool.json']);
    for (const args of [
      ['scrub', box.path('nowhere')],
      ['drive', 'replace', box.path('nowhere'), '1', box.path('new.img')],
    ]) {
      const result = await lunfsWithin20s(args);
      expect(result.signal, `\`lunfs ${args.join(' ')}\` hung:\n${describeRun(result)}`).toBeNull();
      expect(result.code, describeRun(result)).toBe(2);
      expect(result.stderr).toMatch(/no lunfs pool at/);
    }
  });
});

describe('lunfs mount refuses a bad mountpoint or cache size before it opens the pool', () => {
  it('/proc, /sys, a file, a non-empty directory (the pool directory, one above it), a cache too small or too large: exit 2, pool unchanged', async () => {
    const box = sandbox();
    const pool = await box.createPool('mountpoints', { drives: 2, driveSize: '64M', raid: 1 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', '16M');
    const file = box.path('plain-file');
    await writeFile(file, 'x');
    const before = await directoryFingerprint(pool);
    const mount = (mountpoint: string, ...extra: string[]): Promise<RunResult> =>
      lunfsWithin20s(['mount', pool, mountpoint, ...extra]);
    expectOneLineError(
      await mount('/proc/lunfs-e2e-nowhere'),
      /cannot make the mountpoint \/proc\/lunfs-e2e-nowhere \(ENOENT/,
    );
    expectOneLineError(
      await mount('/sys/lunfs-e2e-nowhere'),
      /cannot make the mountpoint \/sys\/lunfs-e2e-nowhere \((EPERM|EACCES|EROFS)/,
    );
    expectOneLineError(await mount(file), new RegExp(`mountpoint ${file} is not a directory`));
    expectOneLineError(await mount(join(file, 'sub')), /is not a directory/);
    expectOneLineError(
      await mount(pool),
      new RegExp(`mountpoint ${pool} is not empty \\(drive-0.img, drive-1.img`),
    );
    expectOneLineError(await mount(box.root), new RegExp(`mountpoint ${box.root} is not empty`));
    for (const size of ['0', '128K', '255K'])
      expectOneLineError(
        await mount(box.path('mnt'), '--cache-size', size),
        /is too small: the cache needs at least 256 KiB/,
      );
    expectOneLineError(
      await mount(box.path('mnt'), '--cache-size', '100T'),
      /--cache-size 100T is more than this machine can give: at most .* \(3\/4 of its .* of memory\)/,
    );
    expect(await directoryFingerprint(pool)).toBe(before);
    expect(await mountsUnder(box.root)).toEqual([]);
    await expect(stat(box.path('mnt'))).rejects.toThrow(/ENOENT/);
    await expect(stat('/proc/lunfs-e2e-nowhere')).rejects.toThrow(/ENOENT/);
  });
});
