/**
 * Shared pieces of the benchmark runner and its child processes: the
 * parent ↔ child message shapes, workload sizes, certificate hand-over and a
 * few helpers. Nothing here is part of the library.
 * @module
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** Size of every bulk write, both implementations. */
export const WRITE_SIZE = 256 * KiB;
/** Ping-pong message size and connection count. */
export const PING_SIZE = 64;
export const PING_CONNS = 64;
/** Handshakes in flight at once. */
export const HANDSHAKE_CONCURRENCY = 8;

/** Which implementation a child runs. */
export type Impl = "tlsnet" | "node";
/** What a server does with each connection. */
export type ServerMode = "discard" | "source" | "echo" | "hold";
/** What a client measures. */
export type ClientMode = "upload" | "download" | "pingpong" | "handshake" | "idle";
export type Transport = "tls" | "tcp";

/** The certificates both implementations use (ECDSA P-256, one CA). */
export interface CertFiles {
  ca: string;
  cert: string;
  key: string;
}

/** The library under test: this checkout's src/, or the src/ directory named by TLSNET_BENCH_SRC (A/B runs). */
export type Lib = typeof import("../src/index.ts");
export const SRC_ENV = "TLSNET_BENCH_SRC";

export function loadLib(): Promise<Lib> {
  const alt = process.env[SRC_ENV];
  const built = process.env[DIST_ENV];
  if (built) return import(pathToFileURL(resolve(built, "index.js")).href) as Promise<Lib>;
  if (!alt) return import("../src/index.ts");
  return import(pathToFileURL(resolve(alt, "index.ts")).href) as Promise<Lib>;
}

/** Env var naming a directory with tlsnet compiled by tsc (what users run), preferred over src. */
export const DIST_ENV = "TLSNET_BENCH_DIST";

/** Env var naming the JSON file with the PEMs (written once by the parent). */
export const CERTS_ENV = "TLSNET_BENCH_CERTS";

export function loadCerts(): CertFiles {
  const file = process.env[CERTS_ENV];
  if (!file) throw new Error(`${CERTS_ENV} is not set; run bench/run.ts`);
  return JSON.parse(readFileSync(file, "utf8")) as CertFiles;
}

/** Parent → client: run one measured round. */
export interface RoundRequest {
  type: "round";
  /** upload/download: bytes per round. */
  bytes?: number;
  /** pingpong/handshake: round length in ms. */
  durationMs?: number;
  /** handshake: resume sessions. */
  resume?: boolean;
  /**
   * handshake, tlsnet: call close() right after connect instead of the graceful
   * closeWrite() + read to EOF that mirrors node's `socket.end()` + 'close'.
   */
  immediateClose?: boolean;
  /** idle: connections to open. */
  conns?: number;
}

/** Client → parent: one round's result. */
export interface RoundResult {
  type: "result";
  /** The measured value in the workload's unit (MB/s, round trips/s, handshakes/s). */
  value: number;
  elapsedMs: number;
  /** Operations counted (bytes, round trips, handshakes, conns). */
  count: number;
  /** handshake: how many of them were resumed. */
  resumed?: number;
  /** CPU time (user + system, ms) this client process used during the round. */
  cpuMs?: number;
  /** reader: bytes per second, in MB/s. */
  mbps?: number;
  /** handshake: version and cipher of a sample. */
  sample?: { version: string | null; cipher: string | null; resumed: boolean };
}

export interface MemoryReport {
  type: "memory";
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

/** CPU time a child used so far (process.cpuUsage(), µs), all threads. */
export interface CpuReport {
  type: "cpu";
  user: number;
  system: number;
}

export type ChildMessage =
  | { type: "ready"; port?: number }
  | CpuReport
  | RoundResult
  | MemoryReport
  | { type: "error"; message: string }
  | { type: "done" };

export type ParentMessage =
  | RoundRequest
  | { type: "memory" }
  | { type: "cpu" }
  | { type: "release" }
  | { type: "exit" };

/** Send to the parent over the IPC channel (children only). */
export function send(msg: ChildMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!process.send) {
      reject(new Error("no IPC channel: this script is started by bench/run.ts"));
      return;
    }
    process.send(msg, undefined, {}, (err) => (err ? reject(err) : resolve()));
  });
}

/** Memory of this process after a full GC (children run with --expose-gc when asked). */
export async function memoryNow(): Promise<MemoryReport> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const m = process.memoryUsage();
  return {
    type: "memory",
    rss: m.rss,
    heapUsed: m.heapUsed,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
  };
}

export function cpuNow(): CpuReport {
  const u = process.cpuUsage();
  return { type: "cpu", user: u.user, system: u.system };
}

/** Report an uncaught failure to the parent and exit non-zero. */
export function dieOnError(what: string): void {
  const fail = (err: unknown) => {
    const message = `${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
    if (process.send && process.connected) {
      process.send({ type: "error", message } satisfies ChildMessage, () => process.exit(1));
      setTimeout(() => process.exit(1), 500).unref();
    } else {
      console.error(message);
      process.exit(1);
    }
  };
  process.on("uncaughtException", fail);
  process.on("unhandledRejection", fail);
  // The parent went away: never linger.
  process.on("disconnect", () => process.exit(0));
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A deterministic pseudo-random buffer (so both implementations move the same bytes). */
export function patternBuffer(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}
