/**
 * copyTo(): a conn's reads copied into another conn (or itself: an echo), the
 * way a proxy does it. Over real loopback TCP and TLS: order, counts,
 * backpressure with a bounded buffer, half-close, and every way a copy ends.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import {
  ClosedError,
  type Conn,
  ConnectionResetError,
  DeadlineExceededError,
  TLSConn,
  TLSError,
  tcp,
  tls,
} from "../src/index.ts";
import { prng } from "./helpers/hostile.ts";
import { collect } from "./helpers/net.ts";
import { sha256, sleep, tcpPair, until, withTimeout } from "./helpers/pair.ts";
import { hostPort, pki, tlsPair } from "./helpers/tls.ts";

type Pair = { client: Conn; server: Conn; close: () => Promise<void> };

/**
 * Two connected pairs, closed after the test: the source (client writes, server is copied
 * from) and the destination (out is copied into, peer receives).
 */
async function rig(
  t: { after(fn: () => Promise<void>): void },
  kinds: ["tcp" | "tls", "tcp" | "tls"] = ["tcp", "tcp"],
): Promise<{ client: Conn; server: Conn; out: Conn; peer: Conn }> {
  const make = (k: "tcp" | "tls"): Promise<Pair> => (k === "tcp" ? tcpPair() : tlsPair());
  const [src, dst] = await Promise.all([make(kinds[0]), make(kinds[1])]);
  t.after(src.close);
  t.after(dst.close);
  return { client: src.client, server: src.server, out: dst.client, peer: dst.server };
}

/** Write `parts` with a pause between them (separate chunks on the wire), then FIN. */
async function drip(conn: Conn, parts: Buffer[], gapMs = 2): Promise<void> {
  for (const p of parts) {
    await conn.write(p);
    await sleep(gapMs);
  }
  await conn.closeWrite();
}

test("copyTo(itself) echoes every chunk in order, ends the write side at EOF, returns the count", async (t) => {
  for (const kind of ["tcp", "tls"] as const) {
    const { client, server, close } = kind === "tcp" ? await tcpPair() : await tlsPair();
    t.after(close);
    const parts = Array.from({ length: 40 }, (_, i) => randomBytes(1 + ((i * 997) % 3000)));
    const copying = server.copyTo(server);
    const [echoed] = await Promise.all([collect(client), drip(client, parts)]);
    const total = parts.reduce((n, p) => n + p.length, 0);
    assert.equal(await withTimeout(copying, 5000, "copyTo"), total, kind);
    assert.equal(sha256(echoed), sha256(...parts), `${kind}: the bytes came back in order`);
  }
});

test("copyTo() sends what was buffered before it started first (a proxy after reading a header)", async (t) => {
  const { client, server, out, peer: backend } = await rig(t);
  await client.write("HEADER\nbody-1;");
  assert.equal(await server.readLine(), "HEADER");
  await until(() => server.unreadBytes > 0, "the rest of the first chunk is buffered");
  const copying = server.copyTo(out);
  const received = collect(backend);
  await drip(client, [Buffer.from("body-2;"), Buffer.from("body-3")]);
  assert.equal(await copying, "body-1;body-2;body-3".length);
  assert.equal((await received).toString(), "body-1;body-2;body-3");
});

test("copyTo() under backpressure: the source stops reading at its limit, nothing is lost", async (t) => {
  const { client, server, out, peer: sink } = await rig(t);
  const limit = 256 * 1024;
  server.limit(limit);
  const data = randomBytes(24 * 1024 * 1024);
  const copying = server.copyTo(out);
  const sending = (async () => {
    for (let off = 0; off < data.length; off += 64 * 1024) {
      await client.write(data.subarray(off, off + 64 * 1024));
    }
    await client.closeWrite();
  })();
  // The sink does not read: the copy fills the kernel buffers, then waits.
  await sleep(300);
  assert.ok(server.unreadBytes <= limit + 64 * 1024, `buffered ${server.unreadBytes}`);
  assert.ok(out.unsentBytes <= 1024 * 1024, `queued for the sink: ${out.unsentBytes}`);
  const sent = await Promise.race([sending.then(() => true), sleep(50).then(() => false)]);
  assert.equal(sent, false, "the sender is held back by the stalled copy");
  const received = await collect(sink);
  await sending;
  assert.equal(await copying, data.length);
  assert.equal(sha256(received), sha256(data));
});

