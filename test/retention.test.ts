/**
 * A closed conn must not stay reachable from its node socket. Node keeps a closed socket's
 * objects until a full GC (its handle wrappers survive young-generation collections), so
 * whatever the socket still points to is kept as long: a listener of ours on it would keep the
 * whole conn (buffers, transports, waits) alive with it. Here the test itself holds the socket,
 * the way node does, and checks that the conn is collected anyway.
 */
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { describe, test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { type Conn, tcp, tls } from "../src/index.ts";
import { pki } from "./helpers/tls.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Collect until `ref` is gone (or give up after a few rounds, each after a turn of the loop). */
async function collected(ref: WeakRef<object>): Promise<boolean> {
  for (let i = 0; i < 10 && ref.deref() !== undefined; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  return ref.deref() === undefined;
}

interface Held {
  client: WeakRef<Conn>;
  server: WeakRef<Conn>;
  sockets: Socket[];
}

/** One echoed byte over a fresh pair, both sides closed; only weak refs and the sockets kept. */
async function exchange(
  listen: (handler: (conn: Conn) => Promise<void>) => Promise<{
    addr: { toString(): string };
    close(): Promise<void>;
  }>,
  dial: (addr: string) => Promise<Conn>,
): Promise<Held> {
  let serverConn: Conn | undefined;
  const ln = await listen(async (conn) => {
    serverConn = conn;
    const b = await conn.readExactly(1, { timeout: 5000 });
    await conn.write(b);
    assert.equal(await conn.read(1, { timeout: 5000 }), null); // the client's EOF
  });
  try {
    const client = await dial(ln.addr.toString());
    await client.write("x");
    assert.equal((await client.readExactly(1, { timeout: 5000 })).toString(), "x");
    await client.closeWrite();
    await client.close();
    // The listener closes the handler's conn once the handler returns (bounded wait).
    for (let i = 0; i < 500 && (serverConn === undefined || serverConn.isOpen); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(serverConn && !serverConn.isOpen, "the listener did not close the server conn");
    await serverConn.close(); // the close already under way: wait for it to finish
    const server = serverConn;
    serverConn = undefined;
    return {
      client: new WeakRef(client),
      server: new WeakRef(server),
      sockets: [client.socket, server.socket],
    };
  } finally {
    await ln.close();
  }
}

describe("a closed conn is not kept by its socket", () => {
  test("TCP, both sides", async () => {
    const held = await exchange(
      (handler) => tcp.listen({ addr: "127.0.0.1:0", handler }),
      (addr) => tcp.connect(addr, { timeout: 5000 }),
    );
    assert.equal(held.sockets.length, 2); // still referenced, as node references them
    assert.ok(await collected(held.server), "the server conn is still reachable");
    assert.ok(await collected(held.client), "the client conn is still reachable");
  });

  test("TLS, both sides", async () => {
    const { ca, leaf } = await pki();
    const held = await exchange(
      (handler) =>
        tls.listen({ addr: "127.0.0.1:0", certs: [leaf], alpnProtocols: ["x"], handler }),
      (addr) => tls.connect(addr, { ca: ca.cert, serverName: "localhost", timeout: 5000 }),
    );
    assert.equal(held.sockets.length, 2);
    assert.ok(await collected(held.server), "the server conn is still reachable");
    assert.ok(await collected(held.client), "the client conn is still reachable");
  });
});
