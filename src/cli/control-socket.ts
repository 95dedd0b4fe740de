// The control socket: while a pool is mounted, CLI commands that read or change it go to the
// process that owns it, as one JSON request and one JSON answer per line, so two processes never
// write one pool.

import { createConnection, createServer, type Server } from 'node:net';
import { rm } from 'node:fs/promises';
import { isLunfsError, LunfsError, type LunfsErrorCode } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { Controller } from '../volume/controller.js';
import { requestUnmount } from './mount-stop.js';

export interface ControlRequest {
  command: 'status' | 'lun-create' | 'lun-rm' | 'lun-resize' | 'snapshot-create' | 'snapshot-rm' | 'drive-replace' | 'scrub' | 'unmount';
  name?: string;
  sizeBytes?: number;
  reserve?: boolean;
  /** drive-replace: the failed drive (index or path) and the new drive's path. */
  old?: string;
  newPath?: string;
  /** drive-replace, scrub: answer when the job has ended (a local open must), not when it started. */
  wait?: boolean;
  /** unmount: stop although files are open through the mount. */
  force?: boolean;
}

/** Carries out one request on a controller: the same code for the socket and for a local open. */
export async function runControlRequest(controller: Controller, request: ControlRequest): Promise<unknown> {
  switch (request.command) {
    case 'status':
      return controller.status();
    case 'lun-create':
      await controller.createLun(String(request.name), Number(request.sizeBytes));
      return null;
    case 'lun-rm':
      await controller.removeLun(String(request.name));
      return null;
    case 'lun-resize':
      await controller.resizeLun(String(request.name), Number(request.sizeBytes));
      return null;
    case 'snapshot-create':
      return controller.createSnapshot(String(request.name), { reserve: request.reserve === true });
    case 'snapshot-rm':
      await controller.removeSnapshot(String(request.name));
      return null;
    case 'drive-replace': {
      const job = await controller.drives.replace(String(request.old), String(request.newPath));
      return request.wait ? controller.drives.jobs.wait(job.id) : job;
    }
    case 'scrub': {
      const job = controller.drives.scrub();
      return request.wait ? controller.drives.jobs.wait(job.id) : job;
    }
    case 'unmount':
      return requestUnmount(controller, request.force === true);
    default:
      throw new LunfsError('EINVAL', `unknown control command ${JSON.stringify((request as { command?: unknown }).command)}`);
  }
}

type ControlAnswer = { ok: true; result: unknown } | { ok: false; code: LunfsErrorCode; message: string };

export async function serveControlSocket(path: string, controller: Controller, log: Logger): Promise<Server> {
  await rm(path, { force: true });
  const server = createServer((socket) => {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      const line = buffered.slice(0, newline);
      buffered = '';
      void answer(line, controller).then((reply) => socket.end(JSON.stringify(reply) + '\n'));
    });
    socket.on('error', (error) => log.debug({ err: error }, 'control socket client error'));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  return server;
}

async function answer(line: string, controller: Controller): Promise<ControlAnswer> {
  try {
    const request = JSON.parse(line) as ControlRequest;
    return { ok: true, result: await runControlRequest(controller, request) };
  } catch (error) {
    if (isLunfsError(error)) return { ok: false, code: error.code, message: error.message };
    return { ok: false, code: 'EIO', message: (error as Error).message };
  }
}

export function sendControlRequest(path: string, request: ControlRequest): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let text = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(JSON.stringify(request) + '\n'));
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', (error) => reject(new LunfsError('EBUSY', `the pool is mounted but its control socket ${path} does not answer: ${error.message}`)));
    socket.on('end', () => {
      try {
        const reply = JSON.parse(text) as ControlAnswer;
        if (reply.ok) resolve(reply.result);
        else reject(new LunfsError(reply.code, reply.message));
      } catch {
        reject(new LunfsError('EIO', `bad answer from the control socket: ${text.slice(0, 200)}`));
      }
    });
  });
}
