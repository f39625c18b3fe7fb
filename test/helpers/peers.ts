/**
 * Third-party TLS peers for the interop tests: spawn `openssl`, `gnutls-*`,
 * `curl` and `python3` as real processes, wait for their banners or ports
 * with bounded polling, and kill them reliably (also when a test fails).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { closedPort } from "./net.ts";
import { HangError, until, withTimeout } from "./util.ts";

/** The absolute path of `bin` on PATH, or undefined. */
export function which(bin: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const p = join(dir, bin);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Debian packages that provide each peer binary, for skip messages. */
const PACKAGES: Record<string, string> = {
  openssl: "openssl",
  "gnutls-cli": "gnutls-bin",
  "gnutls-serv": "gnutls-bin",
  curl: "curl",
  python3: "python3",
};

/**
 * `false` when every binary is on PATH, else a skip reason naming what is
 * missing and what to install: use as `test(name, { skip: missing("curl") }, fn)`.
 */
export function missing(...bins: string[]): string | false {
  const absent = bins.filter((b) => which(b) === undefined);
  if (absent.length === 0) return false;
  const pkgs = [...new Set(absent.map((b) => PACKAGES[b] ?? b))];
  return `${absent.join(", ")} not found on PATH; install ${pkgs.join(" and ")} (apt-get install ${pkgs.join(" ")}) to run this interop test`;
}

/** How a peer process ended. */
export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Every peer still running, so `killAll()` can end them from an `after` hook. */
const live = new Set<Peer>();

/** A spawned peer process with its output collected as text. */
export class Peer {
  readonly name: string;
  readonly args: readonly string[];
  readonly child: ChildProcess;
  /** Resolves when the process has exited and its output streams are drained. */
  readonly exited: Promise<ExitInfo>;
  private out = "";
  private err = "";
  private exitInfo: ExitInfo | undefined;
  private spawnError: Error | undefined;
  private readonly listeners = new Set<() => void>();

  constructor(bin: string, args: readonly string[], opts?: { cwd?: string }) {
    this.name = bin;
    this.args = args;
    this.child = spawn(bin, args, {
      stdio: ["pipe", "pipe", "pipe"],
      ...(opts?.cwd === undefined ? {} : { cwd: opts.cwd }),
    });
    live.add(this);
    this.child.stdout?.setEncoding("utf8");
    this.child.stderr?.setEncoding("utf8");
    this.child.stdout?.on("data", (s: string) => {
      this.out += s;
      this.notify();
    });
    this.child.stderr?.on("data", (s: string) => {
      this.err += s;
      this.notify();
    });
    // A peer that exits before reading all of stdin must not crash the test run.
    this.child.stdin?.on("error", () => {});
    this.exited = new Promise<ExitInfo>((resolve) => {
      this.child.once("error", (e) => {
        this.spawnError = e;
        this.exitInfo = { code: null, signal: null };
        live.delete(this);
        this.notify();
        resolve(this.exitInfo);
      });
      this.child.once("close", (code, signal) => {
        this.exitInfo = { code, signal };
        live.delete(this);
        this.notify();
        resolve(this.exitInfo);
      });
    });
  }

  get stdout(): string {
    return this.out;
  }

  get stderr(): string {
    return this.err;
  }

  /** Set once the process has exited (and its pipes closed). */
  get exit(): ExitInfo | undefined {
    return this.exitInfo;
  }

  /** The command line and everything it printed, for assertion messages. */
  describe(): string {
    const status = this.exitInfo
      ? `exit code ${this.exitInfo.code} signal ${this.exitInfo.signal}`
      : "still running";
    return (
      `$ ${this.name} ${this.args.join(" ")}  (${status})` +
      (this.spawnError ? `\nspawn error: ${this.spawnError.message}` : "") +
      `\n--- stdout ---\n${this.out}\n--- stderr ---\n${this.err}`
    );
  }

  /** Write to the peer's stdin. */
  write(data: string): void {
    this.child.stdin?.write(data);
  }

  /** Close the peer's stdin (EOF). */
  endInput(): void {
    this.child.stdin?.end();
  }

  /**
   * Wait until `test` matches the collected output of `stream` (stdout by
   * default, or both). Rejects with the full output if the process exits
   * first or `timeout` ms pass: a bounded wait on a readiness signal.
   */
  waitFor(
    test: string | RegExp,
    opts: { stream?: "stdout" | "stderr" | "both"; timeout?: number } = {},
  ): Promise<string> {
    const stream = opts.stream ?? "stdout";
    const timeout = opts.timeout ?? 10_000;
    const text = () =>
      stream === "stdout" ? this.out : stream === "stderr" ? this.err : `${this.out}\n${this.err}`;
    const matches = () => (typeof test === "string" ? text().includes(test) : test.test(text()));
    return new Promise<string>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const check = () => {
        if (matches()) {
          finish();
          resolve(text());
        } else if (this.exitInfo) {
          finish();
          reject(
            new Error(`${this.name} exited before printing ${String(test)}\n${this.describe()}`),
          );
        }
      };
      const finish = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      timer = setTimeout(() => {
        finish();
        reject(
          new Error(
            `${this.name}: ${String(test)} not seen within ${timeout} ms\n${this.describe()}`,
          ),
        );
      }, timeout);
      this.listeners.add(check);
      check();
    });
  }

  /** Wait for the process to exit on its own, at most `timeout` ms (then reject; `kill` still needed). */
  async waitExit(timeout = 10_000): Promise<ExitInfo> {
    try {
      return await withTimeout(this.exited, timeout, `${this.name} exit`);
    } catch (err) {
      if (!(err instanceof HangError)) throw err;
      throw new Error(`${this.name} did not exit within ${timeout} ms\n${this.describe()}`);
    }
  }

  /** End the process: SIGTERM, then SIGKILL if it lingers. Resolves once it is gone. Idempotent. */
  async kill(graceMs = 2000): Promise<ExitInfo> {
    if (this.exitInfo) return this.exitInfo;
    this.child.stdin?.destroy();
    this.child.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const forced = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        if (!this.exitInfo) this.child.kill("SIGKILL");
        resolve();
      }, graceMs);
    });
    await Promise.race([this.exited, forced]);
    clearTimeout(timer);
    return this.exited;
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }
}

