/**
 * Iterators over a conn's stream: lines(), split() and frames(), one piece at a
 * time or in batches of everything already buffered. Over real loopback TCP,
 * with the peer's bytes split at awkward places.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { DeadlineExceededError, LimitExceededError, UnexpectedEOFError } from "../src/index.ts";
import { tcpPair } from "./helpers/pair.ts";
import { sleep, until, withTimeout } from "./helpers/util.ts";

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

/** Write `parts` as separate chunks (a pause after each), then wait until the reader has them all. */
async function buffered(
  client: { write(b: string | Uint8Array): Promise<void> },
  server: { unreadBytes: number },
  parts: Array<string | Uint8Array>,
) {
  let total = server.unreadBytes;
  for (const p of parts) {
    await client.write(p);
    total += typeof p === "string" ? Buffer.byteLength(p) : p.length;
    await sleep(5);
  }
  await until(() => server.unreadBytes === total, "all the parts buffered");
}

function frame4(payload: string | Buffer): Buffer {
  const p = typeof payload === "string" ? Buffer.from(payload) : payload;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(p.length, 0);
  return Buffer.concat([len, p]);
}

test("batches: one step hands out every whole piece buffered, across chunk boundaries", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  // Pieces inside chunks, a piece spanning three chunks, the delimiter alone in a chunk.
  await buffered(client, server, ["a\nbb\nc", "cc", "c\nd", "\n", "e\nf"]);
  const it = server.split("\n", { batch: true });
  const first = await it.next();
  assert.deepEqual(
    (first.value as Buffer[]).map((b) => b.toString()),
    ["a\n", "bb\n", "cccc\n", "d\n", "e\n"],
    "all five in the first batch, nothing more",
  );
  assert.equal(server.unreadBytes, 1, "the unterminated 'f' stays buffered");
  // Lines: CRLF split across chunks ("\r" ends one chunk, "\n" starts the next).
  await buffered(client, server, ["\r", "\ng\r\nh", "i\r\n"]);
  const lines = await server.lines({ batch: true }).next();
  assert.deepEqual(lines.value, ["f", "g", "hi"]);
  // Frames: lengths and payloads split across chunks, empty frames between.
  const wire = Buffer.concat([frame4("one"), frame4(""), frame4("three"), frame4("x".repeat(70))]);
  await buffered(client, server, [
    wire.subarray(0, 2),
    wire.subarray(2, 9),
    wire.subarray(9, 30),
    wire.subarray(30),
  ]);
  const frames = await server.frames({ batch: true }).next();
  assert.deepEqual(
    (frames.value as Buffer[]).map((b) => b.toString()),
    ["one", "", "three", "x".repeat(70)],
  );
  assert.equal(server.unreadBytes, 0);
});

test("batches: a waiting step is settled by the data with every whole piece it brought", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  const it = server.split("\n", { batch: true });
  const first = it.next(); // waits: nothing buffered
  await sleep(20);
  await client.write("a\nb");
  assert.deepEqual(
    ((await first).value as Buffer[]).map((b) => b.toString()),
    ["a\n"],
  );
  const second = it.next(); // waits again: only "b" is buffered
  await sleep(20);
  await client.write("c\nd\ne\n");
  assert.deepEqual(
    ((await second).value as Buffer[]).map((b) => b.toString()),
    ["bc\n", "d\n", "e\n"],
    "the straddler and every piece after it, in one step",
  );
  const fit = server.frames({ batch: true });
  const f1 = fit.next();
  await sleep(20);
  const wire = Buffer.concat([frame4("p"), frame4("qq"), frame4("rrr")]);
  await client.write(wire.subarray(0, 7));
  await sleep(20);
  await client.write(wire.subarray(7));
  const got: string[] = [];
  for (const f of ((await f1).value as Buffer[]) ?? []) got.push(f.toString());
  if (got.length < 3)
    for (const f of ((await fit.next()).value as Buffer[]) ?? []) got.push(f.toString());
  assert.deepEqual(got, ["p", "qq", "rrr"]);
});

