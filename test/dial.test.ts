/**
 * Dialing over real loopback sockets: echo on IPv4 and IPv6, Happy Eyeballs
 * against a silent address, failures, timeouts, deadlines, abort, localAddress.
 */
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { type Conn, DeadlineExceededError, DialError, type Listener, tcp } from "../src/index.ts";
import {
  closeAll,
  closeAndFail,
  closedPort,
  connectPair,
  echoListener,
  ipv6Unavailable,
  roundTrip,
} from "./helpers/net.ts";
import { probeConnect, type SilentAddress, startSilentListener } from "./helpers/silent-address.ts";
import { since, withTimeout } from "./helpers/util.ts";

/** Assert `err` is a connect DeadlineExceededError. */
function isConnectDeadline(err: unknown): true {
  assert.ok(err instanceof DeadlineExceededError, `expected DeadlineExceededError, got ${err}`);
  assert.equal(err.code, "ERR_TLSNET_DEADLINE");
  assert.equal(err.op, "connect");
  return true;
}

/**
 * Several tests use 127.0.0.2..7: on Linux all of 127.0.0.0/8 is on lo, and a
 * full accept queue drops SYNs (the silent address). Elsewhere they are skipped.
 */
const NOT_LINUX =
  process.platform === "linux" ? false : `needs Linux loopback semantics (${process.platform})`;

/** A dial that should settle by itself within a few seconds fails cleanly if it hangs. */
const DIAL_BOUND = 5000;

describe("echo", () => {
  test("over IPv4 127.0.0.1", async () => {
    const ln = await echoListener();
    try {
      const c = await tcp.connect(`127.0.0.1:${ln.addr.port}`, { timeout: 5000 });
      assert.equal(c.remoteAddr.address, "127.0.0.1");
      assert.equal(c.remoteAddr.port, ln.addr.port);
      assert.equal(c.localAddr.family, "IPv4");
      assert.equal(await roundTrip(c, "hello over v4"), "hello over v4");
      await c.close();
    } finally {
      await ln.close();
    }
  });

  test("over IPv6 ::1", async (t) => {
    const why = await ipv6Unavailable();
    if (why) return t.skip(`::1 unavailable: ${why}`);
    const ln = await echoListener({ addr: "[::1]:0" });
    try {
      const c = await tcp.connect(`[::1]:${ln.addr.port}`, { timeout: 5000 });
      assert.equal(c.remoteAddr.address, "::1");
      assert.equal(c.remoteAddr.family, "IPv6");
      assert.equal(await roundTrip(c, "hello over v6"), "hello over v6");
      await c.close();
    } finally {
      await ln.close();
    }
  });

  test("a name resolved by the resolver option", async () => {
    const ln = await echoListener();
    try {
      const asked: string[] = [];
      const c = await tcp.connect(`svc.test:${ln.addr.port}`, {
        resolver: async (host) => {
          asked.push(host);
          return ["127.0.0.1"];
        },
        timeout: 5000,
      });
      assert.deepEqual(asked, ["svc.test"]);
      assert.equal(await roundTrip(c, "named"), "named");
      await c.close();
    } finally {
      await ln.close();
    }
  });
});

