/**
 * Listener over real loopback sockets: accept and iteration, accept deadlines,
 * maxConnections, handler errors, graceful close, bind failures.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ClosedError,
  type Conn,
  DeadlineExceededError,
  DialError,
  ListenError,
  type SocketAddr,
  tcp,
} from "../src/index.ts";
import {
  closeAll,
  closeAndFail,
  collect,
  connectPair,
  echo,
  rawConnect,
  rawOutcome,
  roundTrip,
} from "./helpers/net.ts";
import { deferred, since, sleep, until, withTimeout } from "./helpers/util.ts";

const isAcceptDeadline = (err: unknown): true => {
  assert.ok(err instanceof DeadlineExceededError, `expected DeadlineExceededError, got ${err}`);
  assert.equal(err.op, "accept");
  return true;
};

describe("accept and iteration", () => {
  test("accept() returns connected conns", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      assert.ok(ln.isOpen);
      const [client, server] = await connectPair(ln);
      try {
        assert.equal(server.remoteAddr.port, client.localAddr.port);
        await client.write("ping");
        assert.equal((await server.readExactly(4, { timeout: 5000 })).toString(), "ping");
        await server.write("pong");
        assert.equal((await client.readExactly(4, { timeout: 5000 })).toString(), "pong");
      } finally {
        await closeAll(client, server);
      }
      assert.equal(ln.stats().accepted, 1);
    } finally {
      await ln.close();
    }
    assert.equal(ln.isOpen, false);
  });

  test("a conn that arrives before accept() is queued for it", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    let client: Conn | undefined;
    let server: Conn | undefined;
    try {
      client = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
      await until(() => ln.stats().accepted === 1, "the kernel accept");
      server = await ln.accept({ timeout: 5000 });
      assert.equal(server.remoteAddr.port, client.localAddr.port);
      await client.write("queued");
      assert.equal((await server.readExactly(6, { timeout: 5000 })).toString(), "queued");
    } finally {
      await closeAll(client, server);
      await ln.close();
    }
  });

  test("for await iterates conns; close() ends the loop", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    const seen: number[] = [];
    const loop = (async () => {
      for await (const c of ln) {
        seen.push(c.remoteAddr.port);
        await c.write(`#${seen.length}`);
        await c.close();
      }
      return "ended";
    })();
    const clients: Conn[] = [];
    try {
      for (let i = 1; i <= 3; i++) {
        const c = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
        clients.push(c);
        assert.equal((await collect(c)).toString(), `#${i}`);
      }
      assert.deepEqual(
        seen,
        clients.map((c) => c.localAddr.port),
      );
    } finally {
      await ln.close();
      await Promise.all(clients.map((c) => c.close()));
    }
    assert.equal(await withTimeout(loop, 2000, "the for-await loop after close()"), "ended");
  });

  test("close() rejects a pending accept with ClosedError; later accepts too", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    const pending = ln.accept();
    await sleep(20);
    await ln.close();
    await assert.rejects(withTimeout(pending, 2000, "pending accept"), (err: unknown) => {
      assert.ok(err instanceof ClosedError, String(err));
      assert.equal(err.code, "ERR_TLSNET_CLOSED");
      return true;
    });
    await assert.rejects(ln.accept(), ClosedError);
  });

  test("close() refuses new connections and closes ones never accepted", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    const raw = await rawConnect(ln.addr.port);
    try {
      const outcome = rawOutcome(raw);
      await until(() => ln.stats().accepted === 1, "the kernel accept");
      await ln.close();
      const o = await withTimeout(outcome, 3000, "the unaccepted conn to end");
      assert.equal(o.data.length, 0);
      await assert.rejects(
        tcp.connect(ln.addr.toString(), { timeout: 3000 }).then(closeAndFail("connect")),
        DialError,
      );
    } finally {
      raw.destroy();
      await ln.close();
    }
  });

  test("close() does not wait for conns returned by accept(): they belong to the caller and stay usable", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    const [client, server] = await connectPair(ln);
    const closing = ln.close();
    try {
      await withTimeout(closing, 1500, "listener close() with an accepted conn still open");
      assert.ok(server.isOpen);
      assert.equal(await roundTripVia(client, server, "still mine"), "still mine");
    } finally {
      await closeAll(client, server);
      await closing;
    }
  });

  test("accept() on a listener with a handler rejects with TypeError", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0", handler: echo });
    try {
      await assert.rejects(withTimeout(ln.accept(), 2000, "accept()"), TypeError);
    } finally {
      await ln.close();
    }
  });
});

describe("accept deadlines", () => {
  test("a deadline in the past fails accept at once; clearing it restores accept", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      ln.setDeadline(Date.now() - 1000);
      const t0 = performance.now();
      await assert.rejects(ln.accept(), isAcceptDeadline);
      assert.ok(since(t0) < 1000, "at once");
      ln.setDeadline(new Date(Date.now() - 1));
      await assert.rejects(ln.accept(), isAcceptDeadline);
      ln.setDeadline(null);
      const [client, server] = await connectPair(ln);
      await closeAll(client, server);
    } finally {
      await ln.close();
    }
  });

  test("a deadline set while accept() is pending fires", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      const t0 = performance.now();
      const pending = ln.accept();
      await sleep(20);
      ln.setDeadline(Date.now() + 200);
      await assert.rejects(withTimeout(pending, 3000, "pending accept"), isAcceptDeadline);
      const took = since(t0);
      assert.ok(took >= 180, `fired after ${took} ms, deadline was ~220 ms`);
    } finally {
      await ln.close();
    }
  });

  test("a deadline cleared while accept() is pending no longer applies to it", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      ln.setDeadline(Date.now() + 150);
      const pending = ln.accept();
      pending.catch(() => {}); // observed below
      ln.setDeadline(0); // cleared
      await sleep(400); // well past the cleared deadline: it must not fire
      const client = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
      try {
        await closeAll(await withTimeout(pending, 3000, "accept"));
      } finally {
        await closeAll(client);
      }
    } finally {
      await ln.close();
    }
  });

  test("a deadline moved later while accept() is pending: the old deadline no longer fires", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    let client: Conn | undefined;
    try {
      ln.setDeadline(Date.now() + 150);
      const pending = ln.accept();
      pending.catch(() => {}); // observed below
      ln.setDeadline(Date.now() + 5000);
      await sleep(400); // well past the old deadline
      client = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
      await closeAll(await withTimeout(pending, 3000, "accept"));
    } finally {
      await closeAll(client);
      await ln.close();
    }
  });

  test("accept({ timeout })", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      const t0 = performance.now();
      await assert.rejects(
        withTimeout(ln.accept({ timeout: 200 }), 3000, "accept({ timeout: 200 })"),
        isAcceptDeadline,
      );
      const took = since(t0);
      assert.ok(took >= 180 && took < 3000, `took ${took} ms`);
      // The listener is still usable.
      const [client, server] = await connectPair(ln);
      await closeAll(client, server);
    } finally {
      await ln.close();
    }
  });

  test("accept({ timeout }) settles every time: 100 short timeouts in a row", async () => {
    // A timer may fire a few ms before the monotonic expiry (libuv's loop clock is
    // coarse); the accept must still settle. One at a time, stopping at the first hang.
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      for (let i = 0; i < 100; i++) {
        await assert.rejects(
          withTimeout(ln.accept({ timeout: 10 }), 1000, `accept #${i} with timeout 10`),
          isAcceptDeadline,
        );
      }
    } finally {
      await ln.close();
    }
  });

  test("accept({ signal }) rejects with the signal's reason", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      const ac = new AbortController();
      const reason = new Error("shutting down");
      const pending = ln.accept({ signal: ac.signal });
      await sleep(50);
      ac.abort(reason);
      await assert.rejects(
        withTimeout(pending, 2000, "aborted accept"),
        (e: unknown) => e === reason,
      );
      const pre = new Error("already");
      await assert.rejects(
        ln.accept({ signal: AbortSignal.abort(pre) }),
        (e: unknown) => e === pre,
      );
      // An aborted waiter must not swallow the next conn.
      const [client, server] = await connectPair(ln);
      try {
        assert.equal(await roundTripVia(client, server, "after abort"), "after abort");
      } finally {
        await closeAll(client, server);
      }
    } finally {
      await ln.close();
    }
  });
});

/** Send `msg` from `a`, read it on `b`. */
async function roundTripVia(a: Conn, b: Conn, msg: string): Promise<string> {
  await a.write(msg);
  return (await b.readExactly(Buffer.byteLength(msg), { timeout: 5000 })).toString();
}

