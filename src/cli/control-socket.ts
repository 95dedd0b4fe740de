// The control socket: while a pool is mounted, CLI commands that read or change it go to the
// process that owns it, as one JSON request and one JSON answer per line, so two processes never
// write one pool.
//
// It serves the mount's own user and root only: the socket file is created 0600 (whatever the
// umask) in a directory of the owner's, and every connection's peer credentials (SO_PEERCRED)
// are checked before a request is read; anyone else gets an EACCES answer and the connection is
// closed. Without the native addon the check falls back to the file modes alone.

import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { chmodSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { peerCredentials } from '../native/os-calls.js';
import { privateFileMode } from '../volume/pool-directory.js';
import { isLunfsError, LunfsError, type LunfsErrorCode } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { Controller } from '../volume/controller.js';
import { requestUnmount } from './mount-stop.js';
import { exportVolume, importVolume } from '../volume/volume-export.js';
import {
  endFrame,
  failedFrame,
  FrameDecoder,
  frameOf,
  markerFrame,
  writeWithBackpressure,
} from './stream-frames.js';

export interface ControlRequest {
  command:
    | 'status'
    | 'lun-create'
    | 'lun-rm'
    | 'lun-resize'
    | 'snapshot-create'
    | 'snapshot-rm'
    | 'snapshot-rollback'
    | 'clone-create'
    | 'snappoint-create'
    | 'snappoint-rm'
    | 'snappoint-ls'
    | 'export'
    | 'import'
    | 'migrate-pass'
    | 'migrate-ack'
    | 'migrate-finish'
    | 'migrate-cancel'
    | 'migrate-release'
    | 'activity'
    | 'drive-replace'
    | 'scrub'
    | 'unmount';
  name?: string;
  sizeBytes?: number;
  reserve?: boolean;
  /**
   * snapshot-create: take the snapshot of this snapshot of the same LUN (its NAME). clone-create:
   * what to clone (LUN or LUN@SNAP).
   */
  source?: string;
  /** drive-replace: the failed drive (index or path) and the new drive's path. */
  old?: string;
  newPath?: string;
  /**
   * drive-replace: overwrite a target that carries a lunfs drive label. unmount: stop although
   * files are open through the mount.
   */
  force?: boolean;
  /**
   * drive-replace, scrub: answer when the job has ended (a local open must), not when it started.
   */
  wait?: boolean;
  /** export: the base of an incremental stream (a snapshot or snap-point map of the LUN). */
  since?: string;
  /** migrate-pass: start over (a full pass), or the final pass (writes held). */
  restart?: boolean;
  final?: boolean;
  /** migrate-pass: ranges the copier could not read before, to copy in this pass too. */
  extra?: Array<[number, number]>;
  /** migrate-pass (final): the snapshot to take at the cut-over. */
  snapshot?: string;
  /** migrate-ack: the maps the acknowledged pass covered. */
  covers?: string[];
}

/** The byte stream of an export (where it goes) or an import (where it comes from). */
export interface ControlIo {
  write?: (chunk: Buffer) => Promise<void>;
  input?: AsyncIterable<Buffer | string>;
}

/** Carries out one request on a controller: the same code for the socket and for a local open. */
export async function runControlRequest(
  controller: Controller,
  request: ControlRequest,
  io: ControlIo = {},
): Promise<unknown> {
  switch (request.command) {
    case 'export':
      if (!io.write) throw new LunfsError('EINVAL', 'export: no stream to write to');
      return exportVolume(
        controller,
        String(request.name),
        typeof request.since === 'string' ? { since: request.since } : {},
        io.write,
      );
    case 'import':
      if (!io.input) throw new LunfsError('EINVAL', 'import: no stream to read');
      return importVolume(controller, String(request.name), io.input);
    case 'migrate-pass':
      return controller.migrations.pass(String(request.name), {
        restart: request.restart === true,
        final: request.final === true,
        ...(typeof request.snapshot === 'string' ? { snapshot: request.snapshot } : {}),
        ...(Array.isArray(request.extra) ? { extra: request.extra } : {}),
      });
    case 'migrate-ack':
      await controller.migrations.ack(
        String(request.name),
        Array.isArray(request.covers) ? request.covers.map(String) : [],
      );
      return null;
    case 'migrate-finish':
      return controller.migrations.finish(String(request.name));
    case 'migrate-cancel':
      await controller.migrations.cancel(String(request.name));
      return null;
    case 'activity':
      // a copier paces itself by it (copier.ts)
      return { foregroundOps: controller.foregroundOps() };
    case 'migrate-release':
      controller.migrations.abortFinal(String(request.name));
      return null;
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
      return controller.createSnapshot(String(request.name), {
        reserve: request.reserve === true,
        ...(typeof request.source === 'string' ? { source: request.source } : {}),
      });
    case 'snapshot-rm':
      await controller.removeSnapshot(String(request.name));
      return null;
    case 'snapshot-rollback':
      return controller.rollback(String(request.name));
    case 'snappoint-create':
      return controller.snapPoints.create(String(request.name));
    case 'snappoint-rm':
      await controller.snapPoints.remove(String(request.name));
      return null;
    case 'snappoint-ls':
      return typeof request.name === 'string'
        ? { extents: controller.snapPoints.extents(request.name) }
        : controller.snapPoints.list();
    case 'clone-create': {
      const job = await controller.createClone(String(request.source), String(request.name));
      return request.wait ? controller.drives.jobs.wait(job.id) : job;
    }
    case 'drive-replace': {
      const job = await controller.drives.replace(String(request.old), String(request.newPath), {
        force: request.force === true,
      });
      return request.wait ? controller.drives.jobs.wait(job.id) : job;
    }
    case 'scrub': {
      const job = controller.drives.scrub();
      return request.wait ? controller.drives.jobs.wait(job.id) : job;
    }
    case 'unmount':
      return requestUnmount(controller, request.force === true);
    default:
      throw new LunfsError(
        'EINVAL',
        `unknown control command ${JSON.stringify((request as { command?: unknown }).command)}`,
      );
  }
}

type ControlAnswer =
  { ok: true; result: unknown } | { ok: false; code: LunfsErrorCode; message: string };

export async function serveControlSocket(
  path: string,
  controller: Controller,
  log: Logger,
): Promise<Server> {
  // left by a killed mount: we hold the pool lock, so it is not in use
  await rm(path, { force: true });
  const ownerUid = process.getuid?.() ?? 0;
  const server = createServer((socket) => {
    socket.on('error', (error) => log.debug({ err: error }, 'control socket client error'));
    const refusal = refuseStranger(socket, ownerUid, path);
    if (refusal !== undefined) {
      log.warn({ peer: refusal.peer }, 'control socket: refused a connection from another user');
      socket.end(JSON.stringify(refusal.answer) + '\n');
      return;
    }
    let head = Buffer.alloc(0);
    let decoder: FrameDecoder | undefined;
    const reply = (answered: ControlAnswer): void => {
      socket.end(JSON.stringify(answered) + '\n');
    };
    socket.on('data', (chunk: Buffer) => {
      if (decoder) return decoder.push(chunk);
      head = Buffer.concat([head, chunk]);
      const newline = head.indexOf(10);
      if (newline < 0) return;
      const line = head.subarray(0, newline).toString('utf8');
      const rest = head.subarray(newline + 1);
      head = Buffer.alloc(0);
      let request: ControlRequest;
      try {
        request = JSON.parse(line) as ControlRequest;
      } catch {
        return reply({ ok: false, code: 'EINVAL', message: 'the request is not JSON' });
      }
      if (request.command === 'import') {
        // the stream follows the request line, in frames (stream-frames.ts)
        const frames = new FrameDecoder(
          () => socket.pause(),
          () => socket.resume(),
        );
        decoder = frames;
        frames.push(rest);
        socket.on('end', () =>
          frames.fail(new LunfsError('EINVAL', 'the stream ended before its last frame')),
        );
        void answer(request, controller, { input: frames }).then(reply);
      } else if (request.command === 'export') {
        const write = (data: Buffer): Promise<void> => writeWithBackpressure(socket, frameOf(data));
        void answer(request, controller, { write }).then((answered) => {
          if (!socket.destroyed) socket.write(markerFrame(answered.ok ? endFrame : failedFrame));
          reply(answered);
        });
      } else void answer(request, controller).then(reply);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new LunfsError('EBUSY', `cannot serve the control socket ${path}: ${error.message}`, {
          cause: error,
        }),
      ),
    );
    // The bind creates the socket file with the process umask: owner-only from the start, so
    // there is no moment where another user could connect (the peer check would refuse them too).
    const umask = process.umask(0o177);
    try {
      server.listen(path, resolve);
    } finally {
      process.umask(umask);
    }
  });
  chmodSync(path, privateFileMode); // in case the bind happened later than the listen call
  return server;
}

/** An EACCES answer for a peer that is neither the owner nor root; undefined to serve it. */
function refuseStranger(
  socket: Socket,
  ownerUid: number,
  path: string,
): { answer: ControlAnswer; peer: unknown } | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  let peer: ReturnType<typeof peerCredentials>;
  try {
    if (fd === undefined || fd < 0) throw new Error('the connection has no file descriptor');
    peer = peerCredentials(fd);
  } catch (error) {
    // Fail closed: a peer we cannot name is not served (it may also just have gone away).
    return {
      peer: (error as Error).message,
      answer: {
        ok: false,
        code: 'EACCES',
        message: `permission denied: the control socket ${path} could not check who is connecting (${(error as Error).message})`,
      },
    };
  }
  if (peer === null || peer.uid === ownerUid || peer.uid === 0) return undefined;
  return {
    peer,
    answer: {
      ok: false,
      code: 'EACCES',
      message: `permission denied: the control socket ${path} serves uid ${ownerUid} (the user that mounted the pool) and root only, not uid ${peer.uid}`,
    },
  };
}

