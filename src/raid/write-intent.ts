// The write-intent record (as md's write-intent bitmap, one bit per RStore): before the first
// write to an RStore since it was last known consistent, the pool commits an 'rstore-intent' op
// that marks it dirty; writes to a dirty RStore go ahead without waiting. An RStore idle for
// cleanAfterMs is marked clean again by a later commit, after that commit's flush has made its
// data, parity, mirrors and checksums durable. After an unclean shutdown only the RStores marked
// dirty can hold a row whose data and parity (or two mirrors, or a block and its checksum)
// disagree; the pool resynchronises exactly those before it serves anything, so a crash between a
// data write and its parity write never reaches a later degraded read (the RAID-5 write hole).
//
// States per RStore: clean -> marking (op queued, commit under way) -> dirty -> clearing (an op
// that cleans it is in a commit) -> clean. A write that finds it marking or clearing waits for
// that commit and marks it again if needed, so no write ever runs on an RStore whose durable
// record says clean.

import type { Clock } from '../util/clock.js';

type IntentState = 'clean' | 'marking' | 'dirty' | 'clearing';

/**
 * After this long without a write, a dirty RStore is marked clean at the next commit (md's default
 * bitmap delay is 5 s).
 */
export const intentCleanAfterMs = 5000;

interface RStoreIntent {
  state: IntentState;
  inFlight: number;
  lastWriteMs: number;
  /** Settles when the commit that marks or clears it is done. */
  transition?: Promise<void>;
}

export class WriteIntent {
  private readonly intents = new Map<number, RStoreIntent>();

  constructor(
    dirtyAtOpen: Iterable<number>,
    private readonly clock: Clock,
    /** Queues the op and commits it; resolves once it is durable. */
    private readonly commitIntent: (rstoreIds: number[], dirty: boolean) => Promise<void>,
  ) {
    for (const rstoreId of dirtyAtOpen)
      this.intents.set(rstoreId, { state: 'dirty', inFlight: 0, lastWriteMs: clock.nowMs() });
  }

  /** Call before writing an RStore; undefined (no wait) when it is durably dirty already. */
  beforeWrite(rstoreId: number): Promise<void> | undefined {
    const intent = this.intentOf(rstoreId);
    intent.lastWriteMs = this.clock.nowMs();
    if (intent.state === 'dirty') {
      intent.inFlight += 1;
      return undefined;
    }
    return this.markDirty(rstoreId, intent);
  }

  /** Call when a write that beforeWrite admitted has finished (or failed). */
  afterWrite(rstoreId: number): void {
    const intent = this.intentOf(rstoreId);
    intent.inFlight -= 1;
    intent.lastWriteMs = this.clock.nowMs();
  }

  /**
   * RStores to mark clean with this commit: dirty, no write in flight, idle long enough. They are
   * 'clearing' until done(ok) is called after the commit (ok: it was durable).
   */
  takeIdle(): { rstoreIds: number[]; done: (ok: boolean) => void } {
    const now = this.clock.nowMs();
    const picked: number[] = [];
    let settle!: () => void;
    const transition = new Promise<void>((resolve) => (settle = resolve));
    for (const [rstoreId, intent] of this.intents) {
      if (
        intent.state !== 'dirty' ||
        intent.inFlight > 0 ||
        now - intent.lastWriteMs < intentCleanAfterMs
      )
        continue;
      intent.state = 'clearing';
      intent.transition = transition;
      picked.push(rstoreId);
    }
    return {
      rstoreIds: picked,
      done: (ok) => {
        for (const rstoreId of picked) {
          const intent = this.intentOf(rstoreId);
          intent.state = ok ? 'clean' : 'dirty';
          intent.transition = undefined;
        }
        settle();
      },
    };
  }

  /** Dirty RStores (durably or on the way): for status. */
  get dirtyCount(): number {
    let count = 0;
    for (const intent of this.intents.values()) if (intent.state !== 'clean') count += 1;
    return count;
  }

  private async markDirty(rstoreId: number, intent: RStoreIntent): Promise<void> {
    for (;;) {
      if (intent.state === 'dirty') break;
      if (intent.state === 'marking' || intent.state === 'clearing') {
        await intent.transition;
        continue;
      }
      intent.state = 'marking';
      const transition = this.commitIntent([rstoreId], true);
      intent.transition = transition.then(
        () => {},
        () => {},
      );
      try {
        await transition;
        intent.state = 'dirty';
      } catch (error) {
        intent.state = 'clean';
        throw error;
      } finally {
        intent.transition = undefined;
      }
    }
    intent.inFlight += 1;
  }

  private intentOf(rstoreId: number): RStoreIntent {
    let intent = this.intents.get(rstoreId);
    if (!intent)
      this.intents.set(rstoreId, (intent = { state: 'clean', inFlight: 0, lastWriteMs: 0 }));
    return intent;
  }
}
