/**
 * Helpers for the issue-10 regression tests (test/regress-*.test.ts): a tlsnet
 * conn facing a raw node:net / node:tls peer that the test drives by hand
 * (pause, reset, inject bytes), a byte-injecting TCP proxy, and bounded waits.
 * Real loopback sockets only.
 */
import assert from "node:assert/strict";
import net from "node:net";
import nodeTls from "node:tls";
import { type Conn, type TLSConn, type TLSListener, tcp, tls } from "../../src/index.ts";
import { rejection, withTimeout } from "./net.ts";
import { pki } from "./tls.ts";

/** A node:net server on 127.0.0.1:0 whose connections arrive on `next()`. */
async function rawServer(
  make: (onConn: (s: net.Socket) => void) => net.Server,
): Promise<{ server: net.Server; port: number; next: () => Promise<net.Socket> }> {
  const arrived: net.Socket[] = [];
  const waiting: Array<(s: net.Socket) => void> = [];
  const server = make((s) => {
    s.on("error", () => {}); // resets are what these tests make; each test reads the outcome itself
    const w = waiting.shift();
    if (w) w(s);
    else arrived.push(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const next = () => {
    const s = arrived.shift();
    return s ? Promise.resolve(s) : new Promise<net.Socket>((r) => waiting.push(r));
  };
  return { server, port: (server.address() as net.AddressInfo).port, next };
}

/** A tlsnet TCP client conn and the raw node:net socket it is connected to (half-open allowed). */
export async function rawTcpPeer(): Promise<{
  conn: Conn;
  peer: net.Socket;
  close: () => Promise<void>;
}> {
  const { server, port, next } = await rawServer((on) =>
    net.createServer({ allowHalfOpen: true }, on),
  );
  const [conn, peer] = await Promise.all([tcp.connect(`127.0.0.1:${port}`), next()]);
  server.close();
  return {
    conn,
    peer,
    close: async () => {
      peer.destroy();
      await conn.close();
    },
  };
}

/** A handshaken tlsnet TLS client conn and the raw node:tls server socket it talks to. */
export async function rawTlsPeer(): Promise<{
  conn: TLSConn;
  peer: nodeTls.TLSSocket;
  close: () => Promise<void>;
}> {
  const { ca, leaf } = await pki();
  const { server, port, next } = await rawServer((on) =>
    nodeTls.createServer({ cert: leaf.cert, key: leaf.key, allowHalfOpen: true }, on),
  );
  const peerP = next() as Promise<nodeTls.TLSSocket>;
  const conn = await tls.connect(`localhost:${port}`, { ca: ca.cert, timeout: 5000 });
  const peer = await withTimeout(peerP, 5000, "node:tls peer accepts");
  server.close();
  return {
    conn,
    peer,
    close: async () => {
      peer.destroy();
      await conn.close();
    },
  };
}

/**
 * A TCP proxy on 127.0.0.1 in front of `targetPort`. `inject` writes raw bytes
 * into the stream towards the client or the server of its (single) connection.
 */
export async function tcpProxy(targetPort: number): Promise<{
  port: number;
  inject: (to: "client" | "server", bytes: Uint8Array) => void;
  close: () => void;
}> {
  let down: net.Socket | undefined;
  let up: net.Socket | undefined;
  const { server, port } = await rawServer((on) =>
    net.createServer((c) => {
      on(c);
      down = c;
      up = net.connect(targetPort, "127.0.0.1");
      up.on("error", () => {});
      c.pipe(up);
      up.pipe(c);
    }),
  );
  return {
    port,
    inject: (to, bytes) => {
      const s = to === "client" ? down : up;
      assert.ok(s, "the proxy has a connection");
      s.write(bytes);
    },
    close: () => {
      server.close();
      down?.destroy();
      up?.destroy();
    },
  };
}

/** A TLS listener without handler (accept() gives lazy conns) and a plain TCP client of it. */
export async function lazyTlsServer(): Promise<{
  ln: TLSListener;
  plain: Conn;
  server: TLSConn;
  /** Upgrade `plain` to a TLS client that trusts the test CA (lazy handshake). */
  upgrade: () => TLSConn;
  close: () => Promise<void>;
}> {
  const { ca, leaf } = await pki();
  const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
  const [plain, server] = await Promise.all([
    tcp.connect(`localhost:${ln.addr.port}`, { timeout: 5000 }),
    ln.accept({ timeout: 5000 }),
  ]);
  let client: TLSConn | undefined;
  return {
    ln,
    plain,
    server,
    upgrade: () => {
      client = tls.client(plain, { ca: ca.cert, serverName: "localhost" });
      return client;
    },
    close: async () => {
      await Promise.allSettled([client?.close(), plain.close(), server.close(), ln.close()]);
    },
  };
}

/** The error `p` rejects with within `ms`; fails the test if it resolves or hangs. */
export function errorWithin(p: Promise<unknown>, ms: number, what: string): Promise<unknown> {
  return withTimeout(rejection(p, what), ms, what);
}

/**
 * Write 8 KiB chunks to `conn`, whose peer does not read, until the kernel's
 * buffers are full and bytes stay unsent in the conn (each write resolved, so no
 * write is pending). Returns the bytes written.
 */
export async function fillUntilUnsent(conn: Conn, cap = 64 * 1024 * 1024): Promise<number> {
  const chunk = Buffer.alloc(8192, 0x61);
  let total = 0;
  while (conn.unsentBytes === 0) {
    assert.ok(total < cap, `the kernel took ${total} bytes without backpressure`);
    await withTimeout(conn.write(chunk), 5000, "a small write while filling the kernel buffers");
    total += chunk.length;
  }
  return total;
}

/** An error's class name and code, for assertion messages. */
export function show(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return `${err.name}${code === undefined ? "" : ` [${String(code)}]`}: ${err.message}`;
}
