/**
 * Benchmark client, one per (implementation, transport, mode), started by
 * bench/run.ts in its own process. It connects to a bench/server.ts of the
 * same implementation and runs one measured round per "round" message.
 *
 *   node --import tsx bench/client.ts <tlsnet|node> <tls|tcp> <mode> <port>
 *
 * The tlsnet side uses the public API the way the docs show; the node side is
 * idiomatic event code ('data' handlers, write + 'drain', 'session' reuse).
 * @module
 */
import * as net from "node:net";
import * as nodeTls from "node:tls";
import type { Conn, TLSConfig } from "../src/index.ts";
import {
  type ClientMode,
  dieOnError,
  HANDSHAKE_CONCURRENCY,
  type Impl,
  loadCerts,
  loadLib,
  memoryNow,
  type ParentMessage,
  PING_CONNS,
  PING_SIZE,
  patternBuffer,
  type RoundRequest,
  type RoundResult,
  send,
  type Transport,
  WRITE_SIZE,
} from "./common.ts";

const [impl, transport, mode, portArg] = process.argv.slice(2) as [
  Impl,
  Transport,
  ClientMode,
  string,
];
dieOnError(`client ${impl}/${transport}/${mode}`);
const port = Number(portArg);
const host = "127.0.0.1";
const addr = `${host}:${port}`;
const certs = loadCerts();
const { tcp, tls } = await loadLib();
const block = patternBuffer(WRITE_SIZE, 3);
const ping = patternBuffer(PING_SIZE, 5);
/** No single operation of a round may take longer than this. */
const OP_TIMEOUT = 30_000;
/** Upper bound on operations per timed round, whatever the clock says. */
const MAX_OPS = 50_000_000;

// tlsnet configs, built once like an application would.
const tlsDefault: TLSConfig = tls.config({ ca: certs.ca });
const tlsNoCache: TLSConfig = tls.config({ ca: certs.ca, sessionCache: false });
const tlsResume: TLSConfig = tls.config({ ca: certs.ca });

// ---------------------------------------------------------------- tlsnet

function tlsnetDial(cfg: TLSConfig = tlsDefault): Promise<Conn> {
  return transport === "tls"
    ? tls.connect(addr, cfg, { timeout: OP_TIMEOUT })
    : tcp.connect(addr, { timeout: OP_TIMEOUT });
}

async function tlsnetUpload(bytes: number): Promise<RoundResult> {
  const conn = await tlsnetDial();
  try {
    const t0 = performance.now();
    for (let sent = 0; sent < bytes; sent += block.length) await conn.write(block);
    await conn.closeWrite();
    const ack = await conn.readAll({ maxBytes: 64, timeout: OP_TIMEOUT });
    const ms = performance.now() - t0;
    checkAck(ack.toString(), bytes);
    return { type: "result", value: bytes / ms / 1e3, elapsedMs: ms, count: bytes };
  } finally {
    await conn.close();
  }
}

async function tlsnetDownload(bytes: number): Promise<RoundResult> {
  const conn = await tlsnetDial();
  try {
    const t0 = performance.now();
    await conn.write(countHeader(bytes));
    let n = 0;
    for await (const chunk of conn) n += chunk.length;
    const ms = performance.now() - t0;
    if (n !== bytes) throw new Error(`download: got ${n} of ${bytes} bytes`);
    return { type: "result", value: bytes / ms / 1e3, elapsedMs: ms, count: bytes };
  } finally {
    await conn.close();
  }
}

let pingConns: Conn[] = [];

async function tlsnetPingpong(durationMs: number): Promise<RoundResult> {
  if (pingConns.length === 0) pingConns = await openAll(PING_CONNS, () => tlsnetDial());
  const t0 = performance.now();
  const end = t0 + durationMs;
  let count = 0;
  await Promise.all(
    pingConns.map(async (conn) => {
      for (let i = 0; i < MAX_OPS && performance.now() < end; i++) {
        await conn.write(ping);
        await conn.readExactly(PING_SIZE);
        count++;
      }
    }),
  );
  const ms = performance.now() - t0;
  return { type: "result", value: (count / ms) * 1e3, elapsedMs: ms, count };
}

