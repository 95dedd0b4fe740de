// lunfs migrate end to end (issue 16, seed 003), no mocks: a real `lunfs mount` serving a RAID-5
// LUN that holds ext4, fio writing and verifying (crc32c) through the loop device, and `lunfs
// migrate` starting its copier process, which reads the pool's drives itself. It proves:
//   1. fio sees no error while the LUN is migrated; the target equals, byte for byte, the
//      snapshot the final pass took at the cut-over (--snapshot), its ext4 checks clean once its
//      journal is replayed, and the pause of the writes is reported;
//   2. the copier killed (kill -9) after its first pass: `lunfs migrate` says so, and run again it
//      resumes (no second full copy) and ends exact;
//   3. the same with the pool degraded (a drive file deleted under the mount): the copier rebuilds
//      the lost member's data from parity, and the target equals the cut-over exactly;
//   4. bad targets are refused with one line and change nothing.

import { readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MiB } from '../../src/util/sizes.js';
import {
  lunfs,
  lunfsOk,
  run,
  runOk,
  sha256File,
  sleep,
  statusJson,
  useSandbox,
  writeRandomFile,
  type Sandbox,
} from './support.js';

async function fsckReplayed(box: Sandbox, image: string, directory: string): Promise<void> {
  // a copy taken live holds a journal to replay: mount it once (that replays it), then check
  const loop = await box.attachLoop(image);
  try {
    await box.mountExt4(loop, directory);
    await box.umount(directory);
    const result = await box.fsckExt4(loop);
    expect(result.code, `fsck.ext4 -fn:\n${result.stdout}${result.stderr}`).toBe(0);
  } finally {
    await box.detachLoop(loop);
  }
}