describe("maxConnections", () => {
  test("a connection beyond the limit is closed at once and counted", async () => {
    const release = deferred();
    let started = 0;
    const ln = await tcp.listen({
      addr: "127.0.0.1:0",
      maxConnections: 2,
      handler: async (conn) => {
        started++;
        await conn.write("hi");
        await release.promise;
      },
    });
    const clients: Conn[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const c = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
        clients.push(c);
        assert.equal((await c.readExactly(2, { timeout: 5000 })).toString(), "hi");
      }
      assert.equal(started, 2);
      const third = await rawConnect(ln.addr.port);
      const o = await withTimeout(rawOutcome(third), 3000, "the third client to be closed");
      assert.equal(o.data.length, 0, "the third client got nothing from a handler");
      assert.ok(o.how === "eof" || o.how === "reset", o.how);
      assert.equal(started, 2, "no handler ran for the rejected conn");
      const s = ln.stats();
      assert.equal(s.rejected, 1);
      assert.equal(s.accepted, 2);
      assert.equal(s.active, 2);

      // Once one slot frees up, a new client is served again.
      release.resolve();
      await Promise.all(clients.map((c) => collect(c)));
      await until(() => ln.stats().active === 0, "active to drop to 0");
      const again = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
      clients.push(again);
      assert.equal((await again.readExactly(2, { timeout: 5000 })).toString(), "hi");
      assert.equal(ln.stats().accepted, 3);
    } finally {
      release.resolve();
      await Promise.all(clients.map((c) => c.close()));
      await ln.close();
    }
  });
});