async function tlsnetHandshakes(
  durationMs: number,
  resume: boolean,
  immediateClose: boolean,
): Promise<RoundResult> {
  const cfg = resume ? tlsResume : tlsNoCache;
  const t0 = performance.now();
  const end = t0 + durationMs;
  let count = 0;
  let resumed = 0;
  let sample: RoundResult["sample"];
  await Promise.all(
    Array.from({ length: HANDSHAKE_CONCURRENCY }, async () => {
      for (let i = 0; i < MAX_OPS && performance.now() < end; i++) {
        const conn = await tls.connect(addr, cfg, { timeout: OP_TIMEOUT });
        const st = conn.state();
        if (st.resumed) resumed++;
        sample ??= { version: st.version, cipher: st.cipherSuite, resumed: st.resumed };
        if (!immediateClose) {
          // Like node's socket.end() + 'close': our close_notify/FIN, then the server's.
          // This also reads the TLS 1.3 tickets the server sends after the handshake.
          await conn.closeWrite();
          while ((await conn.read(undefined, { timeout: OP_TIMEOUT })) !== null) {}
        }
        await conn.close();
        count++;
      }
    }),
  );
  const ms = performance.now() - t0;
  return {
    type: "result",
    value: (count / ms) * 1e3,
    elapsedMs: ms,
    count,
    resumed,
    ...(sample ? { sample } : {}),
  };
}

let idleConns: Array<{ close(): unknown }> = [];

async function tlsnetIdle(n: number): Promise<RoundResult> {
  const t0 = performance.now();
  idleConns = await openAll(n, () => tlsnetDial(tlsNoCache));
  const ms = performance.now() - t0;
  return { type: "result", value: n, elapsedMs: ms, count: n };
}

// ---------------------------------------------------------------- node

function nodeDial(opts: nodeTls.ConnectionOptions = {}): net.Socket {
  if (transport === "tls") return nodeTls.connect({ host, port, ca: certs.ca, ...opts });
  return net.connect({ host, port });
}

/** Resolves with the socket once it is ready for application data. */
function nodeConnect(opts: nodeTls.ConnectionOptions = {}): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = nodeDial(opts);
    s.setNoDelay(true); // tlsnet's dial default
    s.setTimeout(OP_TIMEOUT, () => s.destroy(new Error("timeout")));
    s.once("error", reject);
    s.once(transport === "tls" ? "secureConnect" : "connect", () => {
      s.off("error", reject);
      s.on("error", () => {});
      resolve(s);
    });
  });
}

function nodeUpload(bytes: number): Promise<RoundResult> {
  return nodeConnect().then(
    (s) =>
      new Promise((resolve, reject) => {
        const t0 = performance.now();
        let sent = 0;
        let ack = "";
        s.setEncoding("utf8");
        s.on("data", (d: string) => {
          ack += d;
        });
        s.on("end", () => {
          const ms = performance.now() - t0;
          try {
            checkAck(ack, bytes);
            resolve({ type: "result", value: bytes / ms / 1e3, elapsedMs: ms, count: bytes });
          } catch (err) {
            reject(err);
          }
        });
        s.on("error", reject);
        const pump = () => {
          while (sent < bytes) {
            sent += block.length;
            if (!s.write(block)) {
              s.once("drain", pump);
              return;
            }
          }
          s.end();
        };
        pump();
      }),
  );
}

function nodeDownload(bytes: number): Promise<RoundResult> {
  return nodeConnect().then(
    (s) =>
      new Promise((resolve, reject) => {
        const t0 = performance.now();
        let n = 0;
        s.on("data", (chunk: Buffer) => {
          n += chunk.length;
        });
        s.on("end", () => {
          const ms = performance.now() - t0;
          if (n !== bytes) reject(new Error(`download: got ${n} of ${bytes} bytes`));
          else resolve({ type: "result", value: bytes / ms / 1e3, elapsedMs: ms, count: bytes });
        });
        s.on("error", reject);
        s.write(countHeader(bytes));
      }),
  );
}

let pingSockets: net.Socket[] = [];

async function nodePingpong(durationMs: number): Promise<RoundResult> {
  if (pingSockets.length === 0) pingSockets = await openAll(PING_CONNS, () => nodeConnect());
  const t0 = performance.now();
  const end = t0 + durationMs;
  let count = 0;
  await Promise.all(
    pingSockets.map(
      (s) =>
        new Promise<void>((resolve, reject) => {
          let got = 0;
          let ops = 0;
          const onData = (chunk: Buffer) => {
            got += chunk.length;
            while (got >= PING_SIZE) {
              got -= PING_SIZE;
              count++;
              ops++;
              if (performance.now() >= end || ops >= MAX_OPS) {
                s.off("data", onData);
                s.off("error", reject);
                resolve();
                return;
              }
              s.write(ping);
            }
          };
          s.on("data", onData);
          s.once("error", reject);
          s.write(ping);
        }),
    ),
  );
  const ms = performance.now() - t0;
  return { type: "result", value: (count / ms) * 1e3, elapsedMs: ms, count };
}

