/**
 * Direct reads (src/direct-reads.ts): on the node engine, a TLS conn's records come through
 * Node's onread path into buffers tlsnet supplies, one shared by every conn for small reads
 * and one per conn for large ones, handed to the reader without a copy. What must hold, on
 * both engines: every chunk a reader got stays as it was while later records arrive (no
 * buffer is written after it was handed out), whatever the mix of record sizes and however
 * many conns read at once; flow control still stops the socket; a hand-over to node:http-style
 * "data" readers and a lingering close still see every byte or discard it.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { Socket } from "node:net";
import { test } from "node:test";
import { type Conn, type TLSConn, tls } from "../src/index.ts";
import { prng } from "./helpers/hostile.ts";
import { sha256, sleep, until, withTimeout } from "./helpers/pair.ts";
import { tlsPair } from "./helpers/tls.ts";

const onNodeEngine = tls.backend().engine === "node" && tls.backend().runtime === "node";

/**
 * Writes of seeded random sizes: runs of small writes (a shared-buffer read each) between
 * runs of large ones (whole records, handed over), so conns switch buffers often.
 */
function mixedWrites(seed: number, total: number): Buffer[] {
  const bytes = prng(seed);
  const sizes = prng(seed + 1);
  const parts: Buffer[] = [];
  let left = total;
  let large = false;
  while (left > 0) {
    const r = sizes(4).readUInt32BE(0);
    if (r % 7 === 0) large = !large;
    const size = Math.min(left, large ? 8 * 1024 + (r % (56 * 1024)) : 1 + (r % 4000));
    parts.push(bytes(size));
    left -= size;
  }
  return parts;
}

/** Write `parts` (yielding now and then, so records leave one by one), then closeWrite. */
async function send(conn: Conn, parts: Buffer[]): Promise<void> {
  for (let i = 0; i < parts.length; i++) {
    await conn.write(parts[i]!);
    if (i % 5 === 0) await sleep(0);
  }
  await conn.closeWrite();
}

/** Every chunk the reader got, kept as it was handed out (not copied, not concatenated). */
async function keepChunks(conn: Conn, slowEvery = 0): Promise<Buffer[]> {
  const kept: Buffer[] = [];
  for await (const chunk of conn) {
    kept.push(chunk);
    if (slowEvery > 0 && kept.length % slowEvery === 0) await sleep(2); // let records pile up
  }
  return kept;
}

/**
 * Hand `conn` over with toSocket() and push every "data" chunk onto `kept` (after what is
 * already there); `inside` runs within each "data" event. Resolves at the socket's EOF.
 */
function handOver(
  t: { after(fn: () => void): void },
  conn: Conn,
  kept: Buffer[],
  inside?: (socket: Socket) => void,
): Promise<void> {
  const socket = conn.toSocket(); // what the conn buffered goes back in front
  t.after(() => void socket.destroy());
  const ended = new Promise<void>((resolve) => socket.once("end", () => resolve()));
  socket.on("data", (chunk: Buffer) => {
    kept.push(chunk);
    inside?.(socket);
  });
  return ended;
}

function hashOf(chunks: Buffer[]): string {
  const h = createHash("sha256");
  for (const c of chunks) h.update(c);
  return h.digest("hex");
}

test("TLS reads of mixed record sizes, 4 conns at once both ways: every chunk kept intact to the end", async (t) => {
  const pairs = await Promise.all([0, 1, 2, 3].map(() => tlsPair()));
  for (const p of pairs) t.after(p.close);
  const runs = pairs.flatMap(({ client, server }, i) => {
    const up = mixedWrites(100 + i, 3 * 1024 * 1024);
    const down = mixedWrites(200 + i, 3 * 1024 * 1024);
    const check = async (from: TLSConn, to: TLSConn, parts: Buffer[], slow: number) => {
      const [kept] = await Promise.all([keepChunks(to, slow), send(from, parts)]);
      // Hashing only now: a buffer written after it was handed out would show here.
      assert.equal(hashOf(kept), sha256(...parts), `conn ${i}: the kept chunks are the bytes sent`);
      assert.ok(kept.length > 1);
    };
    return [check(client, server, up, i % 2 === 0 ? 0 : 7), check(server, client, down, 5)];
  });
  await withTimeout(Promise.all(runs), 60_000, "8 streams of 3 MiB");
});