/** Spawn a peer; it is tracked until it exits, so `killAll()` can end it. */
export function startPeer(bin: string, args: readonly string[], opts?: { cwd?: string }): Peer {
  return new Peer(bin, args, opts);
}

/** Kill every peer still running (for `after`/`afterEach` hooks). */
export async function killAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill()));
}

/** Run a peer to completion with `input` on stdin; kill it if it overruns `timeout`. */
export async function runPeer(
  bin: string,
  args: readonly string[],
  opts: { input?: string; timeout?: number; cwd?: string } = {},
): Promise<Peer> {
  const peer = startPeer(bin, args, opts.cwd === undefined ? undefined : { cwd: opts.cwd });
  try {
    if (opts.input !== undefined) peer.write(opts.input);
    peer.endInput();
    await peer.waitExit(opts.timeout ?? 10_000);
    return peer;
  } finally {
    await peer.kill();
  }
}

/** A loopback port nothing listens on right now (bind port 0, note it, close). */
export const freePort = closedPort;

/** Whether a TCP connect to host:port succeeds now; the probe socket is closed at once. */
function probe(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => {
      s.destroy();
      resolve(false);
    });
  });
}

/**
 * Poll-connect until host:port accepts, at most `timeout` ms. Fails early
 * (with the peer's output) if `peer` exits meanwhile.
 */
export async function waitForPort(
  port: number,
  opts: { host?: string; timeout?: number; peer?: Peer; interval?: number } = {},
): Promise<void> {
  const host = opts.host ?? "127.0.0.1";
  const peer = opts.peer;
  await until(
    () => {
      if (peer?.exit) {
        throw new Error(`${peer.name} exited before listening on ${port}\n${peer.describe()}`);
      }
      return probe(port, host);
    },
    () => `nothing accepted on ${host}:${port} in time${peer ? `\n${peer.describe()}` : ""}`,
    opts.timeout ?? 10_000,
    opts.interval ?? 25,
  );
}

/** A temporary directory of PEM files, removed by `remove()`. */
export interface PemDir {
  readonly dir: string;
  /** Write `text` to `name` inside the directory and return the file's path. */
  file(name: string, text: string): Promise<string>;
  remove(): Promise<void>;
}

export async function pemDir(prefix = "tlsnet-interop-"): Promise<PemDir> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return {
    dir,
    async file(name, text) {
      const p = join(dir, name);
      await writeFile(p, text, { mode: 0o600 });
      return p;
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Values pushed by callbacks (a listener's handler, onError), awaited one by one in tests. */
export class Inbox<T> {
  private readonly items: T[] = [];
  private readonly waiting: Array<(v: T) => void> = [];

  push(v: T): void {
    const w = this.waiting.shift();
    if (w) w(v);
    else this.items.push(v);
  }

  /** How many values arrived and were not taken yet. */
  get size(): number {
    return this.items.length;
  }

  /** The next value, waiting at most `ms`. */
  next(ms: number, what: string): Promise<T> {
    if (this.items.length > 0) return Promise.resolve(this.items.shift() as T);
    let resolveFn!: (v: T) => void;
    const p = new Promise<T>((resolve) => {
      resolveFn = resolve;
      this.waiting.push(resolve);
    });
    return withTimeout(p, ms, what).catch((err: unknown) => {
      const i = this.waiting.indexOf(resolveFn);
      if (i >= 0) this.waiting.splice(i, 1);
      throw err;
    });
  }
}