function nodeHandshakes(durationMs: number, resume: boolean): Promise<RoundResult> {
  const t0 = performance.now();
  const end = t0 + durationMs;
  let count = 0;
  let resumed = 0;
  let session: Buffer | undefined;
  let sample: RoundResult["sample"];
  return new Promise((resolve, reject) => {
    let running = HANDSHAKE_CONCURRENCY;
    let failed = false;
    const one = () => {
      if (failed) return;
      if (performance.now() >= end || count >= MAX_OPS) {
        if (--running === 0) {
          const ms = performance.now() - t0;
          resolve({
            type: "result",
            value: (count / ms) * 1e3,
            elapsedMs: ms,
            count,
            resumed,
            ...(sample ? { sample } : {}),
          });
        }
        return;
      }
      const s = nodeTls.connect({
        host,
        port,
        ca: certs.ca,
        ...(resume && session ? { session } : {}),
      });
      s.setNoDelay(true);
      s.setTimeout(OP_TIMEOUT, () => s.destroy(new Error("handshake timeout")));
      if (resume) {
        s.on("session", (sess: Buffer) => {
          session = sess;
        });
      }
      s.once("secureConnect", () => {
        const reused = s.isSessionReused();
        if (reused) resumed++;
        sample ??= {
          version: s.getProtocol(),
          cipher: s.getCipher()?.standardName ?? null,
          resumed: reused,
        };
        s.end();
      });
      s.on("error", (err) => {
        failed = true;
        reject(err);
      });
      s.once("close", () => {
        count++;
        one();
      });
    };
    for (let i = 0; i < HANDSHAKE_CONCURRENCY; i++) one();
  });
}

async function nodeIdle(n: number): Promise<RoundResult> {
  const t0 = performance.now();
  idleConns = await openAll(n, () => nodeConnect().then((s) => ({ close: () => s.destroy() })));
  const ms = performance.now() - t0;
  return { type: "result", value: n, elapsedMs: ms, count: n };
}

// ---------------------------------------------------------------- helpers

function countHeader(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

function checkAck(ack: string, bytes: number): void {
  if (Number(ack.trim()) !== bytes) {
    throw new Error(`upload: server counted ${ack.trim()} of ${bytes} bytes`);
  }
}

/** Open `n` connections, at most 64 dials in flight. */
async function openAll<T>(n: number, open: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(64, n) }, async () => {
      while (next < n) {
        next++;
        out.push(await open());
      }
    }),
  );
  return out;
}

async function round(req: RoundRequest): Promise<RoundResult> {
  const bytes = req.bytes ?? 0;
  const duration = req.durationMs ?? 1000;
  const tl = impl === "tlsnet";
  switch (mode) {
    case "upload":
      return tl ? tlsnetUpload(bytes) : nodeUpload(bytes);
    case "download":
      return tl ? tlsnetDownload(bytes) : nodeDownload(bytes);
    case "pingpong":
      return tl ? tlsnetPingpong(duration) : nodePingpong(duration);
    case "handshake":
      return tl
        ? tlsnetHandshakes(duration, req.resume ?? false, req.immediateClose ?? false)
        : nodeHandshakes(duration, req.resume ?? false);
    case "idle":
      return tl ? tlsnetIdle(req.conns ?? 0) : nodeIdle(req.conns ?? 0);
  }
}

async function closeAll(): Promise<void> {
  const all: Array<{ close(): unknown; destroy?: () => void }> = [
    ...pingConns,
    ...idleConns,
    ...pingSockets.map((s) => ({ close: () => s.destroy() })),
  ];
  pingConns = [];
  idleConns = [];
  pingSockets = [];
  await Promise.race([
    Promise.allSettled(all.map((c) => c.close())),
    new Promise((r) => setTimeout(r, 2000)),
  ]);
}

process.on("message", (msg: ParentMessage) => {
  void (async () => {
    try {
      if (msg.type === "round") {
        const c0 = process.cpuUsage();
        const res = await round(msg);
        const c = process.cpuUsage(c0);
        await send({ ...res, cpuMs: (c.user + c.system) / 1000 });
      } else if (msg.type === "memory") await send(await memoryNow());
      else if (msg.type === "release") {
        await closeAll();
        await send({ type: "done" });
      } else if (msg.type === "exit") {
        await closeAll();
        process.exit(0); // also writes a --cpu-prof profile
      }
    } catch (err) {
      await send({
        type: "error",
        message: err instanceof Error ? (err.stack ?? err.message) : String(err),
      });
    }
  })();
});
await send({ type: "ready" });
