/**
 * Where a tlsnet server's memory per idle TLS conn goes: a tlsnet server in
 * this process (echo), the Go load generator of the servers benchmark holding
 * N conns (one 64 B echo each, bench/loadgen -mode memory), and per conn the
 * growth of: RSS; the V8 heap (process.memoryUsage: heapUsed, external,
 * arrayBuffers); malloc (glibc mallinfo2 through the native addon: in use,
 * free in the arenas, mmapped); and the resident pages by kind of mapping
 * (/proc/self/smaps: [heap] is the main malloc arena, "anon" the V8 heap,
 * other malloc arenas and mmapped chunks).
 *
 *   node --expose-gc --import tsx scripts/memory-probe.ts [--engine native|node|raw] [--conns N]
 *                                                         [--heap-top]
 *
 * --heap-top: also the V8 heap by constructor (a heap snapshot) with the conns open.
 *
 * Diagnostics only (docs/benchmarks.md, "Memory per idle conn"); Linux, Go.
 * @module
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import { join } from "node:path";
import * as nodeTls from "node:tls";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as v8 from "node:v8";
import { compileTlsnet, goTools, writeCerts } from "../bench/servers.ts";
import { loadAddon } from "../src/tls/engine/addon.ts";

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : def;
};
/** "raw": node:tls itself (`socket.pipe(socket)`), the baseline the node engine is held to. */
const engine = arg("--engine", "native") as "native" | "node" | "raw";
const conns = Number(arg("--conns", "4000"));
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with node --expose-gc");

