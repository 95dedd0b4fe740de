// Space accounting of a snapshot target volume: which data slots are in use and which are free.
// A slot is referenced by any number of log files (a preserved chunk shared by snapshots); it is
// free again when none points at it. A slot written for a preservation or redirection whose
// journal record is not committed yet is pending: in use, though no log file names it.
//
// Invariants:
// - Free slots are taken lowest first (a heap), and the high-water mark (nextSlot) is trimmed when
//   units are released, so the slots in use stay at the front of the data area.
// - A slot is freed only when its last reference goes (unreference asserts the count), or when it
//   was pending and no record will name it (abandon).

import { assert } from '../util/assert.js';
import { zeroSlot } from './log-file.js';
import type { TargetState } from './target-metadata.js';

/** The smallest free slot first, so the used part of the target stays compact. */
class SlotHeap {
  private readonly items: number[] = [];
  get size(): number {
    return this.items.length;
  }
  push(slot: number): void {
    const items = this.items;
    items.push(slot);
    let index = items.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (items[parent]! <= items[index]!) break;
      [items[parent], items[index]] = [items[index]!, items[parent]!];
      index = parent;
    }
  }
  pop(): number | undefined {
    const items = this.items;
    if (items.length === 0) return undefined;
    const top = items[0]!;
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      let index = 0;
      for (;;) {
        const left = index * 2 + 1;
        const right = left + 1;
        let smallest = index;
        if (left < items.length && items[left]! < items[smallest]!) smallest = left;
        if (right < items.length && items[right]! < items[smallest]!) smallest = right;
        if (smallest === index) break;
        [items[smallest], items[index]] = [items[index]!, items[smallest]!];
        index = smallest;
      }
    }
    return top;
  }
}

export class TargetSlots {
  private readonly references = new Map<number, number>();
  private readonly freeSlots = new SlotHeap();
  private readonly freeSet = new Set<number>();
  /** Slots written for preservations or redirections whose record is not committed yet: in use. */
  private readonly pendingSlots = new Set<number>();
  private nextSlot = 0;

  /** Counts the references of every log file in state; the slots below the highest are free. */
  constructor(state: TargetState) {
    for (const image of state.snapshots.values())
      image.log.forEach((_, slot) => this.reference(slot));
    let highest = -1;
    for (const slot of this.references.keys()) highest = Math.max(highest, slot);
    this.nextSlot = highest + 1;
    for (let slot = 0; slot < this.nextSlot; slot += 1)
      if (!this.references.has(slot)) this.markFree(slot);
  }

  /** Slots in use (each chunkBytes). */
  get usedCount(): number {
    return this.references.size;
  }

  referenceCount(slot: number): number {
    return this.references.get(slot) ?? 0;
  }

  reference(slot: number): void {
    if (slot === zeroSlot) return;
    this.references.set(slot, (this.references.get(slot) ?? 0) + 1);
  }

  unreference(slot: number): void {
    if (slot === zeroSlot) return;
    const count = this.references.get(slot);
    assert(count !== undefined && count > 0, `slot ${slot} released more often than referenced`);
    if (count > 1) {
      this.references.set(slot, count - 1);
      return;
    }
    this.references.delete(slot);
    this.markFree(slot);
  }

  /** Takes the lowest free slot (or a new one) for data whose record is not committed yet. */
  takePending(): number {
    const slot = this.takeSlot();
    this.pendingSlots.add(slot);
    return slot;
  }

  /** The record naming a pending slot is committed: its log files reference it now. */
  settle(slot: number): void {
    this.pendingSlots.delete(slot);
  }

  /** A pending slot that no record will name (failed, or its snapshot is gone): free again. */
  abandon(slot: number): void {
    this.pendingSlots.delete(slot);
    this.markFree(slot);
  }

  /**
   * The data units (of unitSlots slots each, the first at firstUnit) that a slot in use touches.
   */
  usedUnits(firstUnit: number, unitSlots: number): Set<number> {
    const usedUnits = new Set<number>();
    for (const slot of [...this.references.keys(), ...this.pendingSlots])
      usedUnits.add(firstUnit + Math.floor(slot / unitSlots));
    return usedUnits;
  }

  /** Trims the high-water mark so new slots fill the lowest free ones first. */
  trimHighWater(): void {
    while (
      this.nextSlot > 0 &&
      this.freeSet.has(this.nextSlot - 1) &&
      !this.references.has(this.nextSlot - 1) &&
      !this.pendingSlots.has(this.nextSlot - 1)
    ) {
      this.nextSlot -= 1;
      this.freeSet.delete(this.nextSlot);
    }
    if (this.freeSet.size !== this.freeSlots.size) this.rebuildFreeHeap();
  }

  private takeSlot(): number {
    const slot = this.freeSlots.pop();
    if (slot === undefined) return this.nextSlot++;
    this.freeSet.delete(slot);
    return slot;
  }

  private markFree(slot: number): void {
    if (this.freeSet.has(slot)) return;
    this.freeSet.add(slot);
    this.freeSlots.push(slot);
  }

  private rebuildFreeHeap(): void {
    while (this.freeSlots.size > 0) this.freeSlots.pop();
    for (const slot of this.freeSet) this.freeSlots.push(slot);
  }
}
