/**
 * tlsnet benchmarks: tlsnet against idiomatic raw node:tls / node:net in the
 * same run, client and server in separate processes over 127.0.0.1, the same
 * ECDSA P-256 certificates for both, warm-up then rounds, median and spread.
 *
 *   npm run bench -- [throughput|pingpong|handshake|tcp|reader|memory|all]... [--quick] [--json]
 *                    [--conns N] [--rounds N] [--svg FILE] [--src DIR] [--cpu-prof]
 *   npm run bench -- servers [...]   (bench/servers.ts: servers of several runtimes
 *                                     under a Go load generator)
 *   npm run bench -- proxies [...]   (bench/proxies.ts: TLS-terminating proxies,
 *                                     tlsnet proxy, stunnel, hitch, HAProxy, the same way)
 *
 * `tlsnet bench` calls {@link run}.
 * @module
 */
import { type ChildProcess, fork, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createCA } from "../src/certs/index.ts";
import { type Bar, ratioChart } from "./chart.ts";
import {
  CERTS_ENV,
  type ChildMessage,
  type ClientMode,
  DIST_ENV,
  HANDSHAKE_CONCURRENCY,
  type Impl,
  MiB,
  median,
  type ParentMessage,
  PING_CONNS,
  PING_SIZE,
  type RoundRequest,
  type RoundResult,
  type ServerMode,
  SRC_ENV,
  type Transport,
} from "./common.ts";
import { formatSummary, summarise } from "./profile.ts";
import { compileTlsnet, onPath } from "./servers.ts";

const here = dirname(fileURLToPath(import.meta.url));
const IMPLS: readonly Impl[] = ["tlsnet", "node"];
const GROUPS = ["throughput", "pingpong", "handshake", "tcp", "reader", "memory"] as const;
type Group = (typeof GROUPS)[number];

// ---------------------------------------------------------------- options

export interface BenchOptions {
  groups: Set<Group>;
  quick: boolean;
  json: boolean;
  conns: number;
  rounds: number;
  svg: string;
  cpuProf: boolean;
  /** Another src/ directory to benchmark instead of this checkout's (A/B comparisons). */
  src: string | undefined;
}

const USAGE = `usage: npm run bench -- [workload...] [--quick] [--json] [--conns N] [--rounds N] [--svg FILE] [--src DIR] [--cpu-prof]
  workloads: throughput pingpong handshake tcp reader memory all
             (default: all; --quick leaves out memory unless named)
  --quick     3 rounds of shorter runs (under 2 minutes)
  --json      machine-readable results on stdout
  --conns N   idle connections for the memory workload (default 10000)
  --rounds N  measured rounds (default 5, 3 with --quick)
  --svg FILE  where the ratio chart goes (default bench/out/ratios.svg)
  --src DIR   benchmark the library in DIR (a modified copy of src/) instead of ./src
  --cpu-prof  profile every child (node --cpu-prof, into bench/out/prof) and summarise
  servers     a separate benchmark: tlsnet, raw node:tls (Node 20, 24), Bun, Deno and Go servers
              under a Go load generator; add --help after servers for its options
  proxies     a separate benchmark: tlsnet proxy, stunnel, hitch and HAProxy in front of one
              plaintext backend, the same way; add --help after proxies for its options`;

class UsageError extends Error {}

