// The lunfs command line (commander). The only place where errors become messages and exit codes:
// 0 success, 1 an operating error (EIO, ENOSPC, EBUSY, ECORRUPT, ...), 2 bad input (EINVAL,
// ENOENT, EEXIST, EFBIG, EPERM, EACCES) and every usage error commander finds (unknown command or
// option, missing argument). Each error is one line on stderr, `lunfs: ...`; a stack trace only
// for a bug.

import { Command, CommanderError, Option, type HelpContext } from 'commander';
import { createReadStream, readFileSync } from 'node:fs';
import { open, rm, stat, type FileHandle } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { resolve } from 'node:path';
import { isLunfsError, LunfsError } from '../util/errors.js';
import { configureLogging } from '../util/logger.js';
import { formatBytes, parseSize } from '../util/sizes.js';
import type { StatusJson } from '../volume/controller.js';
import type { SnapPointStatus } from '../volume/snap-points.js';
import type { ExportResult, ImportResult } from '../volume/volume-export.js';
import type { CopyTargetSpec } from './copier.js';
import { describeReport, runCopierCommand, runMigrate } from './migrate-command.js';
import type { DriveIoMode } from '../drive/file-drive.js';
import { type FrontKind, runMount, runUnmount } from './mount-command.js';
import { createPool, mountSocket, withPool } from './pool-access.js';
import { runJob } from './job-progress.js';
import type { ScrubReport } from '../pool/pool-drives.js';
import { cachePageBytes } from '../util/constants.js';

const collect = (value: string, previous: string[]): string[] => previous.concat([value]);

/** Error codes that mean the request itself was wrong (exit 2); every other code is exit 1. */
const badInputCodes = ['EINVAL', 'ENOENT', 'EEXIST', 'EFBIG', 'EPERM', 'EACCES'];

/** A directory argument: an empty one would silently mean the current directory. */
function parseDirectory(text: string): string {
  if (text.trim() === '') throw new LunfsError('EINVAL', 'a directory argument is empty');
  return text;
}

/**
 * --cache-size: at least two cache pages (the cache's own minimum), and at most 3/4 of this
 * machine's memory: the mount allocates and touches the whole cache when it starts.
 */
function parseCacheSize(text: string): number {
  const sizeBytes = parseSize(text, '--cache-size');
  const largestBytes = Math.floor((totalmem() * 3) / 4 / cachePageBytes) * cachePageBytes;
  if (sizeBytes < 2 * cachePageBytes)
    throw new LunfsError(
      'EINVAL',
      `--cache-size ${text} is too small: the cache needs at least ${formatBytes(2 * cachePageBytes)} (two ${formatBytes(cachePageBytes)} pages)`,
    );
  if (sizeBytes > largestBytes)
    throw new LunfsError(
      'EINVAL',
      `--cache-size ${text} is more than this machine can give: at most ${formatBytes(largestBytes)} (3/4 of its ${formatBytes(totalmem())} of memory)`,
    );
  return sizeBytes;
}

/** The version of package.json (two levels up from src/cli and dist/cli alike). */
function packageVersion(): string {
  return (
    JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    }
  ).version;
}

/**
 * Commander's Command, with a one-line usage error instead of the whole help for a missing
 * subcommand.
 */
class LunfsCommand extends Command {
  override createCommand(name?: string): Command {
    return new LunfsCommand(name);
  }

  override help(context?: HelpContext | ((text: string) => string)): never {
    if (context && typeof context === 'object' && context.error) {
      // `lunfs`, `lunfs pool` or `lunfs help bogus`: commander would print the whole help on
      // stderr.
      const names = this.commands.map((command) => command.name());
      const unknown = this.args.find(
        (word) => !names.includes(word) && word !== 'help' && !word.startsWith('-'),
      );
      this.error(
        `${unknown === undefined ? 'missing command' : `unknown command '${unknown}'`}: use one of ${names.join(', ')}`,
        { exitCode: 2, code: 'lunfs.missingCommand' },
      );
    }
    return super.help(context as HelpContext);
  }
}

