/**
 * Regression tests for issue 10: addresses (SocketAddr accepted wherever an
 * address is, bad localAddress), the listener (close() during a handler-mode
 * handshake) and errors (StateError when upgrading a busy conn). Each test asserts
 * the rule of the fix and failed on the code before it.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, test } from "node:test";
import { ConfigError, type Conn, TlsnetError, tcp, tls } from "../src/index.ts";
import { rawConnect, withTimeout } from "./helpers/net.ts";
import { failOnUnhandledRejections, sleep, tcpPair } from "./helpers/pair.ts";
import { errorWithin, show } from "./helpers/regress.ts";
import { pki } from "./helpers/tls.ts";
import { until } from "./helpers/util.ts";

failOnUnhandledRejections(after);

const MiB = 1024 * 1024;
const noop = () => {};

// ------------------------------------------------------------------ #10

test("#10 listener.close() during a handler-mode handshake: no onError, no handshake failure counted", async (t) => {
  const { leaf } = await pki();
  const errors: Error[] = [];
  let handled = 0;
  const ln = await tls.listen({
    addr: "127.0.0.1:0",
    certs: [leaf],
    handler: () => {
      handled++;
    },
    onError: (err) => errors.push(err),
  });
  t.after(() => ln.close());
  const peer = await rawConnect(ln.addr.port); // connects, never sends a ClientHello
  peer.on("error", noop);
  t.after(() => peer.destroy());
  await until(() => ln.stats().accepted === 1, "the listener accepted the conn", 3000);
  await sleep(50); // its handshake is under way
  await withTimeout(ln.close(), 3000, "listener.close()");
  await sleep(200); // a failure report would have arrived by now
  assert.deepEqual(errors.map(show), [], "onError is not called for it");
  assert.equal(ln.stats().handshakeFailures, 0, "not counted as a handshake failure");
  assert.equal(handled, 0);
});

// ------------------------------------------------------------------ #11

for (const bad of ["nope", "127.0.0.1:99999"]) {
  for (const via of ["tcp", "tls"] as const) {
    test(`#11 ${via}.connect with localAddress ${JSON.stringify(bad)} → ConfigError naming localAddress`, async (t) => {
      const ln = await tcp.listen({ addr: "127.0.0.1:0" });
      t.after(() => ln.close());
      const addr = `127.0.0.1:${ln.addr.port}`;
      const dial = () =>
        via === "tcp"
          ? tcp.connect(addr, { localAddress: bad, timeout: 2000 })
          : tls.connect(addr, { localAddress: bad, timeout: 2000, verifyPeer: false });
      const err = await errorWithin(
        Promise.resolve().then(dial),
        3000,
        `${via}.connect({ localAddress: ${bad} })`,
      );
      assert.ok(err instanceof ConfigError, `ConfigError, got ${show(err)}`);
      assert.equal(err.field, "localAddress");
      assert.match(err.message, /localAddress/);
    });
  }
}

// ------------------------------------------------------------------ #12

function assertStateError(err: unknown, what: string): void {
  assert.ok(err instanceof TlsnetError, `${what}: a TlsnetError, got ${show(err)}`);
  assert.equal(err.code, "ERR_TLSNET_STATE", `${what}: ${show(err)}`);
  assert.equal(err.name, "StateError");
}

/** What `fn` throws synchronously (fails if it returns). */
function thrownBy(fn: () => { close(): Promise<void> }, what: string): unknown {
  try {
    const made = fn();
    void made.close();
  } catch (err) {
    return err;
  }
  assert.fail(`${what}: did not throw`);
}

test("#12 tls.client(conn) with a read pending throws StateError (ERR_TLSNET_STATE)", async (t) => {
  const { ca } = await pki();
  const { client, close } = await tcpPair();
  t.after(close);
  client.read().catch(noop);
  await sleep(10);
  const err = thrownBy(() => tls.client(client, { ca: ca.cert, serverName: "localhost" }), "#12");
  assertStateError(err, "tls.client with a pending read");
});

test("#12 tls.server(conn) with a read pending throws StateError (ERR_TLSNET_STATE)", async (t) => {
  const { leaf } = await pki();
  const { server, close } = await tcpPair();
  t.after(close);
  server.read().catch(noop);
  await sleep(10);
  const err = thrownBy(() => tls.server(server, { certs: [leaf] }), "#12");
  assertStateError(err, "tls.server with a pending read");
});

test("#12 tls.client(conn) with a write pending throws StateError (ERR_TLSNET_STATE)", async (t) => {
  const { ca } = await pki();
  const { client, close } = await tcpPair(); // the server side never reads: writes back up
  t.after(close);
  const w = client.write(Buffer.alloc(32 * MiB));
  w.catch(noop);
  const state = await Promise.race([
    w.then(
      () => "resolved",
      () => "rejected",
    ),
    sleep(200),
  ]);
  assert.equal(state, undefined, "precondition: the write waits for drain");
  const err = thrownBy(() => tls.client(client, { ca: ca.cert, serverName: "localhost" }), "#12");
  assertStateError(err, "tls.client with a pending write");
});

// ------------------------------------------------------------------ #15

test("#15 tcp.connect(listener.addr) and tcp.connect(conn.remoteAddr) connect", async (t) => {
  const ln = await tcp.listen({ addr: "127.0.0.1:0" });
  t.after(() => ln.close());
  const conns: Conn[] = [];
  t.after(() => Promise.allSettled(conns.map((c) => c.close())).then(noop));
  const [client, server] = await withTimeout(
    Promise.all([tcp.connect(ln.addr, { timeout: 3000 }), ln.accept({ timeout: 3000 })]),
    5000,
    "tcp.connect(listener.addr)",
  );
  conns.push(client, server);
  await client.write("hi");
  assert.equal((await withTimeout(server.readExactly(2), 3000, "read")).toString(), "hi");
  const [again, server2] = await withTimeout(
    Promise.all([tcp.connect(client.remoteAddr, { timeout: 3000 }), ln.accept({ timeout: 3000 })]),
    5000,
    "tcp.connect(conn.remoteAddr)",
  );
  conns.push(again, server2);
  assert.equal(again.remoteAddr.port, ln.addr.port);
});

test("#15 tls.connect(listener.addr) connects and verifies the IP SAN", async (t) => {
  const { ca, leaf } = await pki();
  const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
  t.after(() => ln.close());
  const [client, server] = await withTimeout(
    Promise.all([
      tls.connect(ln.addr, { ca: ca.cert, timeout: 3000 }),
      ln.accept({ timeout: 3000 }).then(async (c) => {
        await c.handshake({ timeout: 3000 });
        return c;
      }),
    ]),
    5000,
    "tls.connect(listener.addr)",
  );
  t.after(() => Promise.allSettled([client.close(), server.close()]).then(noop));
  assert.equal(client.state().verified, true);
});

test("#15 tcp.listen({ addr: socketAddr }) binds that exact IP, not all interfaces", async (t) => {
  const first = await tcp.listen({ addr: "127.0.0.1:0" });
  const addr = first.addr;
  await first.close();
  const ln = await tcp.listen({ addr });
  t.after(() => ln.close());
  assert.equal(ln.addr.address, "127.0.0.1", `bound ${ln.addr.toString()}`);
  assert.equal(ln.addr.port, addr.port);
  // Nothing listens on the port at another loopback address.
  const other = await new Promise<string>((resolve) => {
    const s = net.connect({ host: "127.0.0.2", port: addr.port });
    s.once("connect", () => {
      s.destroy();
      resolve("connected");
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
  assert.equal(other, "ECONNREFUSED", "127.0.0.2 is not served");
});