describe("Happy Eyeballs and timeouts against a silent address", { skip: NOT_LINUX }, () => {
  // live: an echo listener on 127.0.0.1:P; silent: 127.0.0.2:P, where SYNs go unanswered.
  let live: Listener<Conn>;
  let silent: SilentAddress;
  let P = 0;

  before(async () => {
    live = await echoListener();
    P = live.addr.port;
    silent = await startSilentListener("127.0.0.2", P);
    assert.equal(silent.port, P);
    // The premise of every test below: a connect there neither completes nor fails.
    assert.equal(await probeConnect("127.0.0.2", P, 1000), "pending");
  });

  after(async () => {
    await silent?.close();
    await live?.close();
  });

  const svc = () => `svc.test:${P}`;
  const silentFirst = async () => ["127.0.0.2", "127.0.0.1"];

  test("racing: the live address wins after fallbackDelay while the silent one hangs", async () => {
    const t0 = performance.now();
    const c = await tcp.connect(svc(), {
      resolver: silentFirst,
      fallbackDelay: 200,
      timeout: 10_000,
    });
    const took = since(t0);
    try {
      assert.ok(took >= 150, `the second attempt must wait for fallbackDelay; took ${took} ms`);
      assert.ok(
        took < 3000,
        `the first attempt's OS connect timeout was not awaited; took ${took}`,
      );
      assert.equal(c.remoteAddr.address, "127.0.0.1");
      assert.equal(c.remoteAddr.port, P);
      assert.equal(await roundTrip(c, "raced"), "raced");
    } finally {
      await c.close();
    }
  });

  test("sequential (fallbackDelay 0): the same dial waits on the silent address and times out", async () => {
    const acceptedBefore = live.stats().accepted;
    const t0 = performance.now();
    await assert.rejects(
      withTimeout(
        tcp.connect(svc(), { resolver: silentFirst, fallbackDelay: 0, timeout: 1000 }),
        DIAL_BOUND,
        "dial",
      ),
      isConnectDeadline,
    );
    const took = since(t0);
    assert.ok(took >= 900, `timed out after ${took} ms, expected ~1000`);
    assert.equal(live.stats().accepted, acceptedBefore, "the live address was never tried");
  });

  test("a failed attempt starts the next one at once, without waiting for fallbackDelay", async () => {
    // 127.0.0.4:P has no listener: refused at once.
    const t0 = performance.now();
    const c = await tcp.connect(svc(), {
      resolver: async () => ["127.0.0.4", "127.0.0.1"],
      fallbackDelay: 10_000,
      timeout: 20_000,
    });
    const took = since(t0);
    try {
      assert.ok(took < 5000, `the refusal should start the next attempt at once; took ${took}`);
      assert.equal(c.remoteAddr.address, "127.0.0.1");
      assert.equal(await roundTrip(c, "next"), "next");
    } finally {
      await c.close();
    }
  });

  test("timeout: the silent address alone", async () => {
    const t0 = performance.now();
    await assert.rejects(
      withTimeout(tcp.connect(`127.0.0.2:${P}`, { timeout: 300 }), DIAL_BOUND, "dial"),
      isConnectDeadline,
    );
    const took = since(t0);
    assert.ok(took >= 250 && took < 3000, `took ${took} ms for a 300 ms timeout`);
  });

  test("deadline: the silent address alone", async () => {
    const t0 = performance.now();
    await assert.rejects(
      withTimeout(
        tcp.connect(`127.0.0.2:${P}`, { deadline: Date.now() + 300 }),
        DIAL_BOUND,
        "dial",
      ),
      isConnectDeadline,
    );
    const took = since(t0);
    assert.ok(took >= 250 && took < 3000, `took ${took} ms for a deadline 300 ms ahead`);
  });

  test("deadline as a Date, earlier than timeout: the earlier wins", async () => {
    const t0 = performance.now();
    await assert.rejects(
      withTimeout(
        tcp.connect(`127.0.0.2:${P}`, { deadline: new Date(Date.now() + 300), timeout: 20_000 }),
        DIAL_BOUND,
        "dial",
      ),
      isConnectDeadline,
    );
    const took = since(t0);
    assert.ok(took >= 250 && took < 3000, `took ${took} ms`);
  });

  test("signal: aborting rejects with signal.reason", async () => {
    const ac = new AbortController();
    const reason = new Error("caller gave up");
    const timer = setTimeout(() => ac.abort(reason), 100);
    const t0 = performance.now();
    try {
      await assert.rejects(
        withTimeout(
          tcp.connect(`127.0.0.2:${P}`, { signal: ac.signal, timeout: 20_000 }),
          5000,
          "aborted dial",
        ),
        (err: unknown) => {
          assert.equal(err, reason);
          return true;
        },
      );
    } finally {
      clearTimeout(timer);
    }
    assert.ok(since(t0) >= 80, "not before the abort");
  });

  test("signal already aborted: rejects with its reason, nothing dialed", async () => {
    const reason = new Error("too late");
    await assert.rejects(
      tcp.connect(`127.0.0.2:${P}`, { signal: AbortSignal.abort(reason) }),
      (err: unknown) => err === reason,
    );
  });

  test("a resolver that never answers times out with DeadlineExceededError", async () => {
    const t0 = performance.now();
    await assert.rejects(
      withTimeout(
        tcp.connect(svc(), { resolver: () => new Promise<string[]>(() => {}), timeout: 300 }),
        DIAL_BOUND,
        "dial",
      ),
      isConnectDeadline,
    );
    const took = since(t0);
    assert.ok(took >= 250 && took < 3000, `took ${took} ms`);
  });
});

