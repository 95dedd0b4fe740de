// pino logging: JSON lines on stderr, one child logger per layer. Per-I/O logging only at debug.

import { pino, type Logger } from 'pino';

export type { Logger };

let rootLogger: Logger = pino(
  { level: process.env.LUNFS_LOG_LEVEL ?? 'silent' },
  pino.destination(2),
);

export function configureLogging(level: string): Logger {
  rootLogger = pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
  return rootLogger;
}

export function layerLogger(layer: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger.child({ layer, ...bindings });
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