export function parseArgs(argv: readonly string[]): BenchOptions {
  const named = new Set<Group>();
  let all = false;
  const o: BenchOptions = {
    groups: new Set(),
    quick: false,
    json: false,
    conns: 10_000,
    rounds: 0,
    svg: join(here, "out", "ratios.svg"),
    cpuProf: false,
    src: undefined,
  };
  const int = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < min) {
      throw new UsageError(`${name} takes an integer >= ${min}, got ${String(v)}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--quick") o.quick = true;
    else if (a === "--json") o.json = true;
    else if (a === "--cpu-prof") o.cpuProf = true;
    else if (a === "--conns") o.conns = int("--conns", argv[++i], 1);
    else if (a === "--rounds") o.rounds = int("--rounds", argv[++i], 1);
    else if (a === "--src") {
      const v = argv[++i];
      if (!v) throw new UsageError("--src takes a directory (a copy of src/)");
      o.src = resolve(v);
    } else if (a === "--svg") {
      const v = argv[++i];
      if (!v) throw new UsageError("--svg takes a file name");
      o.svg = resolve(v);
    } else if (a === "-h" || a === "--help") throw new UsageError("");
    else if (a.startsWith("-")) throw new UsageError(`unknown option ${a}`);
    else {
      for (const w of a.split(",")) {
        if (w === "all") all = true;
        else if ((GROUPS as readonly string[]).includes(w)) named.add(w as Group);
        else throw new UsageError(`unknown workload ${JSON.stringify(w)}`);
      }
    }
  }
  if (named.size === 0 || all) {
    for (const g of GROUPS) if (g !== "memory" || !o.quick) o.groups.add(g);
  }
  for (const g of named) o.groups.add(g);
  if (o.rounds === 0) o.rounds = o.quick ? 3 : 5;
  return o;
}

// ---------------------------------------------------------------- workloads

interface PairWorkload {
  id: string;
  group: Group;
  title: string;
  unit: string;
  transport: Transport;
  server: ServerMode;
  client: ClientMode;
  request(quick: boolean, warmup: boolean): RoundRequest;
}

const bulk = (quick: boolean, warmup: boolean, tls: boolean): number => {
  const full = tls ? (quick ? 512 : 1536) * MiB : (quick ? 1024 : 3072) * MiB;
  return warmup ? full / 4 : full;
};
const duration = (quick: boolean, warmup: boolean) => (warmup ? 500 : quick ? 1000 : 2000);

const PAIRS: PairWorkload[] = [
  {
    id: "tls-upload",
    group: "throughput",
    title: "TLS bulk client→server",
    unit: "MB/s",
    transport: "tls",
    server: "discard",
    client: "upload",
    request: (q, w) => ({ type: "round", bytes: bulk(q, w, true) }),
  },
  {
    id: "tls-download",
    group: "throughput",
    title: "TLS bulk server→client",
    unit: "MB/s",
    transport: "tls",
    server: "source",
    client: "download",
    request: (q, w) => ({ type: "round", bytes: bulk(q, w, true) }),
  },
  {
    id: "tls-pingpong",
    group: "pingpong",
    title: `TLS ping-pong ${PING_CONNS}×${PING_SIZE} B`,
    unit: "rt/s",
    transport: "tls",
    server: "echo",
    client: "pingpong",
    request: (q, w) => ({ type: "round", durationMs: duration(q, w) }),
  },
  {
    id: "tls-handshake-full",
    group: "handshake",
    title: `TLS full handshakes (${HANDSHAKE_CONCURRENCY} in flight)`,
    unit: "hs/s",
    transport: "tls",
    server: "hold",
    client: "handshake",
    request: (q, w) => ({ type: "round", durationMs: duration(q, w), resume: false }),
  },
  {
    id: "tls-handshake-resumed",
    group: "handshake",
    title: `TLS resumed handshakes (${HANDSHAKE_CONCURRENCY} in flight)`,
    unit: "hs/s",
    transport: "tls",
    server: "hold",
    client: "handshake",
    request: (q, w) => ({ type: "round", durationMs: duration(q, w), resume: true }),
  },
  {
    id: "tcp-upload",
    group: "tcp",
    title: "TCP bulk client→server",
    unit: "MB/s",
    transport: "tcp",
    server: "discard",
    client: "upload",
    request: (q, w) => ({ type: "round", bytes: bulk(q, w, false) }),
  },
  {
    id: "tcp-download",
    group: "tcp",
    title: "TCP bulk server→client",
    unit: "MB/s",
    transport: "tcp",
    server: "source",
    client: "download",
    request: (q, w) => ({ type: "round", bytes: bulk(q, w, false) }),
  },
];

// ---------------------------------------------------------------- results

export interface Stat {
  median: number;
  min: number;
  max: number;
  rounds: number[];
}

export interface Row {
  id: string;
  group: Group;
  title: string;
  unit: string;
  tlsnet: Stat;
  node: Stat;
  /** median(tlsnet) / median(node). */
  ratio: number;
  /** Memory rows: smaller is better. */
  lowerIsBetter?: boolean;
  /** The raw side's name in the table ("node", or the naive splitter). */
  baseline: string;
  notes: string[];
  /** Median CPU cost per operation of each process (client/server workloads). */
  cpu?: {
    unit: string;
    tlsnet: { client: number; server: number };
    node: { client: number; server: number };
  };
}

export interface Report {
  date: string;
  command: string;
  /** Commit of this checkout (the library under test unless --src was given). */
  revision: string;
  src: string;
  quick: boolean;
  rounds: number;
  machine: {
    cpus: number;
    cpuModel: string;
    memoryGiB: number;
    os: string;
    node: string;
    openssl: string;
  };
  rows: Row[];
  peers: Array<{ name: string; installed: boolean; note: string }>;
  notes: string[];
  chart: string | null;
  profiles: string[];
  elapsedSeconds: number;
}

function stat(xs: number[]): Stat {
  return {
    median: median(xs),
    min: xs.length ? Math.min(...xs) : Number.NaN,
    max: xs.length ? Math.max(...xs) : Number.NaN,
    rounds: xs,
  };
}

// ---------------------------------------------------------------- children

const SCRIPT_TIMEOUT = 20_000;

class Child {
  readonly proc: ChildProcess;
  private readonly inbox: ChildMessage[] = [];
  private waiter: ((m: ChildMessage | Error) => void) | undefined;
  private exited = false;
  private exitError: Error | undefined;

  constructor(
    readonly name: string,
    script: string,
    args: string[],
    env: NodeJS.ProcessEnv,
    extraExecArgv: string[],
  ) {
    this.proc = fork(join(here, script), args, {
      execArgv: ["--import", "tsx", ...extraExecArgv],
      env,
      stdio: ["ignore", 2, 2, "ipc"], // children never write to our stdout (--json)
    });
    live.add(this);
    this.proc.on("message", (m: ChildMessage) => this.deliver(m));
    this.proc.on("exit", (code, signal) => {
      this.exited = true;
      live.delete(this);
      this.exitError = new Error(`${this.name} exited (${signal ?? `code ${code}`})`);
      this.deliver(this.exitError);
    });
    this.proc.on("error", (err) => this.deliver(err));
  }

  private deliver(m: ChildMessage | Error): void {
    if (m instanceof Error || m.type === "error") {
      const err = m instanceof Error ? m : new Error(`${this.name}: ${m.message}`);
      if (this.waiter) this.waiter(err);
      else this.exitError ??= err;
      return;
    }
    if (this.waiter) this.waiter(m);
    else this.inbox.push(m);
  }

  /** The next message, or an error if the child failed, exited or took longer than `ms`. */
  next(ms: number): Promise<ChildMessage> {
    const queued = this.inbox.shift();
    if (queued) return Promise.resolve(queued);
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`${this.name}: no answer within ${ms} ms`));
      }, ms);
      this.waiter = (m) => {
        clearTimeout(timer);
        this.waiter = undefined;
        if (m instanceof Error) reject(m);
        else resolve(m);
      };
    });
  }

  async expect<T extends ChildMessage["type"]>(
    type: T,
    ms: number,
  ): Promise<Extract<ChildMessage, { type: T }>> {
    const m = await this.next(ms);
    if (m.type !== type) throw new Error(`${this.name}: expected ${type}, got ${m.type}`);
    return m as Extract<ChildMessage, { type: T }>;
  }

  async ask<T extends ChildMessage["type"]>(
    msg: ParentMessage | Record<string, unknown>,
    type: T,
    ms: number,
  ): Promise<Extract<ChildMessage, { type: T }>> {
    if (this.exitError || this.exited) throw this.exitError ?? new Error(`${this.name} is gone`);
    this.proc.send(msg);
    return this.expect(type, ms);
  }

  /** Ask the child to exit (so --cpu-prof writes its profile); kill it if it does not. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((r) => this.proc.once("exit", () => r()));
    try {
      if (this.proc.connected) this.proc.send({ type: "exit" } satisfies ParentMessage);
    } catch {
      // already disconnected
    }
    const t = setTimeout(() => this.proc.kill("SIGKILL"), 5000);
    await gone;
    clearTimeout(t);
  }
}

const live = new Set<Child>();
const killAll = () => {
  for (const c of live) c.proc.kill("SIGKILL");
};

interface Ctx {
  opts: BenchOptions;
  env: NodeJS.ProcessEnv;
  profDir: string | undefined;
  log: (s: string) => void;
}

function execArgvFor(ctx: Ctx, impl: Impl | "reader", role: string): string[] {
  const a: string[] = [];
  if (ctx.profDir) {
    // One directory per child: under tsx the module-hooks worker thread writes
    // a profile of its own next to the main thread's.
    a.push("--cpu-prof", `--cpu-prof-dir=${join(ctx.profDir, `${role}.${impl}`)}`);
  }
  return a;
}

async function runPair(w: PairWorkload, ctx: Ctx): Promise<Row> {
  const { quick, rounds } = ctx.opts;
  const children: Child[] = [];
  const results: Record<Impl, RoundResult[]> = { tlsnet: [], node: [] };
  let immediate: RoundResult | undefined;
  const serverCpu: Record<Impl, number[]> = { tlsnet: [], node: [] };
  try {
    const servers = IMPLS.map((impl) => {
      const c = new Child(
        `${impl} ${w.transport} server (${w.server})`,
        "server.ts",
        [impl, w.transport, w.server],
        ctx.env,
        execArgvFor(ctx, impl, `${w.id}-server`),
      );
      children.push(c);
      return c;
    });
    const ports = await Promise.all(
      servers.map(async (s) => (await s.expect("ready", SCRIPT_TIMEOUT)).port ?? 0),
    );
    const clients = IMPLS.map((impl, i) => {
      const c = new Child(
        `${impl} ${w.transport} client (${w.client})`,
        "client.ts",
        [impl, w.transport, w.client, String(ports[i])],
        ctx.env,
        execArgvFor(ctx, impl, `${w.id}-client`),
      );
      children.push(c);
      return c;
    });
    await Promise.all(clients.map((c) => c.expect("ready", SCRIPT_TIMEOUT)));
    const roundTimeout = (req: RoundRequest) =>
      (req.durationMs ?? 0) + (req.bytes ? Math.max(60_000, req.bytes / 2e4) : 0) + 30_000;
    if (w.id === "tls-handshake-resumed") {
      // Before anything fills the session cache: does tlsnet resume when every
      // conn is closed with close() right after connect, nothing read?
      const req: RoundRequest = {
        type: "round",
        durationMs: 500,
        resume: true,
        immediateClose: true,
      };
      immediate = await clients[0]!.ask(req, "result", roundTimeout(req));
    }
    // Warm-up, then rounds alternating which implementation goes first.
    for (const [i, c] of clients.entries()) {
      const req = w.request(quick, true);
      await c.ask(req, "result", roundTimeout(req));
      ctx.log(`  ${w.id}: ${IMPLS[i]} warmed up`);
    }
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? [0, 1] : [1, 0];
      for (const i of order) {
        const req = w.request(quick, false);
        const s0 = await servers[i]!.ask({ type: "cpu" }, "cpu", 10_000);
        const res = await clients[i]!.ask(req, "result", roundTimeout(req));
        const s1 = await servers[i]!.ask({ type: "cpu" }, "cpu", 10_000);
        results[IMPLS[i]!].push(res);
        serverCpu[IMPLS[i]!].push((s1.user + s1.system - s0.user - s0.system) / 1000);
      }
      ctx.log(
        `  ${w.id} round ${r + 1}/${rounds}: tlsnet ${fmt(results.tlsnet.at(-1)!.value, w.unit)}, node ${fmt(
          results.node.at(-1)!.value,
          w.unit,
        )} ${w.unit}`,
      );
    }
  } finally {
    await Promise.all(children.map((c) => c.stop()));
  }
  const t = stat(results.tlsnet.map((r) => r.value));
  const n = stat(results.node.map((r) => r.value));
  const notes: string[] = [];
  if (w.client === "handshake") {
    for (const impl of IMPLS) {
      const rs = results[impl];
      const count = rs.reduce((a, r) => a + r.count, 0);
      const resumed = rs.reduce((a, r) => a + (r.resumed ?? 0), 0);
      const s = rs[0]?.sample;
      notes.push(
        `${impl}: ${resumed}/${count} resumed (${((resumed / Math.max(1, count)) * 100).toFixed(1)}%)` +
          (s ? `, ${s.version} ${s.cipher}` : ""),
      );
    }
    if (immediate) {
      notes.push(
        `tlsnet with close() right after connect (no read): ${immediate.resumed ?? 0}/${immediate.count} resumed, ` +
          `${fmt(immediate.value, w.unit)} hs/s (TLS 1.3 tickets arrive after the handshake and are never read)`,
      );
    }
  }
  // CPU cost per operation, client and server process (user + system, all threads).
  const bytes = w.client === "upload" || w.client === "download";
  const cpuUnit = bytes ? "CPU ms/MB" : "CPU µs/op";
  const perOp = (cpuMs: number, count: number) =>
    bytes ? cpuMs / (count / 1e6) : (cpuMs * 1000) / Math.max(1, count);
  const cpuOf = (impl: Impl) => ({
    client: median(results[impl].map((r) => perOp(r.cpuMs ?? Number.NaN, r.count))),
    server: median(results[impl].map((r, k) => perOp(serverCpu[impl][k] ?? Number.NaN, r.count))),
  });
  const cpu: NonNullable<Row["cpu"]> = {
    unit: cpuUnit,
    tlsnet: cpuOf("tlsnet"),
    node: cpuOf("node"),
  };
  const d = (x: number) => (bytes ? x.toFixed(2) : x.toFixed(0));
  notes.push(
    `${cpuUnit} (client + server): tlsnet ${d(cpu.tlsnet.client)} + ${d(cpu.tlsnet.server)}, ` +
      `node ${d(cpu.node.client)} + ${d(cpu.node.server)}`,
  );
  return {
    id: w.id,
    group: w.group,
    title: w.title,
    unit: w.unit,
    tlsnet: t,
    node: n,
    ratio: t.median / n.median,
    baseline: "node",
    notes,
    cpu,
  };
}

async function runReader(ctx: Ctx): Promise<Row[]> {
  const { quick, rounds } = ctx.opts;
  const child = new Child("reader", "reader.ts", [], ctx.env, execArgvFor(ctx, "reader", "reader"));
  const rows: Row[] = [];
  try {
    await child.expect("ready", SCRIPT_TIMEOUT);
    const variants = [
      {
        id: "reader-lines",
        variant: "lines" as const,
        title: "readUntil(\\n), 50-byte lines",
        unit: "lines/s",
        count: quick ? 250_000 : 1_000_000,
      },
      {
        id: "reader-frames",
        variant: "frames" as const,
        title: "readExactly, length-prefixed frames",
        unit: "frames/s",
        count: quick ? 100_000 : 400_000,
      },
      {
        id: "reader-lines-iter",
        variant: "lines-iter" as const,
        title: "split(\\n) iterator, 50-byte lines",
        unit: "lines/s",
        count: quick ? 250_000 : 1_000_000,
      },
      {
        id: "reader-frames-iter",
        variant: "frames-iter" as const,
        title: "frames() iterator, length-prefixed frames",
        unit: "frames/s",
        count: quick ? 100_000 : 400_000,
      },
      {
        id: "reader-lines-batch",
        variant: "lines-batch" as const,
        title: "split(\\n, { batch: true }), 50-byte lines",
        unit: "lines/s",
        count: quick ? 250_000 : 1_000_000,
      },
      {
        id: "reader-frames-batch",
        variant: "frames-batch" as const,
        title: "frames({ batch: true }), length-prefixed frames",
        unit: "frames/s",
        count: quick ? 100_000 : 400_000,
      },
    ];
    for (const v of variants) {
      const res: Record<Impl, RoundResult[]> = { tlsnet: [], node: [] };
      const ask = (impl: Impl, count: number) =>
        child.ask({ type: "round", variant: v.variant, impl, count }, "result", 60_000);
      for (const impl of IMPLS) await ask(impl, Math.max(1000, v.count >> 2)); // warm-up
      for (let r = 0; r < rounds; r++) {
        const order: Impl[] = r % 2 === 0 ? ["tlsnet", "node"] : ["node", "tlsnet"];
        for (const impl of order) res[impl].push(await ask(impl, v.count));
      }
      const t = stat(res.tlsnet.map((r) => r.value));
      const n = stat(res.node.map((r) => r.value));
      const mb = (impl: Impl) => median(res[impl].map((r) => r.mbps ?? Number.NaN));
      ctx.log(`  ${v.id}: tlsnet ${fmt(t.median, v.unit)}, naive ${fmt(n.median, v.unit)}`);
      rows.push({
        id: v.id,
        group: "reader",
        title: v.title,
        unit: v.unit,
        tlsnet: t,
        node: n,
        ratio: t.median / n.median,
        baseline: "naive concat splitter",
        notes: [
          `${v.count} messages per round, in-process loopback TCP; ` +
            `tlsnet ${mb("tlsnet").toFixed(0)} MB/s, naive splitter ${mb("node").toFixed(0)} MB/s`,
        ],
      });
    }
  } finally {
    await child.stop();
  }
  return rows;
}

/** The soft open-files limit children inherit, or undefined when unknown. */
function fileLimit(): number | undefined {
  const r = spawnSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return r.status === 0 && Number.isFinite(n) ? n : undefined;
}

async function runMemory(ctx: Ctx, notes: string[]): Promise<Row[]> {
  let n = ctx.opts.conns;
  const limit = fileLimit();
  if (limit !== undefined && n > limit - 256) {
    const capped = Math.max(1, limit - 256);
    notes.push(
      `memory: ulimit -n is ${limit}, so ${capped} connections instead of ${n} (raise the limit for more)`,
    );
    n = capped;
  }
  const per: Record<
    Impl,
    { server: number; client: number; serverHeap: number; clientHeap: number }
  > = {
    tlsnet: { server: 0, client: 0, serverHeap: 0, clientHeap: 0 },
    node: { server: 0, client: 0, serverHeap: 0, clientHeap: 0 },
  };
  const opened: Record<Impl, number> = { tlsnet: 0, node: 0 };
  for (const impl of IMPLS) {
    const children: Child[] = [];
    try {
      const server = new Child(
        `${impl} memory server`,
        "server.ts",
        [impl, "tls", "hold"],
        ctx.env,
        ["--expose-gc"],
      );
      children.push(server);
      const { port } = await server.expect("ready", SCRIPT_TIMEOUT);
      const client = new Child(
        `${impl} memory client`,
        "client.ts",
        [impl, "tls", "idle", String(port)],
        ctx.env,
        ["--expose-gc"],
      );
      children.push(client);
      await client.expect("ready", SCRIPT_TIMEOUT);
      const s0 = await server.ask({ type: "memory" }, "memory", 10_000);
      const c0 = await client.ask({ type: "memory" }, "memory", 10_000);
      const res = await client.ask({ type: "round", conns: n }, "result", 300_000);
      opened[impl] = res.count;
      await new Promise((r) => setTimeout(r, 1000));
      const s1 = await server.ask({ type: "memory" }, "memory", 30_000);
      const c1 = await client.ask({ type: "memory" }, "memory", 30_000);
      const kib = (a: number, b: number) => (b - a) / res.count / 1024;
      per[impl] = {
        server: kib(s0.rss, s1.rss),
        client: kib(c0.rss, c1.rss),
        serverHeap: kib(s0.heapUsed + s0.external, s1.heapUsed + s1.external),
        clientHeap: kib(c0.heapUsed + c0.external, c1.heapUsed + c1.external),
      };
      ctx.log(
        `  memory ${impl}: ${res.count} conns in ${(res.elapsedMs / 1000).toFixed(1)} s; ` +
          `server ${per[impl].server.toFixed(1)} KiB/conn, client ${per[impl].client.toFixed(1)} KiB/conn`,
      );
      await client.ask({ type: "release" }, "done", 30_000);
    } finally {
      await Promise.all(children.map((c) => c.stop()));
    }
  }
  const row = (id: string, title: string, key: "server" | "client"): Row => {
    const hk = key === "server" ? "serverHeap" : "clientHeap";
    const t = stat([per.tlsnet[key]]);
    const nn = stat([per.node[key]]);
    return {
      id,
      group: "memory",
      title,
      unit: "KiB/conn",
      tlsnet: t,
      node: nn,
      ratio: t.median / nn.median,
      lowerIsBetter: true,
      baseline: "node",
      notes: [
        `${opened.tlsnet} / ${opened.node} idle TLS conns; JS heap + external per conn: ` +
          `tlsnet ${per.tlsnet[hk].toFixed(1)} KiB, node ${per.node[hk].toFixed(1)} KiB (one round, fresh processes)`,
      ],
    };
  };
  return [
    row("memory-server", `RSS per idle TLS conn, server (${n})`, "server"),
    row("memory-client", `RSS per idle TLS conn, client (${n})`, "client"),
  ];
}

/**
 * The main-thread profiles under `dir` (one sub-directory per child). Default
 * names are CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile; thread 0 is main.
 */
function mainThreadProfiles(dir: string): string[] {
  const out: string[] = [];
  for (const sub of readdirSync(dir, { withFileTypes: true })) {
    if (!sub.isDirectory()) continue;
    for (const f of readdirSync(join(dir, sub.name))) {
      const parts = f.split(".");
      if (f.endsWith(".cpuprofile") && parts[parts.length - 3] === "0") {
        out.push(join(dir, sub.name, f));
      }
    }
  }
  return out.sort();
}

// ---------------------------------------------------------------- peers and machine

function peers(): Report["peers"] {
  return ["go", "bun", "deno"].map((name) => {
    const p = onPath(name);
    return p
      ? {
          name,
          installed: true,
          note: `${name}: found at ${p}; peer servers: npm run bench -- servers`,
        }
      : { name, installed: false, note: `${name}: peer servers: npm run bench -- servers` };
  });
}

/** The commit under test, with "+dirty" when src/ has uncommitted changes. */
function revision(): string {
  const root = resolve(here, "..");
  const head = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" });
  if (head.status !== 0) return "unknown";
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "src"], {
    cwd: root,
    encoding: "utf8",
  });
  return `${head.stdout.trim()}${dirty.stdout.trim() ? "+dirty" : ""}`;
}

function machine(): Report["machine"] {
  const cpus = os.cpus();
  return {
    cpus: os.availableParallelism?.() ?? cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    openssl: process.versions.openssl ?? "unknown",
  };
}

// ---------------------------------------------------------------- output

function fmt(v: number, unit: string): string {
  if (!Number.isFinite(v)) return "n/a";
  if (unit === "MB/s" || unit === "KiB/conn") return v.toFixed(1);
  return Math.round(v).toLocaleString("en-US");
}

function spread(s: Stat, unit: string): string {
  if (s.rounds.length < 2) return fmt(s.median, unit);
  return `${fmt(s.median, unit)} (${fmt(s.min, unit)}–${fmt(s.max, unit)})`;
}

function verdict(r: Row): string {
  if (!Number.isFinite(r.ratio)) return "";
  if (r.lowerIsBetter) return r.ratio <= 1.05 ? "" : "  (more memory)";
  return r.ratio >= 0.95 ? "" : "  < 0.95";
}

export function formatTable(rows: readonly Row[]): string {
  const head = ["workload", "unit", "tlsnet median (min–max)", "raw median (min–max)", "ratio"];
  const body = rows.map((r) => [
    r.baseline === "node" ? r.title : `${r.title} [vs ${r.baseline}]`,
    r.unit,
    spread(r.tlsnet, r.unit),
    spread(r.node, r.unit),
    `${Number.isFinite(r.ratio) ? r.ratio.toFixed(2) : "n/a"}${verdict(r)}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i >= 2 && i <= 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

/** The table as Markdown, for docs/benchmarks.md. */
export function formatMarkdown(rows: readonly Row[]): string {
  const out = [
    "| workload | unit | tlsnet median (min–max) | raw median (min–max) | tlsnet/raw |",
    "|---|---|--:|--:|--:|",
  ];
  for (const r of rows) {
    const name = r.baseline === "node" ? r.title : `${r.title} (vs ${r.baseline})`;
    out.push(
      `| ${name} | ${r.unit} | ${spread(r.tlsnet, r.unit)} | ${spread(r.node, r.unit)} | ${
        Number.isFinite(r.ratio) ? r.ratio.toFixed(2) : "n/a"
      }${r.lowerIsBetter ? " (lower is better)" : ""} |`,
    );
  }
  return out.join("\n");
}

/** The ratio chart of a run. */
export function reportChart(rows: readonly Row[], m: Report["machine"], quick: boolean): string {
  const bars: Bar[] = rows.map((r) => ({
    label: r.baseline === "node" ? r.title : `${r.title} (vs naive)`,
    ratio: r.ratio,
    ...(r.lowerIsBetter ? { lowerIsBetter: true } : {}),
  }));
  return ratioChart(
    bars,
    "tlsnet / raw Node.js (median of rounds)",
    `${m.cpus} × ${m.cpuModel}, Node ${m.node}, OpenSSL ${m.openssl}${quick ? ", --quick" : ""}`,
  );
}

// ---------------------------------------------------------------- run

/** Run the selected benchmarks; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function run(argv: string[]): Promise<number> {
  if (argv[0] === "servers") {
    const { runServers } = await import("./servers.ts");
    return runServers(argv.slice(1));
  }
  if (argv[0] === "proxies") {
    const { runProxies } = await import("./proxies.ts");
    return runProxies(argv.slice(1));
  }
  let opts: BenchOptions;
  try {
    opts = parseArgs(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      if (err.message) {
        console.error(`tlsnet bench: ${err.message}`);
        console.error(USAGE);
      } else {
        console.log(USAGE);
      }
      return err.message ? 2 : 0;
    }
    throw err;
  }
  const started = performance.now();
  const log = (s: string) => console.error(s);
  const tmp = mkdtempSync(join(os.tmpdir(), "tlsnet-bench-"));
  const onExit = () => killAll();
  process.once("exit", onExit);
  const profDir = opts.cpuProf ? join(here, "out", "prof") : undefined;
  const rows: Row[] = [];
  const notes: string[] = [];
  const profiles: string[] = [];
  let chart: string | null = null;
  try {
    if (profDir) {
      rmSync(profDir, { recursive: true, force: true });
      mkdirSync(profDir, { recursive: true });
    }
    // One CA and one ECDSA P-256 leaf for every server, both implementations.
    const ca = await createCA({ keyType: "ec-p256" });
    const leaf = await ca.issue({ names: ["localhost", "127.0.0.1"], keyType: "ec-p256" });
    const certFile = join(tmp, "certs.json");
    writeFileSync(certFile, JSON.stringify({ ca: ca.cert, cert: leaf.cert, key: leaf.key }), {
      mode: 0o600,
    });
    const env: NodeJS.ProcessEnv = { ...process.env, [CERTS_ENV]: certFile };
    // The engine is explicit (TLSNET_ENGINE=native to measure the addon, node by default): the
    // compiled copy lives outside the checkout, so it is handed the checkout's addon by path.
    env.TLSNET_ENGINE = process.env.TLSNET_ENGINE || "node";
    env.TLSNET_NATIVE_ADDON ||= join(here, "..", "build", "native", "tlsnet_native.node");
    if (opts.src) env[SRC_ENV] = opts.src;
    else {
      delete env[SRC_ENV];
      env[DIST_ENV] = compileTlsnet(tmp, log); // measured as users run it, compiled by tsc
    }
    const ctx: Ctx = { opts, env, profDir, log };
    const m = machine();
    log(
      `tlsnet bench: ${[...opts.groups].join(", ")}${opts.quick ? " (quick)" : ""}, ${opts.rounds} rounds; ` +
        `node ${m.node}, OpenSSL ${m.openssl}, ${m.cpus} × ${m.cpuModel}` +
        (opts.src ? `; library from ${opts.src}` : ""),
    );
    for (const w of PAIRS) {
      if (!opts.groups.has(w.group)) continue;
      log(`${w.title} …`);
      const row = await runPair(w, ctx);
      rows.push(row);
      for (const n of row.notes) log(`  ${n}`);
    }
    if (opts.groups.has("reader")) {
      log("reader micro-benchmark …");
      rows.push(...(await runReader(ctx)));
    }
    if (opts.groups.has("memory")) {
      log(`memory at ${opts.conns} idle TLS connections …`);
      rows.push(...(await runMemory(ctx, notes)));
    }
    const peerList = peers();
    if (rows.length > 0) {
      mkdirSync(dirname(opts.svg), { recursive: true });
      writeFileSync(opts.svg, reportChart(rows, m, opts.quick));
      chart = opts.svg;
    }
    if (profDir) profiles.push(...mainThreadProfiles(profDir));
    const report: Report = {
      date: new Date().toISOString(),
      command: `npm run bench -- ${argv.join(" ")}`.trim(),
      revision: revision(),
      src: opts.src ?? "src",
      quick: opts.quick,
      rounds: opts.rounds,
      machine: m,
      rows,
      peers: peerList,
      notes,
      chart,
      profiles,
      elapsedSeconds: Math.round((performance.now() - started) / 100) / 10,
    };
    const last = join(here, "out", "last.json");
    mkdirSync(dirname(last), { recursive: true });
    writeFileSync(last, `${JSON.stringify(report, null, 2)}\n`);
    if (opts.json) {
      console.log(JSON.stringify(report, null, 2));
    } else {
      console.log(formatTable(rows));
      const rowNotes = rows.flatMap((r) => r.notes.map((n) => `${r.title}: ${n}`));
      if (rowNotes.length || notes.length) {
        console.log("");
        for (const n of [...rowNotes, ...notes]) console.log(`- ${n}`);
      }
      console.log("");
      for (const p of peerList) console.log(p.note);
      if (chart) console.log(`chart: ${relative(process.cwd(), chart) || chart}`);
      console.log(
        `${rows.length} results in ${report.elapsedSeconds} s, tlsnet ${report.revision}` +
          `${opts.src ? ` (${opts.src})` : ""} (ratio = tlsnet/raw; memory rows: lower is better)`,
      );
      for (const p of profiles)
        console.log(`\n${formatSummary(relative(process.cwd(), p), summarise(p, 20))}`);
    }
    return 0;
  } catch (err) {
    console.error(`tlsnet bench: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  } finally {
    killAll();
    process.off("exit", onExit);
    rmSync(tmp, { recursive: true, force: true });
  }
}

const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(resolve(entry)).href) {
  process.exitCode = await run(process.argv.slice(2));
}