test("batches: maxBytes exactly hit is fine, one byte over stops after the pieces before it", async (t) => {
  const { client, server, close } = await tcpPair();
  t.after(close);
  // split: pieces of exactly 6 bytes (inside a chunk, and spanning two), then one of 7.
  await buffered(client, server, ["aaaaa\nbb", "bbb\n", "cc\nddddddd\n"]);
  const it = server.split("\n", { maxBytes: 6, batch: true });
  assert.deepEqual(
    ((await it.next()).value as Buffer[]).map((b) => b.toString()),
    ["aaaaa\n", "bbbbb\n", "cc\n"],
  );
  const err = await it.next().catch((e: unknown) => e);
  assert.ok(err instanceof LimitExceededError, String(err));
  assert.equal(err.limit, 6);
  assert.equal(server.unreadBytes, 8, "the long piece is not consumed");
  assert.deepEqual(await it.next(), { done: true, value: undefined });
  assert.equal((await server.readUntil("\n")).toString(), "ddddddd\n");
  // lines: maxBytes counts the "\r\n"; exactly at it passes.
  await buffered(client, server, ["abc\r\nde", "f\r\nghijkl\r\n"]);
  const lit = server.lines({ maxBytes: 5, batch: true });
  assert.deepEqual((await lit.next()).value, ["abc", "def"]);
  const lerr = await lit.next().catch((e: unknown) => e);
  assert.ok(lerr instanceof LimitExceededError, String(lerr));
  assert.equal((await server.readLine())?.length, 6);
  // frames: a payload of exactly maxBytes in one chunk and across two, then one byte more.
  const wire = Buffer.concat([frame4("12345"), frame4("67890"), frame4("x"), frame4("abcdef")]);
  await buffered(client, server, [wire.subarray(0, 12), wire.subarray(12)]);
  const fit = server.frames({ maxBytes: 5, batch: true });
  assert.deepEqual(
    ((await fit.next()).value as Buffer[]).map((b) => b.toString()),
    ["12345", "67890", "x"],
  );
  const ferr = await fit.next().catch((e: unknown) => e);
  assert.ok(ferr instanceof LimitExceededError, String(ferr));
  assert.equal(ferr.limit, 5);
  assert.equal(server.unreadBytes, 10, "the oversized frame is left whole");
});

test("batches: EOF in the middle of a piece ends a batch, then fails with the partial count", async (t) => {
  for (const kind of ["split", "lines", "frames"] as const) {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const parts =
      kind === "frames"
        ? [
            Buffer.concat([frame4("a"), frame4("bc")]),
            Buffer.concat([frame4("de"), frame4("fgh").subarray(0, 5)]),
          ]
        : ["a\nbc\n", "de\nfg"];
    await buffered(client, server, parts);
    await client.closeWrite();
    const batches: string[][] = [];
    const err = await (async () => {
      const it =
        kind === "split"
          ? server.split("\n", { batch: true })
          : kind === "lines"
            ? server.lines({ batch: true })
            : server.frames({ batch: true });
      for await (const b of it) batches.push(b.map((x) => x.toString()));
    })().catch((e: unknown) => e);
    if (kind === "lines") {
      assert.equal(err, undefined, "lines: the last unterminated line is a line");
      assert.deepEqual(batches.flat(), ["a", "bc", "de", "fg"]);
      assert.deepEqual(batches[0], ["a", "bc", "de"], "the whole lines first, in one batch");
      continue;
    }
    assert.deepEqual(batches, kind === "split" ? [["a\n", "bc\n", "de\n"]] : [["a", "bc", "de"]]);
    assert.ok(err instanceof UnexpectedEOFError, `${kind}: ${String(err)}`);
    assert.equal(err.partial, kind === "split" ? 2 : 5, kind);
    assert.equal(server.unreadBytes, err.partial, `${kind}: the partial bytes stay readable`);
  }
  // EOF inside a frame's length: also an error, not a clean end.
  const { client, server, close } = await tcpPair();
  t.after(close);
  await buffered(client, server, [Buffer.concat([frame4("a"), frame4("b").subarray(0, 2)])]);
  await client.closeWrite();
  const it = server.frames({ batch: true });
  assert.deepEqual(
    ((await it.next()).value as Buffer[]).map((b) => b.toString()),
    ["a"],
  );
  const err = await it.next().catch((e: unknown) => e);
  assert.ok(err instanceof UnexpectedEOFError, String(err));
  assert.equal(err.partial, 2);
});
