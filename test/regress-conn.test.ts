/**
 * Regression tests for issue 10, plain TCP Conn bugs: reads after a reset, sticky
 * EOF, readLine at EOF, aborted signals, per-call timeouts while queued,
 * closeWrite bounds and FIN, and close() losing unsent bytes. Each test asserts the
 * rule of the fix (docs/api.md, issue 10 rules) and failed on the code before it.
 * The peer is a raw node:net socket the test drives by hand.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  type Conn,
  ConnectionResetError,
  DeadlineExceededError,
  TlsnetError,
} from "../src/index.ts";
import { rawOutcome, withTimeout } from "./helpers/net.ts";
import { failOnUnhandledRejections, sleep } from "./helpers/pair.ts";
import { errorWithin, fillUntilUnsent, rawTcpPeer, rawTlsPeer, show } from "./helpers/regress.ts";
import { until } from "./helpers/util.ts";

failOnUnhandledRejections(after);

const MiB = 1024 * 1024;
const noop = () => {};

function assertReset(err: unknown, what: string): void {
  assert.ok(err instanceof ConnectionResetError, `${what}: ConnectionResetError, got ${show(err)}`);
  assert.equal(err.code, "ERR_TLSNET_RESET");
}

function assertDeadline(err: unknown, op: "read" | "write", what: string): void {
  assert.ok(
    err instanceof DeadlineExceededError,
    `${what}: DeadlineExceededError, got ${show(err)}`,
  );
  assert.equal(err.code, "ERR_TLSNET_DEADLINE");
  assert.equal(err.op, op);
}

// ------------------------------------------------------------------ #2

test("#2 readExactly after a reset mid-message rejects ConnectionResetError, buffered bytes stay readable", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  const pending = conn.readExactly(10);
  pending.catch(noop);
  peer.write("abcd");
  await until(() => conn.unreadBytes === 4, "the 4 bytes are buffered", 3000);
  peer.resetAndDestroy();
  assertReset(await errorWithin(pending, 3000, "pending readExactly(10) after RST"), "readExactly");
  const rest = await withTimeout(conn.read(), 3000, "read() of the buffered bytes");
  assert.equal(rest?.toString(), "abcd");
  assertReset(await errorWithin(conn.read(), 3000, "read() once drained"), "read after drain");
});

for (const op of ["readLine", "readUntil", "readAll", "readExactly"] as const) {
  test(`#2 ${op} needing more than is buffered after a reset rejects ConnectionResetError at once; read() still gets the bytes`, async (t) => {
    const { conn, peer, close } = await rawTcpPeer();
    t.after(close);
    peer.write("abcd");
    await until(() => conn.unreadBytes === 4, "the 4 bytes are buffered", 3000);
    peer.resetAndDestroy();
    await sleep(50); // the reset has arrived: the op below starts after it
    const call = (c: Conn): Promise<unknown> =>
      op === "readLine"
        ? c.readLine()
        : op === "readUntil"
          ? c.readUntil("\n")
          : op === "readAll"
            ? c.readAll()
            : c.readExactly(10);
    assertReset(await errorWithin(call(conn), 3000, `${op} after RST`), op);
    const rest = await withTimeout(conn.read(), 3000, "read() of the buffered bytes");
    assert.equal(rest?.toString(), "abcd", "the bytes before the reset are not lost");
    assertReset(await errorWithin(conn.read(), 3000, "read() once drained"), "read after drain");
  });
}

// ------------------------------------------------------------------ #3

test("#3 closeWrite() not awaited, then await close(), with unsent bytes: the peer gets every byte, then EOF", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  peer.pause();
  const outcome = rawOutcome(peer);
  const total = await fillUntilUnsent(conn);
  assert.ok(conn.unsentBytes > 0, "precondition: bytes are still unsent");
  conn.closeWrite().catch(noop);
  const closing = conn.close();
  await sleep(100); // the peer is slow to read
  peer.resume();
  const out = await withTimeout(outcome, 10_000, "the peer sees the end");
  assert.equal(out.data.length, total, `peer got ${out.data.length} of ${total} bytes`);
  assert.equal(out.how, "eof");
  await withTimeout(closing, 5000, "close()");
});

// ------------------------------------------------------------------ #4

test("#4 closeWrite() with unsent bytes and a stalled peer honours the write deadline", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  peer.pause();
  await fillUntilUnsent(conn);
  conn.setWriteDeadline(Date.now() + 200);
  const t0 = performance.now();
  const err = await errorWithin(conn.closeWrite(), 3000, "closeWrite() past the write deadline");
  assertDeadline(err, "write", "closeWrite");
  assert.ok(performance.now() - t0 >= 100, "it did not fail before the deadline");
});

test("#4 closeWrite({ timeout }) with unsent bytes and a stalled peer rejects DeadlineExceededError", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  peer.pause();
  await fillUntilUnsent(conn);
  const err = await errorWithin(conn.closeWrite({ timeout: 200 }), 3000, "closeWrite({ timeout })");
  assertDeadline(err, "write", "closeWrite({ timeout: 200 })");
});

test("#4 closeWrite({ signal }) with unsent bytes and a stalled peer rejects with the abort reason", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  peer.pause();
  await fillUntilUnsent(conn);
  const ac = new AbortController();
  const reason = new Error("stop waiting");
  setTimeout(() => ac.abort(reason), 100);
  const err = await errorWithin(
    conn.closeWrite({ signal: ac.signal }),
    3000,
    "closeWrite({ signal })",
  );
  assert.equal(err, reason, `rejects with signal.reason, got ${show(err)}`);
});

// ------------------------------------------------------------------ #9, #24

test("#9 readLine({ maxBytes: 5 }) at EOF returns a last unterminated line of exactly 5 bytes", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  peer.end("abcd\nabcde");
  await until(() => conn.unreadBytes === 10, "all bytes buffered", 3000);
  await sleep(50); // and the FIN behind them
  assert.equal(await withTimeout(conn.readLine({ maxBytes: 5 }), 3000, "line 1"), "abcd");
  assert.equal(await withTimeout(conn.readLine({ maxBytes: 5 }), 3000, "line 2"), "abcde");
  assert.equal(await withTimeout(conn.readLine({ maxBytes: 5 }), 3000, "after"), null);
});

test("#24 readLine keeps a lone trailing \\r of the last unterminated line (only \\r\\n is stripped)", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  peer.end("x\r\nabc\r");
  await until(() => conn.unreadBytes === 7, "all bytes buffered", 3000);
  await sleep(50);
  assert.equal(await withTimeout(conn.readLine(), 3000, "line 1"), "x");
  assert.equal(await withTimeout(conn.readLine(), 3000, "line 2"), "abc\r");
  assert.equal(await withTimeout(conn.readLine(), 3000, "after"), null);
});

// ------------------------------------------------------------------ #17

test("#17 an already-aborted signal rejects read() at once even with data buffered; the data stays", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  peer.write("hello");
  await until(() => conn.unreadBytes === 5, "5 bytes buffered", 3000);
  const signal = AbortSignal.abort();
  const err = await errorWithin(conn.read(100, { signal }), 500, "read({ aborted signal })");
  assert.equal(err, signal.reason, `read rejects with signal.reason, got ${show(err)}`);
  for (const [name, call] of [
    ["readExactly", () => conn.readExactly(5, { signal })],
    ["readLine", () => conn.readLine({ signal })],
    ["readUntil", () => conn.readUntil("l", { signal })],
    ["readInto", () => conn.readInto(new Uint8Array(10), { signal })],
    ["write", () => conn.write("x", { signal })],
  ] as const) {
    const e = await errorWithin(call(), 500, `${name}({ aborted signal })`);
    assert.equal(e, signal.reason, `${name} rejects with signal.reason, got ${show(e)}`);
  }
  assert.equal(conn.unreadBytes, 5, "nothing was consumed");
  assert.equal((await withTimeout(conn.read(), 3000, "read()"))?.toString(), "hello");
});

// ------------------------------------------------------------------ #22

test("#22 read(n, { timeout }) queued behind a pending read rejects after its timeout (op read)", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  const first = conn.read();
  first.catch(noop);
  const t0 = performance.now();
  const err = await errorWithin(
    conn.read(10, { timeout: 50 }),
    3000,
    "queued read({ timeout: 50 })",
  );
  assertDeadline(err, "read", "queued read");
  assert.ok(performance.now() - t0 >= 40, "it waited for its timeout");
  peer.write("x");
  const got = await withTimeout(first, 3000, "the first read");
  assert.equal(got?.toString(), "x", "the first read is untouched by the second's timeout");
});

test("#22 write(data, { timeout }) queued behind a write waiting for drain rejects after its timeout (op write)", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  peer.pause();
  const first = conn.write(Buffer.alloc(32 * MiB));
  first.catch(noop);
  const state = await Promise.race([
    first.then(
      () => "resolved",
      () => "rejected",
    ),
    sleep(200),
  ]);
  assert.equal(state, undefined, "precondition: the 32 MiB write waits for drain");
  const err = await errorWithin(
    conn.write("x", { timeout: 50 }),
    3000,
    "queued write({ timeout })",
  );
  assertDeadline(err, "write", "queued write");
});

// ------------------------------------------------------------------ #23

test("#23 closeWrite() after a write failed on its deadline never resolves while the peer would see no EOF", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  peer.pause();
  const outcome = rawOutcome(peer);
  conn.setWriteDeadline(Date.now() + 300);
  const writeErr = await errorWithin(conn.write(Buffer.alloc(32 * MiB)), 5000, "the big write");
  assertDeadline(writeErr, "write", "precondition: the write fails on its deadline");
  const cw = await withTimeout(
    conn.closeWrite().then(
      () => undefined,
      (e: unknown) => ({ e }),
    ),
    3000,
    "closeWrite() after the failed write",
  );
  if (cw !== undefined) {
    // The rule: it rejects with that write's error.
    assertDeadline(cw.e, "write", "closeWrite after the failed write");
    return;
  }
  // It resolved: then the peer must see the stream end (EOF or reset).
  peer.resume();
  const out = await withTimeout(outcome, 5000, "closeWrite resolved: the peer sees EOF or a reset");
  assert.ok(out.how === "eof" || out.how === "reset", `peer saw ${out.how}`);
});

// ------------------------------------------------------------------ #25

test("#25 EOF is sticky: read() stays null after a later write fails with a reset", async (t) => {
  const { conn, peer, close } = await rawTcpPeer();
  t.after(close);
  peer.end("hi");
  assert.equal((await withTimeout(conn.read(), 3000, "read 1"))?.toString(), "hi");
  assert.equal(await withTimeout(conn.read(), 3000, "read 2"), null);
  peer.destroy();
  let writeErr: unknown;
  for (let i = 0; i < 100 && writeErr === undefined; i++) {
    try {
      await withTimeout(conn.write("x"), 3000, "write to a closed peer");
      await sleep(20);
    } catch (e) {
      writeErr = e;
    }
  }
  assert.ok(writeErr instanceof TlsnetError, `precondition: a write fails, got ${show(writeErr)}`);
  assertReset(writeErr, "the write to the closed peer");
  for (let i = 0; i < 2; i++) {
    const r = await withTimeout(
      conn.read().catch((e: unknown) => e),
      3000,
      "read after EOF",
    );
    assert.equal(r, null, `read() after EOF stays null, got ${show(r)}`);
  }
});

// ------------------------------------------------------------------ #27

for (const kind of ["tcp", "tls"] as const) {
  test(`#27 ${kind}: write() then close(); the peer sends QUIT before reading: it still gets every byte, then EOF (5 runs)`, async (t) => {
    const size = 1 * MiB; // small enough that the kernel takes it all, so write() resolves
    for (let run = 0; run < 5; run++) {
      const { conn, peer, close } = kind === "tcp" ? await rawTcpPeer() : await rawTlsPeer();
      t.after(close);
      peer.pause();
      const outcome = rawOutcome(peer);
      await withTimeout(conn.write(Buffer.alloc(size, 0x62)), 5000, "write 1 MiB to a paused peer");
      const closing = conn.close();
      closing.catch(noop);
      await Promise.race([closing, sleep(300)]);
      peer.write("QUIT\r\n");
      await sleep(50);
      peer.resume();
      const out = await withTimeout(outcome, 10_000, `run ${run}: the peer sees the end`);
      assert.equal(out.data.length, size, `run ${run}: peer got ${out.data.length} of ${size}`);
      assert.equal(out.how, "eof", `run ${run}: a clean end`);
      await withTimeout(closing, 5000, "close()");
    }
  });
}
