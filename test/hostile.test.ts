/**
 * Hostile input against one tlsnet TLS listener in handler mode (echo): garbage,
 * plaintext HTTP, SSLv2/SSLv3/TLS 1.0 hellos (crafted, and openssl s_client
 * -tls1 / -tls1_1), oversized and truncated records, an alert flood, slowloris.
 * Each must be cut off promptly with exactly one typed error in onError, while a
 * well-behaved client is served in parallel; nothing may stay open.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  ConnectionResetError,
  HandshakeTimeoutError,
  type TLSConn,
  TLSError,
  type TLSListener,
  TlsnetError,
  tls,
} from "../src/index.ts";
import {
  alertFlood,
  describeRecords,
  drip,
  hugeHandshakeLength,
  hugeRecordHeader,
  inPieces,
  oversizedHelloRecords,
  type ProbeResult,
  prng,
  probe,
  sslv2ClientHello,
  sslv3ClientHello,
  tls10ClientHello,
  tls12ClientHello,
} from "./helpers/hostile.ts";
import { hostPort, pki } from "./helpers/tls.ts";
import { failOnUnhandledRejections, poll, sleep } from "./helpers/util.ts";

failOnUnhandledRejections(after);

async function echoHandler(conn: TLSConn): Promise<void> {
  for await (const chunk of conn) await conn.write(chunk);
  await conn.closeWrite();
}

/** A server that records every onError by the peer's port. */
async function recordingListener(handshakeTimeout: number): Promise<{
  ln: TLSListener;
  errors: Array<{ port: number | undefined; err: Error }>;
  byPort: (port: number) => Error[];
}> {
  const { leaf } = await pki();
  const errors: Array<{ port: number | undefined; err: Error }> = [];
  const ln = await tls.listen({
    addr: "127.0.0.1:0",
    certs: [leaf],
    handshakeTimeout,
    onError: (err, info) => errors.push({ port: info.remoteAddr?.port, err }),
    handler: echoHandler,
  });
  return { ln, errors, byPort: (port) => errors.filter((e) => e.port === port).map((e) => e.err) };
}

/** A well-behaved client: handshake, echo 1 KiB, close. Returns its local port. */
async function goodClient(ln: TLSListener): Promise<number> {
  const { ca } = await pki();
  const conn = await tls.connect(hostPort(ln), { ca: ca.cert, timeout: 5000 });
  try {
    const msg = randomBytes(1024);
    await conn.write(msg);
    const back = await conn.readExactly(msg.length, { timeout: 5000 });
    assert.ok(back.equals(msg), "echo round trip intact");
    return conn.localAddr.port;
  } finally {
    await conn.close();
  }
}

function describeError(err: Error): string {
  const reason = err instanceof TLSError && err.reason ? ` [${err.reason}]` : "";
  return `${err.name}${reason}: ${err.message.trim()}`;
}

function assertTyped(err: Error | undefined, what: string): asserts err is TlsnetError {
  assert.ok(err instanceof TlsnetError, `${what}: onError got a TlsnetError (got ${String(err)})`);
  assert.ok(
    err instanceof TLSError ||
      err instanceof ConnectionResetError ||
      err instanceof HandshakeTimeoutError,
    `${what}: TLSError, ConnectionResetError or HandshakeTimeoutError, got ${err.name}`,
  );
}

const HANDSHAKE_TIMEOUT = 1500;
/** Every hostile conn must be closed by the server within this long after its last byte. */
const PROMPT_MS = 3000;

interface HostileCase {
  name: string;
  send: Buffer | Parameters<typeof probe>[1];
  /** Send FIN after the bytes. */
  end?: boolean;
  /** The input is a stall: the handshake timeout is the expected way out. */
  stalls?: boolean;
}

