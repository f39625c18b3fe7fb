/**
 * Reader micro-benchmark, in one process over a loopback TCP pair: how fast
 * tlsnet's buffered readers split a byte stream, against a naive
 * `socket.on("data")` + `Buffer.concat` + `indexOf` splitter for context.
 *
 * - lines:  `readUntil("\n")` over many 50-byte lines.
 * - frames: `readExactly(4)` + `readExactly(len)` over length-prefixed messages.
 *
 * Started by bench/run.ts with an IPC channel; each "round" message names the
 * variant and the implementation.
 * @module
 */
import * as net from "node:net";
import { dieOnError, loadLib, send } from "./common.ts";

dieOnError("reader");
const { tcp } = await loadLib();

export interface ReaderRequest {
  type: "round";
  variant: "lines" | "frames" | "lines-iter" | "frames-iter" | "lines-batch" | "frames-batch";
  impl: "tlsnet" | "node";
  count: number;
}

const LINE_LEN = 50;

function buildLines(count: number): Buffer {
  const line = Buffer.from(`${"x".repeat(LINE_LEN - 1)}\n`);
  const out = Buffer.allocUnsafe(count * LINE_LEN);
  for (let i = 0; i < count; i++) line.copy(out, i * LINE_LEN);
  return out;
}

/** Length-prefixed frames with payloads of 16..527 bytes (deterministic). */
function buildFrames(count: number): Buffer {
  const sizes: number[] = [];
  let total = 0;
  let x = 12345;
  for (let i = 0; i < count; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const n = 16 + ((x >>> 8) % 512);
    sizes.push(n);
    total += 4 + n;
  }
  const out = Buffer.alloc(total, 0x61);
  let off = 0;
  for (const n of sizes) {
    out.writeUInt32BE(n, off);
    off += 4 + n;
  }
  return out;
}

const cache = new Map<string, Buffer>();
function payload(variant: "lines" | "frames", count: number): Buffer {
  const key = `${variant}:${count}`;
  let b = cache.get(key);
  if (!b) {
    b = variant === "lines" ? buildLines(count) : buildFrames(count);
    cache.set(key, b);
  }
  return b;
}

/** A loopback server that writes `data` to its first connection and ends it. */
async function source(data: Buffer): Promise<{ port: number; close: () => void }> {
  const server = net.createServer((s) => {
    s.on("error", () => {});
    s.end(data);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

async function tlsnetLines(port: number, count: number): Promise<number> {
  const conn = await tcp.connect(`127.0.0.1:${port}`, { timeout: 10_000 });
  let bytes = 0;
  try {
    for (let i = 0; i < count; i++) bytes += (await conn.readUntil("\n")).length;
  } finally {
    await conn.close();
  }
  return bytes;
}

async function tlsnetFrames(port: number, count: number): Promise<number> {
  const conn = await tcp.connect(`127.0.0.1:${port}`, { timeout: 10_000 });
  let bytes = 0;
  try {
    for (let i = 0; i < count; i++) {
      const len = (await conn.readExactly(4)).readUInt32BE(0);
      bytes += 4 + (await conn.readExactly(len)).length;
    }
  } finally {
    await conn.close();
  }
  return bytes;
}

/** The iterator shapes: every piece already buffered is handed out without a wait. */
async function tlsnetLinesIter(port: number, count: number): Promise<number> {
  const conn = await tcp.connect(`127.0.0.1:${port}`, { timeout: 10_000 });
  let bytes = 0;
  let n = 0;
  try {
    for await (const line of conn.split("\n")) {
      bytes += line.length;
      if (++n === count) break;
    }
  } finally {
    await conn.close();
  }
  return bytes;
}

async function tlsnetFramesIter(port: number, count: number): Promise<number> {
  const conn = await tcp.connect(`127.0.0.1:${port}`, { timeout: 10_000 });
  let bytes = 0;
  let n = 0;
  try {
    for await (const frame of conn.frames()) {
      bytes += 4 + frame.length;
      if (++n === count) break;
    }
  } finally {
    await conn.close();
  }
  return bytes;
}

async function tlsnetLinesBatch(port: number, count: number): Promise<number> {
  const conn = await tcp.connect(`127.0.0.1:${port}`, { timeout: 10_000 });
  let bytes = 0;
  let n = 0;
  try {
    for await (const lines of conn.split("\n", { batch: true })) {
      for (const line of lines) bytes += line.length;
      n += lines.length;
      if (n >= count) break;
    }
  } finally {
    await conn.close();
  }
  return bytes;
}

async function tlsnetFramesBatch(port: number, count: number): Promise<number> {
  const conn = await tcp.connect(`127.0.0.1:${port}`, { timeout: 10_000 });
  let bytes = 0;
  let n = 0;
  try {
    for await (const frames of conn.frames({ batch: true })) {
      for (const frame of frames) bytes += 4 + frame.length;
      n += frames.length;
      if (n >= count) break;
    }
  } finally {
    await conn.close();
  }
  return bytes;
}

function nodeLines(port: number, count: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port });
    let pending: Buffer = Buffer.alloc(0);
    let lines = 0;
    let bytes = 0;
    s.on("data", (chunk: Buffer) => {
      pending = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
      let start = 0;
      for (let i = pending.indexOf(10, start); i >= 0; i = pending.indexOf(10, start)) {
        const line = pending.subarray(start, i + 1);
        bytes += line.length;
        lines++;
        start = i + 1;
      }
      pending = pending.subarray(start);
    });
    s.on("end", () => (lines === count ? resolve(bytes) : reject(new Error(`${lines} lines`))));
    s.on("error", reject);
  });
}

