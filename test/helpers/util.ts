/**
 * The one home of small test utilities: sleeping, bounded waits, polling,
 * timing, hashing, promise plumbing and the unhandled-rejection guard. Every
 * test file and helper imports these from here (net.ts and pair.ts re-export
 * them under their old names); do not add copies elsewhere.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Hex SHA-256 of the concatenation of `parts`. For streaming, use createHash("sha256"). */
export function sha256(...parts: Uint8Array[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

/** What `withTimeout` rejects with when its promise did not settle in time. */
export class HangError extends Error {
  override name = "HangError";
}

/**
 * `p`, or a HangError ("WHAT: not settled within MS ms") if it has not settled
 * within `ms`. The timer is cleared either way, so it never holds the process open.
 */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new HangError(`${what}: not settled within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** How long a promise took to settle, and how it settled. */
export interface Timed<T> {
  ms: number;
  value?: T;
  error?: unknown;
}

/**
 * Resolves with how many ms `p` took to settle and its outcome; never rejects
 * with `p`'s error. With `ms`, a promise that has not settled by then fails the
 * test (rejects with a HangError) instead of hanging it.
 */
export async function timed<T>(p: Promise<T>, ms?: number, what = "promise"): Promise<Timed<T>> {
  const t0 = performance.now();
  const bounded = ms === undefined ? p : withTimeout(p, ms, what);
  try {
    const value = await bounded;
    return { ms: performance.now() - t0, value };
  } catch (error) {
    if (error instanceof HangError) throw error;
    return { ms: performance.now() - t0, error };
  }
}

/** Milliseconds since `t0` (performance.now() based). */
export function since(t0: number): number {
  return performance.now() - t0;
}

/**
 * Poll `cond` every `intervalMs` until it holds; true, or false once `ms`
 * have passed. An exception from `cond` propagates.
 */
export async function poll(
  cond: () => boolean | Promise<boolean>,
  ms: number,
  intervalMs = 5,
): Promise<boolean> {
  const end = performance.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (performance.now() >= end) return false;
    await sleep(intervalMs);
  }
}

/**
 * Poll `cond` until it holds, at most `ms` (default 5 s); otherwise fail with
 * an AssertionError naming `what` (a function is called only then, so it can
 * describe the state at the time of failure).
 */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string | (() => string),
  ms = 5000,
  intervalMs = 5,
): Promise<void> {
  if (await poll(cond, ms, intervalMs)) return;
  const why = typeof what === "function" ? what() : `timed out after ${ms} ms waiting for ${what}`;
  throw new assert.AssertionError({ message: why });
}

/** A promise with its resolve and reject exposed. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * Fail the file's run if any promise rejection goes unhandled: pass node:test's
 * `after`; the check runs in that hook and the process listener is removed there.
 */
export function failOnUnhandledRejections(after: (fn: () => void) => void): void {
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown) => {
    unhandled.push(err);
  };
  process.on("unhandledRejection", onUnhandled);
  after(() => {
    process.off("unhandledRejection", onUnhandled);
    if (unhandled.length > 0) {
      throw new Error(`unhandled rejections: ${unhandled.map(String).join("; ")}`);
    }
  });
}
