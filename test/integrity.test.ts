/**
 * Data integrity under concurrency (many conns, random-sized writes, SHA-256 on
 * both ends) and argument validation of every public entry point.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomInt } from "node:crypto";
import { describe, test } from "node:test";
import { ConfigError, type Conn, tcp } from "../src/index.ts";
import {
  assertBadArgument,
  closeAll,
  connectPair,
  echoListener,
  roundTrip,
} from "./helpers/net.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("data integrity under concurrency", () => {
  test("200 conns each echo 1 MiB of random-sized writes; SHA-256 matches on both ends", {
    timeout: 60_000,
  }, async () => {
    const CONNS = 200;
    const PER_CONN = 1 * MiB;
    // Random bytes to slice from at random offsets: every conn's stream is distinct
    // and position-dependent, while memory stays at one 4 MiB pool.
    const pool = randomBytes(4 * MiB);

    // Server side: hash what arrives per client port, echo it back.
    const received = new Map<number, { hash: string; bytes: number }>();
    const ln = await echoListener({
      handler: async (conn) => {
        const h = createHash("sha256");
        let bytes = 0;
        for await (const chunk of conn) {
          h.update(chunk);
          bytes += chunk.length;
          await conn.write(chunk);
        }
        received.set(conn.remoteAddr.port, { hash: h.digest("hex"), bytes });
      },
      backlog: 1024,
    });

    const one = async (i: number) => {
      const conn = await tcp.connect(ln.addr.toString(), { timeout: 20_000 });
      const sent = createHash("sha256");
      const writer = (async () => {
        let left = PER_CONN;
        for (let k = 0; left > 0; k++) {
          const n = Math.min(left, writeSize(k));
          const off = randomInt(0, pool.length - n + 1);
          const chunk = pool.subarray(off, off + n);
          sent.update(chunk);
          await conn.write(chunk);
          left -= n;
        }
        await conn.closeWrite();
        return sent.digest("hex");
      })();
      const reader = readEcho(conn, i % 3, PER_CONN);
      try {
        const [sentHash, back] = await Promise.all([writer, reader]);
        return { port: conn.localAddr.port, sentHash, back };
      } finally {
        await conn.close();
      }
    };

    try {
      const results = await Promise.all(Array.from({ length: CONNS }, (_, i) => one(i)));
      let bad = 0;
      for (const r of results) {
        assert.equal(r.back.bytes, PER_CONN, `conn :${r.port} echoed byte count`);
        if (r.back.hash !== r.sentHash) bad++;
      }
      assert.equal(bad, 0, `${bad} of ${CONNS} conns got back different bytes`);
      // Every handler has finished once every client saw EOF.
      assert.equal(received.size, CONNS);
      for (const r of results) {
        const got = received.get(r.port);
        assert.ok(got, `server has no record of :${r.port}`);
        assert.equal(got.bytes, PER_CONN);
        assert.equal(got.hash, r.sentHash, `server received different bytes from :${r.port}`);
      }
      const s = ln.stats();
      assert.equal(s.accepted, CONNS);
    } finally {
      await ln.close();
    }
  });
});

/**
 * Write sizes from 1 B to 64 KiB, log-uniform so that small writes are as common
 * as large ones; every conn starts with a few 1-byte writes.
 */
function writeSize(k: number): number {
  if (k < 3) return 1;
  return Math.max(1, Math.min(64 * KiB, Math.floor(2 ** (Math.random() * 16.01))));
}

/**
 * Read the echo until EOF, hashing it, with one of three read styles so that
 * views, copies across chunks and readInto are all exercised.
 */
async function readEcho(
  conn: Conn,
  style: number,
  expected: number,
): Promise<{ hash: string; bytes: number }> {
  const h = createHash("sha256");
  let bytes = 0;
  if (style === 0) {
    for await (const chunk of conn) {
      h.update(chunk);
      bytes += chunk.length;
    }
  } else if (style === 1) {
    while (bytes < expected) {
      const n = Math.min(expected - bytes, randomInt(1, 100 * KiB));
      const chunk = await conn.readExactly(n);
      assert.equal(chunk.length, n);
      h.update(chunk);
      bytes += n;
    }
    assert.equal(await conn.read(), null, "EOF after the echo");
  } else {
    const buf = new Uint8Array(randomInt(1, 48 * KiB));
    for (;;) {
      const n = await conn.readInto(buf);
      if (n === null) break;
      assert.ok(n >= 1 && n <= buf.length);
      h.update(buf.subarray(0, n));
      bytes += n;
    }
  }
  return { hash: h.digest("hex"), bytes };
}

