// Long jobs from the CLI (rebuild, scrub) with a progress bar. When the pool is mounted the job
// runs in the mount's process: the request starts it and the bar follows its progress in the
// status. When it is not, the job runs here, and the bar follows it in this process.
// cli-progress draws the bar (it handles terminal width, redraw and non-TTY output).

import { SingleBar, Presets } from 'cli-progress';
import { resolve } from 'node:path';
import type { JobStatus } from '../volume/background-jobs.js';
import type { StatusJson } from '../volume/controller.js';
import { sendControlRequest, type ControlRequest } from './control-socket.js';
import { mountSocket, withPool } from './pool-access.js';

const pollIntervalMs = 250;

/** Runs a job request; with wait, shows its progress until it ends and returns its final status. */
export async function runJob(
  directory: string,
  request: ControlRequest,
  wait: boolean,
  title: string,
): Promise<JobStatus> {
  const absolute = resolve(directory);
  const socket = mountSocket(absolute);
  if (!wait) return (await withPool(absolute, { ...request, wait: false })) as JobStatus;
  const bar = new SingleBar(
    {
      format: `${title} [{bar}] {percentage}% | {value}/{total} MiB`,
      hideCursor: true,
      noTTYOutput: true,
      notTTYSchedule: 2000,
      stream: process.stderr,
    },
    Presets.shades_classic,
  );
  // The bar's redraw timer keeps the process alive: it must stop on every way out, a pool that
  // fails to open or a request the mount refuses included, or the CLI prints the error and hangs.
  try {
    if (socket === undefined) {
      // Local: the job runs in this process (withPool waits for it); the bar follows the pool's
      // status.
      // The bar starts with the job's first progress: a request refused before it draws none.
      const job = (await withPool(absolute, { ...request, wait: true }, (status) =>
        follow(bar, status),
      )) as JobStatus;
      finish(bar, job);
      return job;
    }
    const started = (await sendControlRequest(socket, { ...request, wait: false })) as JobStatus;
    bar.start(Math.max(1, mib(started.totalBytes)), 0);
    for (;;) {
      const status = (await sendControlRequest(socket, { command: 'status' })) as StatusJson;
      const job = status.jobs.find((candidate) => candidate.id === started.id);
      if (!job) throw new Error(`job ${started.id} is gone from the mount's status`);
      bar.setTotal(Math.max(1, mib(job.totalBytes)));
      bar.update(mib(job.doneBytes));
      if (job.state !== 'running') {
        finish(bar, job);
        return job;
      }
      await new Promise((resolveWait) => setTimeout(resolveWait, pollIntervalMs));
    }
  } finally {
    bar.stop(); // idempotent after finish()
  }
}

function follow(bar: SingleBar, status: StatusJson): void {
  const job = status.jobs.find((candidate) => candidate.state === 'running');
  if (!job) return;
  if (!bar.isActive) bar.start(1, 0);
  bar.setTotal(Math.max(1, mib(job.totalBytes)));
  bar.update(mib(job.doneBytes));
}

function finish(bar: SingleBar, job: JobStatus): void {
  if (!bar.isActive) bar.start(1, 0);
  bar.setTotal(Math.max(1, mib(job.totalBytes)));
  bar.update(job.state === 'done' ? Math.max(1, mib(job.totalBytes)) : mib(job.doneBytes));
  bar.stop();
}

function mib(bytes: number): number {
  return Math.round(bytes / (1024 * 1024));
}
