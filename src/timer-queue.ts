/**
 * TimerQueue: many timeouts of one duration on one node timer. Timeouts of one
 * duration expire in the order they were armed, so a FIFO is all the ordering
 * they need: the timer waits for the oldest live one. Arming is two stores
 * into a ring and cancelling one, with no object, closure or node timer per
 * timeout. A server arms one per handshake and one per closing conn, thousands
 * a second, and nearly all are cancelled long before they expire.
 * @module
 */
import { msUntil } from "./deadline.ts";

/** The queues, by what they fire and their duration: one per use and timeout value. */
const queues = new Map<(owner: never) => void, Map<number, TimerQueue<object>>>();

export class TimerQueue<T extends object> {
  /**
   * A ring of the armed timeouts, oldest first from `head`: each one's monotonic expiry and its
   * owner (undefined once cancelled or fired). It grows by doubling and never shrinks, so a busy
   * server arms and cancels without allocating.
   */
  private expiries = new Float64Array(16);
  private owners: (T | undefined)[] = new Array(16).fill(undefined);
  private head = 0;
  private count = 0;
  /** The ticket of the oldest timeout: tickets count every arm since the queue was made. */
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
    if (this.count === this.owners.length) this.grow();
    const at = (this.head + this.count) & (this.owners.length - 1);
    this.expiries[at] = performance.now() + this.ms;
    this.owners[at] = owner;
    this.count++;
    if (this.timer === undefined) this.schedule();
    return this.base + this.count - 1;
  }

  /** Cancel a timeout (a no-op once it fired or was cancelled). */
  cancel(ticket: number): void {
    const i = ticket - this.base;
    if (i < 0 || i >= this.count) return;
    this.owners[(this.head + i) & (this.owners.length - 1)] = undefined; // not kept by the queue
    if (i === 0) this.dropDead(); // the usual case: the oldest, finished first
  }

  /** Forget cancelled and fired timeouts at the front. */
  private dropDead(): void {
    const mask = this.owners.length - 1;
    while (this.count > 0 && this.owners[this.head] === undefined) {
      this.head = (this.head + 1) & mask;
      this.count--;
      this.base++;
    }
  }

  /** Twice the room, the same order (capacities stay powers of two). */
  private grow(): void {
    const n = this.owners.length;
    const expiries = new Float64Array(n * 2);
    const owners: (T | undefined)[] = new Array(n * 2).fill(undefined);
    for (let i = 0; i < this.count; i++) {
      const from = (this.head + i) & (n - 1);
      expiries[i] = this.expiries[from]!;
      owners[i] = this.owners[from];
    }
    this.expiries = expiries;
    this.owners = owners;
    this.head = 0;
  }

  private schedule(): void {
    if (this.count === 0) return;
    // Whole milliseconds, as Alarm: one node timer list per duration.
    this.timer = setTimeout(this.onTimer, Math.ceil(msUntil(this.expiries[this.head]!)));
    this.timer.unref(); // a pending timeout alone does not keep the process alive
  }

  private readonly onTimer = () => {
    this.timer = undefined;
    const now = performance.now();
    const mask = this.owners.length - 1;
    // Strictly after, as Alarm: an expiry fires only once it has really passed. The owners are
    // taken out first: fire() may cancel or arm others.
    let due: T[] | undefined;
    for (let i = 0; i < this.count; i++) {
      const at = (this.head + i) & mask;
      if (this.expiries[at]! > now) break;
      const owner = this.owners[at];
      if (owner === undefined) continue;
      this.owners[at] = undefined;
      (due ??= []).push(owner);
    }
    this.dropDead();
    this.schedule();
    if (due) for (const owner of due) this.fire(owner);
  };
}
