// `lunfs migrate DIR LUN --to TARGET` and `lunfs copier ...` (issue 16). migrate starts the copier
// as a process of its own (this same program, command copier) and waits for it. When the pool is
// mounted, the copier talks to the mount; when it is not, migrate opens the pool itself and
// serves a control socket for the copier while it runs (it is then the server that keeps the
// snap-point maps and answers the passes; the LUN has no other writer).

import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { SingleBar, Presets } from 'cli-progress';
import { LunfsError } from '../util/errors.js';
import { layerLogger } from '../util/logger.js';
import { formatBytes } from '../util/sizes.js';
import type { StatusJson } from '../volume/controller.js';
import { sendControlRequest, serveControlSocket } from './control-socket.js';
import { checkTarget, runCopier, type CopierReport, type CopyTargetSpec } from './copier.js';
import { mountSocket, withLocalController } from './pool-access.js';

export interface MigrateOptions {
  directory: string;
  lun: string;
  target: CopyTargetSpec;
  restart: boolean;
  smallBytes?: number;
  snapshot?: string;
}

/** The copier's arguments on its command line (after `copier DIR LUN`). */
function copierArguments(options: MigrateOptions, socket: string | undefined): string[] {
  const args =
    options.target.kind === 'path'
      ? ['--to', options.target.path, ...(options.target.force ? ['--force'] : [])]
      : ['--to-pool', options.target.directory, '--as', options.target.lun];
  if (socket !== undefined) args.push('--socket', socket);
  if (options.restart) args.push('--restart');
  if (options.smallBytes !== undefined) args.push('--small', String(options.smallBytes));
  if (options.snapshot !== undefined) args.push('--snapshot', options.snapshot);
  return args;
}

export async function runMigrate(options: MigrateOptions): Promise<void> {
  const directory = resolve(options.directory);
  await checkTarget(directory, options.lun, options.target);
  const socket = mountSocket(directory);
  if (socket !== undefined) {
    const status = (await sendControlRequest(socket, { command: 'status' })) as StatusJson;
    if (!status.luns.some((lun) => lun.name === options.lun))
      throw new LunfsError('ENOENT', `pool ${directory} has no LUN '${options.lun}'`);
    await runCopierProcess(directory, options, undefined);
    return;
  }
  await withLocalController(directory, async (controller) => {
    controller.pool.lunByName(options.lun); // ENOENT before anything starts
    const socket = join(directory, `.migrate-${process.pid}.sock`);
    const server = await serveControlSocket(socket, controller, layerLogger('control'));
    try {
      await runCopierProcess(directory, options, socket);
    } finally {
      await new Promise<void>((done) => server.close(() => done()));
    }
  });
}

async function runCopierProcess(
  directory: string,
  options: MigrateOptions,
  socket: string | undefined,
): Promise<void> {
  const program = process.argv[1];
  if (program === undefined) throw new LunfsError('EINVAL', 'cannot tell how lunfs was started');
  const child = spawn(
    process.execPath,
    [program, 'copier', directory, options.lun, ...copierArguments(options, socket)],
    { stdio: 'inherit' },
  );
  const code = await new Promise<number | null>((done, fail) => {
    child.on('error', fail);
    child.on('exit', (exitCode, signal) => done(signal ? 128 : exitCode));
  });
  if (code === 2)
    throw new LunfsError('EINVAL', `the copier refused to start (its message is above)`);
  if (code !== 0)
    throw new LunfsError(
      'EIO',
      `the copier (pid ${child.pid}) stopped with exit code ${code}; run lunfs migrate again to resume`,
    );
}

/** `lunfs copier`: runs the copy here, with a progress bar on standard error. */
export async function runCopierCommand(
  options: MigrateOptions & { socket?: string },
): Promise<CopierReport> {
  const bar = new SingleBar(
    {
      format: 'migrate {lun}: pass {pass}{final} [{bar}] {percentage}% | {value}/{total} MiB',
      hideCursor: true,
      noTTYOutput: true,
      notTTYSchedule: 2000,
      stream: process.stderr,
    },
    Presets.shades_classic,
  );
  let shownPass = 0;
  try {
    const report = await runCopier({
      directory: options.directory,
      lun: options.lun,
      target: options.target,
      restart: options.restart,
      ...(options.socket !== undefined ? { socket: options.socket } : {}),
      ...(options.smallBytes !== undefined ? { smallBytes: options.smallBytes } : {}),
      ...(options.snapshot !== undefined ? { snapshot: options.snapshot } : {}),
      backgroundNice: 19,
      progress: (event) => {
        const mib = (bytes: number): number => Math.ceil(bytes / 1048576);
        const fields = { lun: options.lun, pass: event.pass, final: event.final ? ' (final)' : '' };
        if (event.pass !== shownPass) {
          if (shownPass > 0) bar.stop();
          bar.start(mib(event.totalBytes), 0, fields);
          shownPass = event.pass;
        }
        bar.update(mib(event.doneBytes), fields);
      },
    });
    bar.stop();
    return report;
  } finally {
    bar.stop();
  }
}

export function describeReport(report: CopierReport): string {
  const passes = report.passes
    .map((pass) => `${formatBytes(pass.bytes)}${pass.final ? ' (final)' : ''}`)
    .join(', ');
  return `LUN ${report.lun} migrated to ${report.target}${report.resumed ? ' (resumed)' : ''}: ${report.passes.length} passes (${passes}); the final pass held writes for ${report.pausedMs} ms`;
}
