/**
 * Binary reads: peek(), readUint8/16/32 (both byte orders) and readUvarint,
 * on the same buffer and with the same EOF, limit, deadline and option rules
 * as readExactly. Over real loopback TCP, with the peer's bytes split so that
 * values straddle chunks.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { DeadlineExceededError, LimitExceededError, UnexpectedEOFError } from "../src/index.ts";
import { tcpPair } from "./helpers/pair.ts";
import { sleep, withTimeout } from "./helpers/util.ts";

/** LEB128 as MQTT and protobuf write it. */
function uvarint(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

test("integers in both byte orders, straddling chunks, read in order", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  const b = Buffer.alloc(15);
  b.writeUInt8(0xfe, 0);
  b.writeUInt16BE(0x1234, 1);
  b.writeUInt16LE(0x1234, 3);
  b.writeUInt32BE(0xdeadbeef, 5);
  b.writeUInt32LE(0xdeadbeef, 9);
  b.writeUInt16BE(0xffff, 13);
  // One byte at a time, so every value spans chunks.
  const writing = (async () => {
    for (const byte of b) {
      await client.write(Buffer.from([byte]));
      await sleep(1);
    }
  })();
  assert.equal(await server.readUint8(), 0xfe);
  assert.equal(await server.readUint16BE(), 0x1234);
  assert.equal(await server.readUint16LE(), 0x1234);
  assert.equal(await server.readUint32BE(), 0xdeadbeef);
  assert.equal(await server.readUint32LE(), 0xdeadbeef);
  assert.equal(await server.readUint16BE(), 0xffff);
  await writing;
  assert.equal(server.unreadBytes, 0);
});

test("peek() returns bytes without consuming them, waits for enough, and a read then gets them", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  const peeked = server.peek(6, { timeout: 5000 });
  await client.write("abc");
  await sleep(20);
  await client.write("defgh");
  assert.equal((await peeked).toString(), "abcdef");
  assert.equal(server.unreadBytes, 8);
  assert.equal((await server.peek(2)).toString(), "ab", "peeking again sees the same bytes");
  assert.equal((await server.readExactly(8)).toString(), "abcdefgh");
});

test("a length-prefixed frame loop: readUint32BE then readExactly", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  const frames = ["", "x", "hello", "a".repeat(70_000)];
  const wire = Buffer.concat(
    frames.flatMap((f) => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(Buffer.byteLength(f));
      return [len, Buffer.from(f)];
    }),
  );
  void client.write(wire).then(() => client.closeWrite());
  const got: string[] = [];
  for (;;) {
    const len = await server.readUint32BE().catch((e: unknown) => {
      if (e instanceof UnexpectedEOFError && e.partial === 0) return null; // clean end between frames
      throw e;
    });
    if (len === null) break;
    got.push((await server.readExactly(len)).toString());
  }
  assert.deepEqual(got, frames);
});

test("readUvarint decodes MQTT/protobuf varints and refuses one longer than maxBytes", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  const values = [0, 1, 127, 128, 300, 16_383, 16_384, 268_435_455, 2 ** 40 + 5];
  await client.write(Buffer.concat(values.map(uvarint)));
  for (const v of values) assert.equal(await server.readUvarint(), v);
  // MQTT's remaining length has at most 4 bytes: a fifth continuation byte is a protocol error.
  await client.write(Buffer.from([0x80, 0x80, 0x80, 0x80, 0x01]));
  const err = await server.readUvarint({ maxBytes: 4 }).catch((e: unknown) => e);
  assert.ok(err instanceof LimitExceededError, String(err));
  assert.equal(err.limit, 4);
  assert.equal(server.unreadBytes, 5, "nothing consumed");
  assert.equal(await server.readUvarint(), 2 ** 28, "the default maxBytes (8) reads it");
  assert.throws(() => server.readUvarint({ maxBytes: 9 }), RangeError);
});

test("at EOF inside a value: UnexpectedEOFError with the partial bytes kept", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  await client.write(Buffer.from([0x01, 0x02, 0x81]));
  await client.closeWrite();
  const e1 = await server.readUint32BE({ timeout: 5000 }).then(
    () => assert.fail("resolved"),
    (e: unknown) => e,
  );
  assert.ok(e1 instanceof UnexpectedEOFError, String(e1));
  assert.equal(e1.partial, 3);
  const e2 = await server.peek(4).catch((e: unknown) => e);
  assert.ok(e2 instanceof UnexpectedEOFError, String(e2));
  assert.equal(await server.readUint16BE(), 0x0102, "a shorter read still gets the bytes");
  const e3 = await server.readUvarint().catch((e: unknown) => e);
  assert.ok(e3 instanceof UnexpectedEOFError, "a varint cut by EOF");
  assert.equal(await server.readUint8(), 0x81);
});

test("binary reads follow deadlines, per-call timeouts and aborted signals", async (t) => {
  const { server, close } = await tcpPair();
  t.after(close);
  const e1 = await withTimeout(
    server.readUint16BE({ timeout: 50 }).catch((e: unknown) => e),
    3000,
    "readUint16BE with a timeout",
  );
  assert.ok(e1 instanceof DeadlineExceededError && e1.op === "read", String(e1));
  server.setReadDeadline(Date.now() + 50);
  const e2 = await withTimeout(
    server.peek(1).catch((e: unknown) => e),
    3000,
    "peek at a deadline",
  );
  assert.ok(e2 instanceof DeadlineExceededError, String(e2));
  server.setReadDeadline(null);
  const ac = new AbortController();
  ac.abort(new Error("stop"));
  const e3 = await server.readUvarint({ signal: ac.signal }).catch((e: unknown) => e);
  assert.equal((e3 as Error).message, "stop");
});