async function answer(
  request: ControlRequest,
  controller: Controller,
  io: ControlIo = {},
): Promise<ControlAnswer> {
  try {
    return { ok: true, result: await runControlRequest(controller, request, io) };
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
    socket.on('error', (error) =>
      reject(
        new LunfsError(
          'EBUSY',
          `the pool is mounted but its control socket ${path} does not answer: ${error.message}`,
        ),
      ),
    );
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

/**
 * An export or import through the mount's socket: the request line, then the stream in frames
 * (import: sent from io.input; export: received into io.write), then the mount's answer.
 */
export function sendStreamingRequest(
  path: string,
  request: ControlRequest,
  io: ControlIo,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let settled = false;
    const finish = (error: Error | undefined, result?: unknown): void => {
      if (settled) return;
      settled = true;
      if (error) reject(error);
      else resolve(result);
      socket.destroy();
    };
    const parseAnswer = (text: string): void => {
      try {
        const reply = JSON.parse(text) as ControlAnswer;
        if (reply.ok) finish(undefined, reply.result);
        else finish(new LunfsError(reply.code, reply.message));
      } catch {
        finish(new LunfsError('EIO', `bad answer from the control socket: ${text.slice(0, 200)}`));
      }
    };
    socket.on('error', (error) => {
      if (!settled)
        finish(
          new LunfsError(
            'EBUSY',
            `the pool is mounted but its control socket ${path} does not answer: ${error.message}`,
          ),
        );
    });
    if (request.command === 'export') {
      const frames = new FrameDecoder(
        () => socket.pause(),
        () => socket.resume(),
      );
      socket.on('data', (chunk: Buffer) => frames.push(chunk));
      socket.on('end', () => {
        if (frames.marker === undefined)
          frames.fail(new LunfsError('EIO', 'the mount stopped sending the stream part-way'));
      });
      void (async () => {
        try {
          for await (const payload of frames) await io.write!(payload);
        } catch (error) {
          return finish(error as Error);
        }
        if (socket.readableEnded) parseAnswer(frames.rest.toString('utf8'));
        else socket.once('end', () => parseAnswer(frames.rest.toString('utf8')));
      })();
      socket.on('connect', () => socket.write(JSON.stringify(request) + '\n'));
      return;
    }
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
    socket.on('end', () => parseAnswer(text));
    socket.on('connect', () => {
      socket.write(JSON.stringify(request) + '\n');
      void (async () => {
        try {
          for await (const chunk of io.input!) {
            if (settled || socket.destroyed) return;
            const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
            if (data.length > 0) await writeWithBackpressure(socket, frameOf(data));
          }
          await writeWithBackpressure(socket, markerFrame(endFrame));
        } catch (error) {
          // The mount may have answered (a refusal) and closed while this still sent: its answer
          // says why. A failure to read the input is this side's.
          if (!socket.destroyed && !(error as Error).message.includes('connection'))
            finish(error as Error);
        }
      })();
    });
  });
}
