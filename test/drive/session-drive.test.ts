// SessionDrive.delayTurns, the model test's seeded drive timing: operations issued together reach
// the drive, and complete, in the order their delays give, not the order they were issued; a
// fence that comes during a delay stops the operation before it reaches the drive.

import { describe, expect, it } from 'vitest';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import { SessionDrive } from '../support/session-drive.js';

describe('SessionDrive timing', () => {
  it('completes operations issued together in the order of their delays', async () => {
    const view = new SessionDrive(new MemoryDrive('timed', 64 * 1024));
    const delays = [3, 0, 1];
    view.delayTurns = () => delays.shift() ?? 0;
    const done: string[] = [];
    await Promise.all([
      view.write(0, Buffer.alloc(4096, 1)).then(() => done.push('first')),
      view.write(4096, Buffer.alloc(4096, 2)).then(() => done.push('second')),
      view.write(8192, Buffer.alloc(4096, 3)).then(() => done.push('third')),
    ]);
    expect(done).toEqual(['second', 'third', 'first']);
    const back = Buffer.alloc(12288);
    await view.read(0, back);
    expect([back[0], back[4096], back[8192]]).toEqual([1, 2, 3]);
  });

  it('a write whose view is fenced during its delay never reaches the drive', async () => {
    const inner = new MemoryDrive('fenced', 64 * 1024);
    const view = new SessionDrive(inner);
    view.delayTurns = () => 2;
    const writing = view.write(0, Buffer.alloc(4096, 7));
    view.fence();
    await expect(writing).rejects.toThrow();
    const back = Buffer.alloc(4096);
    await new SessionDrive(inner).read(0, back);
    expect(back.every((byte) => byte === 0)).toBe(true);
  });
});