function nodeFrames(port: number, count: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port });
    let pending: Buffer = Buffer.alloc(0);
    let frames = 0;
    let bytes = 0;
    s.on("data", (chunk: Buffer) => {
      pending = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
      let off = 0;
      while (pending.length - off >= 4) {
        const len = pending.readUInt32BE(off);
        if (pending.length - off < 4 + len) break;
        const frame = pending.subarray(off + 4, off + 4 + len);
        bytes += 4 + frame.length;
        frames++;
        off += 4 + len;
      }
      pending = pending.subarray(off);
    });
    s.on("end", () => (frames === count ? resolve(bytes) : reject(new Error(`${frames} frames`))));
    s.on("error", reject);
  });
}

async function round(req: ReaderRequest) {
  const shape = req.variant.startsWith("lines") ? "lines" : "frames";
  const data = payload(shape, req.count);
  const src = await source(data);
  try {
    const t0 = performance.now();
    const impls = {
      lines: [tlsnetLines, nodeLines],
      frames: [tlsnetFrames, nodeFrames],
      "lines-iter": [tlsnetLinesIter, nodeLines],
      "frames-iter": [tlsnetFramesIter, nodeFrames],
      "lines-batch": [tlsnetLinesBatch, nodeLines],
      "frames-batch": [tlsnetFramesBatch, nodeFrames],
    } as const;
    const fn = impls[req.variant][req.impl === "tlsnet" ? 0 : 1];
    const bytes = await fn(src.port, req.count);
    const ms = performance.now() - t0;
    if (bytes !== data.length) throw new Error(`read ${bytes} of ${data.length} bytes`);
    return {
      type: "result" as const,
      value: (req.count / ms) * 1e3,
      elapsedMs: ms,
      count: req.count,
      mbps: bytes / ms / 1e3,
    };
  } finally {
    src.close();
  }
}

process.on("message", (msg: ReaderRequest | { type: "exit" }) => {
  void (async () => {
    if (msg.type === "exit") process.exit(0);
    try {
      await send(await round(msg));
    } catch (err) {
      await send({
        type: "error",
        message: err instanceof Error ? (err.stack ?? err.message) : String(err),
      });
    }
  })();
});
await send({ type: "ready" });