test("copyTo() with end: false leaves the destination writable; a proxy pair copies both ways", async (t) => {
  const { ca, leaf } = await pki();
  const backend = await tcp.listen({ addr: "127.0.0.1:0" });
  t.after(() => backend.close());
  const front = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
  t.after(() => front.close());
  const serving = (async () => {
    const conn = await backend.accept();
    // Upper-case echo with a trailer after the client's EOF.
    for await (const line of conn.lines()) await conn.write(`${line.toUpperCase()}\n`);
    await conn.write("BYE\n");
    await conn.close();
  })();
  const proxying = (async () => {
    const client = await front.accept();
    const up = await tcp.connect(backend.addr.toString());
    try {
      return await Promise.all([client.copyTo(up), up.copyTo(client)]);
    } finally {
      await Promise.all([client.close(), up.close()]);
    }
  })();
  const conn = await tls.connect(hostPort(front), { ca: ca.cert, timeout: 5000 });
  t.after(() => conn.close());
  await conn.write("hello\nworld\n");
  assert.equal(await conn.readLine(), "HELLO");
  assert.equal(await conn.readLine(), "WORLD");
  await conn.closeWrite();
  assert.equal(await conn.readLine(), "BYE");
  assert.equal(await conn.readLine(), null, "the backend's EOF reached the client");
  assert.deepEqual(await proxying, [12, 16]);
  await serving;

  const { client, server, out, peer } = await rig(t);
  const copying = server.copyTo(out, { end: false });
  await client.write("part");
  await client.closeWrite();
  assert.equal(await copying, 4);
  await out.write("+more");
  await out.closeWrite();
  assert.equal((await collect(peer)).toString(), "part+more");
});

test("copyTo() fails with the source's reset, leaving the destination open", async (t) => {
  const { client, server, out, peer } = await rig(t);
  const copying = server.copyTo(out);
  await client.write("before");
  assert.equal((await peer.readExactly(6)).toString(), "before");
  client.socket.resetAndDestroy();
  const err = await withTimeout(
    copying.catch((e: unknown) => e),
    5000,
    "copyTo after reset",
  );
  assert.ok(err instanceof ConnectionResetError, String(err));
  await out.write("still open");
  assert.equal((await peer.readExactly(10)).toString(), "still open");
});

test("copyTo() refuses what is not a conn and options of the wrong type, before anything is read", async (t) => {
  const { client, server, out } = await rig(t);
  await client.write("kept");
  await until(() => server.unreadBytes === 4, "the bytes are buffered");
  const bad: Array<[string, () => Promise<number>]> = [
    ["a socket", () => server.copyTo(client.socket as unknown as Conn)],
    ["end: 1", () => server.copyTo(out, { end: 1 as unknown as boolean })],
    ['signal: "x"', () => server.copyTo(out, { signal: "x" as unknown as AbortSignal })],
  ];
  for (const [what, call] of bad) {
    await assert.rejects(call(), TypeError, what);
  }
  assert.equal((await server.readExactly(4)).toString(), "kept", "nothing was consumed");
});

test("copyTo() ends on the read deadline, on close of either conn, and on abort", async (t) => {
  const { client, server, out, peer } = await rig(t);

  server.setReadDeadline(Date.now() + 100);
  const timedOut = await withTimeout(
    server.copyTo(out).catch((e: unknown) => e),
    5000,
    "deadline",
  );
  assert.ok(timedOut instanceof DeadlineExceededError, String(timedOut));
  server.setReadDeadline(null);

  const ac = new AbortController();
  const aborted = server.copyTo(out, { signal: ac.signal }).catch((e: unknown) => e);
  await client.write("x");
  assert.equal((await peer.readExactly(1)).toString(), "x");
  ac.abort(new Error("stop copying"));
  assert.equal(((await aborted) as Error).message, "stop copying");
  await client.write("after");
  assert.equal((await server.readExactly(5)).toString(), "after", "the source stays readable");

  const destClosed = server.copyTo(out).catch((e: unknown) => e);
  await out.close();
  await client.write("y");
  assert.ok((await destClosed) instanceof ClosedError, "a closed destination fails the copy");

  const srcClosed = server.copyTo(client).catch((e: unknown) => e);
  await sleep(10);
  await server.close();
  assert.ok((await srcClosed) instanceof ClosedError, "closing the source fails the copy");
});

