/**
 * DeadlineWait: the one pending wait of one direction of a conn (the reader
 * waiting for data or the handshake, the writer waiting for drain), bounded by
 * the conn's absolute deadline, the call's own timeout, and an AbortSignal.
 * Moving the deadline re-arms a pending wait, as Go's SetReadDeadline does.
 * @module
 */
import { Alarm, abortReason, NEVER } from "./deadline.ts";

/**
 * The settle functions of the promise just made: the executor runs synchronously inside
 * `new Promise`, so one shared executor hands them over with no closure per wait (a read
 * that waits makes one wait per chunk).
 */
const captured: { resolve: (value?: undefined) => void; reject: (err: unknown) => void } = {
  resolve: noop,
  reject: noop,
};
function capture(resolve: (value?: undefined) => void, reject: (err: unknown) => void): void {
  captured.resolve = resolve;
  captured.reject = reject;
}
function noop(): void {}

export class DeadlineWait<O = unknown> {
  /** The conn's deadline for this direction (monotonic ms, NEVER for none). */
  deadline = NEVER;
  /**
   * Set once the result a waitFor() producer waits for can never come (the conn broke): a
   * resolve() that finds no result then rejects with it.
   */
  failure: unknown;
  private resolveFn: (() => void) | undefined;
  private rejectFn: ((err: unknown) => void) | undefined;
  private callExpiry = NEVER;
  private signal: AbortSignal | undefined;
  /** waitFor(): asked for the result on every resolve(); undefined keeps waiting. */
  private producer: (() => unknown) | undefined;
  /** waitFor(): runs once the wait settles, either way, before the caller hears of it. */
  private onSettle: (() => void) | undefined;
  /** Made on the first wait that has an expiry: most conns never have one. */
  private alarm: Alarm | undefined;
  /** Made on the first wait that has a signal. */
  private abortHandler: (() => void) | undefined;

  /**
   * `timeoutError(owner)` makes the error a timed-out wait rejects with: one function shared by
   * every wait of its kind and the wait's owner, rather than a closure per wait.
   */
  constructor(
    private readonly owner: O,
    private readonly timeoutError: (owner: O) => unknown,
  ) {}

  get pending(): boolean {
    return this.resolveFn !== undefined;
  }

  /** Has the deadline or `callExpiry` already passed? */
  expired(callExpiry: number): boolean {
    const expiry = Math.min(this.deadline, callExpiry);
    return expiry !== NEVER && expiry <= performance.now(); // no clock read without a deadline
  }

  /** Wait until resolve(), reject(), the deadline or callExpiry, or the signal. One at a time. */
  wait(callExpiry: number, signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (this.expired(callExpiry)) return Promise.reject(this.timeoutError(this.owner));
    const waiting = new Promise<void>(capture);
    this.resolveFn = captured.resolve;
    this.rejectFn = captured.reject;
    captured.resolve = captured.reject = noop; // keep nothing of this conn alive
    this.callExpiry = callExpiry;
    if (signal) {
      this.signal = signal;
      signal.addEventListener("abort", (this.abortHandler ??= () => this.onAbort()), {
        once: true,
      });
    }
    const expiry = Math.min(this.deadline, callExpiry);
    if (expiry !== NEVER) this.armAlarm(expiry);
    return waiting;
  }

  /**
   * Like wait(), but the wait settles with `produce()`'s value, asked on every
   * resolve(): the event that brings the data also hands it to the caller, with
   * no async frame in between. `produce` returning undefined keeps waiting, unless
   * `failure` is set (then the wait rejects with it); a throw from `produce` rejects.
   * `onSettle` runs when the wait ends, however it ends.
   */
  waitFor<T>(
    callExpiry: number,
    signal: AbortSignal | undefined,
    produce: () => T | undefined,
    onSettle: () => void,
  ): Promise<T> {
    const waiting = this.wait(callExpiry, signal);
    if (!this.pending) {
      onSettle(); // rejected at once (aborted, expired)
      return waiting as Promise<never>;
    }
    this.producer = produce;
    this.onSettle = onSettle;
    return waiting as unknown as Promise<T>;
  }

  /** Move the deadline; a pending wait follows it. */
  setDeadline(monotonic: number): void {
    this.deadline = monotonic;
    if (this.pending) {
      const expiry = Math.min(this.deadline, this.callExpiry);
      if (expiry !== NEVER) this.armAlarm(expiry);
      else this.alarm?.clear();
    }
  }

  /** Wake the pending wait, if any (with a producer: settle if it has the result). */
  resolve(): void {
    const resolve = this.resolveFn as ((value?: unknown) => void) | undefined;
    if (resolve === undefined) return;
    const produce = this.producer;
    if (produce === undefined) {
      this.settle();
      resolve();
      return;
    }
    let value: unknown;
    try {
      value = produce();
    } catch (err) {
      this.reject(err);
      return;
    }
    if (value !== undefined) {
      this.settle();
      resolve(value);
    } else if (this.failure !== undefined) {
      this.reject(this.failure); // it will never come
    }
  }

  /** Fail the pending wait, if any. */
  reject(err: unknown): void {
    const reject = this.rejectFn;
    if (reject === undefined) return;
    this.settle();
    reject(err);
  }

  /** End the pending wait's bookkeeping (the caller then settles its promise). */
  private settle(): void {
    this.resolveFn = undefined;
    this.rejectFn = undefined;
    if (this.alarm?.armed) this.alarm.clear();
    this.callExpiry = NEVER;
    if (this.signal) {
      this.signal.removeEventListener("abort", this.abortHandler!);
      this.signal = undefined;
    }
    this.producer = undefined;
    const onSettle = this.onSettle;
    if (onSettle !== undefined) {
      this.onSettle = undefined;
      onSettle();
    }
  }

  private armAlarm(expiry: number): void {
    (this.alarm ??= new Alarm(() => this.reject(this.timeoutError(this.owner)))).set(expiry);
  }

  private onAbort(): void {
    const signal = this.signal;
    if (signal) this.reject(abortReason(signal));
  }
}
