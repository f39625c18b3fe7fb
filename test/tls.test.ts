/** TLS core over real loopback sockets: echo, state, SNI, ALPN, lazy handshake, timeouts, STARTTLS. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect as netConnect } from "node:net";
import { describe, test } from "node:test";
import { createCA } from "../src/certs/index.ts";
import {
  ClosedError,
  ConnectionResetError,
  DeadlineExceededError,
  DialError,
  HandshakeTimeoutError,
  type TLSConn,
  TLSError,
  tcp,
  tls,
} from "../src/index.ts";
import { echoServer, hostPort, pki, resumedOn } from "./helpers/tls.ts";
import { sha256, sleep } from "./helpers/util.ts";

describe("echo and connection state", () => {
  for (const maxVersion of ["TLSv1.3", "TLSv1.2"] as const) {
    test(`echo over ${maxVersion}, with state() on both sides`, async (t) => {
      const { ca, leaf } = await pki();
      let serverState: ReturnType<TLSConn["state"]> | undefined;
      const ln = await tls.listen({
        addr: "127.0.0.1:0",
        certs: [leaf],
        alpnProtocols: ["h2", "http/1.1"],
        handler: async (conn) => {
          serverState = conn.state();
          for await (const chunk of conn) await conn.write(chunk);
          await conn.closeWrite();
        },
      });
      t.after(() => ln.close());
      const conn = await tls.connect(hostPort(ln), {
        ca: ca.cert,
        maxVersion,
        alpnProtocols: ["h2", "http/1.1"],
      });
      t.after(() => conn.close());
      const s = conn.state();
      assert.equal(s.handshakeComplete, true);
      assert.equal(s.version, maxVersion);
      assert.match(s.cipherSuite ?? "", /^TLS_/);
      assert.equal(s.alpnProtocol, "h2");
      assert.equal(conn.alpnProtocol, "h2");
      assert.equal(s.serverName, "localhost");
      assert.equal(s.verified, true);
      assert.equal(s.resumed, false);
      const peer = conn.peerCertificate();
      assert.equal(peer?.subject, "CN=localhost, O=tlsnet");
      assert.deepEqual(peer?.subjectAltNames, [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
      ]);
      assert.ok(peer && peer.validTo > new Date() && peer.raw.length > 100);
      assert.match(peer?.issuer ?? "", /^CN=tlsnet dev CA/);

      const data = randomBytes(1024 * 1024);
      const writer = conn.write(data).then(() => conn.closeWrite());
      const back = await conn.readAll();
      await writer;
      assert.equal(sha256(back), sha256(data));
      assert.equal(serverState?.serverName, "localhost");
      assert.equal(serverState?.version, maxVersion);
      assert.equal(serverState?.alpnProtocol, "h2");
      await conn.close();
      await ln.close();
    });
  }

  test("one TLSConfig serves many connects, and the second one resumes", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await echoServer({ certs: [leaf] });
    t.after(() => ln.close());
    const cfg = tls.config({ ca: ca.cert });
    const resumed: boolean[] = [];
    for (let i = 0; i < 3; i++) resumed.push(await resumedOn(hostPort(ln), cfg));
    assert.deepEqual(resumed, [false, true, true]);
    await ln.close();
  });
});

describe("SNI", () => {
  test("exact beats wildcard; unknown and absent SNI get the first certificate", async (t) => {
    const ca = await createCA();
    const [a, wild, exact] = await Promise.all([
      ca.issue({ names: ["a.test"] }),
      ca.issue({ names: ["*.b.test"] }),
      ca.issue({ names: ["c.b.test"] }),
    ]);
    const ln = await echoServer({ certs: [a, wild, exact], alpnProtocols: ["h2"] });
    t.after(() => ln.close());
    const subjectFor = async (serverName: string | undefined) => {
      const conn = await tls.connect(`127.0.0.1:${ln.addr.port}`, {
        ca: ca.cert,
        alpnProtocols: ["h2"],
        ...(serverName ? { serverName } : { verifyPeer: false }),
      });
      t.after(() => conn.close());
      const subject = conn.peerCertificate()?.subject;
      assert.equal(conn.alpnProtocol, "h2", "ALPN keeps working with SNI");
      await conn.close();
      return subject;
    };
    assert.equal(await subjectFor("c.b.test"), "CN=c.b.test, O=tlsnet");
    assert.equal(await subjectFor("x.b.test"), "CN=*.b.test, O=tlsnet");
    assert.equal(await subjectFor("a.test"), "CN=a.test, O=tlsnet");
    assert.equal(await subjectFor(undefined), "CN=a.test, O=tlsnet", "no SNI (IP literal)");
    const unknown = await tls
      .connect(`127.0.0.1:${ln.addr.port}`, { ca: ca.cert, serverName: "zzz.test" })
      .catch((e) => e);
    assert.equal(unknown.subject, "CN=a.test, O=tlsnet", "unknown name gets the first entry");
    // The wildcard covers one label only.
    const deep = await tls
      .connect(`127.0.0.1:${ln.addr.port}`, { ca: ca.cert, serverName: "x.y.b.test" })
      .catch((e) => e);
    assert.equal(deep.subject, "CN=a.test, O=tlsnet");
    await ln.close();
  });
});

describe("ALPN", () => {
  const negotiate = async (server: string[] | undefined, client: string[] | undefined) => {
    const { ca, leaf } = await pki();
    const errors: Error[] = [];
    const ln = await echoServer({
      certs: [leaf],
      ...(server ? { alpnProtocols: server } : {}),
      onError: (e) => errors.push(e),
    });
    try {
      const conn = await tls.connect(hostPort(ln), {
        ca: ca.cert,
        ...(client ? { alpnProtocols: client } : {}),
      });
      const p = conn.alpnProtocol;
      await conn.close();
      return { protocol: p, errors };
    } catch (error) {
      for (let i = 0; i < 100 && errors.length === 0; i++) await sleep(10);
      return { error, errors };
    } finally {
      await ln.close();
    }
  };

  test("both offer [h2, http/1.1] -> h2", async () => {
    assert.equal((await negotiate(["h2", "http/1.1"], ["h2", "http/1.1"])).protocol, "h2");
  });
  test("server preference wins: server [p1,p2], client [p2,p1] -> p1", async () => {
    assert.equal((await negotiate(["p1", "p2"], ["p2", "p1"])).protocol, "p1");
  });
  test("no ALPN from the client -> null", async () => {
    assert.equal((await negotiate(["h2"], undefined)).protocol, null);
  });
  test("no overlap fails on both sides with TLSError naming both lists", async () => {
    const r = await negotiate(["h2", "http/1.1"], ["x-none"]);
    assert.ok(r.error instanceof TLSError, String(r.error));
    assert.match(r.error.reason ?? "", /NO_APPLICATION_PROTOCOL/);
    assert.match(r.error.message, /x-none/);
    const serverErr = r.errors[0];
    assert.ok(serverErr instanceof TLSError, String(serverErr));
    assert.match(serverErr.message, /x-none/);
    assert.match(serverErr.message, /h2/);
  });
});

describe("lazy handshake", () => {
  test("accept() returns before the handshake; the first read drives it; handshake() is idempotent", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
    t.after(() => ln.close());
    const accepted = ln.accept();
    // A raw TCP client that has not started TLS yet: accept must not wait for a handshake.
    const raw = await tcp.connect(`127.0.0.1:${ln.addr.port}`);
    t.after(() => raw.close());
    const conn = await accepted;
    assert.equal(conn.state().handshakeComplete, false);
    assert.equal(conn.alpnProtocol, null);
    assert.equal(conn.peerCertificate(), null);
    const client = tls.client(raw, { ca: ca.cert, serverName: "localhost" });
    assert.equal(client.state().handshakeComplete, false);
    const serverRead = conn.readLine();
    await client.write("hello\n"); // the client's first write drives its handshake
    assert.equal(await serverRead, "hello");
    assert.equal(conn.state().handshakeComplete, true);
    const [s1, s2] = await Promise.all([conn.handshake(), conn.handshake()]);
    assert.equal(s1, s2);
    assert.equal(await conn.handshake(), s1);
    assert.equal(conn.netConn.remoteAddr.toString(), conn.remoteAddr.toString());
    await client.close();
    await conn.close();
    await ln.close();
  });

  test("a failed handshake is sticky and re-thrown identically", async (t) => {
    const { leaf } = await pki();
    const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
    t.after(() => ln.close());
    const accepted = ln.accept();
    const raw = netConnect(ln.addr.port, "127.0.0.1");
    raw.on("error", () => {});
    const conn = await accepted;
    raw.end("this is not a TLS ClientHello\r\n\r\n");
    const e1 = await conn.handshake().catch((e) => e);
    const e2 = await conn.handshake().catch((e) => e);
    const e3 = await conn.read().catch((e) => e);
    assert.ok(e1 instanceof TLSError || e1 instanceof ConnectionResetError, String(e1));
    assert.equal(e2, e1);
    assert.equal(e3, e1);
    assert.equal(ln.stats().handshakeFailures, 1);
    await conn.close();
    await ln.close();
    raw.destroy();
  });

  test("a plaintext server fails the client fast with TLSError, not a timeout", async () => {
    const plain = await tcp.listen({
      addr: "127.0.0.1:0",
      handler: async (c) => {
        await c.write("220 plain.example ESMTP ready\r\n");
        await c.readLine().catch(() => null);
      },
    });
    const t0 = performance.now();
    const err = await tls
      .connect(`localhost:${plain.addr.port}`, { timeout: 10_000 })
      .catch((e) => e);
    assert.ok(err instanceof TLSError, String(err));
    assert.match(err.message, /does not speak TLS|plaintext/);
    assert.ok(performance.now() - t0 < 5000);
    await plain.close();
  });
});

describe("handshake timeout", () => {
  test("a client that sends nothing is cut off with HandshakeTimeoutError, others are served", async (t) => {
    const { ca, leaf } = await pki();
    const errors: Error[] = [];
    const ln = await echoServer({
      certs: [leaf],
      handshakeTimeout: 300,
      onError: (e) => errors.push(e),
    });
    t.after(() => ln.close());
    const silent = await tcp.connect(`127.0.0.1:${ln.addr.port}`);
    t.after(() => silent.close());
    const t0 = performance.now();
    // Meanwhile a good client is served.
    const good = await tls.connect(hostPort(ln), { ca: ca.cert });
    t.after(() => good.close());
    await good.write("ping");
    assert.equal((await good.readExactly(4)).toString(), "ping");
    await good.close();
    assert.equal(await silent.read(64, { timeout: 5000 }), null, "the server hung up");
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 250 && elapsed < 3000, `cut off after ${elapsed} ms`);
    for (let i = 0; i < 100 && errors.length === 0; i++) await sleep(10);
    assert.ok(errors[0] instanceof HandshakeTimeoutError, String(errors[0]));
    assert.equal(errors[0].code, "ERR_TLSNET_HANDSHAKE_TIMEOUT");
    assert.equal(ln.stats().handshakeFailures, 1);
    await silent.close();
    await ln.close();
    for (let i = 0; i < 100 && ln.stats().active > 0; i++) await sleep(10);
    assert.equal(ln.stats().active, 0);
  });
});

describe("STARTTLS", () => {
  test("plain lines, then both sides upgrade with bytes pipelined right after the command", async (t) => {
    const { ca, leaf } = await pki();
    const done = (async () => {
      const ln = await tcp.listen({ addr: "127.0.0.1:0" });
      t.after(() => ln.close());
      return ln;
    })();
    const ln = await done;
    const serverSide = (async () => {
      const plain = await ln.accept();
      await plain.write("220 ready\r\n");
      assert.equal(await plain.readLine(), "EHLO client");
      await plain.write("250 STARTTLS\r\n");
      assert.equal(await plain.readLine(), "STARTTLS");
      // The client's ClientHello was sent right behind the command: wait until some of
      // it is buffered here, so the upgrade must hand those bytes to TLS.
      for (let i = 0; i < 200 && plain.unreadBytes === 0; i++) await sleep(5);
      assert.ok(plain.unreadBytes > 0, "TLS bytes pipelined behind STARTTLS");
      const secure = tls.server(plain, { certs: [leaf] });
      await assert.rejects(plain.read(), ClosedError, "the plain conn is handed over");
      assert.equal(await secure.readLine(), "secret");
      await secure.write("ok over tls\n");
      return secure;
    })();
    const plain = await tcp.connect(ln.addr.toString());
    t.after(() => plain.close());
    assert.equal(await plain.readLine(), "220 ready");
    await plain.write("EHLO client\r\n");
    assert.equal(await plain.readLine(), "250 STARTTLS");
    await plain.write("STARTTLS\r\n");
    const secure = tls.client(plain, { ca: ca.cert, serverName: "localhost" });
    await secure.write("secret\n");
    assert.equal(await secure.readLine(), "ok over tls");
    assert.equal(secure.state().verified, true);
    const serverConn = await serverSide;
    await secure.close();
    await serverConn.close();
    await ln.close();
  });
});

describe("names and timeouts on upgrades", () => {
  test("tls.client over tcp.connect(host) verifies and sends the dialed host name", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await echoServer({ certs: [leaf] });
    t.after(() => ln.close());
    const plain = await tcp.connect(`localhost:${ln.addr.port}`);
    t.after(() => plain.close());
    const secure = tls.client(plain, { ca: ca.cert });
    const state = await secure.handshake();
    assert.equal(state.serverName, "localhost");
    assert.equal(state.verified, true);
    await secure.close();
    await ln.close();
  });

  test("handshake({ timeout }) is a HandshakeTimeoutError; a read deadline names the read", async (t) => {
    const { leaf } = await pki();
    const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
    t.after(() => ln.close());
    const silent1 = await tcp.connect(ln.addr.toString());
    t.after(() => silent1.close());
    const c1 = await ln.accept();
    const e1 = await c1.handshake({ timeout: 100 }).catch((e) => e);
    assert.ok(e1 instanceof HandshakeTimeoutError, String(e1));
    assert.match(e1.message, /within the 100 ms given to this call/);

    const silent2 = await tcp.connect(ln.addr.toString());
    t.after(() => silent2.close());
    const c2 = await ln.accept();
    c2.setReadDeadline(Date.now() + 100);
    const e2 = await c2.read().catch((e) => e);
    assert.ok(e2 instanceof DeadlineExceededError, String(e2));
    assert.equal(e2.op, "read");
    assert.match(e2.message, /read deadline/);
    await Promise.all([c1.close(), c2.close(), silent1.close(), silent2.close()]);
    await ln.close();
  });

  test("a refused dial to an address names it once", async (t) => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    t.after(() => ln.close());
    const port = ln.addr.port;
    await ln.close();
    const err = await tls.connect(`127.0.0.1:${port}`).catch((e) => e);
    assert.ok(err instanceof DialError, String(err));
    assert.equal(err.message.split(`127.0.0.1:${port}`).length, 2, err.message);
    assert.match(err.message, /connection refused/);
  });
});

describe("security defaults", () => {
  test("TLS 1.2 suites are ECDHE + AEAD, in the server's order", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await echoServer({ certs: [leaf] });
    t.after(() => ln.close());
    const suite = async (ciphers: string) => {
      const conn = await tls.connect(hostPort(ln), { ca: ca.cert, maxVersion: "TLSv1.2", ciphers });
      t.after(() => conn.close());
      const s = conn.state().cipherSuite;
      await conn.close();
      return s;
    };
    // The client prefers AES-256; the server's order puts AES-128 first and wins.
    assert.equal(
      await suite("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"),
      "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    );
    // CBC suites without AEAD are not offered by default.
    const cbc = await suite("ECDHE-ECDSA-AES128-SHA256").catch((e) => e);
    assert.ok(cbc instanceof TLSError, String(cbc));
    await ln.close();
  });

  test("a TLS 1.2 cipher list leaves TLS 1.3 working", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await echoServer({ certs: [leaf], ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384" });
    t.after(() => ln.close());
    const conn = await tls.connect(hostPort(ln), {
      ca: ca.cert,
      ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384",
    });
    t.after(() => conn.close());
    assert.equal(conn.state().version, "TLSv1.3");
    await conn.close();
    await ln.close();
  });
});

describe("half-close", () => {
  test("closeWrite sends close_notify: the peer reads EOF and the closing side still reads", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await tls.listen({
      addr: "127.0.0.1:0",
      certs: [leaf],
      handler: async (conn) => {
        const all = await conn.readAll();
        await conn.write(`got ${all.length} bytes`);
        await conn.closeWrite();
      },
    });
    t.after(() => ln.close());
    const conn = await tls.connect(hostPort(ln), { ca: ca.cert });
    t.after(() => conn.close());
    await conn.write(Buffer.alloc(100_000, 1));
    await conn.closeWrite();
    assert.equal((await conn.readAll()).toString(), "got 100000 bytes");
    assert.equal(await conn.read(), null);
    await conn.close();
    await conn.close();
    await ln.close();
  });
});
