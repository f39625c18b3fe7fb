/**
 * A "silent" TCP address on loopback: SYNs to it are dropped, so a connect
 * neither succeeds nor fails, like a black-holed host, without leaving the machine.
 *
 * How: a child process listens on host:port (Linux routes all of 127.0.0.0/8
 * to lo, so 127.0.0.2 works) with backlog 1, opens a few connections to itself
 * so the kernel's accept queue is full, and then blocks its event loop
 * (Atomics.wait) before it ever gets to accept. With the accept queue full,
 * Linux drops further SYNs; the connecting side keeps retransmitting for
 * about two minutes. The child exits by itself after `holdMs` in case the
 * test process dies without killing it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";

// Plain CommonJS run with `node -e`: no TypeScript loader needed in the child.
const CHILD = String.raw`
const net = require("node:net");
const fs = require("node:fs");
const host = process.env.SILENT_HOST;
const port = Number(process.env.SILENT_PORT);
const holdMs = Number(process.env.SILENT_HOLD_MS);
const srv = net.createServer();
srv.on("error", (e) => { fs.writeSync(1, "error " + (e.code || e.message) + "\n"); process.exit(1); });
srv.listen({ host, port, backlog: 1 }, () => {
  const bound = srv.address().port;
  const fillers = [];
  for (let i = 0; i < 3; i++) {
    const s = net.connect({ host, port: bound });
    s.on("error", () => {});
    fillers.push(s);
  }
  // The connect() calls run on the next tick; block right after them, before
  // the event loop ever polls the listening socket (and so never accepts).
  process.nextTick(() => {
    fs.writeSync(1, "ready " + bound + "\n");
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, holdMs);
    process.exit(0);
  });
});
`;

export interface SilentAddress {
  host: string;
  port: number;
  /** Kill the child process and wait for it to exit. */
  close(): Promise<void>;
}

/** Start a silent listener on `host:port` (port 0 picks one) in a child process. */
export function startSilentListener(
  host: string,
  port: number,
  holdMs = 60_000,
): Promise<SilentAddress> {
  const child: ChildProcess = spawn(process.execPath, ["-e", CHILD], {
    env: {
      PATH: process.env.PATH ?? "",
      SILENT_HOST: host,
      SILENT_PORT: String(port),
      SILENT_HOLD_MS: String(holdMs),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("exit", () => resolve());
  });
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  };
  return new Promise((resolve, reject) => {
    let out = "";
    const fail = (why: string) => {
      void close();
      reject(new Error(`silent listener on ${host}:${port}: ${why}`));
    };
    child.once("error", (err) => fail(err.message));
    child.once("exit", (code, sig) => fail(`child exited early (${code ?? sig}): ${out.trim()}`));
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (s: string) => {
      out += s;
      const m = /^ready (\d+)$/m.exec(out);
      if (m) resolve({ host, port: Number(m[1]), close });
      else if (/^error /m.test(out)) fail(out.trim());
    });
  });
}

/**
 * A raw node:net connect to host:port, watched for `ms`: "connected",
 * "pending" (neither connected nor failed: the address is silent), or "error:CODE".
 */
export function probeConnect(host: string, port: number, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (what: string) => {
      clearTimeout(timer);
      s.destroy();
      resolve(what);
    };
    const timer = setTimeout(() => done("pending"), ms);
    s.once("connect", () => done("connected"));
    s.once("error", (err: NodeJS.ErrnoException) => done(`error:${err.code ?? err.message}`));
  });
}
