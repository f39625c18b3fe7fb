/**
 * DeadlineWait: the one pending wait of one direction of a conn (the reader
 * waiting for data or the handshake, the writer waiting for drain), bounded by
 * the conn's absolute deadline, the call's own timeout, and an AbortSignal.
 * Moving the deadline re-arms a pending wait, as Go's SetReadDeadline does.
 * @module
 */
import { Alarm, abortReason, NEVER } from "./deadline.ts";

export class DeadlineWait {
  /** The conn's deadline for this direction (monotonic ms, NEVER for none). */
  deadline = NEVER;
  private resolveFn: (() => void) | undefined;
  private rejectFn: ((err: unknown) => void) | undefined;
  private callExpiry = NEVER;
  private signal: AbortSignal | undefined;
  private readonly alarm = new Alarm(() => this.reject(this.timeoutError()));

  /** `timeoutError` makes the error a timed-out wait rejects with. */
  constructor(private readonly timeoutError: () => unknown) {}

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
    if (this.expired(callExpiry)) return Promise.reject(this.timeoutError());
    return new Promise<void>((resolve, reject) => {
      this.resolveFn = resolve;
      this.rejectFn = reject;
      this.callExpiry = callExpiry;
      if (signal) {
        this.signal = signal;
        signal.addEventListener("abort", this.onAbort, { once: true });
      }
      const expiry = Math.min(this.deadline, callExpiry);
      if (expiry !== NEVER) this.alarm.set(expiry);
    });
  }

  /** Move the deadline; a pending wait follows it. */
  setDeadline(monotonic: number): void {
    this.deadline = monotonic;
    if (this.pending) this.alarm.set(Math.min(this.deadline, this.callExpiry));
  }

  /** Wake the pending wait, if any. */
  resolve(): void {
    this.settle()?.[0]();
  }

  /** Fail the pending wait, if any. */
  reject(err: unknown): void {
    this.settle()?.[1](err);
  }

  private settle(): [() => void, (err: unknown) => void] | undefined {
    const resolve = this.resolveFn;
    const reject = this.rejectFn;
    if (!resolve || !reject) return undefined;
    this.resolveFn = undefined;
    this.rejectFn = undefined;
    if (this.alarm.armed) this.alarm.clear();
    this.callExpiry = NEVER;
    this.signal?.removeEventListener("abort", this.onAbort);
    this.signal = undefined;
    return [resolve, reject];
  }

  private readonly onAbort = () => {
    const signal = this.signal;
    if (signal) this.reject(abortReason(signal));
  };
}