describe("hostile input against one TLS echo listener", { timeout: 60_000 }, () => {
  let server: Awaited<ReturnType<typeof recordingListener>>;
  let hostileConns = 0;
  let goodClients = 0;

  before(async () => {
    server = await recordingListener(HANDSHAKE_TIMEOUT);
  });
  after(async () => {
    await server?.ln.close();
  });

  const hello12 = tls12ClientHello();
  const cases: HostileCase[] = [
    { name: "4 KiB of random bytes", send: prng(0xbad5eed)(4096) },
    { name: "plain HTTP request", send: Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n") },
    { name: "SSLv2-format CLIENT-HELLO (version 0x0002)", send: sslv2ClientHello() },
    { name: "SSLv3-only ClientHello (0x0300, no extensions)", send: sslv3ClientHello() },
    { name: "TLS 1.0-only ClientHello (0x0301, no supported_versions)", send: tls10ClientHello() },
    { name: "record header claiming 65535 bytes", send: hugeRecordHeader() },
    { name: "handshake header claiming 16 MiB", send: hugeHandshakeLength() },
    {
      name: "70 KiB ClientHello over 5 records",
      send: inPieces(chunksOf(oversizedHelloRecords(70 * 1024), 16389)),
    },
    {
      name: "truncated record (valid header, half the body, then FIN)",
      send: hello12.subarray(0, 5 + Math.floor((hello12.length - 5) / 2)),
      end: true,
    },
    {
      name: "truncated record, no FIN (stall)",
      send: hello12.subarray(0, 5 + Math.floor((hello12.length - 5) / 2)),
      stalls: true,
    },
    { name: "alert flood (500 warning alerts)", send: alertFlood(500) },
    { name: "alert flood (300 fatal alerts)", send: alertFlood(300, 2, 40) },
  ];

  for (const c of cases) {
    test(c.name, { timeout: 10_000 }, async (t) => {
      const seen = server.errors.length; // ports may be reused: only errors from now on count
      const mine = () =>
        server.errors
          .slice(seen)
          .filter((e) => e.port === r.localPort)
          .map((e) => e.err);
      const good = goodClient(server.ln);
      good.catch(() => {}); // awaited below; this only keeps an early failure from counting as unhandled
      const r: ProbeResult = await probe(server.ln.addr.port, c.send, {
        timeout: HANDSHAKE_TIMEOUT + PROMPT_MS + 2000,
        end: c.end,
      });
      hostileConns++;
      await good;
      goodClients++;
      assert.notEqual(r.ended, "timeout", "the server closed the connection");
      assert.ok(r.ms < (c.stalls ? HANDSHAKE_TIMEOUT : 0) + PROMPT_MS, `closed after ${r.ms} ms`);
      assert.ok(await poll(() => mine().length > 0, 3000), "onError was called for this conn");
      await sleep(100); // a second report would come now
      const errs = mine();
      assert.equal(errs.length, 1, "onError called exactly once for this conn");
      const err = errs[0];
      assertTyped(err, c.name);
      if (c.stalls) assert.ok(err instanceof HandshakeTimeoutError, describeError(err));
      else assert.ok(!(err instanceof HandshakeTimeoutError), `prompt, not a timeout: ${err.name}`);
      t.diagnostic(
        `INPUT ${c.name} | client saw ${r.ended}${r.errorCode ? ` (${r.errorCode})` : ""} ` +
          `${Math.round(r.ms)} ms after sending; server sent: ${describeRecords(r.received)} | ` +
          `onError: ${describeError(err)}`,
      );
    });
  }

  for (const version of ["tls1", "tls1_1"]) {
    test(`openssl s_client -${version}`, { timeout: 10_000 }, async (t) => {
      const before = server.errors.length;
      const good = goodClient(server.ln);
      good.catch(() => {}); // awaited below; this only keeps an early failure from counting as unhandled
      const t0 = performance.now();
      const run = await runClient(
        ["s_client", `-${version}`, "-connect", `127.0.0.1:${server.ln.addr.port}`],
        8000,
      );
      await good;
      goodClients++;
      const ms = performance.now() - t0;
      if (
        server.errors.length === before &&
        /no protocols available|unsupported protocol.*local/i.test(run.output)
      ) {
        t.skip(`local OpenSSL refuses -${version} before connecting`);
        return;
      }
      hostileConns++;
      assert.ok(!run.timedOut, "s_client was cut off");
      assert.ok(ms < PROMPT_MS + 2000, `s_client finished after ${ms} ms`);
      assert.ok(await poll(() => server.errors.length > before, 3000), "onError was called");
      await sleep(100);
      const fresh = server.errors.slice(before);
      assert.equal(fresh.length, 1, "onError called exactly once");
      const err = fresh[0]!.err;
      assertTyped(err, `s_client -${version}`);
      assert.ok(!(err instanceof HandshakeTimeoutError), "prompt, not a timeout");
      const alert = /alert[^\n]*/i.exec(run.output)?.[0] ?? "no alert line";
      t.diagnostic(
        `INPUT openssl s_client -${version} | s_client exited ${run.code} after ${Math.round(ms)} ms ` +
          `(${alert.trim()}) | onError: ${describeError(err)}`,
      );
    });
  }

  test("afterwards: nothing open, every hostile conn counted once", {
    timeout: 10_000,
  }, async (t) => {
    assert.ok(await poll(() => server.ln.stats().active === 0, 3000), "active back to 0");
    const stats = server.ln.stats();
    t.diagnostic(`stats ${JSON.stringify(stats)}, hostile conns ${hostileConns}`);
    assert.equal(stats.active, 0);
    assert.equal(stats.handshakeFailures, hostileConns);
    assert.equal(stats.accepted, hostileConns + goodClients);
    // One error per hostile conn (asserted per case) and none besides: the good clients got none.
    assert.equal(server.errors.length, hostileConns, "no other errors");
  });
});

test("slowloris: 200 clients dripping a ClientHello at 1 byte/s are cut off", {
  timeout: 15_000,
}, async (t) => {
  const timeout = 1000;
  const clients = 200;
  const server = await recordingListener(timeout);
  try {
    const hello = tls12ClientHello();
    const probes = Array.from({ length: clients }, () =>
      probe(server.ln.addr.port, drip(hello, 1000), { timeout: timeout + 6000 }),
    );
    await sleep(300);
    await goodClient(server.ln); // served while 200 handshakes stall
    const results = await Promise.all(probes);
    const worst = Math.max(...results.map((r) => r.totalMs));
    t.diagnostic(
      `${clients} slowloris clients: all closed within ${Math.round(worst)} ms ` +
        `(handshakeTimeout ${timeout} ms); endings: ${JSON.stringify(countBy(results.map((r) => r.ended)))}`,
    );
    for (const r of results) {
      assert.notEqual(r.ended, "timeout");
      assert.ok(r.totalMs < timeout + 4000, `closed after ${r.totalMs} ms`);
    }
    assert.ok(
      await poll(() => server.ln.stats().handshakeFailures >= clients, 3000),
      "all handshakes failed",
    );
    assert.ok(await poll(() => server.ln.stats().active === 0, 3000), "active back to 0");
    await sleep(100);
    const stats = server.ln.stats();
    t.diagnostic(`stats ${JSON.stringify(stats)}`);
    assert.equal(stats.handshakeFailures, clients);
    assert.equal(server.errors.length, clients);
    for (const r of results) {
      const errs = server.byPort(r.localPort);
      assert.equal(errs.length, 1, "one error per slowloris conn");
      assert.ok(errs[0] instanceof HandshakeTimeoutError, String(errs[0]));
    }
    t.diagnostic(`onError: ${describeError(server.errors[0]!.err)}`);
  } finally {
    await server.ln.close();
  }
});

test("client-initiated renegotiation is refused (TLS 1.2, openssl s_client R)", {
  timeout: 15_000,
}, async (t) => {
  const { ca, leaf } = await pki();
  const errors: Error[] = [];
  const ln = await tls.listen({
    addr: "127.0.0.1:0",
    certs: [leaf],
    maxVersion: "TLSv1.2",
    onError: (err) => errors.push(err),
    handler: echoHandler,
  });
  const dir = await mkdtemp(join(tmpdir(), "tlsnet-reneg-"));
  try {
    const caFile = join(dir, "ca.pem");
    await writeFile(caFile, ca.cert);
    const child = spawn(
      "openssl",
      [
        "s_client",
        "-tls1_2",
        "-connect",
        `127.0.0.1:${ln.addr.port}`,
        "-servername",
        "localhost",
        "-CAfile",
        caFile,
      ],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString("latin1");
    });
    child.stderr.on("data", (d: Buffer) => {
      out += d.toString("latin1");
    });
    const exited = new Promise<number | null>((r) => child.once("close", r));
    child.stdin.on("error", () => {});
    try {
      child.stdin.write("hello\n");
      assert.ok(await poll(() => /^hello$/m.test(out), 5000), "echo before renegotiation");
      child.stdin.write("R\n");
      await poll(() => /RENEGOTIATING/.test(out), 3000);
      await sleep(1000);
      child.stdin.write("after\n");
      const echoedAfter = await poll(() => /^after$/m.test(out), 2000);
      child.stdin.end();
      await Promise.race([exited, sleep(3000)]);
      t.diagnostic(
        `renegotiation ${echoedAfter ? "SUCCEEDED (data echoed after R)" : "refused"}; ` +
          `server errors: ${errors.map(describeError).join("; ") || "none"}`,
      );
      assert.ok(!echoedAfter, "a renegotiated connection must not keep working");
    } finally {
      if (child.exitCode === null) child.kill();
      await exited;
    }
  } finally {
    await ln.close();
    await rm(dir, { recursive: true, force: true });
  }
});

function chunksOf(buf: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < buf.length; off += size) out.push(buf.subarray(off, off + size));
  return out;
}

function countBy(xs: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

/** Run `openssl ARGS` with stdin held open, killed after `ms`; its combined output and exit code. */
function runClient(
  args: string[],
  ms: number,
): Promise<{ code: number | null; output: string; timedOut: boolean }> {
  if (spawnSync("openssl", ["version"]).status !== 0) {
    return Promise.resolve({
      code: null,
      output: "no protocols available (no openssl)",
      timedOut: false,
    });
  }
  return new Promise((resolve) => {
    const child: ChildProcess = spawn("openssl", args, { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    let timedOut = false;
    child.stdout?.on("data", (d: Buffer) => {
      output += d.toString("latin1");
    });
    child.stderr?.on("data", (d: Buffer) => {
      output += d.toString("latin1");
    });
    child.stdin?.on("error", () => {});
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill();
    }, ms);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output, timedOut });
    });
  });
}
