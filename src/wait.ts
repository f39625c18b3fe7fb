/**
 * DeadlineWait: the one pending wait of one direction of a conn (the reader
 * waiting for data, the writer waiting for drain), bounded by the conn's
 * absolute deadline, the call's own timeout, and an AbortSignal. Moving the
 * deadline re-arms a pending wait, as Go's SetReadDeadline does.
 * @module
 */
import { abortReason, msUntil, NEVER } from "./deadline.ts";

export class DeadlineWait {
  /** The conn's deadline for this direction (monotonic ms, NEVER for none). */
  deadline = NEVER;
  private resolveFn: (() => void) | undefined;
  private rejectFn: ((err: unknown) => void) | undefined;
  private callExpiry = NEVER;
  private timer: NodeJS.Timeout | undefined;
  private signal: AbortSignal | undefined;

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
      this.arm();
    });
  }

  /** Move the deadline; a pending wait follows it. */
  setDeadline(monotonic: number): void {
    this.deadline = monotonic;
    if (this.pending) this.arm();
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
    clearTimeout(this.timer);
    this.timer = undefined;
    this.callExpiry = NEVER;
    this.signal?.removeEventListener("abort", this.onAbort);
    this.signal = undefined;
    return [resolve, reject];
  }

  private arm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const expiry = Math.min(this.deadline, this.callExpiry);
    if (expiry !== NEVER) this.timer = setTimeout(this.onTimer, msUntil(expiry));
  }

  // Bound once: no closure per wait.
  private readonly onTimer = () => {
    this.timer = undefined;
    if (!this.pending) return;
    // Timers run off the loop's cached clock and may fire a little early: re-arm then.
    if (performance.now() + 1 < Math.min(this.deadline, this.callExpiry)) this.arm();
    else this.reject(this.timeoutError());
  };

  private readonly onAbort = () => {
    const signal = this.signal;
    if (signal) this.reject(abortReason(signal));
  };
}