/** Every command prints commander's usage errors as one line that says where the help is. */
function oneLineUsageErrors(command: Command, path: string): void {
  command.configureOutput({
    outputError: (text, write) =>
      write(
        `lunfs: ${text
          .replace(/^error: /, '')
          .replace(/\s*\n\s*/g, ' ')
          .trim()} (see '${path} --help')\n`,
      ),
  });
  for (const subcommand of command.commands)
    oneLineUsageErrors(subcommand, `${path} ${subcommand.name()}`);
}

function parseRaid(text: string): 0 | 1 | 5 {
  if (text === '0' || text === '1' || text === '5') return Number(text) as 0 | 1 | 5;
  throw new LunfsError('EINVAL', `invalid RAID level '${text}': use 0, 1 or 5`);
}

function parseCount(text: string, what: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1)
    throw new LunfsError('EINVAL', `invalid ${what} '${text}': expected a positive whole number`);
  return Number(text);
}

function printLuns(status: StatusJson): void {
  if (status.luns.length === 0) {
    console.log('no LUNs');
    return;
  }
  console.log(['NAME'.padEnd(24), 'SIZE'.padStart(12), 'ALLOCATED'.padStart(12)].join(' '));
  for (const lun of status.luns)
    console.log(
      [
        lun.name.padEnd(24),
        formatBytes(lun.sizeBytes).padStart(12),
        formatBytes(lun.allocatedBytes).padStart(12),
      ].join(' '),
    );
}

function printStatus(directory: string, status: StatusJson): void {
  const pool = status.pool;
  console.log(`pool ${resolve(directory)}  ${pool.raid}  ${pool.state}  uuid ${pool.uuid}`);
  if (pool.lostLuns.length > 0)
    console.log(
      `lost (drives failed beyond redundancy: their data there reads as EIO): ${pool.lostLuns.join(', ')}`,
    );
  for (const warning of status.warnings ?? []) console.log(`warning: ${warning}`);
  if (pool.atRiskLuns.length > 0)
    console.log(`at risk (one more drive failure loses data): ${pool.atRiskLuns.join(', ')}`);
  console.log(
    `space: ${formatBytes(pool.totalBytes)} total, ${formatBytes(pool.allocatedBytes)} allocated, ${formatBytes(pool.freeBytes)} free`,
  );
  console.log(`kernels: ${status.kernels}`);
  console.log('drives:');
  for (const drive of status.drives) {
    const copy = drive.holdsMetadataCopy ? `  metadata copy: ${drive.metadataCopy}` : '';
    const why =
      (drive.failedReason ? `  (${drive.failedReason})` : '') +
      (drive.missedWriteLuns
        ? `  missed writes of: ${drive.missedWriteLuns.join(', ') || 'no LUN'}`
        : '');
    const labels = drive.labelCopies === 1 ? '  labels: 1 (format 4: head only)' : '';
    const repaired = drive.labelsDamagedAtOpen
      ? `  labels damaged at open: ${drive.labelsDamagedAtOpen.join('; ')}`
      : '';
    console.log(
      `  ${String(drive.index).padStart(2)}  ${drive.path}  ${formatBytes(drive.sizeBytes)}  ${drive.state}  rss ${drive.rss}  io ${drive.io}${copy}${labels}${repaired}${why}`,
    );
  }
  const integrity = status.integrity;
  console.log(
    `checksums: ${integrity.checksumMismatches} mismatches, ${integrity.repairs} repaired, ${integrity.unrepairable} unrepairable, ${integrity.parityRepairs} parity/mirror repairs, ${integrity.labelRepairs} drive labels rewritten`,
  );
  for (const job of status.jobs)
    console.log(
      `job ${job.id}: ${job.kind}${job.drive !== undefined ? ` of drive ${job.drive}` : ''} ${job.state} ${(job.progress * 100).toFixed(1)}%${job.error ? ` (${job.error})` : ''}`,
    );
  console.log('LUNs:');
  printLuns(status);
  console.log('snapshots:');
  printSnapshots(status);
}