describe("dial failures", () => {
  test("every attempt refused: DialError naming the host, one error per address", {
    skip: NOT_LINUX,
  }, async () => {
    const port = await closedPort();
    const err = await tcp
      .connect(`svc.test:${port}`, {
        resolver: async () => ["127.0.0.1", "127.0.0.5"],
        fallbackDelay: 50,
        timeout: 10_000,
      })
      .then(closeAndFail("connected to a closed port"), (e: unknown) => e);
    assert.ok(err instanceof DialError, String(err));
    assert.equal(err.code, "ERR_TLSNET_DIAL");
    assert.equal(err.host, "svc.test");
    assert.equal(err.port, port);
    assert.match(err.message, /svc\.test/);
    assert.equal(err.errors.length, 2);
    const messages = err.errors.map((e) => e.message);
    assert.ok(
      messages.some((m) => m.includes(`127.0.0.1:${port}`)),
      messages.join(" | "),
    );
    assert.ok(
      messages.some((m) => m.includes(`127.0.0.5:${port}`)),
      messages.join(" | "),
    );
    for (const e of err.errors) assert.match(e.message, /refused/i);
  });

  test("addresses are tried alternating families (RFC 8305 interleaving)", {
    skip: NOT_LINUX,
  }, async (t) => {
    const why = await ipv6Unavailable();
    if (why) return t.skip(`::1 unavailable: ${why}`);
    const port = await closedPort();
    // Refusals are immediate and a refusal starts the next attempt, so with a long
    // fallbackDelay the attempts run strictly one after another, in dial order.
    const err = await tcp
      .connect(`svc.test:${port}`, {
        resolver: async () => ["127.0.0.1", "127.0.0.6", "::1"],
        fallbackDelay: 10_000,
        timeout: 20_000,
      })
      .then(closeAndFail("connected to a closed port"), (e: unknown) => e);
    assert.ok(err instanceof DialError, String(err));
    const order = err.errors.map((e) =>
      e.message.includes("[::1]") ? "::1" : e.message.includes("127.0.0.6") ? ".6" : ".1",
    );
    assert.deepEqual(order, [".1", "::1", ".6"]);
  });

  test("a resolver that throws: DialError naming the host, with the cause", async () => {
    const boom = new Error("no such zone");
    const err = await tcp
      .connect("svc.test:443", {
        resolver: async () => {
          throw boom;
        },
      })
      .then(closeAndFail("connected"), (e: unknown) => e);
    assert.ok(err instanceof DialError, String(err));
    assert.match(err.message, /svc\.test/);
    assert.match(err.message, /no such zone/);
    assert.equal(err.cause, boom);
  });

  test('family "ipv6" with only IPv4 addresses: DialError saying so', async () => {
    let called = false;
    const err = await tcp
      .connect("svc.test:443", {
        family: "ipv6",
        resolver: async () => {
          called = true;
          return ["127.0.0.1", "127.0.0.7"];
        },
      })
      .then(closeAndFail("connected"), (e: unknown) => e);
    assert.ok(called);
    assert.ok(err instanceof DialError, String(err));
    assert.match(err.message, /svc\.test/);
    assert.match(err.message, /no IPv6 addresses/);
  });

  test('family "ipv4" skips IPv6 addresses', async () => {
    const ln = await echoListener();
    try {
      const c = await tcp.connect(`svc.test:${ln.addr.port}`, {
        family: "ipv4",
        resolver: async () => ["::1", "127.0.0.1"],
        timeout: 5000,
      });
      assert.equal(c.remoteAddr.address, "127.0.0.1");
      await c.close();
      // And with no IPv4 address at all, it says so.
      await assert.rejects(
        tcp
          .connect(`svc.test:${ln.addr.port}`, { family: "ipv4", resolver: async () => ["::1"] })
          .then(closeAndFail("connect")),
        (err: unknown) => err instanceof DialError && /no IPv4 addresses/.test(err.message),
      );
    } finally {
      await ln.close();
    }
  });
});

