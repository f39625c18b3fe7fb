/** Conn semantics over real loopback TCP: buffered reads, EOF, deadlines, close, limit. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import {
  ClosedError,
  type Conn,
  DeadlineExceededError,
  LimitExceededError,
  UnexpectedEOFError,
} from "../src/index.ts";
import { tcpPair } from "./helpers/pair.ts";
import { tlsPair } from "./helpers/tls.ts";
import { sha256, sleep, timed, until } from "./helpers/util.ts";

/** Wait until `conn` has buffered at least `n` bytes, so the next write lands in a new chunk. */
async function buffered(conn: Conn, n: number): Promise<void> {
  await until(
    () => conn.unreadBytes >= n,
    () => `expected ${n} buffered bytes, have ${conn.unreadBytes}`,
    3000,
    2,
  );
}

describe("reading lines and delimiters", () => {
  test("readLine handles LF, CRLF, a CRLF split across chunks, and the last unterminated line", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    await server.write("one\ntwo\r");
    await buffered(client, 8);
    await server.write("\nthr");
    await buffered(client, 12);
    await server.write("ee\r\nlast");
    await server.closeWrite();
    assert.equal(await client.readLine(), "one");
    assert.equal(await client.readLine(), "two");
    assert.equal(await client.readLine(), "three");
    assert.equal(await client.readLine(), "last");
    assert.equal(await client.readLine(), null);
    assert.equal(await client.readLine(), null);
  });

  test("readUntil finds a multi-byte delimiter split across three chunks and includes it", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    let sent = 0;
    for (const part of ["head--", "-BOUN", "D", "ARY--tail"]) {
      await server.write(part);
      sent += part.length;
      await buffered(client, sent);
    }
    const got = await client.readUntil("---BOUNDARY--");
    assert.equal(got.toString(), "head---BOUNDARY--");
    assert.equal(client.unreadBytes, 4);
    assert.equal((await client.read())?.toString(), "tail");
  });

  test("a timed-out readUntil resumes and still finds the delimiter", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    await server.write("abc\r");
    await assert.rejects(client.readUntil("\r\n", { timeout: 50 }), DeadlineExceededError);
    await server.write("\nrest");
    assert.equal((await client.readUntil("\r\n", { timeout: 5000 })).toString(), "abc\r\n");
  });

  test("past maxBytes, readUntil and readLine throw LimitExceededError and consume nothing", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const body = Buffer.alloc(5000, 0x61);
    await server.write([body, "\n"]);
    await buffered(client, 5001);
    const err = await client.readLine({ maxBytes: 1000 }).catch((e) => e);
    assert.ok(err instanceof LimitExceededError, String(err));
    assert.equal(err.code, "ERR_TLSNET_LIMIT");
    await assert.rejects(client.readUntil("\n", { maxBytes: 5000 }), LimitExceededError);
    assert.equal(client.unreadBytes, 5001);
    // Exactly at the limit (delimiter included) is allowed.
    const line = await client.readUntil("\n", { maxBytes: 5001 });
    assert.equal(line.length, 5001);
  });

  test("a line without end hits the limit while the peer keeps sending", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const writer = (async () => {
      const junk = Buffer.alloc(64 * 1024, 0x78);
      for (let i = 0; i < 64; i++) await server.write(junk);
    })().catch((e) => e);
    await assert.rejects(client.readLine(), LimitExceededError); // default 1 MiB
    await close();
    await writer;
  });

  test("a 16 MiB line reads whole with maxBytes raised", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const line = randomBytes(12 * 1024 * 1024)
      .toString("base64url")
      .slice(0, 16 * 1024 * 1024 - 2);
    const writer = server.write([line, "\r\n", "next\n"]);
    await assert.rejects(client.readLine({ maxBytes: 1024 * 1024 }), LimitExceededError);
    const got = await client.readLine({ maxBytes: 16 * 1024 * 1024 });
    assert.equal(got?.length, line.length);
    assert.equal(got, line);
    assert.equal(await client.readLine(), "next");
    await writer;
  });
});