export function buildProgram(): Command {
  const program = new LunfsCommand('lunfs')
    .description('RAID-protected pool of thin virtual disks, served as files through FUSE')
    .exitOverride() // before the subcommands, which inherit it: main() maps every exit to a code
    .version(packageVersion(), '-V, --version', 'print the version of lunfs')
    .addOption(
      new Option('--log-level <level>', 'pino log level')
        .choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
        .default('warn'),
    )
    .hook('preAction', (command) => {
      configureLogging(command.optsWithGlobals().logLevel as string);
    });

  const pool = program.command('pool').description('create pools');
  pool
    .command('create')
    .description('format drives into a new pool (sparse files in DIR, or the --drive paths)')
    .argument(
      '<dir>',
      'pool directory (holds pool.json and, for --drives, the drive files)',
      parseDirectory,
    )
    .option('--drives <n>', 'number of sparse file drives to create in DIR')
    .option('--drive-size <size>', 'size of each created drive (e.g. 8G)')
    .option(
      '--drive <path>',
      'an existing file or block device to use as a drive (repeat, in order)',
      collect,
      [],
    )
    .requiredOption(
      '--raid <level>',
      'RAID level: 0 (striped), 1 (mirrored) or 5 (striped with rotating parity, 3 drives or more per set)',
    )
    .option('--pseg-size <size>', 'PSEG size (default 2M)')
    .option('--allocation-unit <size>', 'thin allocation unit (default 1M)')
    .option('--stripe-unit <size>', 'RAID-0 stripe unit (default 128K)')
    .option(
      '--rss-size <n>',
      'drives per redundancy set (default 8); more drives form several sets, each RStore stays inside one',
    )
    .action(async (directory: string, options: Record<string, string | string[] | undefined>) => {
      const drivePaths = options.drive as string[];
      if (drivePaths.length > 0 && (options.drives || options.driveSize))
        throw new LunfsError(
          'EINVAL',
          'give either --drive PATH ... or --drives N --drive-size SIZE, not both',
        );
      const warnings = await createPool({
        directory,
        drivePaths,
        driveCount: options.drives ? parseCount(options.drives as string, '--drives') : undefined,
        driveSizeBytes: options.driveSize
          ? parseSize(options.driveSize as string, '--drive-size')
          : undefined,
        raidLevel: parseRaid(options.raid as string),
        psegSizeBytes: options.psegSize
          ? parseSize(options.psegSize as string, '--pseg-size')
          : undefined,
        allocationUnitBytes: options.allocationUnit
          ? parseSize(options.allocationUnit as string, '--allocation-unit')
          : undefined,
        stripeUnitBytes: options.stripeUnit
          ? parseSize(options.stripeUnit as string, '--stripe-unit')
          : undefined,
        rssSize: options.rssSize ? parseCount(options.rssSize as string, '--rss-size') : undefined,
      });
      console.log(`pool created at ${resolve(directory)}`);
      for (const warning of warnings) console.error(`lunfs: warning: ${warning}`);
    });

  const lun = program.command('lun').description('create, list, remove and grow LUNs');
  lun
    .command('create')
    .description('create a thin LUN')
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<name>', 'LUN name: 1-63 letters, digits, ., _ or -')
    .requiredOption('--size <size>', 'LUN size (e.g. 20G); thin: nothing is allocated yet')
    .action(async (directory: string, name: string, options: { size: string }) => {
      const sizeBytes = parseSize(options.size, 'LUN size');
      if (sizeBytes === 0) throw new LunfsError('EINVAL', 'LUN size must be larger than 0');
      await withPool(directory, { command: 'lun-create', name, sizeBytes });
      console.log(`LUN ${name} created (${formatBytes(sizeBytes)})`);
    });
  lun
    .command('ls')
    .description('list the LUNs with their size and allocated space')
    .argument('<dir>', 'pool directory', parseDirectory)
    .option('--json', 'JSON output')
    .action(async (directory: string, options: { json?: boolean }) => {
      const status = (await withPool(directory, { command: 'status' })) as StatusJson;
      if (options.json) console.log(JSON.stringify(status.luns, null, 2));
      else printLuns(status);
    });
  lun
    .command('rm')
    .description('remove a LUN and free its space (refused while it has snapshots or is open)')
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<name>', 'LUN name')
    .action(async (directory: string, name: string) => {
      await withPool(directory, { command: 'lun-rm', name });
      console.log(`LUN ${name} removed`);
    });
  lun
    .command('resize')
    .description('grow a LUN')
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<name>', 'LUN name')
    .requiredOption('--size <size>', 'new size (grow only)')
    .action(async (directory: string, name: string, options: { size: string }) => {
      await withPool(directory, {
        command: 'lun-resize',
        name,
        sizeBytes: parseSize(options.size, 'LUN size'),
      });
      console.log(`LUN ${name} resized to ${options.size}`);
    });

  const snapshot = program
    .command('snapshot')
    .description('take, list and delete snapshots (LUN@NAME)');
  snapshot
    .command('create', { isDefault: true })
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument(
      '<lun@name>',
      'LUN@NAME: the LUN and a name for the snapshot; with [name]: what to take it of, a LUN or a snapshot LUN@SNAP',
    )
    .argument(
      '[name]',
      'the name of the new snapshot (LUN@NAME) when the first argument is its source',
    )
    .option(
      '--reserve',
      'reserve space so that the snapshot can never be invalidated by a full pool',
    )
    .description(
      'take a snapshot of a LUN, or of one of its snapshots, now (also: touch MOUNTPOINT/control/snapshot/LUN@NAME or LUN@SOURCE@NAME)',
    )
    .action(
      async (
        directory: string,
        first: string,
        second: string | undefined,
        options: { reserve?: boolean },
      ) => {
        let name = first;
        let source: string | undefined;
        if (second !== undefined) {
          const at = first.indexOf('@');
          const lun = at < 0 ? first : first.slice(0, at);
          name = `${lun}@${second}`;
          if (at >= 0) source = first.slice(at + 1);
        }
        await withPool(directory, {
          command: 'snapshot-create',
          name,
          reserve: options.reserve === true,
          ...(source !== undefined ? { source } : {}),
        });
        console.log(
          `snapshot ${name} created${source !== undefined ? ` of ${first}` : ''}${options.reserve ? ' (space reserved)' : ''}`,
        );
      },
    );
  snapshot
    .command('ls')
    .description('list the snapshots with their state and the space they hold')
    .argument('<dir>', 'pool directory', parseDirectory)
    .option('--json', 'JSON output')
    .action(async (directory: string, options: { json?: boolean }) => {
      const status = (await withPool(directory, { command: 'status' })) as StatusJson;
      if (options.json) console.log(JSON.stringify(status.snapshots, null, 2));
      else printSnapshots(status);
    });
  snapshot
    .command('rm')
    .description('delete a snapshot and free what no other snapshot needs')
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<lun@name>', 'the snapshot')
    .action(async (directory: string, name: string) => {
      await withPool(directory, { command: 'snapshot-rm', name });
      console.log(`snapshot ${name} removed`);
    });

  snapshot
    .command('rollback')
    .description(
      "make a LUN's content its snapshot's again (refused while the LUN is open); every snapshot stays valid",
    )
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<lun@name>', 'the snapshot to roll its LUN back to')
    .action(async (directory: string, name: string) => {
      const result = (await withPool(directory, { command: 'snapshot-rollback', name })) as {
        chunks: number;
        bytes: number;
      };
      console.log(
        `LUN ${name.slice(0, name.indexOf('@'))} rolled back to ${name} (${formatBytes(result.bytes)} copied back)`,
      );
    });

  const snapPoint = program
    .command('snappoint')
    .description(
      'changed-block tracking: maps of the blocks of a LUN changed since each was created (LUN@NAME)',
    );
  snapPoint
    .command('create')
    .description(
      'start map LUN@NAME: from now on it marks every block of the LUN that changes (also: touch MOUNTPOINT/control/snappoint/LUN@NAME)',
    )
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<lun@name>', 'the LUN and a name for the map')
    .action(async (directory: string, name: string) => {
      await withPool(directory, { command: 'snappoint-create', name });
      console.log(`snap-point map ${name} created`);
    });
  snapPoint
    .command('ls')
    .description(
      'list the maps and how much each marks; with LUN@NAME, print its changed extents (offset and length in bytes, one per line)',
    )
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('[lun@name]', 'a map whose extents to print')
    .option('--json', 'JSON output')
    .action(async (directory: string, name: string | undefined, options: { json?: boolean }) => {
      if (name !== undefined) {
        const { extents } = (await withPool(directory, { command: 'snappoint-ls', name })) as {
          extents: Array<[number, number]>;
        };
        if (options.json) console.log(JSON.stringify(extents));
        else for (const [offset, length] of extents) console.log(`${offset} ${length}`);
        return;
      }
      const list = (await withPool(directory, { command: 'snappoint-ls' })) as SnapPointStatus[];
      if (options.json) console.log(JSON.stringify(list, null, 2));
      else if (list.length === 0) console.log('no snap-point maps');
      else
        for (const entry of list)
          console.log(
            `${entry.name}  created ${entry.createdAt}  changed ${formatBytes(entry.changedBytes)} in ${entry.changedExtents} extents (grain ${formatBytes(entry.grainBytes)}, ${formatBytes(entry.intentBytes)} regions after a crash)`,
          );
    });
  snapPoint
    .command('rm')
    .description('remove a map')
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<lun@name>', 'the map')
    .action(async (directory: string, name: string) => {
      await withPool(directory, { command: 'snappoint-rm', name });
      console.log(`snap-point map ${name} removed`);
    });

  program
    .command('export')
    .description(
      'write a stream of a LUN (at this instant) or of a snapshot LUN@SNAP: whole, or with --since only what changed from a snapshot or snap-point map of the same LUN (lunfs import applies it)',
    )
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<volume>', 'LUN or LUN@SNAP')
    .option('--since <base>', 'a snapshot (NAME or LUN@NAME) or snap-point map of the LUN')
    .requiredOption('-o, --output <file>', "where to write the stream ('-': standard output)")
    .action(
      async (directory: string, volume: string, options: { since?: string; output: string }) => {
        const toStdout = options.output === '-';
        const file = toStdout ? undefined : await openExportOutput(options.output);
        const write = async (chunk: Buffer): Promise<void> => {
          if (file) {
            await file.write(chunk);
            return;
          }
          if (!process.stdout.write(chunk))
            await new Promise<void>((resolve) => process.stdout.once('drain', resolve));
        };
        let result: ExportResult;
        try {
          result = (await withPool(
            directory,
            {
              command: 'export',
              name: volume,
              ...(options.since !== undefined ? { since: options.since } : {}),
            },
            undefined,
            { write },
          )) as ExportResult;
          if (file && (await file.stat()).isFile()) await file.sync(); // a device or pipe has none
        } catch (error) {
          // a stream cut short is no stream: nothing is left that looks like one
          await file?.close();
          if (file && (await stat(options.output)).isFile())
            await rm(options.output, { force: true });
          throw error;
        }
        await file?.close();
        console.error(
          `exported ${result.exported}${result.since ? ` since ${result.since}` : ' (full)'}: ${result.records} records, ${formatBytes(result.dataBytes)} of data, ${formatBytes(result.zeroBytes)} zeroed; stream ${formatBytes(result.streamBytes)}`,
        );
      },
    );

  program
    .command('import')
    .description(
      "apply a stream made by lunfs export: a full stream makes LUN; an incremental one applies to the LUN holding its base (each import ends with a snapshot of LUN holding the stream's state)",
    )
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<lun>', 'the LUN to make or update')
    .argument('<file>', "the stream ('-': standard input)")
    .action(async (directory: string, lunName: string, fileName: string) => {
      const input =
        fileName === '-'
          ? process.stdin
          : createReadStream(fileName, { highWaterMark: 1024 * 1024 });
      const result = (await withPool(directory, { command: 'import', name: lunName }, undefined, {
        input,
      })) as ImportResult;
      console.log(
        `${result.created ? 'LUN ' + result.lun + ' made' : 'LUN ' + result.lun + ' updated'} from the stream: ${result.records} records, ${formatBytes(result.dataBytes)} of data, ${formatBytes(result.zeroBytes)} zeroed; its state is snapshot ${result.snapshot}`,
      );
    });

  const migrateTarget = (
    options: {
      to?: string;
      toPool?: string;
      as?: string;
      force?: boolean;
    },
    lun: string,
  ): CopyTargetSpec => {
    if ((options.to === undefined) === (options.toPool === undefined))
      throw new LunfsError(
        'EINVAL',
        'give the target: --to FILE|DEVICE, or --to-pool DIR2 [--as NAME] for a LUN of another pool',
      );
    if (options.to !== undefined)
      return { kind: 'path', path: options.to, force: options.force === true };
    return { kind: 'pool', directory: options.toPool!, lun: options.as ?? lun };
  };
  for (const name of ['migrate', 'copier'] as const) {
    const command = program
      .command(name)
      .description(
        name === 'migrate'
          ? 'copy a live LUN to a file, a block device or a LUN of another pool (mounted or not) by a copier process that reads the drives itself; passes repeat until little changes, then writes pause for one short final pass; run again to resume'
          : "the copier process of lunfs migrate (it starts one itself); run it by hand on any host that can read the pool's drives",
      )
      .argument('<dir>', 'pool directory', parseDirectory)
      .argument('<lun>', 'the LUN to copy')
      .option('--to <target>', 'a file (made if missing) or a block device')
      .option('--to-pool <dir>', 'a pool to copy into, as a LUN (made if missing)')
      .option('--as <name>', 'the LUN name in --to-pool (default: the same name)')
      .option('--force', 'overwrite a target file that is not empty')
      .option('--restart', 'start over with a full copy (default: resume an interrupted one)')
      .option(
        '--snapshot <name>',
        'take snapshot LUN@NAME at the cut-over: what the target holds when the migration ends',
      )
      .addOption(new Option('--small <bytes>', 'pass size that ends the passes').hideHelp())
      .addOption(new Option('--socket <path>', "the server's control socket").hideHelp());
    command.action(
      async (
        directory: string,
        lunName: string,
        options: {
          to?: string;
          toPool?: string;
          as?: string;
          force?: boolean;
          restart?: boolean;
          small?: string;
          socket?: string;
          snapshot?: string;
        },
      ) => {
        const migrateOptions = {
          directory,
          lun: lunName,
          target: migrateTarget(options, lunName),
          restart: options.restart === true,
          ...(options.small !== undefined ? { smallBytes: Number(options.small) } : {}),
          ...(options.snapshot !== undefined ? { snapshot: options.snapshot } : {}),
        };
        if (name === 'migrate') {
          await runMigrate(migrateOptions);
          return;
        }
        const report = await runCopierCommand({
          ...migrateOptions,
          ...(options.socket !== undefined ? { socket: options.socket } : {}),
        });
        console.log(describeReport(report));
      },
    );
  }

  program
    .command('clone')
    .description(
      'make a snapclone NAME of SOURCE (a LUN, a clone, or a snapshot LUN@SNAP): clones/NAME at once, a full independent LUN (luns/NAME) once its background copy ends (also: touch MOUNTPOINT/control/snapclone/SOURCE@NAME)',
    )
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<source>', 'LUN, clone, or LUN@SNAP')
    .argument('<name>', 'name of the new clone')
    .option('--wait', 'show the background copy with a progress bar until it ends', false)
    .action(async (directory: string, source: string, name: string, options: { wait: boolean }) => {
      // Without a mount the copy runs in this process, which waits for it.
      const wait = options.wait || mountSocket(directory) === undefined;
      const job = await runJob(
        directory,
        { command: 'clone-create', source, name },
        wait,
        `copy of clone ${name}`,
      );
      if (job.state === 'failed') throw new LunfsError('EIO', `clone ${name}: ${job.error}`);
      console.log(
        job.state === 'done'
          ? `clone ${name} of ${source} made: an independent LUN (luns/${name})`
          : `clone ${name} of ${source} made (clones/${name}); its background copy runs: lunfs status`,
      );
    });

  const drive = program.command('drive').description('replace failed drives');
  drive
    .command('replace')
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<old>', 'the failed drive: its index (see lunfs status) or its path')
    .argument(
      '<new>',
      'the new drive: a file or block device (a file that does not exist is created, sparse, of the old size)',
    )
    .option('--no-wait', 'return once the rebuild has started')
    .option(
      '--force',
      'overwrite a new drive that carries a lunfs drive label (a drive of another pool, or an old drive of this one)',
    )
    .description(
      'put a new drive in the place of a failed one and rebuild it from redundancy; LUNs stay in use',
    )
    .action(
      async (
        directory: string,
        old: string,
        newPath: string,
        options: { wait: boolean; force?: boolean },
      ) => {
        const job = await runJob(
          directory,
          {
            command: 'drive-replace',
            old,
            newPath: resolve(newPath),
            force: options.force === true,
          },
          options.wait,
          `rebuild of drive ${old}`,
        );
        if (job.state === 'failed') throw new LunfsError('EIO', `rebuild failed: ${job.error}`);
        console.log(
          job.state === 'done'
            ? `drive ${job.drive} rebuilt onto ${resolve(newPath)}`
            : `rebuild of drive ${job.drive} started (job ${job.id}); lunfs status shows its progress`,
        );
      },
    );

  program
    .command('scrub')
    .argument('<dir>', 'pool directory', parseDirectory)
    .option('--no-wait', 'return once the scrub has started')
    .option('--json', 'print the report as JSON')
    .description(
      'read every drive, verify checksums, parity and mirrors, repair what redundancy allows, report',
    )
    .action(async (directory: string, options: { wait: boolean; json?: boolean }) => {
      const job = await runJob(directory, { command: 'scrub' }, options.wait, 'scrub');
      if (job.state === 'failed') throw new LunfsError('EIO', `scrub failed: ${job.error}`);
      if (job.state !== 'done') {
        console.log(`scrub started (job ${job.id}); lunfs status shows its progress`);
        return;
      }
      const report = job.result as ScrubReport;
      if (options.json) console.log(JSON.stringify(report, null, 2));
      else
        console.log(
          `scrub: ${report.rstores} RStores, ${report.rows} rows checked${report.degradedRows > 0 ? ` (${report.degradedRows} not checked: a member is out of service)` : ''}; ${report.checksumRepairs} checksum repairs, ${report.parityRepairs} parity/mirror repairs, ${report.unrepairable} unrepairable`,
        );
      if (report.unrepairable > 0) process.exitCode = 1;
    });

  program
    .command('status')
    .description('print the pool, its drives, LUNs, snapshots, jobs and integrity counters')
    .argument('<dir>', 'pool directory', parseDirectory)
    .option('--json', 'JSON output (documented in README)')
    .action(async (directory: string, options: { json?: boolean }) => {
      const status = (await withPool(directory, { command: 'status' })) as StatusJson;
      if (options.json) console.log(JSON.stringify(status, null, 2));
      else printStatus(directory, status);
    });

  program
    .command('mount')
    .argument('<dir>', 'pool directory', parseDirectory)
    .argument('<mountpoint>', 'an empty directory (created if missing)', parseDirectory)
    .option('--cache-size <size>', 'write-back cache size', '256M')
    .option('--drive <path>', 'drive paths in order (default: from DIR/pool.json)', collect, [])
    .addOption(
      new Option(
        '--drive-io <mode>',
        'drive I/O: inline for files on tmpfs, thread pool otherwise (auto)',
      )
        .choices(['auto', 'async', 'inline'])
        .default('auto'),
    )
    .option(
      '--force-degraded',
      'mount although a RAID-5 drive went missing across an unclean shutdown (its data written back from parity may be wrong), or take back a RAID-0 drive that missed writes or failed with an I/O error (accepting the loss of those writes)',
    )
    .addOption(
      new Option(
        '--front <front>',
        "FUSE front: native (lunfs's own on libfuse3: parallel, 1 MiB requests, discard), fuse-native (libfuse 2), or auto: native where it is built, else fuse-native",
      )
        .choices(['auto', 'native', 'fuse-native'])
        .default('auto'),
    )
    .description(
      'serve the pool under MOUNTPOINT in the foreground; SIGINT/SIGTERM (or lunfs unmount) flush and unmount, refused while LUN or snapshot files are open',
    )
    .action(
      async (
        directory: string,
        mountpoint: string,
        options: {
          cacheSize: string;
          drive: string[];
          driveIo: DriveIoMode;
          forceDegraded?: boolean;
          front: FrontKind;
        },
      ) => {
        await runMount({
          directory,
          mountpoint,
          cacheBytes: parseCacheSize(options.cacheSize),
          drivePaths: options.drive,
          ioMode: options.driveIo,
          forceDegraded: options.forceDegraded,
          front: options.front,
        });
      },
    );
  program
    .command('unmount')
    .argument('<dir>', 'pool directory', parseDirectory)
    .option(
      '--force',
      'stop although LUN or snapshot files are open through the mount (their users get I/O errors)',
    )
    .description(
      'stop the mount of a pool cleanly, as SIGTERM does: refused while LUN or snapshot files are open through it',
    )
    .action(async (directory: string, options: { force?: boolean }) => {
      console.log(`lunfs: ${await runUnmount(directory, options.force === true)}`);
    });
  oneLineUsageErrors(program, 'lunfs');
  return program;
}

