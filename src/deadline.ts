/**
 * Time handling: the API takes absolute wall-clock deadlines (Date or epoch ms)
 * and relative timeouts; inside, everything is monotonic (performance.now())
 * so that a clock step never fires or stalls a deadline.
 * @module
 */

/**
 * Per-call options of every potentially blocking operation (reads, writes, closeWrite,
 * handshake, accept). They are armed when the call is made — also while it waits its turn
 * behind another read or write, or for a lazy TLS handshake — and cancel that call only: never
 * the conn, never a handshake another call started. A conn's deadlines apply as well; the
 * earlier bound wins.
 *
 * @example
 * ```ts
 * const ac = new AbortController();
 * const line = await conn.readLine({ timeout: 5000, signal: ac.signal });
 * ```
 */
export interface OpOptions {
  /**
   * Abort the operation; it rejects with `signal.reason`. An already-aborted signal rejects
   * at once, even when the data is buffered. Anything but an AbortSignal is a TypeError.
   */
  signal?: AbortSignal | undefined;
  /**
   * Milliseconds for this call, in addition to any deadline set on the conn; when it elapses
   * the call rejects with {@link DeadlineExceededError}. Default: none. Must be a finite
   * number >= 0 (else TypeError/RangeError); 0 expires at once.
   */
  timeout?: number | undefined;
}

/**
 * An absolute deadline: a Date, epoch milliseconds, or null/0 for none (undefined: none too).
 * Inside, tlsnet converts it to the monotonic clock once, so a wall-clock step after the call
 * neither fires nor stalls it.
 */
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

/**
 * The one deadline primitive: a timer for a monotonic expiry that can be moved
 * while armed, and that re-arms when the loop fires it a little early (timers
 * run off the loop's cached clock). Reads, writes, accept waiters, dials and
 * handshakes all bound their waits with it.
 */
export class Alarm {
  private timer: NodeJS.Timeout | undefined;
  private expiry = NEVER;

  /** `fire` runs once the expiry has really passed; bind it once, not per arm. */
  constructor(private readonly fire: () => void) {}

  /** Arm for `expiry` (monotonic ms); NEVER disarms. */
  set(expiry: number): void {
    this.expiry = expiry;
    if (this.timer !== undefined) clearTimeout(this.timer);
    // Whole milliseconds: node keeps one timer list per distinct duration, so a fractional
    // one (an expiry minus the current time) made a new list, with heap work, per arm. Rounded
    // up, arms of one duration share a list; never early, and onTimer re-arms if the loop is.
    this.timer =
      expiry === NEVER ? undefined : setTimeout(this.onTimer, Math.ceil(msUntil(expiry)));
  }

  clear(): void {
    this.set(NEVER);
  }

  get armed(): boolean {
    return this.timer !== undefined;
  }

  private readonly onTimer = () => {
    this.timer = undefined;
    // Strictly after: an op that checks the deadline right after the alarm fired must see it
    // passed too (a 1 ms tolerance here let a read return buffered data after its deadline).
    if (performance.now() < this.expiry) this.set(this.expiry);
    else {
      this.expiry = NEVER;
      this.fire();
    }
  };
}

/**
 * Bound a promise by an expiry and a signal: the result settles with `p`, or
 * rejects with `onTimeout()` / the abort reason, whichever comes first. Used
 * where one caller waits on work shared with others (a handshake in flight):
 * giving up the wait does not cancel the work.
 */
export function bounded<T>(
  p: Promise<T>,
  expiry: number,
  signal: AbortSignal | undefined,
  onTimeout: () => unknown,
): Promise<T> {
  if (expiry === NEVER && signal === undefined) return p;
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    const done = () => {
      alarm.clear();
      signal?.removeEventListener("abort", onAbort);
    };
    const alarm = new Alarm(() => {
      done();
      reject(onTimeout());
    });
    const onAbort = () => {
      done();
      reject(abortReason(signal!));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    alarm.set(expiry);
    p.then(
      (v) => {
        done();
        resolve(v);
      },
      (e) => {
        done();
        reject(e);
      },
    );
  });
}
