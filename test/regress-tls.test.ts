/**
 * Regression tests for issue 10, TLS bugs: unhandled rejections on lazy conns,
 * the lazy handshake and the options, deadlines and close() around it, SNI for IP
 * literals, leaked error codes, resumed-session identity, server-side advice, the
 * client handshake bound, STARTTLS injection, closing the plain conn after an
 * upgrade, and closeWrite() as the first op. Later finds: IP names matched as
 * addresses, and a peer's alert that arrives with its reset. Each test asserts the
 * rule of the fix and failed on the code before it.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import { after, test } from "node:test";
import nodeTls from "node:tls";
import { fileURLToPath } from "node:url";
import { createCA } from "../src/certs/index.ts";
import {
  CertificateError,
  ClosedError,
  DeadlineExceededError,
  HandshakeTimeoutError,
  type TLSConn,
  TLSError,
  TlsnetError,
  tcp,
  tls,
} from "../src/index.ts";
import { ipv6Unavailable, withTimeout } from "./helpers/net.ts";
import { failOnUnhandledRejections, sleep } from "./helpers/pair.ts";
import { errorWithin, lazyTlsServer, show, tcpProxy } from "./helpers/regress.ts";
import { echoServer, hostPort, pki } from "./helpers/tls.ts";
import { until } from "./helpers/util.ts";

failOnUnhandledRejections(after);

const noop = () => {};

function assertClosed(err: unknown, what: string): void {
  assert.ok(err instanceof ClosedError, `${what}: ClosedError, got ${show(err)}`);
  assert.equal(err.code, "ERR_TLSNET_CLOSED");
}

// ------------------------------------------------------------------ #1

const FIXTURE = fileURLToPath(new URL("./fixtures/regress-lazy-unhandled.ts", import.meta.url));

/** Run the #1 fixture scenario in a child process: exit code, output, and its RESULT line. */
function runLazyScenario(
  t: { after: (fn: () => void) => void },
  scenario: string,
): Promise<{ code: number | null; out: string; err: string; result?: Record<string, string> }> {
  const child = spawn(process.execPath, ["--import", "tsx", FIXTURE, scenario], {
    cwd: fileURLToPath(new URL("..", import.meta.url)),
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  return new Promise((resolve) => {
    child.once("close", (code) => {
      clearTimeout(killer);
      const m = /^RESULT (.*)$/m.exec(out);
      resolve({ code, out, err, ...(m ? { result: JSON.parse(m[1]!) } : {}) });
    });
  });
}

for (const [scenario, what, expected] of [
  ["accept-http", "accept() conn, the client sends plain HTTP", "TLSError"],
  ["iterator-http", "listener-iterator conn, the client sends plain HTTP", "TLSError"],
  ["server-http", "tls.server(conn), the client sends plain HTTP", "TLSError"],
  ["client-http", "tls.client(conn), the server answers plain HTTP", "TLSError"],
  ["accept-close", "accept() conn, the app calls close() during the handshake", "ClosedError"],
  ["client-close", "tls.client(conn), the app calls close() during the handshake", "ClosedError"],
] as const) {
  test(`#1 lazy TLS ${what}: read().catch and write().catch both reject, no unhandled rejection`, {
    timeout: 60_000,
  }, async (t) => {
    const r = await runLazyScenario(t, scenario);
    const tail = `\n--- child stderr ---\n${r.err.slice(-2000)}`;
    assert.doesNotMatch(
      r.err,
      /unhandled|uncaught/i,
      `the child reports an unhandled error${tail}`,
    );
    assert.equal(r.code, 0, `the child exits 0 (an unhandled rejection kills it)${tail}`);
    assert.ok(r.result, `the child printed its result${tail}`);
    assert.equal(r.result.read, expected, "read() rejects");
    assert.equal(r.result.write, expected, "write() rejects");
  });
}

// ------------------------------------------------------------------ #5

test("#5 handshake() after close() rejects ClosedError at once: server conn from accept()", async (t) => {
  const s = await lazyTlsServer();
  t.after(s.close);
  await s.server.close();
  assertClosed(await errorWithin(s.server.handshake(), 2000, "handshake() after close()"), "#5");
});

test("#5 handshake() after close() rejects ClosedError at once: tls.client(conn)", async (t) => {
  const s = await lazyTlsServer();
  t.after(s.close);
  const client = s.upgrade();
  await client.close();
  assertClosed(await errorWithin(client.handshake(), 2000, "handshake() after close()"), "#5");
});

// ------------------------------------------------------------------ #6

test("#6 a read deadline set while a read waits on the lazy handshake rejects that read (op read)", async (t) => {
  const s = await lazyTlsServer(); // the client connects and never starts TLS
  t.after(s.close);
  const p = s.server.read();
  p.catch(noop);
  await sleep(20);
  s.server.setReadDeadline(Date.now() + 100);
  const err = await errorWithin(p, 3000, "read() after setReadDeadline(now + 100)");
  assert.ok(err instanceof DeadlineExceededError, `DeadlineExceededError, got ${show(err)}`);
  assert.equal(err.op, "read");
});

// ------------------------------------------------------------------ #7

/** Handshake a tls.connect / tls.client conn against a tls.listen conn; both states. */
async function sniOf(
  t: { after: (fn: () => Promise<void>) => void },
  host: "127.0.0.1" | "::1",
  via: "connect" | "client",
): Promise<{ serverSNI: string | null; clientVerified: boolean }> {
  const { ca, leaf } = await pki();
  const ln = await tls.listen({ addr: host === "::1" ? "[::1]:0" : "127.0.0.1:0", certs: [leaf] });
  t.after(() => ln.close());
  const addr = host === "::1" ? `[::1]:${ln.addr.port}` : `127.0.0.1:${ln.addr.port}`;
  const opts = { ca: ca.cert, serverName: host };
  const dial = async (): Promise<TLSConn> => {
    if (via === "connect") return tls.connect(addr, { ...opts, timeout: 5000 });
    const c = tls.client(await tcp.connect(addr), opts);
    await c.handshake({ timeout: 5000 });
    return c;
  };
  const [client, server] = await Promise.all([
    dial(),
    ln.accept().then(async (c) => {
      t.after(() => c.close());
      await c.handshake({ timeout: 5000 });
      return c;
    }),
  ]);
  t.after(() => client.close());
  return { serverSNI: server.state().serverName, clientVerified: client.state().verified };
}

for (const via of ["connect", "client"] as const) {
  test(`#7 tls.${via} with serverName "127.0.0.1" sends no SNI and verifies the IP SAN`, async (t) => {
    const r = await sniOf(t, "127.0.0.1", via);
    assert.equal(r.serverSNI, null, "the server received no SNI");
    assert.equal(r.clientVerified, true);
  });
}

test('#7 tls.connect with serverName "::1" sends no SNI and verifies the IP SAN', async (t) => {
  const why = await ipv6Unavailable();
  if (why) {
    t.skip(`IPv6 loopback unavailable: ${why}`);
    return;
  }
  const r = await sniOf(t, "::1", "connect");
  assert.equal(r.serverSNI, null, "the server received no SNI");
  assert.equal(r.clientVerified, true);
});

// ------------------------------------------------------------------ #8

test("#8 garbage in the raw TCP stream of a TLS conn: every error has a code starting ERR_TLSNET_", async (t) => {
  const { ca, leaf } = await pki();
  const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
  t.after(() => ln.close());
  const proxy = await tcpProxy(ln.addr.port);
  t.after(proxy.close);
  const [client, server] = await Promise.all([
    tls.connect(`localhost:${proxy.port}`, { ca: ca.cert, timeout: 5000 }),
    ln.accept().then(async (c) => {
      await c.handshake({ timeout: 5000 });
      return c;
    }),
  ]);
  t.after(() => Promise.allSettled([client.close(), server.close()]).then(noop));
  server.limit(1); // the server stops reading from the socket once a byte is buffered
  await client.write("abc");
  await until(() => server.unreadBytes === 3, "abc buffered on the server", 3000);
  proxy.inject("server", Buffer.alloc(64, 0x41)); // not a TLS record
  await sleep(100);
  const errors: unknown[] = [];
  const ops: Array<[string, () => Promise<unknown>]> = [
    ["write", () => server.write("x")],
    ["read", () => server.read()],
    ["read", () => server.read()],
    ["write", () => server.write("y")],
    ["read", () => server.read()],
  ];
  for (const [name, op] of ops) {
    try {
      await withTimeout(op(), 3000, `server ${name}`);
    } catch (err) {
      errors.push(err);
    }
  }
  assert.ok(errors.length > 0, "precondition: the garbage broke the conn");
  for (const err of errors) {
    assert.ok(err instanceof TlsnetError, `a TlsnetError, got ${show(err)}`);
    assert.match(err.code, /^ERR_TLSNET_/, `code of ${show(err)}`);
  }
});

// ------------------------------------------------------------------ #13

for (const maxVersion of ["TLSv1.3", "TLSv1.2"] as const) {
  test(`#13 ${maxVersion}: a resumed client conn keeps the peer's identity`, async (t) => {
    const { ca, leaf } = await pki();
    const ln = await echoServer({ certs: [leaf] });
    t.after(() => ln.close());
    const opts = { ca: ca.cert, maxVersion, timeout: 5000 };
    const first = await tls.connect(hostPort(ln), opts);
    await first.write("x");
    await withTimeout(first.readExactly(1), 3000, "echo (the session ticket arrives)");
    await first.close();
    const second = await tls.connect(hostPort(ln), opts);
    t.after(() => second.close());
    const st = second.state();
    assert.equal(st.resumed, true, "precondition: the second handshake resumed");
    assert.ok(second.peerCertificate() !== null, "peerCertificate() is non-null");
    assert.ok(st.peerCertificates.length > 0, "state().peerCertificates is non-empty");
    assert.match(st.peerCertificates[0]!.subjectAltNames.join(","), /localhost/);
    assert.equal(st.verified, true);
  });
}

// ------------------------------------------------------------------ #14

test("#14 a server rejecting a client certificate advises clientCa/clientCaFile, not ca/caFile", async (t) => {
  const { ca, leaf } = await pki();
  const other = await createCA({ name: "Unknown Client CA" });
  const clientCert = await other.issue({ names: ["client"], client: true });
  const ln = await tls.listen({
    addr: "127.0.0.1:0",
    certs: [leaf],
    clientAuth: "require-and-verify",
    clientCa: ca.cert,
  });
  t.after(() => ln.close());
  const dial = tls.connect(hostPort(ln), {
    ca: ca.cert,
    certs: [{ cert: clientCert.cert, key: clientCert.key }],
    timeout: 5000,
  });
  dial.then((c) => c.close(), noop);
  const server = await ln.accept({ timeout: 5000 });
  t.after(() => server.close());
  const err = await errorWithin(server.handshake(), 5000, "the server's handshake");
  assert.ok(err instanceof CertificateError, `CertificateError, got ${show(err)}`);
  assert.match(err.message, /clientCa/, "advises clientCa/clientCaFile");
  assert.match(err.message, /chain/, "says the client must send its chain");
  assert.doesNotMatch(err.message, /\bca\/caFile\b/, "never the client's advice");
});

// ------------------------------------------------------------------ #16

/** A TCP server that accepts and never says a word. */
async function silentServer(t: { after: (fn: () => void) => void }): Promise<number> {
  const socks: net.Socket[] = [];
  const srv = net.createServer((s) => {
    socks.push(s);
    s.on("error", noop);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  t.after(() => {
    srv.close();
    for (const s of socks) s.destroy();
  });
  return (srv.address() as net.AddressInfo).port;
}

test("#16 tls.connect with handshakeTimeout and no timeout: a server that never answers → HandshakeTimeoutError", async (t) => {
  const { ca } = await pki();
  const port = await silentServer(t);
  const p = tls.connect(`localhost:${port}`, { ca: ca.cert, handshakeTimeout: 300 });
  const err = await errorWithin(p, 5000, "tls.connect to a silent server");
  assert.ok(err instanceof HandshakeTimeoutError, `HandshakeTimeoutError, got ${show(err)}`);
  assert.equal(err.code, "ERR_TLSNET_HANDSHAKE_TIMEOUT");
});

test("#16 tls.connect without any timeout: the client handshake is bounded by the 30 s default", {
  timeout: 60_000,
  skip:
    process.env.TLSNET_SLOW_TESTS === "1"
      ? false
      : "takes 30 s (the default bound); set TLSNET_SLOW_TESTS=1 to run",
}, async (t) => {
  const { ca } = await pki();
  const port = await silentServer(t);
  const t0 = performance.now();
  const err = await errorWithin(tls.connect(`localhost:${port}`, { ca: ca.cert }), 45_000, "dial");
  assert.ok(err instanceof HandshakeTimeoutError, `HandshakeTimeoutError, got ${show(err)}`);
  assert.ok(performance.now() - t0 >= 25_000, "not before the default bound");
});

// ------------------------------------------------------------------ #19

test("#19 tls.client(conn) with plaintext buffered after the go-ahead throws StartTLSInjectionError before any handshake", async (t) => {
  const injected = "INJECTED COMMAND\r\n";
  let serverGot = 0;
  const socks: net.Socket[] = [];
  const srv = net.createServer((s) => {
    socks.push(s);
    s.on("error", noop);
    s.on("data", (d: Buffer) => {
      serverGot += d.length;
    });
    s.write(`220 Ready\r\n${injected}`);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  t.after(() => {
    srv.close();
    for (const s of socks) s.destroy();
  });
  const { ca } = await pki();
  const plain = await tcp.connect(`localhost:${(srv.address() as net.AddressInfo).port}`);
  t.after(() => plain.close());
  assert.equal(await withTimeout(plain.readLine(), 3000, "greeting"), "220 Ready");
  await until(() => plain.unreadBytes === injected.length, "the injected bytes buffered", 3000);
  let thrown: unknown;
  try {
    const upgraded = tls.client(plain, { ca: ca.cert, serverName: "localhost" });
    t.after(() => upgraded.close());
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown !== undefined, "tls.client throws synchronously");
  assert.ok(thrown instanceof TLSError, `a TLSError, got ${show(thrown)}`);
  assert.equal(thrown.name, "StartTLSInjectionError");
  assert.equal(thrown.code, "ERR_TLSNET_STARTTLS_INJECTION");
  assert.equal((thrown as TLSError & { bytes?: unknown }).bytes, injected.length);
  await sleep(200);
  assert.equal(serverGot, 0, "no ClientHello was sent");
});

// ------------------------------------------------------------------ #20

test("#20 after tls.client(plain), plain.close() closes the connection", async (t) => {
  const s = await lazyTlsServer();
  t.after(s.close);
  const client = s.upgrade();
  await withTimeout(Promise.all([client.handshake(), s.server.handshake()]), 5000, "handshakes");
  await withTimeout(s.plain.close(), 3000, "plain.close()");
  assertClosed(
    await errorWithin(client.write("x"), 3000, "TLS write after plain.close()"),
    "write",
  );
  assertClosed(await errorWithin(client.read(), 3000, "TLS read after plain.close()"), "read");
  const seen = await withTimeout(
    s.server.read().catch((e: unknown) => e),
    3000,
    "the peer sees the connection end",
  );
  assert.ok(
    seen === null || seen instanceof TlsnetError,
    `peer read: EOF or error, got ${show(seen)}`,
  );
});

test("#20 after tls.server(plain), plain.close() closes the connection", async (t) => {
  const { ca, leaf } = await pki();
  const ln = await tcp.listen({ addr: "127.0.0.1:0" });
  t.after(() => ln.close());
  const [client, server] = await Promise.all([
    tls.connect(`localhost:${ln.addr.port}`, { ca: ca.cert, timeout: 5000 }),
    ln.accept().then(async (plain) => {
      t.after(() => plain.close());
      const conn = tls.server(plain, { certs: [leaf] });
      t.after(() => conn.close());
      await conn.handshake({ timeout: 5000 });
      return { plain, conn };
    }),
  ]);
  t.after(() => client.close());
  await withTimeout(server.plain.close(), 3000, "plain.close()");
  assertClosed(
    await errorWithin(server.conn.write("x"), 3000, "TLS write after plain.close()"),
    "write",
  );
  assertClosed(await errorWithin(server.conn.read(), 3000, "TLS read after plain.close()"), "read");
  const seen = await withTimeout(
    client.read().catch((e: unknown) => e),
    3000,
    "the peer sees the connection end",
  );
  assert.ok(
    seen === null || seen instanceof TlsnetError,
    `peer read: EOF or error, got ${show(seen)}`,
  );
});

// ------------------------------------------------------------------ #21

test("#21 aborting one read's signal on a lazy server conn cancels that read only; the next read gets the data", async (t) => {
  const s = await lazyTlsServer();
  t.after(s.close);
  const ac = new AbortController();
  const r1 = s.server.read(100, { signal: ac.signal });
  const r2 = s.server.read(100);
  r1.catch(noop);
  r2.catch(noop);
  await sleep(20);
  ac.abort(new Error("give up on r1"));
  const err = await errorWithin(r1, 2000, "r1 after abort");
  assert.equal(err, ac.signal.reason, `r1 rejects with the abort reason, got ${show(err)}`);
  const client = s.upgrade();
  await withTimeout(client.handshake(), 5000, "the client's handshake");
  await client.write("hello");
  assert.equal((await withTimeout(r2, 5000, "r2"))?.toString(), "hello");
});

test("#21 read({ timeout: 50 }) against a client slow to start TLS rejects that read (op read); the conn stays usable", async (t) => {
  const s = await lazyTlsServer();
  t.after(s.close);
  const err = await errorWithin(s.server.read(100, { timeout: 50 }), 3000, "read({ timeout: 50 })");
  assert.ok(err instanceof DeadlineExceededError, `DeadlineExceededError, got ${show(err)}`);
  assert.equal(err.op, "read");
  const client = s.upgrade();
  const later = s.server.read(100);
  later.catch(noop);
  await withTimeout(client.handshake(), 5000, "the client's handshake");
  await client.write("hello");
  assert.equal((await withTimeout(later, 5000, "a later read"))?.toString(), "hello");
});

test("#21 a past write deadline does not fail a read on a lazy server conn", async (t) => {
  const s = await lazyTlsServer();
  t.after(s.close);
  s.server.setWriteDeadline(Date.now() - 1000);
  const r = s.server.read(100);
  r.catch(noop);
  const client = s.upgrade();
  await withTimeout(client.handshake(), 5000, "the client's handshake");
  await client.write("hello");
  const got = await withTimeout(
    r.catch((e: unknown) => e),
    5000,
    "the read",
  );
  assert.ok(Buffer.isBuffer(got), `the read gets the data, got ${show(got)}`);
  assert.equal(got.toString(), "hello");
});

// ------------------------------------------------------------------ #26

test("#26 closeWrite() as the first op on a lazy server conn keeps the client's data (20 runs)", async (t) => {
  const { ca, leaf } = await pki();
  const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
  t.after(() => ln.close());
  for (let run = 0; run < 20; run++) {
    const clientSide = (async () => {
      const c = await tls.connect(hostPort(ln), { ca: ca.cert, timeout: 5000 });
      t.after(() => c.close());
      await c.write("REQUEST\n");
      await c.closeWrite();
      return c.readAll();
    })();
    clientSide.catch(noop);
    const server = await ln.accept({ timeout: 5000 });
    t.after(() => server.close());
    await withTimeout(server.closeWrite(), 5000, `run ${run}: server closeWrite()`);
    const got = await withTimeout(server.readAll(), 5000, `run ${run}: server readAll()`);
    assert.equal(got.toString(), "REQUEST\n", `run ${run}: the server got the request`);
    const back = await withTimeout(clientSide, 5000, `run ${run}: client side`);
    assert.equal(back.length, 0, `run ${run}: the client sees EOF`);
    await Promise.all([server.close()]);
  }
});

// ------------------------------------------------------------------ IP names, as addresses

test("an IP name is matched against the IP SANs as an address (::1 in either spelling); an unlisted IP is refused", async (t) => {
  const { ca, leaf } = await pki(); // SANs: localhost, 127.0.0.1, ::1
  const dial = async (listen: string, addr: (port: number) => string, serverName?: string) => {
    const ln = await tls.listen({ addr: listen, certs: [leaf] });
    t.after(() => ln.close());
    const accepted = ln.accept().then(async (c) => {
      t.after(() => c.close());
      await c.handshake({ timeout: 5000 }).catch(() => {});
    });
    const opts = { ca: ca.cert, timeout: 5000, ...(serverName ? { serverName } : {}) };
    try {
      const c = await tls.connect(addr(ln.addr.port), opts);
      t.after(() => c.close());
      return c.state().verified;
    } finally {
      await accepted;
    }
  };
  // 127.0.0.2 is on loopback but not in the certificate: refused with the host name error.
  await assert.rejects(
    dial("127.0.0.2:0", (p) => `127.0.0.2:${p}`),
    (err: unknown) =>
      err instanceof CertificateError &&
      /127\.0\.0\.2/.test(err.message) &&
      /host name/.test(err.message),
  );
  assert.equal(await dial("127.0.0.1:0", (p) => `127.0.0.1:${p}`), true);
  const why = await ipv6Unavailable();
  if (why) {
    t.diagnostic(`IPv6 loopback unavailable: ${why}`);
    return;
  }
  assert.equal(
    await dial("[::1]:0", (p) => `[::1]:${p}`),
    true,
    "::1 (Node 22.23's checkServerIdentity refuses it)",
  );
  assert.equal(
    await dial("[::1]:0", (p) => `[::1]:${p}`, "0:0:0:0:0:0:0:1"),
    true,
    "the long spelling",
  );
});

/** The ClientHello a node:tls client sends first, caught by a plain TCP server. */
async function clientHello(t: { after: (fn: () => void) => void }): Promise<Buffer> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  t.after(() => srv.close());
  const first = new Promise<Buffer>((resolve) =>
    srv.once("connection", (s) => {
      s.on("error", noop);
      s.once("data", (d: Buffer) => {
        resolve(d);
        s.destroy();
      });
    }),
  );
  const { port } = srv.address() as net.AddressInfo;
  const c = nodeTls.connect({ host: "127.0.0.1", port, servername: "localhost" });
  c.on("error", noop);
  const hello = await first;
  c.destroy();
  return hello;
}

test("a peer's alert that arrives together with its reset is the error reported, not the reset (10 runs)", async (t) => {
  // A client that refuses our certificate sends its alert and closes over our flight it
  // never read, which sends a reset. When both are in the socket by the time the server
  // looks (as on a busy server), the alert is still read first: it says why.
  const { leaf } = await pki();
  const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
  t.after(() => ln.close());
  const hello = await clientHello(t);
  const alert = Buffer.from([21, 3, 3, 0, 2, 2, 48]); // fatal unknown_ca, as curl sends it
  for (let i = 0; i < 10; i++) {
    const sock = net.connect(ln.addr.port, "127.0.0.1");
    sock.on("error", noop);
    await new Promise((r) => sock.once("connect", r));
    const server = await ln.accept({ timeout: 5000 });
    const handshake = errorWithin(server.handshake(), 5000, "the server's handshake");
    sock.write(hello);
    await new Promise((r) => sock.once("data", r)); // the server's flight
    // Both in one turn of this loop: the server cannot read between them.
    sock.write(alert);
    sock.resetAndDestroy();
    const err = await handshake;
    await server.close();
    assert.ok(err instanceof TLSError, `run ${i}: TLSError, got ${show(err)}`);
    assert.equal(err.reason, "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA", `run ${i}: ${show(err)}`);
  }
});