describe("exact reads and EOF", () => {
  test("readExactly(5) on 4 bytes then EOF fails, consumes nothing, readExactly(4) returns them", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    await server.write("abcd");
    await server.closeWrite();
    const err = await client.readExactly(5).catch((e) => e);
    assert.ok(err instanceof UnexpectedEOFError, String(err));
    assert.equal(err.partial, 4);
    assert.equal(err.code, "ERR_TLSNET_UNEXPECTED_EOF");
    assert.equal((await client.readExactly(4)).toString(), "abcd");
    assert.equal(await client.read(), null);
    assert.equal(await client.read(), null);
    assert.equal(await client.read(), null);
  });

  test("readExactly spanning chunks returns the right bytes (the single copy is checked in chunks.test.ts)", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const a = randomBytes(1000);
    const b = randomBytes(3000);
    await server.write(a);
    await buffered(client, 1000);
    await server.write(b);
    const got = await client.readExactly(2500);
    assert.deepEqual(got, Buffer.concat([a, b]).subarray(0, 2500));
    assert.deepEqual(await client.readExactly(1500), b.subarray(1500));
  });

  test("readUntil at EOF keeps the partial bytes", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    await server.write("partial");
    await server.closeWrite();
    const err = await client.readUntil("\n").catch((e) => e);
    assert.ok(err instanceof UnexpectedEOFError);
    assert.equal(err.partial, 7);
    assert.equal((await client.readAll()).toString(), "partial");
  });

  test("readAll reads to EOF; past maxBytes it consumes nothing", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const data = randomBytes(300_000);
    await server.write(data);
    await server.closeWrite();
    await assert.rejects(client.readAll({ maxBytes: 1000 }), LimitExceededError);
    assert.deepEqual(await client.readAll(), data);
  });

  test("read(max) returns at most max; readInto fills a caller buffer", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    await server.write("0123456789");
    await buffered(client, 10);
    assert.equal((await client.read(3))?.toString(), "012");
    const dst = new Uint8Array(4);
    assert.equal(await client.readInto(dst), 4);
    assert.equal(Buffer.from(dst).toString(), "3456");
    assert.equal((await client.read())?.toString(), "789");
    await server.closeWrite();
    assert.equal(await client.readInto(dst), null);
  });
});

describe("ordering", () => {
  test("concurrent reads are served in call order, concurrent writes written in call order", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const reads = [client.readExactly(3), client.readLine(), client.readExactly(2)];
    const writes = [];
    for (let i = 0; i < 3; i++) writes.push(server.write(["ab", "c"][i % 2] ?? ""));
    await Promise.all(writes);
    await server.write(["line\n", "xy"]);
    const [r1, r2, r3] = await Promise.all(reads);
    assert.equal(r1?.toString(), "abc");
    assert.equal(r2, "abline");
    assert.equal(r3?.toString(), "xy");
  });

  test("async iteration and web streams carry the bytes", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const data = randomBytes(200_000);
    const writer = server.writable.getWriter();
    const w = (async () => {
      await writer.write(data.subarray(0, 100_000));
      await writer.write(data.subarray(100_000));
      await writer.close(); // half-closes
    })();
    const chunks: Buffer[] = [];
    for await (const chunk of client) chunks.push(chunk);
    await w;
    assert.equal(sha256(...chunks), sha256(data));
    // The readable stream side, in the other direction.
    await client.write("via stream");
    await client.closeWrite();
    const parts: Uint8Array[] = [];
    for await (const p of server.readable) parts.push(p);
    assert.equal(Buffer.concat(parts).toString(), "via stream");
  });
});