describe("handler mode", () => {
  test("a throwing handler (sync and async) goes to onError, its conn is closed, serving goes on", async () => {
    const errors: Array<{ err: Error; remoteAddr: SocketAddr | undefined }> = [];
    const syncBoom = new Error("sync boom");
    const asyncBoom = new Error("async boom");
    let n = 0;
    const ln = await tcp.listen({
      addr: "127.0.0.1:0",
      handler: (conn) => {
        n++;
        if (n === 1) throw syncBoom;
        if (n === 2) {
          return (async () => {
            await conn.readExactly(3, { timeout: 5000 });
            throw asyncBoom;
          })();
        }
        return echo(conn);
      },
      onError: (err, info) => errors.push({ err, remoteAddr: info.remoteAddr }),
    });
    const clients: Conn[] = [];
    try {
      // 1: sync throw.
      const c1 = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
      clients.push(c1);
      assert.equal(await withTimeout(c1.read(), 3000, "EOF after a sync throw"), null);
      await until(() => errors.length === 1, "onError for the sync throw");
      assert.equal(errors[0]!.err, syncBoom);
      assert.equal(errors[0]!.remoteAddr?.port, c1.localAddr.port);
      assert.equal(errors[0]!.remoteAddr?.address, "127.0.0.1");

      // 2: async rejection.
      const c2 = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
      clients.push(c2);
      await c2.write("abc");
      assert.equal(await withTimeout(c2.read(), 3000, "EOF after a rejection"), null);
      await until(() => errors.length === 2, "onError for the rejection");
      assert.equal(errors[1]!.err, asyncBoom);
      assert.equal(errors[1]!.remoteAddr?.port, c2.localAddr.port);

      // 3: the listener still serves.
      const c3 = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
      clients.push(c3);
      assert.equal(await roundTrip(c3, "still here"), "still here");
      assert.equal(errors.length, 2);
      assert.ok(ln.isOpen);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await ln.close();
    }
  });

  test("a throwing onError does not take the listener down", async () => {
    const ln = await tcp.listen({
      addr: "127.0.0.1:0",
      handler: () => {
        throw new Error("handler fails");
      },
      onError: () => {
        throw new Error("onError fails too");
      },
    });
    try {
      for (let i = 0; i < 2; i++) {
        const c = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
        assert.equal(await withTimeout(c.read(), 3000, "EOF"), null);
        await c.close();
      }
      assert.equal(ln.stats().accepted, 2);
    } finally {
      await ln.close();
    }
  });
});

