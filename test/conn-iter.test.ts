/**
 * Iterators over a conn's stream: lines(), split() and frames(), one piece at a
 * time or in batches of everything already buffered. Over real loopback TCP,
 * with the peer's bytes split at awkward places.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { DeadlineExceededError, LimitExceededError, UnexpectedEOFError } from "../src/index.ts";
import { tcpPair } from "./helpers/pair.ts";
import { sleep, withTimeout } from "./helpers/util.ts";

/** Write `parts` with a short pause between them (so they arrive as separate chunks), then FIN. */
async function drip(
  conn: { write(b: string | Uint8Array): Promise<void>; closeWrite(): Promise<void> },
  parts: Array<string | Uint8Array>,
) {
  for (const p of parts) {
    await conn.write(p);
    await sleep(5);
  }
  await conn.closeWrite();
}

test("lines(): readLine's rules, one line at a time and in batches", async (t) => {
  for (const batch of [false, true]) {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const writing = drip(client, ["one\r\ntw", "o\nthr", "ee\n\nfour\r"]);
    const got: string[] = [];
    if (batch) {
      for await (const lines of server.lines({ batch: true })) {
        assert.ok(lines.length >= 1);
        got.push(...lines);
      }
    } else {
      for await (const line of server.lines()) got.push(line);
    }
    await writing;
    assert.deepEqual(got, ["one", "two", "three", "", "four\r"], `batch: ${batch}`);
  }
});

test("split(): pieces through the delimiter; a clean EOF ends it, a partial piece throws", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  const writing = drip(client, ["a;b", "b;;c", "cc;", "tail"]);
  const got: string[] = [];
  const err = await (async () => {
    for await (const piece of server.split(";")) got.push(piece.toString());
  })().catch((e: unknown) => e);
  await writing;
  assert.deepEqual(got, ["a;", "bb;", ";", "ccc;"]);
  assert.ok(err instanceof UnexpectedEOFError, String(err));
  assert.equal(err.partial, 4);
  assert.equal((await server.readAll()).toString(), "tail", "the partial bytes stay readable");
});

test("split() with a multi-byte delimiter across chunks, in batches, then a clean end", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  const writing = drip(client, ["x\r", "\ny\r\nz", "z\r\n"]);
  const got: string[] = [];
  for await (const pieces of server.split("\r\n", { batch: true })) {
    for (const p of pieces) got.push(p.toString());
  }
  await writing;
  assert.deepEqual(got, ["x\r\n", "y\r\n", "zz\r\n"]);
});

test("breaking out of an iterator leaves the rest of the stream to the next read", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  await client.write("l1\nl2\nl3\nrest");
  await client.closeWrite();
  await sleep(20); // all of it buffered at once: the batch path would see every line
  for await (const line of server.lines()) {
    assert.equal(line, "l1");
    break;
  }
  assert.equal(await server.readLine(), "l2", "nothing was read ahead and lost");
  for await (const lines of server.split("\n", { batch: true })) {
    assert.deepEqual(
      lines.map((l) => l.toString()),
      ["l3\n"],
    );
    break;
  }
  assert.equal((await server.readAll()).toString(), "rest");
});

test("frames(): length-prefixed payloads, 1/2/4-byte lengths, batches, limits and EOF", async (t) => {
  const frame = (n: 1 | 2 | 4, payload: string) => {
    const len = Buffer.alloc(n);
    len.writeUIntBE(Buffer.byteLength(payload), 0, n);
    return Buffer.concat([len, Buffer.from(payload)]);
  };
  for (const n of [1, 2, 4] as const) {
    for (const batch of [false, true]) {
      const { client, server, close } = await tcpPair();
      t.after(close);
      const payloads = ["", "a", "hello", "x".repeat(200)];
      const wire = Buffer.concat(payloads.map((p) => frame(n, p)));
      // Split the wire at every third byte so lengths and payloads straddle chunks.
      const parts: Buffer[] = [];
      for (let i = 0; i < wire.length; i += 97) parts.push(wire.subarray(i, i + 97));
      const writing = drip(client, parts);
      const got: string[] = [];
      if (batch) {
        for await (const fs of server.frames({ lengthBytes: n, batch: true })) {
          for (const f of fs) got.push(f.toString());
        }
      } else {
        for await (const f of server.frames({ lengthBytes: n })) got.push(f.toString());
      }
      await writing;
      assert.deepEqual(got, payloads, `lengthBytes ${n}, batch ${batch}`);
    }
  }
  const { client, server, close } = await tcpPair();
  t.after(close);
  await client.write(frame(4, "ok"));
  await client.write(frame(4, "x".repeat(100)));
  const got: string[] = [];
  const err = await (async () => {
    for await (const f of server.frames({ maxBytes: 64 })) got.push(f.toString());
  })().catch((e: unknown) => e);
  assert.deepEqual(got, ["ok"]);
  assert.ok(err instanceof LimitExceededError, String(err));
  assert.equal(err.limit, 64);
  assert.equal(server.unreadBytes, 104, "the oversized frame is not consumed");
  // EOF inside a frame is an error, not a clean end.
  await client.write(Buffer.from([0, 0, 0, 9, 0x61]));
  await client.closeWrite();
  const err2 = await (async () => {
    for await (const _ of server.frames({ maxBytes: 1000 })) {
      // the 100-byte frame comes first
    }
  })().catch((e: unknown) => e);
  assert.ok(err2 instanceof UnexpectedEOFError, String(err2));
});

test("iterator waits follow per-call timeouts and the conn's read deadline", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  await client.write("first\n");
  const it = server.lines({ timeout: 100 });
  assert.deepEqual(await it.next(), { done: false, value: "first" });
  const e1 = await withTimeout(
    it.next().catch((e: unknown) => e),
    3000,
    "next() with a timeout",
  );
  assert.ok(e1 instanceof DeadlineExceededError && e1.op === "read", String(e1));
  assert.deepEqual(await it.next(), { done: true, value: undefined }, "a failed iterator is done");
  server.setReadDeadline(Date.now() + 50);
  const e2 = await withTimeout(
    server
      .frames()
      .next()
      .catch((e: unknown) => e),
    3000,
    "frames at a deadline",
  );
  assert.ok(e2 instanceof DeadlineExceededError, String(e2));
});
