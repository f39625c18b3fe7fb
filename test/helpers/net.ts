/** Shared setup for the dial, listener, address and integrity tests: real loopback sockets only. */
import assert from "node:assert/strict";
import net from "node:net";
import {
  type Conn,
  type DialOptions,
  type Listener,
  type TCPListenOptions,
  tcp,
} from "../../src/index.ts";
import { withTimeout } from "./util.ts";

// The small utilities live in util.ts; re-exported here for the files that import them from net.ts.
export {
  deferred,
  failOnUnhandledRejections,
  poll,
  since,
  sleep,
  timed,
  until,
  withTimeout,
} from "./util.ts";

/** Echo every chunk back until the peer half-closes; the listener then closes the conn. */
export async function echo(conn: Conn): Promise<void> {
  for await (const chunk of conn) await conn.write(chunk);
}

/** A handler-mode echo listener on loopback (port 0 unless `addr` says otherwise). */
export function echoListener(extra: Partial<TCPListenOptions> = {}): Promise<Listener<Conn>> {
  return tcp.listen({ addr: "127.0.0.1:0", handler: echo, ...extra });
}

/** Everything a conn reads until EOF, concatenated. */
export async function collect(conn: Conn): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of conn) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

/** Write `msg`, read back exactly as many bytes, return them as text. */
export async function roundTrip(conn: Conn, msg: string): Promise<string> {
  await conn.write(msg);
  const back = await conn.readExactly(Buffer.byteLength(msg), { timeout: 5000 });
  return back.toString("utf8");
}

/** A port nothing listens on at `host` right now: bind port 0, note it, close. */
export async function closedPort(host = "127.0.0.1"): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject);
    srv.listen({ host, port: 0 }, resolve);
  });
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Undefined when ::1 can be bound, else the reason it cannot. */
export async function ipv6Unavailable(): Promise<string | undefined> {
  const srv = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      srv.once("error", reject);
      srv.listen({ host: "::1", port: 0 }, resolve);
    });
    await new Promise<void>((resolve) => srv.close(() => resolve()));
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** A plain node:net client (not tlsnet), connected. */
export function rawConnect(port: number, host = "127.0.0.1"): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    s.once("error", reject);
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
  });
}

/** How a raw socket ended: the bytes it received and whether it saw FIN ("eof") or an error. */
export interface RawOutcome {
  data: Buffer;
  how: "eof" | "reset" | `error:${string}`;
}

/** Wait until `socket` is closed by the peer; resolves with what it received and how it ended. */
export function rawOutcome(socket: net.Socket): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let how: RawOutcome["how"] | undefined;
    socket.on("data", (c: Buffer) => parts.push(c));
    socket.on("end", () => {
      how ??= "eof";
      socket.destroy();
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      how ??= err.code === "ECONNRESET" ? "reset" : `error:${err.code ?? err.message}`;
    });
    socket.on("close", () => resolve({ data: Buffer.concat(parts), how: how ?? "eof" }));
  });
}

/**
 * A `then` callback for a promise that must reject: closes what it resolved to
 * (a conn or listener that should not exist) and throws an AssertionError.
 */
export function closeAndFail(what: string): (value: unknown) => Promise<never> {
  return async (value) => {
    const closable = value as { close?: () => unknown } | null;
    if (typeof closable?.close === "function") await closable.close();
    throw new assert.AssertionError({ message: `${what}: resolved, expected a rejection` });
  };
}

/**
 * The error `p` rejects with. If it resolves instead, whatever it resolved to is
 * closed (a conn or listener that should not exist) and an AssertionError is thrown.
 */
export function rejection(p: Promise<unknown>, what: string): Promise<unknown> {
  return p.then(closeAndFail(what), (err: unknown) => err);
}

/**
 * Assert that `fn` fails at once with one of `classes`, whose message matches
 * `named`: either a synchronous throw or a promise that rejects within 200 ms.
 */
export async function assertBadArgument(
  label: string,
  fn: () => unknown,
  classes: ReadonlyArray<abstract new (...args: never[]) => Error>,
  named: RegExp,
): Promise<void> {
  let err: unknown;
  let threw = false;
  try {
    const r = fn();
    if (r instanceof Promise) {
      r.catch(() => {}); // observed below; keep it from ever being unhandled
      err = await withTimeout(rejection(r, label), 200, `${label}: immediate rejection`);
      threw = true;
    }
  } catch (e) {
    err = e;
    threw = true;
  }
  assert.ok(threw, `${label}: neither threw nor returned a rejected promise`);
  if (err instanceof assert.AssertionError) throw err;
  assert.ok(
    classes.some((c) => err instanceof c),
    `${label}: expected ${classes.map((c) => c.name).join("/")}, got ${String(err)}`,
  );
  assert.match((err as Error).message, named, `${label}: message does not name the argument`);
}

/**
 * Dial `ln` and accept the conn: [client, server]. If either side fails, the
 * other is closed, so no accepted socket is left to keep the listener open.
 */
export async function connectPair(
  ln: Listener<Conn>,
  opts: DialOptions = {},
): Promise<[client: Conn, server: Conn]> {
  const [c, s] = await Promise.allSettled([
    tcp.connect(ln.addr.toString(), { timeout: 5000, ...opts }),
    ln.accept({ timeout: 5000 }),
  ]);
  if (c.status === "fulfilled" && s.status === "fulfilled") return [c.value, s.value];
  if (c.status === "fulfilled") await c.value.close();
  if (s.status === "fulfilled") await s.value.close();
  throw c.status === "rejected" ? c.reason : (s as PromiseRejectedResult).reason;
}

/** Close every conn (idempotent, never throws). */
export async function closeAll(...conns: Array<Conn | undefined>): Promise<void> {
  await Promise.allSettled(conns.map((c) => c?.close()));
}
