/**
 * Time handling: the API takes absolute wall-clock deadlines (Date or epoch ms)
 * and relative timeouts; inside, everything is monotonic (performance.now())
 * so that a clock step never fires or stalls a deadline.
 * @module
 */

/** Per-call options of every potentially blocking operation. */
export interface OpOptions {
  /** Abort the operation; it rejects with `signal.reason`. */
  signal?: AbortSignal | undefined;
  /** Milliseconds for this call, in addition to any deadline set on the conn. */
  timeout?: number | undefined;
}

/** An absolute deadline: a Date, epoch milliseconds, or null/0 for none. */
export type DeadlineInput = Date | number | null | undefined;

/** Monotonic "never". */
export const NEVER = Number.POSITIVE_INFINITY;

/** Convert an absolute wall-clock deadline to monotonic ms (NEVER for none). */
export function toMonotonic(t: DeadlineInput, name = "deadline"): number {
  if (t === null || t === undefined || t === 0) return NEVER;
  const wall = t instanceof Date ? t.getTime() : t;
  if (typeof wall !== "number" || Number.isNaN(wall)) {
    throw new TypeError(`${name} must be a Date, epoch milliseconds, or null; got ${String(t)}`);
  }
  return performance.now() + (wall - Date.now());
}

/** Validate a relative timeout in ms (undefined = none) and return its monotonic expiry. */
export function expiryAfter(timeout: number | undefined, name = "timeout"): number {
  if (timeout === undefined) return NEVER;
  checkTimeout(timeout, name);
  return performance.now() + timeout;
}

/** Throw RangeError/TypeError for a timeout that is not a finite number >= 0. */
export function checkTimeout(timeout: unknown, name = "timeout"): void {
  if (typeof timeout !== "number" || Number.isNaN(timeout)) {
    throw new TypeError(`${name} must be a number of milliseconds, got ${typeof timeout}`);
  }
  if (timeout < 0 || !Number.isFinite(timeout)) {
    throw new RangeError(`${name} must be a finite number >= 0, got ${timeout}`);
  }
}

/** Validate per-call options once, at the call. */
export function checkOpOptions(opts: OpOptions | undefined): void {
  if (opts === undefined) return;
  if (typeof opts !== "object" || opts === null) {
    throw new TypeError(`options must be an object, got ${opts === null ? "null" : typeof opts}`);
  }
  if (opts.timeout !== undefined) checkTimeout(opts.timeout);
  if (opts.signal !== undefined && !(opts.signal instanceof AbortSignal)) {
    throw new TypeError("options.signal must be an AbortSignal");
  }
}

/** Milliseconds from now until a monotonic expiry, clamped to what setTimeout accepts. */
export function msUntil(expiry: number): number {
  return Math.min(Math.max(0, expiry - performance.now()), 2_147_483_647);
}

/** `signal.reason`, or a generic AbortError for signals aborted without one. */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("This operation was aborted", "AbortError");
}