function printSnapshots(status: StatusJson): void {
  if (status.snapshots.length === 0) {
    console.log('no snapshots');
    return;
  }
  console.log(
    [
      'SNAPSHOT'.padEnd(32),
      'SIZE'.padStart(10),
      'CREATED'.padEnd(24),
      'STATE'.padEnd(8),
      'EXCLUSIVE'.padStart(10),
      'SHARED'.padStart(10),
      'RESERVED',
    ].join(' '),
  );
  // The tree: each snapshot under the volume it was taken of, indented by its depth.
  const byName = new Map(status.snapshots.map((entry) => [entry.name, entry]));
  const ordered: typeof status.snapshots = [];
  const visit = (entry: (typeof status.snapshots)[number]): void => {
    ordered.push(entry);
    for (const name of entry.snapshotsOf ?? []) {
      const child = byName.get(name);
      if (child) visit(child);
    }
  };
  for (const entry of status.snapshots) if (entry.source.startsWith('lun:')) visit(entry);
  for (const entry of status.snapshots) if (!ordered.includes(entry)) ordered.push(entry);
  for (const entry of ordered) {
    const indent = '  '.repeat(Math.max(0, (entry.depth ?? 1) - 1));
    console.log(
      [
        (indent + entry.name).padEnd(32),
        formatBytes(entry.sizeBytes).padStart(10),
        entry.createdAt.padEnd(24),
        entry.state.padEnd(8),
        formatBytes(entry.exclusiveBytes).padStart(10),
        formatBytes(entry.sharedBytes).padStart(10),
        entry.reserved ? 'yes' : 'no',
      ].join(' ') +
        (entry.source.startsWith('lun:') ? '' : `  (of ${entry.source})`) +
        (entry.invalidReason ? `  (${entry.invalidReason})` : ''),
    );
  }
}

/**
 * Where an export writes: a new file (an existing one is refused, so that no file is overwritten
 * by mistake), or an existing device or pipe (/dev/null, a FIFO).
 */
async function openExportOutput(path: string): Promise<FileHandle> {
  try {
    if (!(await stat(path)).isFile()) return await open(path, 'w');
    throw new LunfsError('EEXIST', `${path} exists: give a new file name (or remove it first)`);
  } catch (error) {
    if (isLunfsError(error)) throw error;
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new LunfsError('EINVAL', `cannot write ${path}: ${(error as Error).message}`);
  }
  try {
    return await open(path, 'wx');
  } catch (error) {
    throw new LunfsError('EINVAL', `cannot create ${path}: ${(error as Error).message}`);
  }
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // commander printed the help, the version or the one-line usage error
      return error.exitCode === 0 ? 0 : 2;
    }
    if (isLunfsError(error)) {
      console.error(`lunfs: ${error.message}`);
      return badInputCodes.includes(error.code) ? 2 : 1;
    }
    console.error(`lunfs: unexpected error: ${(error as Error).stack ?? String(error)}`);
    return 1;
  }
}