describe("socket options", () => {
  test("localAddress binds the source address", { skip: NOT_LINUX }, async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      const [client, server] = await connectPair(ln, { localAddress: "127.0.0.3" });
      try {
        assert.equal(client.localAddr.address, "127.0.0.3");
        assert.equal(server.remoteAddr.address, "127.0.0.3");
        assert.equal(server.remoteAddr.port, client.localAddr.port);
      } finally {
        await closeAll(client, server);
      }
    } finally {
      await ln.close();
    }
  });

  test('localAddress with a port: "127.0.0.3:<port>"', { skip: NOT_LINUX }, async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      const lport = await closedPort("127.0.0.3");
      const [client, server] = await connectPair(ln, { localAddress: `127.0.0.3:${lport}` });
      try {
        assert.equal(server.remoteAddr.toString(), `127.0.0.3:${lport}`);
      } finally {
        await closeAll(client, server);
      }
    } finally {
      await ln.close();
    }
  });

  test("noDelay: on by default, off when asked", async (t) => {
    // Node keeps the TCP_NODELAY state it set under a private symbol; there is no
    // public getter, and Nagle's effect on loopback is a timing question.
    const noDelayState = (s: Socket): boolean | undefined => {
      const sym = Object.getOwnPropertySymbols(s).find((x) => x.description === "kSetNoDelay");
      return sym === undefined ? undefined : (s as unknown as Record<symbol, boolean>)[sym];
    };
    const ln = await echoListener();
    try {
      const dflt = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
      const off = await tcp.connect(ln.addr.toString(), { noDelay: false, timeout: 5000 });
      try {
        const a = noDelayState(dflt.socket);
        const b = noDelayState(off.socket);
        if (a === undefined || b === undefined) {
          return t.skip("this Node version does not expose the TCP_NODELAY state");
        }
        assert.equal(a, true, "noDelay defaults to true");
        assert.equal(b, false, "noDelay: false leaves Nagle on");
      } finally {
        await Promise.all([dflt.close(), off.close()]);
      }
    } finally {
      await ln.close();
    }
  });

  test("keepAlive: a number turns SO_KEEPALIVE on", async (t) => {
    const state = (s: Socket): boolean | undefined => {
      const sym = Object.getOwnPropertySymbols(s).find((x) => x.description === "kSetKeepAlive");
      return sym === undefined ? undefined : (s as unknown as Record<symbol, boolean>)[sym];
    };
    const ln = await echoListener();
    try {
      const on = await tcp.connect(ln.addr.toString(), { keepAlive: 1000, timeout: 5000 });
      const dflt = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
      try {
        const a = state(on.socket);
        const b = state(dflt.socket);
        if (a === undefined || b === undefined) {
          return t.skip("this Node version does not expose the SO_KEEPALIVE state");
        }
        assert.equal(a, true);
        assert.equal(b, false);
      } finally {
        await Promise.all([on.close(), dflt.close()]);
      }
    } finally {
      await ln.close();
    }
  });
});