describe('lunfs migrate', () => {
  const sandbox = useSandbox('migrate');

  it('copies a RAID-5 LUN holding ext4 while fio writes and verifies, and resumes a killed copier', async () => {
    const box = sandbox();
    const pool = await box.createPool('A', { drives: 3, driveSize: '256M', raid: 5 });
    await lunfsOk('lun', 'create', pool, 'db', '--size', '96M');
    const mountpoint = box.path('mnt');
    const data = box.path('data');
    const server = await box.mount(pool, mountpoint);
    const loop = await box.attachLoop(join(mountpoint, 'luns', 'db'));
    await box.mkfsExt4(loop);
    await box.mountExt4(loop, data);
    for (let index = 0; index < 8; index += 1)
      await writeRandomFile(join(data, `f${index}.bin`), 3 * 1024 * 1024 + index);
    await runOk('sync', ['-f', data]);

    // ---- 1. fio writes and verifies all along the migration
    const fio = run('fio', [
      '--name=verify',
      `--filename=${join(data, 'fio.dat')}`,
      '--size=24M',
      '--bs=4k',
      '--rw=randwrite',
      '--ioengine=psync',
      '--direct=1',
      '--verify=crc32c',
      '--verify_backlog=256',
      '--verify_state_save=0', // no local-verify-0-verify.state left in the working directory
      '--time_based',
      '--runtime=25',
    ]);
    await sleep(2000);
    const target = box.path('target.img');
    const migrated = await lunfsOk('migrate', pool, 'db', '--to', target, '--snapshot', 'cut');
    const report = /held writes for (\d+) ms/.exec(migrated.stdout);
    expect(report, migrated.stdout).not.toBeNull();
    expect(migrated.stdout).toMatch(/^LUN db migrated to .*target\.img: \d+ passes/m);
    const fioResult = await fio;
    expect(fioResult.code, `fio:\n${fioResult.stdout}\n${fioResult.stderr}`).toBe(0);
    expect(fioResult.stdout).not.toMatch(/verify: bad|crc32c: verify failed/);
    expect((await stat(target)).size).toBe(96 * 1024 * 1024);
    expect(await sha256File(target), 'target against db@cut').toBe(
      await sha256File(join(mountpoint, 'snapshots', 'db@cut')),
    );
    await fsckReplayed(box, target, box.path('check'));
    // the migration's maps are gone, and its state file
    expect((await lunfsOk('status', pool, '--json')).stdout).toContain('"snapPoints": []');

    // ---- 2. the copier is killed after its first pass; migrate again resumes
    const writer = run('bash', [
      '-c',
      `for i in $(seq 1 400); do dd if=/dev/urandom of='${join(data, 'w.bin')}' bs=64k count=4 seek=$((RANDOM % 64)) conv=notrunc,fsync status=none; done`,
    ]);
    const second = box.path('second.img');
    // --small 0: passes go on while the writer writes, so the kill lands mid-migration
    const first = lunfs('migrate', pool, 'db', '--to', second, '--small', '0');
    const state = join(pool, 'migrate-db.json');
    for (let waited = 0; ; waited += 50) {
      const text = await readFile(state, 'utf8').catch(() => '');
      if (text.includes('"fullDone":true')) break;
      expect(waited, 'the copier acknowledged no pass in 60 s').toBeLessThan(60_000);
      await sleep(50);
    }
    await run('pkill', ['-9', '-f', 'lunfs copier']);
    const killed = await first;
    expect(killed.code).toBe(1);
    expect(killed.stderr).toMatch(/copier .* stopped .*run lunfs migrate again to resume/);
    const resumed = await lunfsOk('migrate', pool, 'db', '--to', second, '--snapshot', 'cut2');
    expect(resumed.stdout).toMatch(/\(resumed\)/);
    await writer;
    expect(await sha256File(second), 'second target against db@cut2').toBe(
      await sha256File(join(mountpoint, 'snapshots', 'db@cut2')),
    );

    // ---- 3. degraded: drive 1 deleted under the mount; migrated while written, exact
    await rm(join(pool, 'drive-1.img'));
    for (let waited = 0; ; waited += 100) {
      await run('sync', []); // I/O finds the drive gone
      const status = await statusJson(pool);
      if (status.drives[1]!.state === 'failed') break;
      expect(waited, 'drive 1 not failed after 30 s').toBeLessThan(30_000);
      await writeRandomFile(join(data, 'poke.bin'), 256 * 1024);
      await sleep(100);
    }
    const degradedWriter = run('bash', [
      '-c',
      `for i in $(seq 1 300); do dd if=/dev/urandom of='${join(data, 'w.bin')}' bs=64k count=4 seek=$((RANDOM % 64)) conv=notrunc,fsync status=none; done`,
    ]);
    const third = box.path('third.img');
    await lunfsOk('migrate', pool, 'db', '--to', third, '--snapshot', 'cut3');
    await degradedWriter;
    expect(await sha256File(third), 'degraded: target against db@cut3').toBe(
      await sha256File(join(mountpoint, 'snapshots', 'db@cut3')),
    );

    // ---- 4. a block device target (a loop device over a file of the LUN's size), exact
    const deviceFile = box.path('device.img');
    await writeFile(deviceFile, '');
    await truncate(deviceFile, 96 * MiB);
    const device = await box.attachLoop(deviceFile);
    const toDevice = await lunfsOk(
      'migrate',
      pool,
      'db',
      '--to',
      device.device,
      '--snapshot',
      'cut4',
    );
    expect(toDevice.stdout).toMatch(/^LUN db migrated to .*: \d+ passes/m);
    // a block device's stat says size 0: the LUN's length is given
    expect(await sha256File(device.device, 96 * MiB), 'block device against db@cut4').toBe(
      await sha256File(join(mountpoint, 'snapshots', 'db@cut4')),
    );
    await box.detachLoop(device);

    // ---- 5. bad targets: one line, nothing changed
    const precious = box.path('precious.img');
    await writeFile(precious, 'keep me');
    const refused = await lunfs('migrate', pool, 'db', '--to', precious);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/exists and is not empty: give --force/);
    expect(await readFile(precious, 'utf8')).toBe('keep me');
    const noTarget = await lunfs('migrate', pool, 'db');
    expect(noTarget.stderr).toMatch(/give the target: --to/);
    const noLun = await lunfs('migrate', pool, 'nolun', '--to', box.path('x.img'));
    expect(noLun.code).toBe(2);

    await box.umount(data);
    await box.detachLoop(loop);
    const exit = await server.stop();
    expect(exit).toEqual({ code: 0, signal: null });
  }, 240_000);
});
