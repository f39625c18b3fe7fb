/**
 * toSocket() on the native engine: the Duplex that stands in for a TLSSocket
 * (src/tls/engine/native-socket.ts), over real loopback TLS, against node:tls
 * peers (and a tlsnet listener). What test/http.test.ts does not cover:
 * backpressure both ways with 8 MiB checksummed, the peer's end, destroy()
 * releasing the fd, a TLS error or a reset mid-stream, bytes the Conn had
 * buffered (and an EOF it had seen) coming first, the socket members, and
 * ref/unref. Skipped, with the reason shown, when the addon is not built.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { readdirSync } from "node:fs";
import net from "node:net";
import { after, test } from "node:test";
import nodeTls from "node:tls";
import { fileURLToPath } from "node:url";
import { type TLSConn, tls } from "../src/index.ts";
import { loadAddon } from "../src/tls/engine/addon.ts";
import { pki } from "./helpers/tls.ts";
import { failOnUnhandledRejections, sleep, until, withTimeout } from "./helpers/util.ts";

failOnUnhandledRejections(after);

const status = loadAddon();
const SKIP = status.addon ? false : `native engine not built: npm run build:native (${status.why})`;
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MiB = 1024 * 1024;

type T = { after: (fn: () => unknown) => void };

function fdCount(): number {
  return readdirSync("/proc/self/fd").length;
}

function sha(...parts: Buffer[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

/** A node:tls server; each accepted TLSSocket goes to `onSocket`. Closed after the test. */
async function nodePeer(
  t: T,
  onSocket: (s: nodeTls.TLSSocket) => void,
  alpn?: string[],
): Promise<{ port: number; sockets: nodeTls.TLSSocket[] }> {
  const { leaf } = await pki();
  const sockets: nodeTls.TLSSocket[] = [];
  const server = nodeTls.createServer(
    { key: leaf.key, cert: leaf.cert, ...(alpn ? { ALPNProtocols: alpn } : {}) },
    (s) => {
      sockets.push(s);
      s.on("error", () => {});
      onSocket(s);
    },
  );
  // Every TCP connection, handshaken or not, so that a failing test leaves none open.
  const raw: net.Socket[] = [];
  server.on("connection", (s: net.Socket) => raw.push(s));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.after(async () => {
    for (const s of [...sockets, ...raw]) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return { port: (server.address() as net.AddressInfo).port, sockets };
}

/** A native-engine client conn to `port`; closed after the test. */
async function dialNative(t: T, port: number, extra: object = {}): Promise<TLSConn> {
  const { ca } = await pki();
  const conn = await tls.connect(`localhost:${port}`, {
    ca: ca.cert,
    engine: "native",
    timeout: 10_000,
    ...extra,
  });
  t.after(() => conn.close());
  return conn;
}

/** conn.toSocket(), destroyed after the test. */
function handOver(t: T, conn: TLSConn): net.Socket {
  const socket = conn.toSocket();
  t.after(() => socket.destroy());
  return socket;
}

/** Collect a readable to its end. */
async function drain(s: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

test("toSocket() on the native engine is a Duplex that looks like a connected TLSSocket", {
  skip: SKIP,
}, async (t) => {
  const { port } = await nodePeer(t, (s) => s.pipe(s), ["h2", "http/1.1"]);
  const conn = await dialNative(t, port, { alpnProtocols: ["http/1.1"] });
  const socket = handOver(t, conn) as net.Socket & {
    encrypted?: boolean;
    alpnProtocol?: string | false;
    servername?: string | false;
    authorized?: boolean;
    getProtocol(): string | null;
    getCipher(): { name: string; standardName: string; version: string } | undefined;
    getPeerCertificate(): { subject?: { CN?: string } };
  };
  assert.equal(socket.encrypted, true);
  assert.equal(socket.connecting, false);
  assert.equal(socket.alpnProtocol, "http/1.1");
  assert.equal(socket.servername, "localhost");
  assert.equal(socket.authorized, true);
  assert.equal(socket.remoteAddress, "127.0.0.1");
  assert.equal(socket.remotePort, port);
  assert.equal(socket.remoteFamily, "IPv4");
  assert.equal(socket.localAddress, "127.0.0.1");
  assert.equal(socket.localPort, conn.localAddr.port);
  assert.deepEqual(socket.address(), {
    address: "127.0.0.1",
    family: "IPv4",
    port: socket.localPort,
  });
  assert.equal(socket.getProtocol(), conn.state().version);
  assert.equal(socket.getCipher()?.standardName, conn.state().cipherSuite);
  assert.equal(socket.getPeerCertificate().subject?.CN, "localhost");
  assert.equal(socket.setNoDelay(true), socket);
  assert.equal(socket.setKeepAlive(true, 1000), socket);
  assert.equal(socket.ref(), socket);
  // An idle timeout of its own: the node socket under it sees no traffic.
  socket.write("ping");
  const [echoed] = (await withTimeout(once(socket, "data"), 5000, "echo")) as [Buffer];
  assert.equal(echoed.toString(), "ping");
  const fired = withTimeout(once(socket, "timeout"), 5000, "'timeout'");
  socket.setTimeout(100);
  await fired;
  socket.setTimeout(0);
  socket.destroy();
  await withTimeout(once(socket, "close"), 5000, "'close'");
  assert.equal(socket.destroyed, true);
});

test("backpressure both ways: 8 MiB each way through toSocket, slow readers, bytes intact", {
  skip: SKIP,
}, async (t) => {
  const size = 8 * MiB;
  const up = randomBytes(size);
  const down = randomBytes(size);
  const peerGot: Buffer[] = [];
  let peerSocket: nodeTls.TLSSocket | undefined;
  let peerWriteDone = false;
  const { port } = await nodePeer(t, (s) => {
    peerSocket = s;
    s.pause(); // a reader that does not read yet
    s.on("data", (c: Buffer) => peerGot.push(c));
    s.end(down, () => {
      peerWriteDone = true;
    });
  });
  const conn = await dialNative(t, port);
  const socket = handOver(t, conn);
  socket.pause();

  // Writes: our writer honours write() === false and 'drain'; it must be held back.
  let acked = 0;
  let sawFalse = false;
  const writer = (async () => {
    for (let off = 0; off < size; off += 8192) {
      const part = up.subarray(off, off + 8192);
      if (!socket.write(part, () => (acked += part.length))) {
        sawFalse = true;
        await once(socket, "drain");
      }
    }
    socket.end();
  })();
  writer.catch(() => {});
  await sleep(500);
  assert.ok(sawFalse, "write() said to wait");
  assert.ok(acked < size, `the writer is held back while the peer does not read (acked ${acked})`);
  // Reads: nobody reads the socket, so the addon must stop reading into it.
  assert.ok(
    socket.readableLength < 2 * MiB,
    `reading stops at the high-water mark (buffered ${socket.readableLength})`,
  );
  assert.equal(peerWriteDone, false, "the peer's 8 MiB is held back by our full buffer");

  // Now read slowly on both sides.
  peerSocket!.resume();
  const got: Buffer[] = [];
  let n = 0;
  socket.on("data", (c: Buffer) => {
    got.push(c);
    if (++n % 16 === 0) {
      socket.pause();
      setTimeout(() => socket.resume(), 5);
    }
  });
  socket.resume();
  await withTimeout(once(socket, "end"), 60_000, "8 MiB down");
  await withTimeout(writer, 60_000, "8 MiB up");
  await until(() => Buffer.concat(peerGot).length >= size, "8 MiB at the peer", 60_000);
  assert.equal(sha(...got), sha(down), "8 MiB down, intact");
  assert.equal(sha(...peerGot), sha(up), "8 MiB up, intact");
  assert.equal(acked, size);
});

test("the peer's end is 'end' on the socket, which then ends its side and closes", {
  skip: SKIP,
}, async (t) => {
  const peerEnd = { got: Buffer.alloc(0), ended: false };
  const { port } = await nodePeer(t, (s) => {
    s.on("data", (c: Buffer) => (peerEnd.got = Buffer.concat([peerEnd.got, c])));
    s.on("end", () => (peerEnd.ended = true));
    s.once("data", () => s.end("bye"));
  });
  const conn = await dialNative(t, port);
  const socket = handOver(t, conn);
  const closed = once(socket, "close");
  socket.write("hello");
  const body = await withTimeout(drain(socket), 5000, "'end'");
  assert.equal(body.toString(), "bye");
  await withTimeout(closed, 5000, "'close' after both ends");
  await until(() => peerEnd.ended, "the peer sees our end (allowHalfOpen false)", 5000);
  assert.equal(peerEnd.got.toString(), "hello");
});

test("destroy() closes the native conn: the fd is released and the peer sees the close", {
  skip: SKIP,
}, async (t) => {
  const { port, sockets } = await nodePeer(t, (s) => s.resume());
  // Warm up (contexts, slabs) before the baseline.
  const warm = await dialNative(t, port);
  await warm.close();
  await until(() => sockets[0]?.destroyed === true, "the warm-up conn closed", 5000);
  await sleep(50);
  const base = fdCount();
  const conn = await dialNative(t, port);
  await until(() => sockets.length === 2, "accepted", 5000);
  const peer = sockets[1]!;
  const socket = handOver(t, conn);
  socket.write("x");
  await sleep(50);
  // One fd for our side (the addon's; node:net's was closed at the takeover), one for the peer.
  assert.ok(fdCount() >= base + 2, "our TCP socket and the peer's socket");
  const peerClosed = once(peer, "close");
  socket.destroy();
  await withTimeout(once(socket, "close"), 5000, "'close'");
  await withTimeout(peerClosed, 5000, "the peer sees the close");
  await until(
    () => fdCount() <= base,
    () => `fds ${fdCount()} > baseline ${base}`,
    5000,
  );
});

/** A TCP proxy in front of `port` whose client-bound side the test can corrupt or reset. */
async function tamperingProxy(
  t: T,
  port: number,
): Promise<{ port: number; toClient: Promise<net.Socket> }> {
  let gotClient!: (s: net.Socket) => void;
  const toClient = new Promise<net.Socket>((r) => {
    gotClient = r;
  });
  const open: net.Socket[] = [];
  const proxy = net.createServer((down) => {
    const up = net.connect(port, "127.0.0.1");
    open.push(down, up);
    down.on("error", () => {});
    up.on("error", () => {});
    down.pipe(up);
    up.pipe(down);
    gotClient(down);
  });
  proxy.listen(0, "127.0.0.1");
  await once(proxy, "listening");
  t.after(async () => {
    for (const s of open) s.destroy();
    await new Promise((r) => proxy.close(r));
  });
  return { port: (proxy.address() as net.AddressInfo).port, toClient };
}

for (const fault of ["a corrupt TLS record", "a TCP reset"] as const) {
  test(`${fault} mid-stream surfaces as 'error' on the socket, then 'close'`, {
    skip: SKIP,
  }, async (t) => {
    const { port } = await nodePeer(t, (s) => s.pipe(s));
    const proxy = await tamperingProxy(t, port);
    const conn = await dialNative(t, proxy.port);
    const socket = handOver(t, conn);
    const errors: Array<Error & { code?: string }> = [];
    socket.on("error", (e) => errors.push(e));
    socket.write("ping");
    const [echoed] = (await withTimeout(once(socket, "data"), 5000, "echo")) as [Buffer];
    assert.equal(echoed.toString(), "ping");
    const down = await proxy.toClient;
    down.unpipe();
    if (fault === "a corrupt TLS record") {
      // A complete application-data record that cannot decrypt.
      down.write(Buffer.concat([Buffer.from([0x17, 0x03, 0x03, 0x00, 0x20]), randomBytes(32)]));
    } else {
      down.resetAndDestroy();
    }
    // (events.once would reject on the 'error' this test waits to see.)
    await withTimeout(new Promise((r) => socket.once("close", r)), 5000, "'close'");
    assert.equal(errors.length, 1, "one 'error'");
    const err = errors[0]!;
    if (fault === "a corrupt TLS record") assert.match(err.code ?? "", /^ERR_SSL_/);
    else assert.equal(err.code, "ECONNRESET");
    assert.match(err.message, /127\.0\.0\.1/);
    assert.equal(socket.destroyed, true);
    assert.equal(conn.socket.destroyed, true, "the TCP socket under it is released too");
  });
}

test("bytes (and an end) the conn had buffered come first, in order, then the stream", {
  skip: SKIP,
}, async (t) => {
  const { ca, leaf } = await pki();
  const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf], engine: "native" });
  t.after(() => ln.close());
  const pair = async (engine: "node" | "native") => {
    const [client, server] = await Promise.all([
      tls.connect(`localhost:${ln.addr.port}`, { ca: ca.cert, engine, timeout: 10_000 }),
      ln.accept({ timeout: 10_000 }).then(async (c) => {
        await c.handshake({ timeout: 10_000 });
        return c;
      }),
    ]);
    t.after(() => Promise.all([client.close(), server.close()]));
    return { client, server };
  };
  const { client, server } = await pair("node");

  // 1 MiB buffered in the conn (more than the socket's high-water mark), one byte read.
  const first = randomBytes(MiB);
  const rest = randomBytes(3 * MiB);
  await client.write(first);
  assert.deepEqual(await server.readExactly(1, { timeout: 10_000 }), first.subarray(0, 1));
  await until(() => server.unreadBytes === MiB - 1, "1 MiB buffered in the conn", 10_000);
  const socket = handOver(t, server);
  const body = drain(socket);
  await client.write(rest);
  await client.closeWrite();
  assert.equal(sha(await withTimeout(body, 30_000, "the stream")), sha(first.subarray(1), rest));

  // The peer's end arrived while the conn held bytes: it comes after them.
  const { client: client2, server: server2 } = await pair("native");
  await client2.write("tail");
  await client2.closeWrite();
  const eof = await server2.peek(5, { timeout: 10_000 }).catch((e: unknown) => e);
  assert.ok(eof instanceof Error, "the conn saw the end");
  assert.equal(server2.unreadBytes, 4);
  const socket2 = handOver(t, server2);
  assert.equal((await withTimeout(drain(socket2), 5000, "'end'")).toString(), "tail");
});

test("unref() lets the process exit with the socket open; ref() keeps it alive again", {
  skip: SKIP,
}, async (t) => {
  const { port } = await nodePeer(t, (s) => s.resume());
  const { ca } = await pki();
  // The child: unref, then ref; an unref'd timer prints "alive" (only if ref() kept the
  // process up) and unrefs again, after which the process must exit on its own.
  const script = `
    import { tls } from "./src/index.ts";
    const conn = await tls.connect("localhost:${port}", { ca: process.env.CA, engine: "native", timeout: 10000 });
    const socket = conn.toSocket();
    socket.write("x");
    socket.unref();
    socket.ref();
    setTimeout(() => { console.log("alive"); socket.unref(); }, 300).unref();
  `;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: ROOT,
    env: { ...process.env, CA: ca.cert },
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.after(() => child.kill("SIGKILL"));
  let out = "";
  child.stdout.on("data", (c: Buffer) => (out += c));
  child.stderr.on("data", (c: Buffer) => (out += c));
  const [code] = (await withTimeout(once(child, "exit"), 30_000, `the child exits (${out})`)) as [
    number | null,
  ];
  assert.equal(out.trim(), "alive", out);
  assert.equal(code, 0);
});
