/**
 * TimerQueue: many timeouts of one duration on one node timer. Timeouts of one
 * duration expire in the order they were armed, so a FIFO is all the ordering
 * they need: the timer waits for the oldest live one. Arming is two array
 * pushes and cancelling one store, with no object, closure or node timer per
 * timeout. A server arms one per handshake and one per closing conn, thousands
 * a second, and nearly all are cancelled long before they expire.
 * @module
 */
import { msUntil } from "./deadline.ts";

/** The queues, by what they fire and their duration: one per use and timeout value. */
const queues = new Map<(owner: never) => void, Map<number, TimerQueue<object>>>();

export class TimerQueue<T extends object> {
  /** Monotonic expiry of each armed timeout, in arm order. */
  private readonly expiries: number[] = [];
  /** Its owner; undefined once cancelled or fired. */
  private readonly owners: (T | undefined)[] = [];
  /** The ticket of `expiries[0]`: tickets count every arm since the queue was made. */
  private base = 0;
  private timer: NodeJS.Timeout | undefined;

  /** `fire(owner)` runs for each timeout that expires without being cancelled. */
  private constructor(
    private readonly ms: number,
    private readonly fire: (owner: T) => void,
  ) {}

  /** The queue of timeouts of `ms` that run `fire` (one module-level function per use). */
  static of<T extends object>(ms: number, fire: (owner: T) => void): TimerQueue<T> {
    let byMs = queues.get(fire);
    if (byMs === undefined) {
      byMs = new Map();
      queues.set(fire, byMs);
    }
    let q = byMs.get(ms) as TimerQueue<T> | undefined;
    if (q === undefined) {
      q = new TimerQueue<T>(ms, fire);
      byMs.set(ms, q as unknown as TimerQueue<object>);
    }
    return q;
  }

  /** Arm a timeout of this queue's duration for `owner`; the ticket cancels it. */
  arm(owner: T): number {
    this.expiries.push(performance.now() + this.ms);
    this.owners.push(owner);
    if (this.timer === undefined) this.schedule();
    return this.base + this.owners.length - 1;
  }

  /** Cancel a timeout (a no-op once it fired or was cancelled). */
  cancel(ticket: number): void {
    const i = ticket - this.base;
    if (i < 0 || i >= this.owners.length) return;
    this.owners[i] = undefined; // the owner is no longer kept by the queue
    if (i === 0) this.dropDead(); // the usual case: the oldest, finished first
  }

  /** Forget cancelled timeouts at the front. */
  private dropDead(): void {
    let n = 0;
    while (n < this.owners.length && this.owners[n] === undefined) n++;
    if (n === 0) return;
    if (n === this.owners.length) {
      this.expiries.length = 0;
      this.owners.length = 0;
    } else {
      this.expiries.splice(0, n);
      this.owners.splice(0, n);
    }
    this.base += n;
  }

  private schedule(): void {
    const first = this.expiries[0];
    if (first === undefined) return;
    // Whole milliseconds, as Alarm: one node timer list per duration.
    this.timer = setTimeout(this.onTimer, Math.ceil(msUntil(first)));
    this.timer.unref(); // a pending timeout alone does not keep the process alive
  }

  private readonly onTimer = () => {
    this.timer = undefined;
    const now = performance.now();
    // Strictly after, as Alarm: an expiry fires only once it has really passed. The owners are
    // taken out first: fire() may cancel or arm others.
    let due: T[] | undefined;
    for (let n = 0; n < this.expiries.length && this.expiries[n]! <= now; n++) {
      const owner = this.owners[n];
      if (owner === undefined) continue;
      this.owners[n] = undefined;
      (due ??= []).push(owner);
    }
    this.dropDead();
    this.schedule();
    if (due) for (const owner of due) this.fire(owner);
  };
}
