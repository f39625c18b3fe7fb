/**
 * Load: (a) data integrity under concurrency — 500 TLS conns, 2 MiB each in
 * random chunk sizes, echoed, SHA-256 on both ends; (b) memory — resident
 * size per idle handshaken TLS conn on a server in its own process.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, test } from "node:test";
import { fdLimit, forkServer, pool } from "../scripts/soak.ts";
import { type TLSConn, tls } from "../src/index.ts";
import { prng } from "./helpers/hostile.ts";
import { hostPort, pki } from "./helpers/tls.ts";
import { sleep } from "./helpers/util.ts";

const unhandled: unknown[] = [];
process.on("unhandledRejection", (err) => {
  unhandled.push(err);
});
after(() => {
  assert.deepEqual(unhandled, [], "no unhandled rejections");
});

const KiB = 1024;
const MiB = 1024 * KiB;

test("integrity: 500 TLS conns × 2 MiB echoed in random 1 B..256 KiB chunks, SHA-256 both ends", {
  timeout: 120_000,
}, async (t) => {
  const CONNS = 500;
  const SIZE = 2 * MiB;
  /** How many conns run at once (default all 500; LOAD_CONCURRENCY=100 runs waves). */
  const CONCURRENCY = Number(process.env.LOAD_CONCURRENCY ?? 500);
  const { ca, leaf } = await pki();
  const source = randomBytes(8 * MiB); // each conn sends its own 2 MiB window of it
  const serverDigests = new Map<number, { bytes: number; sha: string }>();
  const serverErrors: Error[] = [];
  const ln = await tls.listen({
    addr: "127.0.0.1:0",
    certs: [leaf],
    backlog: 1024,
    handshakeTimeout: 60_000,
    onError: (err) => serverErrors.push(err),
    handler: async (conn: TLSConn) => {
      const h = createHash("sha256");
      let bytes = 0;
      for await (const chunk of conn) {
        h.update(chunk);
        bytes += chunk.length;
        await conn.write(chunk);
      }
      serverDigests.set(conn.remoteAddr.port, { bytes, sha: h.digest("hex") });
      await conn.closeWrite();
    },
  });
  let mismatches = 0;
  let writes = 0;
  const failures: string[] = [];
  const t0 = performance.now();
  try {
    await pool(CONNS, CONCURRENCY, async (i) => {
      const rand = prng(i + 1);
      const off = (i * 104_729) % (source.length - SIZE);
      const data = source.subarray(off, off + SIZE);
      const conn = await tls.connect(hostPort(ln), { ca: ca.cert, timeout: 60_000 });
      try {
        const sent = createHash("sha256");
        const writer = (async () => {
          for (let pos = 0; pos < SIZE; ) {
            const r = rand(3).readUIntBE(0, 3) % (256 * KiB); // 0..256Ki-1
            const n = Math.min(1 + r, SIZE - pos);
            const part = data.subarray(pos, pos + n);
            sent.update(part);
            await conn.write(part);
            writes++;
            pos += n;
          }
          await conn.closeWrite();
        })();
        const reader = (async () => {
          const got = createHash("sha256");
          let bytes = 0;
          for await (const chunk of conn) {
            got.update(chunk);
            bytes += chunk.length;
          }
          return { bytes, sha: got.digest("hex") };
        })();
        const [, back] = await Promise.all([writer, reader]);
        const sentSha = sent.digest("hex");
        const atServer = serverDigests.get(conn.localAddr.port);
        if (back.bytes !== SIZE || back.sha !== sentSha || atServer?.sha !== sentSha) {
          mismatches++;
          failures.push(
            `conn ${i}: sent ${SIZE} B, server got ${atServer?.bytes} B, echoed ${back.bytes} B, ` +
              `sha equal: server ${atServer?.sha === sentSha}, echo ${back.sha === sentSha}`,
          );
        }
      } finally {
        await conn.close();
      }
    });
  } finally {
    await ln.close({ graceful: 1000 });
  }
  const secs = (performance.now() - t0) / 1000;
  t.diagnostic(
    `${CONNS} conns × ${SIZE / MiB} MiB, ${CONCURRENCY} concurrent: ${writes} writes, ` +
      `${((2 * CONNS * SIZE) / MiB).toFixed(0)} MiB through TLS in ${secs.toFixed(1)} s, ` +
      `${mismatches} mismatches, server errors ${serverErrors.length}`,
  );
  assert.deepEqual(failures, []);
  assert.equal(mismatches, 0);
  assert.equal(serverDigests.size, CONNS);
  assert.deepEqual(
    serverErrors.map((e) => e.message),
    [],
  );
});

test("memory: RSS per idle handshaken TLS conn on a server in its own process", {
  timeout: 120_000,
}, async (t) => {
  const { ca, leaf } = await pki();
  const limit = fdLimit();
  const wanted = 2000;
  const conns = Math.min(wanted, limit - 300);
  if (conns < wanted) {
    t.diagnostic(`ulimit -n is ${limit}: measuring with ${conns} conns instead of ${wanted}`);
  }
  assert.ok(conns >= 200, `ulimit -n ${limit} is too low to measure`);
  const server = await forkServer(leaf);
  const held: TLSConn[] = [];
  try {
    // Warm up code paths with one conn, then take the baseline.
    const warm = await tls.connect(`127.0.0.1:${server.port}`, { ca: ca.cert, timeout: 30_000 });
    await warm.write("warm");
    await warm.readExactly(4, { timeout: 10_000 });
    await warm.close();
    await sleep(200);
    const base = await server.stats({ gc: true });
    await pool(conns, 100, async () => {
      const c = await tls.connect(`127.0.0.1:${server.port}`, { ca: ca.cert, timeout: 60_000 });
      held.push(c);
    });
    let s = await server.stats();
    for (let i = 0; i < 100 && s.handlers < conns; i++) {
      await sleep(100);
      s = await server.stats();
    }
    assert.equal(s.handlers, conns, "every conn handshaken and held by the server");
    await sleep(500);
    s = await server.stats({ gc: true });
    const perConn = (s.rss - base.rss) / conns;
    t.diagnostic(
      `server RSS ${(base.rss / MiB).toFixed(1)} MiB → ${(s.rss / MiB).toFixed(1)} MiB with ${conns} idle TLS conns: ` +
        `${(perConn / KiB).toFixed(1)} KiB per conn (heap ${(s.heapUsed / MiB).toFixed(1)} MiB)`,
    );
    assert.ok(perConn < 200 * KiB, `server RSS per conn ${perConn / KiB} KiB < 200 KiB`);
    assert.equal(s.errors, 0, s.firstErrors.join("; "));
  } finally {
    await Promise.all(held.map((c) => c.close()));
    await server.stop();
  }
});