describe("deadlines and timeouts", () => {
  test("a read deadline fires, buffered data stays, and the conn stays usable", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    await server.write("12345");
    await buffered(client, 5);
    client.setReadDeadline(Date.now() + 100);
    const first = await timed(client.readExactly(10));
    assert.ok(first.error instanceof DeadlineExceededError, String(first.error));
    assert.equal(first.error.op, "read");
    assert.ok(first.ms >= 80 && first.ms < 3000, `fired after ${first.ms} ms`);
    // Several in a row: a deadline in the past fails at once.
    for (let i = 0; i < 3; i++) {
      await assert.rejects(client.readExactly(10), DeadlineExceededError);
      await assert.rejects(client.read(), DeadlineExceededError);
    }
    assert.equal(client.unreadBytes, 5);
    client.setReadDeadline(null);
    await server.write("67890");
    assert.equal((await client.readExactly(10)).toString(), "1234567890");
  });

  test("per-call timeouts repeat without losing data", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    for (let i = 0; i < 5; i++) {
      await assert.rejects(client.readLine({ timeout: 20 }), DeadlineExceededError);
    }
    await server.write("done\n");
    assert.equal(await client.readLine({ timeout: 5000 }), "done");
  });

  test("moving the read deadline later while a read waits postpones it; clearing it cancels it", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    client.setReadDeadline(Date.now() + 100);
    const pending = timed(client.readLine());
    await sleep(30);
    client.setReadDeadline(Date.now() + 400);
    const r = await pending;
    assert.ok(r.error instanceof DeadlineExceededError);
    assert.ok(r.ms >= 350, `fired after ${r.ms} ms, before the moved deadline`);
    client.setReadDeadline(Date.now() + 50);
    const p2 = client.readLine();
    client.setReadDeadline(null);
    await sleep(150);
    await server.write("late\n");
    assert.equal(await p2, "late");
  });

  test("an aborted signal rejects the read with its reason and keeps data", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const ac = new AbortController();
    const p = client.readExactly(4, { signal: ac.signal });
    await server.write("ab");
    await buffered(client, 2);
    const reason = new Error("stop");
    ac.abort(reason);
    await assert.rejects(p, (e) => e === reason);
    await server.write("cd");
    assert.equal((await client.readExactly(4)).toString(), "abcd");
  });

  test("a write deadline against a peer that does not read fires, and every later write fails the same way", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    server.limit(64 * 1024); // the peer stops reading at 64 KiB
    client.setWriteDeadline(Date.now() + 300);
    const big = Buffer.alloc(64 * 1024 * 1024);
    const r = await timed(client.write(big));
    assert.ok(r.error instanceof DeadlineExceededError, String(r.error));
    assert.equal(r.error.op, "write");
    assert.ok(r.ms < 5000);
    assert.ok(client.unsentBytes > 0, "bytes stay unsent while the peer does not read");
    const later = await client.write("x").catch((e) => e);
    assert.equal(later, r.error);
    client.setWriteDeadline(null);
    assert.equal(await client.write("y").catch((e) => e), r.error, "the failure is permanent");
  });
});

describe("closing", () => {
  test("close() settles a pending read and write with ClosedError; later ops reject; close twice is fine", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    server.limit(16 * 1024);
    const read = client.readLine().catch((e) => e);
    const write = client.write(Buffer.alloc(32 * 1024 * 1024)).catch((e) => e);
    const queued = client.write("queued behind").catch((e) => e);
    await sleep(50);
    await client.close();
    assert.ok((await read) instanceof ClosedError);
    assert.ok((await write) instanceof ClosedError);
    assert.ok((await queued) instanceof ClosedError);
    await assert.rejects(client.read(), ClosedError);
    await assert.rejects(client.write("x"), ClosedError);
    await assert.rejects(client.closeWrite(), ClosedError);
    assert.equal(client.isOpen, false);
    await client.close();
  });

  test("closeWrite(): the peer reads EOF while this side still reads the reply", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    await client.write("question");
    await client.closeWrite();
    assert.equal(client.isOpen, true);
    assert.equal((await server.readAll()).toString(), "question");
    await server.write("answer");
    await server.closeWrite();
    assert.equal((await client.readAll()).toString(), "answer");
    await assert.rejects(client.write("more"), ClosedError);
    await sleep(20);
    assert.equal(client.isOpen, false, "both directions ended");
  });

  test("data written right before close() is delivered", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const data = randomBytes(4 * 1024 * 1024);
    // The write is pending under backpressure when close() comes: it settles with
    // ClosedError, but the bytes it handed over are still flushed before the FIN.
    const write = client.write(data).catch((e) => e);
    await client.close();
    assert.equal(sha256(await server.readAll()), sha256(data));
    const outcome = await write;
    assert.ok(outcome === undefined || outcome instanceof ClosedError);
  });
});

describe("flow control", () => {
  test("limit(): unread bytes stay near the limit until the reader drains, all bytes intact", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    const MiB = 1024 * 1024;
    client.limit(MiB);
    const data = randomBytes(32 * MiB);
    const writer = server.write(data).then(() => server.closeWrite());
    let peak = 0;
    for (let i = 0; i < 20; i++) {
      await sleep(10);
      peak = Math.max(peak, client.unreadBytes);
    }
    assert.ok(peak >= MiB / 2, `sender should fill the buffer, peak ${peak}`);
    assert.ok(peak <= MiB + 256 * 1024, `buffering bounded near the limit, peak ${peak}`);
    assert.ok(server.unsentBytes > 0 || peak > 0);
    const got = await client.readAll();
    await writer;
    assert.equal(got.length, data.length);
    assert.equal(sha256(got), sha256(data));
  });

  test("limit(0) removes the limit", async (t) => {
    const { client, server, close } = await tcpPair();
    t.after(close);
    client.limit(0);
    const data = randomBytes(8 * 1024 * 1024);
    await server.write(data);
    for (let i = 0; i < 500 && client.unreadBytes < data.length; i++) await sleep(5);
    assert.equal(client.unreadBytes, data.length);
  });
});