test("copyTo() waits for a lazy TLS handshake, and other reads wait for the copy", async (t) => {
  const { ca, leaf } = await pki();
  const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
  t.after(() => ln.close());
  const connecting = tls.connect(hostPort(ln), { ca: ca.cert, timeout: 5000 });
  const server = await ln.accept();
  t.after(() => server.close());
  assert.equal(server.state().handshakeComplete, false, "accepted, handshake not run");
  const copying = server.copyTo(server, { end: false }); // the copy runs the handshake
  const later = server.readLine(); // queued behind the copy
  const client = await connecting;
  t.after(() => client.close());
  await client.write("ping");
  assert.equal((await client.readExactly(4)).toString(), "ping");
  await client.write("\nlast\n");
  await client.closeWrite();
  assert.equal(await copying, 10);
  assert.equal(await later, null, "the copy took everything up to EOF");
  assert.equal(server.state().version, client.state().version);
});

test("copyTo() fails with the destination's reset; the source stays readable", async (t) => {
  const { client, server, out, peer } = await rig(t, ["tls", "tls"]);
  const copying = server.copyTo(out);
  await client.write("one");
  assert.equal((await peer.readExactly(3)).toString(), "one");
  assert.ok(peer instanceof TLSConn);
  peer.netConn.socket.resetAndDestroy();
  // Keep sending until a write into the reset conn fails (the first may still be taken).
  const err = await withTimeout(
    (async () => {
      for (let i = 0; i < 200; i++) {
        await client.write(Buffer.alloc(16 * 1024, i));
        const settled = await Promise.race([
          copying.then(
            () => "ok",
            (e: unknown) => e,
          ),
          sleep(5),
        ]);
        if (settled !== undefined) return settled;
      }
      return "still copying";
    })(),
    10_000,
    "copyTo after the destination's reset",
  );
  assert.ok(err instanceof ConnectionResetError || err instanceof TLSError, String(err));
  await client.write("next");
  const rest = await server.read();
  assert.ok(rest !== null && rest.length > 0, "the source is still readable");
});

test("copyTo() under random chunking, stalls and limits: every byte, in order, buffers bounded", async (t) => {
  for (const seed of [1, 2, 3, 4]) {
    const rnd = prng(seed);
    const pick = (n: number) => rnd(2).readUInt16BE(0) % n;
    const {
      client,
      server,
      out,
      peer: sink,
    } = await rig(t, seed % 2 ? ["tcp", "tls"] : ["tls", "tcp"]);
    const limit = 1024 * (1 + pick(256));
    server.limit(limit);
    const parts = Array.from({ length: 200 }, () => rnd(1 + pick(40_000)));
    const copying = server.copyTo(out);
    const sending = (async () => {
      for (const p of parts) {
        await client.write(p);
        if (pick(10) === 0) await sleep(pick(4));
      }
      await client.closeWrite();
    })();
    // A sink that stalls now and then, so the copy meets backpressure at random points.
    const got: Buffer[] = [];
    let maxUnread = 0;
    for (;;) {
      maxUnread = Math.max(maxUnread, server.unreadBytes);
      const chunk = await sink.read(1 + pick(70_000));
      if (chunk === null) break;
      got.push(chunk);
      if (pick(8) === 0) await sleep(1 + pick(15));
    }
    await sending;
    const total = parts.reduce((n, p) => n + p.length, 0);
    assert.equal(await copying, total, `seed ${seed}`);
    assert.equal(sha256(...got), sha256(...parts), `seed ${seed}: every byte, in order`);
    assert.ok(
      maxUnread <= limit + 64 * 1024,
      `seed ${seed}: ${maxUnread} buffered, limit ${limit}`,
    );
  }
});