const tmp = mkdtempSync(join(os.tmpdir(), "tlsnet-memory-probe-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
const certs = await writeCerts(tmp);
// tlsnet as tsc compiles it, as the servers benchmark runs it: run through tsx, every closure
// would carry a properties array for its kept name (about 2.3 KiB more per idle conn). The
// compiled copy finds this checkout's addon by path, as the benchmark's does.
process.env.TLSNET_NATIVE_ADDON ??= fileURLToPath(
  new URL("../build/native/tlsnet_native.node", import.meta.url),
);
const dist = compileTlsnet(tmp, () => {});
const { tls } = (await import(
  pathToFileURL(join(dist, "index.js")).href
)) as typeof import("../src/index.ts");
const tools = goTools(
  "memory probe",
  join(os.homedir(), ".cache", "tlsnet-bench"),
  false,
  () => {},
);
if (typeof tools === "string") throw new Error(tools);

const cert = readFileSync(certs.cert, "utf8");
const key = readFileSync(certs.key, "utf8");
const ln =
  engine === "raw"
    ? await rawServer(cert, key)
    : await tls.listen({
        addr: "127.0.0.1:0",
        certs: [{ cert, key }],
        engine,
        backlog: 4096,
        onError: () => {},
        handler: async (conn) => {
          for await (const chunk of conn) await conn.write(chunk);
        },
      });

/** The raw node:tls echo server of the servers benchmark, as a listener-shaped object. */
async function rawServer(cert: string, key: string) {
  const server = nodeTls.createServer({ cert, key }, (socket) => socket.pipe(socket));
  server.on("tlsClientError", () => {});
  await new Promise<void>((r) => server.listen({ host: "127.0.0.1", port: 0, backlog: 4096 }, r));
  return {
    addr: server.address() as AddressInfo,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
const addon = engine === "native" ? loadAddon().addon : undefined;

/** Resident KiB per kind of mapping, from smaps. */
function smaps(): Record<string, number> {
  const out: Record<string, number> = {};
  let kind = "";
  for (const line of readFileSync("/proc/self/smaps", "utf8").split("\n")) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1]!.trim();
      kind = name === "" ? "anon" : name.startsWith("[") ? name : "files";
      continue;
    }
    const m = /^Rss:\s+(\d+) kB/.exec(line);
    if (m) out[kind] = (out[kind] ?? 0) + Number(m[1]);
  }
  return out;
}

/** [constructor or kind, self bytes, count], largest first, from a heap snapshot. */
function heapByConstructor(): Array<[string, number, number]> {
  const file = join(tmp, "heap.heapsnapshot");
  v8.writeHeapSnapshot(file);
  const snap = JSON.parse(readFileSync(file, "utf8")) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  rmSync(file);
  const f = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const [iType, iName, iSize] = ["type", "name", "self_size"].map((k) => f.indexOf(k));
  const sums = new Map<string, [number, number]>();
  for (let i = 0; i < snap.nodes.length; i += f.length) {
    const type = types[snap.nodes[i + iType!]!]!;
    const name =
      type === "object" || type === "native" ? snap.strings[snap.nodes[i + iName!]!]! : `(${type})`;
    const e = sums.get(name) ?? [0, 0];
    e[0] += snap.nodes[i + iSize!]!;
    e[1]++;
    sums.set(name, e);
  }
  return [...sums]
    .map(([k, [s, c]]) => [k, s, c] as [string, number, number])
    .sort((a, b) => b[1] - a[1]);
}

async function snapshot(): Promise<Record<string, number>> {
  await new Promise((r) => setTimeout(r, 1000));
  for (let i = 0; i < 3; i++) {
    gc!();
    await new Promise((r) => setTimeout(r, 20));
  }
  const m = process.memoryUsage();
  const s = smaps();
  const mi = addon?.debugMallinfo();
  return {
    rss: m.rss / 1024,
    heapUsed: m.heapUsed / 1024,
    external: m.external / 1024,
    arrayBuffers: m.arrayBuffers / 1024,
    ...(mi
      ? { mallocInUse: mi[0] / 1024, mallocFree: mi[1] / 1024, mallocMmapped: mi[2] / 1024 }
      : {}),
    smapsHeap: s["[heap]"] ?? 0,
    smapsAnon: s.anon ?? 0,
  };
}

const p = spawn(
  tools.loadgen,
  [
    "-addr",
    `127.0.0.1:${ln.addr.port}`,
    "-mode",
    "memory",
    "-pin",
    certs.cert,
    "-conns",
    `${conns}`,
  ],
  { stdio: ["pipe", "pipe", "inherit"] },
);
process.on("exit", () => p.kill("SIGKILL"));
const lines: string[] = [];
let wake = () => {};
let buf = "";
p.stdout.setEncoding("utf8").on("data", (s: string) => {
  buf += s;
  for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
    lines.push(buf.slice(0, i));
    buf = buf.slice(i + 1);
  }
  wake();
});
const next = async () => {
  while (lines.length === 0) await new Promise<void>((r) => (wake = r));
  return JSON.parse(lines.shift()!) as { phase?: string; conns?: number; ok?: boolean };
};
if ((await next()).phase !== "warm") throw new Error("no warm-up");
const before = await snapshot();
const heapBase = process.argv.includes("--heap-top") ? heapByConstructor() : undefined;
p.stdin.write("go\n");
const held = await next();
if (held.phase !== "held") throw new Error(JSON.stringify(held));
const after = await snapshot();
const heapTop = process.argv.includes("--heap-top") ? heapByConstructor() : undefined;
p.stdin.end();
const n = held.conns!;
console.log(`engine ${engine}, ${n} idle conns; KiB per conn (before → after, MiB):`);
for (const k of Object.keys(after)) {
  const d = ((after[k]! - before[k]!) / n).toFixed(2).padStart(7);
  console.log(
    `  ${k.padEnd(14)} ${d}   (${(before[k]! / 1024).toFixed(1)} → ${(after[k]! / 1024).toFixed(1)})`,
  );
}
if (heapTop && heapBase) {
  const base = new Map(heapBase.map(([k, s, c]) => [k, [s, c]]));
  const grown = heapTop
    .map(([k, s, c]): [string, number, number] => [
      k,
      s - (base.get(k)?.[0] ?? 0),
      c - (base.get(k)?.[1] ?? 0),
    ])
    .sort((a, b) => b[1] - a[1]);
  console.log("V8 heap growth by constructor (self size), bytes per conn, top 25:");
  for (const [name, size, count] of grown.slice(0, 25)) {
    console.log(
      `  ${(size / n).toFixed(0).padStart(7)}  ${(count / n).toFixed(2).padStart(6)}×  ${name}`,
    );
  }
}
await ln.close();
process.exit(0);