describe("reads answered at once from the buffer (the synchronous fast path)", () => {
  type Kind = "readExactly" | "readUntil" | "readLine";
  const KINDS: Kind[] = ["readExactly", "readUntil", "readLine"];
  /** One two-byte "x\n" record read the `kind` way, as a string. */
  const readRecord = async (conn: Conn, kind: Kind): Promise<string | null> => {
    if (kind === "readExactly") return (await conn.readExactly(2)).toString();
    if (kind === "readUntil") return (await conn.readUntil("\n")).toString();
    return conn.readLine();
  };

  test("a buffered answer never jumps ahead of a read already waiting", async (t) => {
    for (const kind of KINDS) {
      const { client, server, close } = await tcpPair();
      t.after(close);
      await client.write("a\n");
      await buffered(server, 2);
      const order: string[] = [];
      const waiting = server.readUntil("!").then((b) => order.push(`waiting:${b}`));
      await sleep(10); // it waits for "!" with "a\n" buffered
      const next = readRecord(server, kind).then((v) => order.push(`next:${v}`));
      await sleep(10);
      assert.deepEqual(order, [], `${kind}: answered while an earlier read waits`);
      await client.write("!b\n");
      await Promise.all([waiting, next]);
      const b = kind === "readLine" ? "b" : "b\n";
      assert.deepEqual(order, ["waiting:a\n!", `next:${b}`], kind);
    }
  });

  test("a past read deadline or a closed conn fails the read, data or not", async (t) => {
    for (const kind of KINDS) {
      const { client, server, close } = await tcpPair();
      t.after(close);
      await client.write("a\nb\n");
      await buffered(server, 4);
      server.setReadDeadline(Date.now() - 1000);
      const err = await readRecord(server, kind).catch((e: unknown) => e);
      assert.ok(err instanceof DeadlineExceededError, `${kind}: ${String(err)}`);
      server.setReadDeadline(null);
      assert.equal(server.unreadBytes, 4, `${kind}: nothing consumed`);
      assert.match(String(await readRecord(server, kind)), /^a\n?$/);
      await server.close();
      const closed = await readRecord(server, kind).catch((e: unknown) => e);
      assert.ok(closed instanceof ClosedError, `${kind} after close: ${String(closed)}`);
    }
  });

  test("taking the buffer below limit() resumes the paused socket at once", async (t) => {
    for (const kind of KINDS) {
      const { client, server, close } = await tcpPair();
      t.after(close);
      await client.write("a\n");
      await buffered(server, 2);
      server.limit(2); // at the limit, nobody waiting: the socket is paused
      await client.write("b\n");
      await sleep(30);
      assert.equal(server.unreadBytes, 2, `${kind}: paused at the limit`);
      assert.match(String(await readRecord(server, kind)), /^a\n?$/);
      // No read waits now: only the read that took the bytes can have resumed the socket.
      await until(
        () => server.unreadBytes === 2,
        () => `${kind}: socket still paused after the buffer dropped below the limit`,
        3000,
      );
    }
  });
});

test("bytesRead and bytesWritten count every byte each way, TCP and TLS, and stay after close", async (t) => {
  for (const kind of ["tcp", "tls"] as const) {
    const { client, server, close } = kind === "tcp" ? await tcpPair() : await tlsPair();
    t.after(close);
    // Strings count as UTF-8 ("é" and "€" are 2 and 3 bytes), arrays as the sum of their parts.
    await client.write("héllo €");
    await client.write([Buffer.alloc(1000, 1), "ab", new Uint8Array(3)]);
    await client.write(randomBytes(70_000));
    const sent = Buffer.byteLength("héllo €") + 1000 + 2 + 3 + 70_000;
    assert.equal(client.bytesWritten, sent, `${kind}: client bytesWritten`);
    await until(() => server.bytesRead === sent, `${kind}: the server received it all`);
    assert.equal(server.unreadBytes, sent, "none of it read yet");
    await server.readExactly(100);
    assert.equal(server.bytesRead - server.unreadBytes, 100, "read = received - unread");
    await server.write("ok");
    assert.equal((await client.readExactly(2)).toString(), "ok");
    assert.equal(client.bytesRead, 2);
    assert.equal(server.bytesWritten, 2);
    await close();
    assert.equal(client.bytesWritten, sent, "kept after close");
    assert.equal(server.bytesRead, sent, "kept after close");
  }
});