describe("bad arguments fail at once, naming the argument", () => {
  test("Conn methods", async () => {
    const ln = await echoListener();
    const conn = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
    try {
      const c = conn as unknown as Record<string, (...args: unknown[]) => unknown>;
      const cases: Array<[string, () => unknown, Array<typeof TypeError>, RegExp]> = [
        ["read(0)", () => conn.read(0), [RangeError], /max/],
        ["read(17 MiB)", () => conn.read(17 * MiB), [RangeError], /max/],
        ["read('x')", () => c.read!.call(conn, "x"), [TypeError], /max/],
        ["read(1.5)", () => conn.read(1.5), [TypeError, RangeError], /max/],
        ["read(1, {timeout: -1})", () => conn.read(1, { timeout: -1 }), [RangeError], /timeout/],
        ["readExactly(-1)", () => conn.readExactly(-1), [RangeError], /readExactly|\bn\b/],
        ["readExactly('4')", () => c.readExactly!.call(conn, "4"), [TypeError], /\bn\b/],
        ["readUntil('')", () => conn.readUntil(""), [RangeError, TypeError], /delim/],
        ["readUntil(42)", () => c.readUntil!.call(conn, 42), [TypeError], /delim/],
        ["readLine({maxBytes: 0})", () => conn.readLine({ maxBytes: 0 }), [RangeError], /maxBytes/],
        ["readInto(empty)", () => conn.readInto(new Uint8Array(0)), [RangeError, TypeError], /buf/],
        ["readInto('x')", () => c.readInto!.call(conn, "x"), [TypeError], /buf/],
        ["write(123)", () => c.write!.call(conn, 123), [TypeError], /data/],
        ["write([1])", () => c.write!.call(conn, [1]), [TypeError], /data/],
        ["write(null)", () => c.write!.call(conn, null), [TypeError], /data/],
        ["limit(-1)", () => conn.limit(-1), [RangeError], /limit|bytes/],
        ["limit('1')", () => c.limit!.call(conn, "1"), [TypeError, RangeError], /limit|bytes/],
        ["setReadDeadline('x')", () => c.setReadDeadline!.call(conn, "x"), [TypeError], /deadline/],
        [
          "setWriteDeadline(NaN)",
          () => conn.setWriteDeadline(Number.NaN),
          [TypeError, RangeError],
          /deadline/,
        ],
        ["setDeadline({})", () => c.setDeadline!.call(conn, {}), [TypeError], /deadline/],
      ];
      for (const [label, fn, classes, named] of cases) {
        await assertBadArgument(label, fn, classes, named);
      }
      // None of that broke the conn.
      assert.ok(conn.isOpen);
      assert.equal(conn.unreadBytes, 0);
      assert.equal(await roundTrip(conn, "still fine"), "still fine");
    } finally {
      await conn.close();
      await ln.close();
    }
  });

  test("tcp.connect options", async () => {
    const addr = "127.0.0.1:9";
    const any = (o: unknown) => tcp.connect(addr, o as never);
    const cases: Array<[string, () => unknown, RegExp]> = [
      ["timeout: -1", () => any({ timeout: -1 }), /timeout/],
      ["timeout: 'x'", () => any({ timeout: "x" }), /timeout/],
      ["fallbackDelay: -5", () => any({ fallbackDelay: -5 }), /fallbackDelay/],
      ["deadline: 'soon'", () => any({ deadline: "soon" }), /deadline/],
      ["family: 'ipv5'", () => any({ family: "ipv5" }), /family/],
      ["resolver: 'x'", () => any({ resolver: "x" }), /resolver/],
      ["signal: {}", () => any({ signal: {} }), /signal/],
      ["localAddress: 'nohost'", () => any({ localAddress: "nohost" }), /localAddress|nohost/],
      ["keepAlive: -1", () => any({ keepAlive: -1 }), /keepAlive/],
      ["options: 42", () => any(42), /option/],
    ];
    for (const [label, fn, named] of cases) {
      await assertBadArgument(`connect ${label}`, fn, [ConfigError, TypeError, RangeError], named);
    }
  });

  test("tcp.listen options and Listener methods", async () => {
    const any = (o: unknown) => tcp.listen(o as never);
    await assertBadArgument("listen({})", () => any({}), [ConfigError], /addr/);
    await assertBadArgument(
      "listen(undefined)",
      () => any(undefined),
      [ConfigError, TypeError],
      /addr|option/,
    );
    await assertBadArgument(
      "listen backlog -1",
      () => any({ addr: "127.0.0.1:0", backlog: -1 }),
      [ConfigError],
      /backlog/,
    );
    await assertBadArgument(
      "listen maxConnections 1.5",
      () => any({ addr: "127.0.0.1:0", maxConnections: 1.5 }),
      [ConfigError],
      /maxConnections/,
    );
    await assertBadArgument(
      "listen handler 'x'",
      () => any({ addr: "127.0.0.1:0", handler: "x" }),
      [ConfigError],
      /handler/,
    );
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      await assertBadArgument(
        "accept({timeout: -1})",
        () => ln.accept({ timeout: -1 }),
        [RangeError, TypeError],
        /timeout/,
      );
      await assertBadArgument(
        "setDeadline('x')",
        () => (ln.setDeadline as (t: unknown) => void)("x"),
        [TypeError],
        /deadline/,
      );
      await assertBadArgument(
        "close({graceful: -1})",
        () => ln.close({ graceful: -1 }),
        [RangeError, TypeError],
        /graceful/,
      );
      assert.ok(ln.isOpen, "a rejected close() leaves the listener open");
      const [client, server] = await connectPair(ln);
      await closeAll(client, server);
    } finally {
      await ln.close();
    }
  });
});