describe("graceful close", () => {
  test("a handler that finishes within the grace period completes", async () => {
    const started = deferred();
    let finished = false;
    const ln = await tcp.listen({
      addr: "127.0.0.1:0",
      handler: async (conn) => {
        started.resolve();
        await sleep(100);
        await conn.write("done");
        finished = true;
      },
    });
    const c = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
    try {
      await withTimeout(started.promise, 3000, "handler start");
      const t0 = performance.now();
      const closing = ln.close({ graceful: 5000 });
      assert.equal(ln.isOpen, false);
      assert.equal((await withTimeout(collect(c), 4000, "handler output")).toString(), "done");
      await withTimeout(closing, 4000, "close({ graceful })");
      const took = since(t0);
      assert.ok(finished);
      assert.ok(took < 4000, `close waited for the handler, not the grace period: ${took} ms`);
      assert.equal(ln.stats().active, 0);
    } finally {
      await c.close();
      await ln.close();
    }
  });

  test("a handler that never finishes is cut off at the grace deadline; new dials are refused", async () => {
    const started = deferred();
    const never = deferred();
    const ln = await tcp.listen({
      addr: "127.0.0.1:0",
      handler: async (conn) => {
        await conn.write("working");
        started.resolve();
        await never.promise;
      },
      onError: () => {},
    });
    const c = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
    try {
      await withTimeout(started.promise, 3000, "handler start");
      assert.equal((await c.readExactly(7, { timeout: 5000 })).toString(), "working");
      const t0 = performance.now();
      const closing = ln.close({ graceful: 500 });
      // During the grace period: no new connections, the running one is intact.
      await sleep(50);
      await assert.rejects(
        tcp.connect(ln.addr.toString(), { timeout: 3000 }).then(closeAndFail("connect")),
        DialError,
      );
      assert.equal(ln.stats().active, 1);
      // At the grace deadline the conn is closed: the client sees EOF.
      assert.equal(await withTimeout(c.read(), 5000, "EOF at the grace deadline"), null);
      const eofAt = since(t0);
      await withTimeout(closing, 5000, "close({ graceful: 500 })");
      const took = since(t0);
      assert.ok(eofAt >= 450, `conn closed after ${eofAt} ms, grace was 500`);
      assert.ok(took < 4000, `close took ${took} ms for a 500 ms grace`);
      assert.equal(ln.stats().active, 0);
    } finally {
      never.resolve();
      await c.close();
      await ln.close();
    }
  });

  test("close() without grace closes handler conns at once", async () => {
    const never = deferred();
    const started = deferred();
    const ln = await tcp.listen({
      addr: "127.0.0.1:0",
      handler: async () => {
        started.resolve();
        await never.promise;
      },
    });
    const c = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
    try {
      await withTimeout(started.promise, 3000, "handler start");
      await withTimeout(ln.close(), 3000, "close()");
      assert.equal(await withTimeout(c.read(), 3000, "EOF"), null);
      assert.equal(ln.stats().active, 0);
    } finally {
      never.resolve();
      await c.close();
    }
  });
});

describe("bind failures", () => {
  test("listening on a port in use: ListenError naming the address", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      const where = `127.0.0.1:${ln.addr.port}`;
      await assert.rejects(
        tcp.listen({ addr: where }).then(closeAndFail("listen")),
        (err: unknown) => {
          assert.ok(err instanceof ListenError, String(err));
          assert.equal(err.code, "ERR_TLSNET_LISTEN");
          assert.ok(err.message.includes(where), err.message);
          assert.equal(err.address, where);
          return true;
        },
      );
      // The first listener is unaffected.
      const [client, server] = await connectPair(ln);
      await closeAll(client, server);
    } finally {
      await ln.close();
    }
  });
});