test("a TLS conn at its limit stops reading from the socket and resumes with nothing lost", async (t) => {
  const { client, server, close } = await tlsPair();
  t.after(close);
  const limit = 64 * 1024;
  server.limit(limit);
  const parts = mixedWrites(7, 8 * 1024 * 1024);
  const sending = send(client, parts);
  // Nobody reads: the server holds about its limit (plus what one socket read decrypts), the
  // rest waits in the kernel and the client's queue instead of piling up in memory.
  await until(() => server.unreadBytes >= limit, "the server's buffer fills to its limit");
  await sleep(200);
  assert.ok(server.unreadBytes <= limit + 64 * 1024, `buffered ${server.unreadBytes}`);
  const [kept] = await Promise.all([keepChunks(server), sending]);
  assert.equal(hashOf(kept), sha256(...parts));
});

test("a TLS conn's socket handed over mid-stream gets the rest as 'data' events, in order", async (t) => {
  const { client, server, close } = await tlsPair();
  t.after(close);
  const parts = mixedWrites(11, 2 * 1024 * 1024);
  const sending = send(client, parts);
  const kept: Buffer[] = [];
  let got = 0;
  while (got < 256 * 1024) {
    const chunk = await server.read();
    assert.ok(chunk !== null);
    kept.push(chunk);
    got += chunk.length;
  }
  const ended = handOver(t, server, kept);
  await withTimeout(Promise.all([ended, sending]), 20_000, "the handed-over socket's EOF");
  assert.equal(hashOf(kept), sha256(...parts));
});

test("a handed-over TLS socket whose 'data' listener writes (even empty writes, which read again at once) keeps every chunk intact", async (t) => {
  const { client, server, close } = await tlsPair();
  t.after(close);
  const parts = mixedWrites(31, 4 * 1024 * 1024);
  const kept: Buffer[] = [];
  // Handshaken, so its reads already took the onread path. node:http's end() writes an empty
  // chunk from inside "data"; node:tls runs its read loop for one, so more records arrive in
  // this socket's buffer before the listener returns.
  const ended = handOver(t, server, kept, (socket) => socket.write(Buffer.alloc(0)));
  await withTimeout(Promise.all([ended, send(client, parts)]), 30_000, "the stream and its EOF");
  assert.equal(hashOf(kept), sha256(...parts));
});

test("a TLS conn closed while its peer still sends discards the rest and is released at the peer's EOF", async (t) => {
  const { client, server, close } = await tlsPair();
  t.after(close);
  const parts = mixedWrites(21, 4 * 1024 * 1024);
  const sending = send(client, parts);
  assert.ok((await server.read()) !== null);
  await withTimeout(server.close(), 5_000, "close with the peer still sending");
  // The lingering close reads and discards to the client's EOF, so the client's writes all
  // complete (no reset cuts them short).
  await withTimeout(sending, 20_000, "the sender finishes");
  assert.equal(server.isOpen, false);
});

test("on Node, the node engine reads TLS records without 'data' events (the onread path is on)", {
  skip: onNodeEngine ? false : "only the node engine on Node has it",
}, async (t) => {
  const { client, server, close } = await tlsPair();
  t.after(close);
  for (const conn of [client, server]) {
    assert.equal(conn.socket.listenerCount("data"), 0, `${conn === client ? "client" : "server"}`);
  }
  await client.write("ping");
  assert.equal((await server.read())?.toString(), "ping");
});
