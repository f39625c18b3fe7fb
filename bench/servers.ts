/**
 * The servers benchmark: TLS servers in several runtimes driven by one load
 * generator that is not Node (bench/loadgen, Go), so that the server, not the
 * client, is what saturates. All measured in one run, one table.
 *
 *   npm run bench -- servers [--quick] [--seconds S] [--rounds N] [--warmup S] [--servers a,b]
 *                            [--workloads a,b] [--json] [--svg FILE] [--no-install] [--no-pin]
 *   npm run bench:servers -- …   (the same)
 *
 * Servers (each in its own process, same ECDSA P-256 certificate, on 127.0.0.1):
 *   node20  raw node:tls on this Node (bench/server.ts "node", the baseline)
 *   node20-await  the same written with await (`for await` over the socket, as tlsnet's
 *           handler is): what the await style itself costs on node:tls
 *   node24  the same code on Node 24 (npm package `node`)
 *   tlsnet  tlsnet on this Node, node engine (bench/server.ts "tlsnet"; echo is copyTo)
 *   tlsnet-await  the same with echo written as `for await` + `await conn.write`: what
 *           the await style costs on tlsnet (compare node20-await)
 *   tlsnet-native  the same with TLSNET_ENGINE=native (needs npm run build:native)
 *   bun     Bun.listen (bench/peers/bun-server.js, npm package `bun`)
 *   deno    Deno.listenTls (bench/peers/deno-server.js, npm package `deno`)
 *   go      Go crypto/tls (bench/peers/go, Debian golang-go)
 *
 * Workloads (bench/loadgen/main.go says exactly what the client does):
 *   bulk     one conn sends 256 KiB writes; the server reads and discards (MB/s)
 *   echo     64 conns, 64-byte messages echoed (round trips/s)
 *   full     full handshakes, 8 in flight, one 64 B round trip each (handshakes/s)
 *   resumed  the same with a client session cache (TLS 1.3 tickets)
 *   memory   server RSS per idle conn (KiB): --idle-conns (4,000) conns, one 64 B
 *            echo each, held open; VmRSS of the server's processes after a
 *            warm-up conn and with all of them open, each settled 1 s (Node
 *            servers: after a forced GC, --expose-gc and SIGUSR2); a fresh
 *            server per run
 *
 * With `taskset` and 2 or more CPUs, each server runs on CPU 0 and the load
 * generator on the others, so that every server gets one core to itself and
 * the two never share one (--no-pin: let the kernel place them).
 *
 * Go, Bun, Deno and Node 24 are not project dependencies: the Go programs are
 * built on first use and the runtimes installed with npm, both into a cache
 * directory ($TLSNET_BENCH_CACHE, else $XDG_CACHE_HOME/tlsnet-bench, else
 * ~/.cache/tlsnet-bench). A missing piece is reported and its rows skipped.
 * @module
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import { delimiter, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createCA } from "../src/certs/index.ts";
import { type Bar, ratioChart } from "./chart.ts";
import { CERTS_ENV, DIST_ENV, median } from "./common.ts";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");

/** Runtimes installed from npm into the cache, pinned so that runs compare. */
export const RUNTIME_PINS = { node: "24.9.0", bun: "1.4.5", deno: "2.9.6" } as const;

// ---------------------------------------------------------------- options

export const SERVER_IDS = [
  "node20",
  "node20-await",
  "node24",
  "tlsnet",
  "tlsnet-await",
  "tlsnet-native",
  "bun",
  "deno",
  "go",
] as const;
export type ServerId = (typeof SERVER_IDS)[number];
/** The rate workloads, which every load generator benchmark takes. */
export const WORKLOAD_IDS = ["bulk", "echo", "full", "resumed"] as const;
/** The servers benchmark's workloads: the rate ones and idle memory. */
export const SERVER_WORKLOAD_IDS = [...WORKLOAD_IDS, "memory"] as const;
export type WorkloadId = (typeof SERVER_WORKLOAD_IDS)[number];

/** Idle conns of the memory workload, unless --idle-conns says otherwise. */
export const IDLE_CONNS = 4000;

/** Options of a load generator benchmark (servers, proxies). */
export interface LoadBenchOptions<Id extends string> {
  /** What is measured: servers, or proxies. */
  ids: Id[];
  workloads: WorkloadId[];
  seconds: number;
  warmupSeconds: number;
  rounds: number;
  quick: boolean;
  json: boolean;
  svg: string;
  install: boolean;
  /** Server on CPU 0, load generator on the rest (taskset). */
  pin: boolean;
  cache: string;
  /** Conns the memory workload holds open. */
  idleConns: number;
}

export interface ServersOptions extends Omit<LoadBenchOptions<ServerId>, "ids"> {
  servers: ServerId[];
}

/**
 * The default warm-up run, per server and workload. Servers run for days: what counts is the
 * steady state, and a fresh JIT runtime reaches it only after some seconds of load. After 1 s,
 * the first 2 s round of full handshakes still cost raw node:tls 5-10 % and tlsnet 12-20 %
 * more CPU per handshake than the later rounds (docs/benchmarks.md, run F).
 */
const WARMUP_SECONDS = 5;

/** The help of the options that every load generator benchmark takes. */
export function runHelp(command: string, each: string, quickTime: string): string {
  return `  --seconds S   length of each measured run (default 2; --quick 1)
  --rounds N    measured runs per ${each} and workload (default 3; --quick 1); rounds rotate
                who goes first, so with two ${each}s they are interleaved pairs (A/B)
  --warmup S    warm-up run of each ${each} per workload (default ${WARMUP_SECONDS}; --quick 0.5)
  --quick       1 round of 1 s after a 0.5 s warm-up (${quickTime})
  --json        the report as JSON on stdout
  --svg FILE    the rate chart (default bench/out/${command}.svg); the CPU chart goes
                beside it (${command}-cpu.svg)`;
}

const USAGE = `usage: npm run bench -- servers [--quick] [--seconds S] [--rounds N] [--warmup S] [--servers LIST]
                                [--workloads LIST] [--idle-conns N] [--json] [--svg FILE]
                                [--no-install] [--no-pin]
  servers:    ${SERVER_IDS.join(" ")} (default: all)
  workloads:  ${SERVER_WORKLOAD_IDS.join(" ")} (default: all)
${runHelp("servers", "server", "about a minute")}
  --idle-conns N  conns the memory workload holds open (default ${IDLE_CONNS}; capped
                  below the open files limit); the memory chart is servers-memory.svg
  --no-install  do not install Bun, Deno or Node 24 from npm (use them only if cached)
  --no-pin      do not pin the server to CPU 0 and the load generator to the others
  Cache: $TLSNET_BENCH_CACHE, else $XDG_CACHE_HOME/tlsnet-bench, else ~/.cache/tlsnet-bench`;

/** A bad command line; an empty message asks for the usage text (--help). */
export class UsageError extends Error {}

export function defaultCacheDir(): string {
  if (process.env.TLSNET_BENCH_CACHE) return resolve(process.env.TLSNET_BENCH_CACHE);
  const base = process.env.XDG_CACHE_HOME || join(os.homedir(), ".cache");
  return join(base, "tlsnet-bench");
}

/** What a load generator benchmark's command line accepts. */
export interface LoadBenchSpec<Id extends string> {
  /** The subcommand, skipped where it appears (`npm run bench -- servers …`). */
  command: string;
  ids: readonly Id[];
  /** The flag that picks among `ids`, e.g. --servers. */
  idsFlag: string;
  workloads: readonly WorkloadId[];
  /** Whether --no-install means something. */
  installs: boolean;
}

export function parseLoadBenchArgs<Id extends string>(
  argv: readonly string[],
  spec: LoadBenchSpec<Id>,
): LoadBenchOptions<Id> {
  const o: LoadBenchOptions<Id> = {
    ids: [...spec.ids],
    workloads: [...spec.workloads],
    seconds: 0,
    warmupSeconds: -1, // unset: WARMUP_SECONDS, --quick 0.5 s
    rounds: 0,
    quick: false,
    json: false,
    svg: join(here, "out", `${spec.command}.svg`),
    install: true,
    pin: true,
    cache: defaultCacheDir(),
    idleConns: IDLE_CONNS,
  };
  const accepted = [...new Set<WorkloadId>([...WORKLOAD_IDS, ...spec.workloads])];
  const list = <T extends string>(name: string, v: string | undefined, all: readonly T[]): T[] => {
    if (!v) throw new UsageError(`${name} takes a comma-separated list`);
    const out = v.split(",").filter(Boolean);
    for (const x of out) {
      if (!(all as readonly string[]).includes(x)) {
        throw new UsageError(`${name}: unknown ${JSON.stringify(x)} (one of ${all.join(", ")})`);
      }
    }
    return all.filter((a) => out.includes(a));
  };
  const num = (name: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min || n > max) {
      throw new UsageError(`${name} takes a number from ${min} to ${max}, got ${String(v)}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === spec.command) continue;
    if (a === "--quick") o.quick = true;
    else if (a === "--json") o.json = true;
    else if (a === "--no-install" && spec.installs) o.install = false;
    else if (a === "--no-pin") o.pin = false;
    else if (a === "--seconds") o.seconds = num(a, argv[++i], 0.2, 60);
    else if (a === "--rounds") o.rounds = Math.round(num(a, argv[++i], 1, 20));
    else if (a === "--warmup") o.warmupSeconds = num(a, argv[++i], 0, 60);
    else if (a === spec.idsFlag) o.ids = list(a, argv[++i], spec.ids);
    else if (a === "--workloads") o.workloads = list(a, argv[++i], accepted);
    else if (a === "--idle-conns" && spec.workloads.includes("memory")) {
      o.idleConns = Math.round(num(a, argv[++i], 1, 100_000));
    } else if (a === "--svg") {
      const v = argv[++i];
      if (!v) throw new UsageError("--svg takes a file name");
      o.svg = resolve(v);
    } else if (a === "-h" || a === "--help") throw new UsageError("");
    else throw new UsageError(`unknown argument ${a}`);
  }
  if (o.seconds === 0) o.seconds = o.quick ? 1 : 2;
  if (o.rounds === 0) o.rounds = o.quick ? 1 : 3;
  if (o.warmupSeconds < 0) o.warmupSeconds = o.quick ? 0.5 : WARMUP_SECONDS;
  return o;
}

export function parseServersArgs(argv: readonly string[]): ServersOptions {
  const { ids, ...rest } = parseLoadBenchArgs(argv, {
    command: "servers",
    ids: SERVER_IDS,
    idsFlag: "--servers",
    workloads: SERVER_WORKLOAD_IDS,
    installs: true,
  });
  return { servers: ids, ...rest };
}

// ---------------------------------------------------------------- workloads

/** What the server does: read and discard, answering the count at EOF; or echo. */
export type Behaviour = "sink" | "echo";

export interface Workload {
  id: WorkloadId;
  title: string;
  unit: string;
  /** What the server does. */
  mode: Behaviour;
  /** CPU per operation: its unit and the operations of a loadgen result. */
  cpuUnit: string;
  ops(r: LoadResult): number;
  /** CPU seconds → the cpuUnit per op. */
  scale: number;
  /** The "rate" is a cost (memory): smaller is better. */
  lowerIsBetter?: boolean;
}

export const WORKLOADS: Record<WorkloadId, Workload> = {
  bulk: {
    id: "bulk",
    title: "bulk receive, 1 conn",
    unit: "MB/s",
    mode: "sink",
    cpuUnit: "ms/MB",
    ops: (r) => r.bytes / 1e6,
    scale: 1e3,
  },
  echo: {
    id: "echo",
    title: "echo 64 B, 64 conns",
    unit: "rt/s",
    mode: "echo",
    cpuUnit: "µs/rt",
    ops: (r) => r.ops,
    scale: 1e6,
  },
  full: {
    id: "full",
    title: "full handshakes",
    unit: "hs/s",
    mode: "echo",
    cpuUnit: "µs/hs",
    ops: (r) => r.ops,
    scale: 1e6,
  },
  resumed: {
    id: "resumed",
    title: "resumed handshakes",
    unit: "hs/s",
    mode: "echo",
    cpuUnit: "µs/hs",
    ops: (r) => r.ops,
    scale: 1e6,
  },
  memory: {
    id: "memory",
    title: "RSS per idle conn",
    unit: "KiB/conn",
    mode: "echo",
    // CPU while the conns open: a full handshake and one round trip each.
    cpuUnit: "µs/conn",
    ops: (r) => r.ops,
    scale: 1e6,
    lowerIsBetter: true,
  },
};

/** One line of loadgen output (bench/loadgen/main.go `result`). */
export interface LoadResult {
  ok: boolean;
  mode: string;
  ops: number;
  bytes: number;
  elapsed_s: number;
  rate: number;
  unit: string;
  resumed: number;
  errors: number;
  first_error?: string;
  version?: string;
  cipher?: string;
  cpu_s: number;
  note?: string;
}

/** What the memory workload saw in one run. */
export interface MemorySample {
  /** Conns held open. */
  conns: number;
  /** VmRSS summed over the server's processes, KiB: after the warm-up conn, with all conns open. */
  rssBeforeKiB: number;
  rssAfterKiB: number;
  /** How many processes the server had (Deno, Bun or Node may start more than one). */
  processes: number;
  /** Whether the server was told to collect garbage before each reading (Node servers). */
  gc: boolean;
  /** Node servers: process.memoryUsage() growth per conn, bytes. */
  perConn?: { heapUsed: number; external: number; arrayBuffers: number };
}

// ---------------------------------------------------------------- report

/** The figures of one (server, workload) pair, from its measured runs. */
export interface CellStats {
  /** Rates of the measured runs. */
  rates: number[];
  median: number;
  min: number;
  max: number;
  /** Median server CPU per operation, in the workload's cpuUnit. */
  cpuPerOp: number;
  /** Each measured run's server CPU per operation, in the order of `rates`. */
  cpuPerOps: number[];
  /** Median server CPU time / wall time of a run (1 = one core busy). */
  serverCores: number;
  /** Median load generator CPU time / wall time. */
  loadgenCores: number;
  /** Median CPU time / wall time of the plaintext backend, when there is one (proxies). */
  backendCores?: number;
  /** Median CPU time of everything else on the machine / wall time (other jobs, some kernel work). */
  otherCores: number;
  /** What the numbers say held the rate back (see limitOf). */
  limit: string;
  resumed: number;
  handshakes: number;
  version: string;
  cipher: string;
  error?: string;
  /** The memory workload: each measured run. */
  memory?: MemorySample[];
}

export interface Cell extends CellStats {
  server: ServerId;
  workload: WorkloadId;
  /** Median rate / node20's median rate. */
  vsNode: number;
  /** Median rate / the best peer's median rate (every server but tlsnet is a peer). */
  vsBest: number;
}

export interface ServerInfo<Id extends string = ServerId> {
  id: Id;
  label: string;
  /** Runtime and TLS library with versions. */
  detail: string;
  available: boolean;
  note?: string;
}

/** What every load generator benchmark report says besides its cells. */
export interface LoadBenchReport {
  date: string;
  command: string;
  revision: string;
  machine: {
    nproc: number;
    cpuModel: string;
    memoryGiB: number;
    os: string;
    loadavg: number[];
  };
  options: {
    seconds: number;
    warmupSeconds: number;
    rounds: number;
    quick: boolean;
    /** taskset CPU lists, or null when not pinned. */
    pin: { server: string; loadgen: string } | null;
  };
  loadgen: string;
  workloads: Array<{ id: WorkloadId; title: string; unit: string; cpuUnit: string }>;
  notes: string[];
  chart: string | null;
  elapsedSeconds: number;
}

export interface ServersReport extends LoadBenchReport {
  servers: ServerInfo[];
  cells: Cell[];
}

// ---------------------------------------------------------------- tools

/** The executable `cmd` on PATH, or undefined. */
export function onPath(cmd: string): string | undefined {
  return (process.env.PATH ?? "")
    .split(delimiter)
    .filter(Boolean)
    .map((dir) => join(dir, cmd))
    .find(isExecutable);
}

/** Whether `p` is a file this process may execute. */
export function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function findGo(): string | undefined {
  return onPath("go") ?? ["/usr/lib/go/bin/go", "/usr/local/go/bin/go"].find(isExecutable);
}

/** Environment for `go build` that never downloads anything. */
function goEnv(cache: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    GOTOOLCHAIN: "local",
    GOPROXY: "off",
    GOFLAGS: "-buildvcs=false",
    GO111MODULE: "on",
    CGO_ENABLED: "0",
    GOCACHE: join(cache, "go", "build-cache"),
    GOPATH: join(cache, "go", "path"),
  };
}

/**
 * Build the Go program in `srcDir` into the cache, once per source and Go
 * version; returns the binary's path.
 */
function buildGo(
  go: string,
  goVersion: string,
  srcDir: string,
  name: string,
  cache: string,
): string {
  const h = createHash("sha256").update(goVersion);
  for (const f of readdirSync(srcDir).sort()) {
    if (f.endsWith(".go") || f === "go.mod") h.update(f).update(readFileSync(join(srcDir, f)));
  }
  const dir = join(cache, "go", "bin");
  const bin = join(dir, `${name}-${h.digest("hex").slice(0, 12)}`);
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.tmp${process.pid}`;
  const r = spawnSync(go, ["build", "-trimpath", "-o", tmp, "."], {
    cwd: srcDir,
    env: goEnv(cache),
    encoding: "utf8",
    timeout: 300_000,
  });
  if (r.status !== 0) {
    rmSync(tmp, { force: true });
    throw new Error(
      `go build in ${relative(root, srcDir)} failed: ${(r.stderr || r.stdout).trim()}`,
    );
  }
  renameSync(tmp, bin);
  return bin;
}

/** What `cmd args` prints on stdout (trimmed) when it exits 0, else undefined. */
export function versionOf(cmd: string, args: string[]): string | undefined {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 30_000 });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

export interface Runtimes {
  node24?: string;
  bun?: string;
  deno?: string;
  notes: string[];
}

/** Node 24, Bun and Deno from npm, installed into the cache (pinned versions). */
export function ensureRuntimes(
  cache: string,
  install: boolean,
  wanted: ReadonlyArray<keyof typeof RUNTIME_PINS>,
  log: (s: string) => void,
): Runtimes {
  const dir = join(cache, "runtimes");
  const nm = join(dir, "node_modules");
  const installedVersion = (pkg: string): string | undefined => {
    try {
      return (
        JSON.parse(readFileSync(join(nm, pkg, "package.json"), "utf8")) as { version: string }
      ).version;
    } catch {
      return undefined;
    }
  };
  const notes: string[] = [];
  // All pinned runtimes are installed together (one npm install); only the wanted ones are reported.
  const missing = Object.entries(RUNTIME_PINS).filter(([p, v]) => installedVersion(p) !== v);
  const missingWanted = missing.filter(([p]) => (wanted as readonly string[]).includes(p));
  if (missingWanted.length > 0) {
    const what = missing.map(([p, v]) => `${p}@${v}`).join(" ");
    if (!install) {
      notes.push(
        `not installed (--no-install): ${missingWanted.map(([p, v]) => `${p}@${v}`).join(" ")}`,
      );
    } else if (!onPath("npm")) {
      notes.push(`npm not found, cannot install ${what}`);
    } else {
      log(`installing ${what} from npm into ${dir} (once; about 250 MB) …`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(
        join(dir, "package.json"),
        `${JSON.stringify(
          {
            name: "tlsnet-bench-runtimes",
            private: true,
            description: "Runtimes for tlsnet's servers benchmark (bench/servers.ts); a cache.",
            dependencies: RUNTIME_PINS,
          },
          null,
          2,
        )}\n`,
      );
      const r = spawnSync("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error"], {
        cwd: dir,
        encoding: "utf8",
        timeout: 600_000,
        stdio: ["ignore", "pipe", "pipe"],
      });
      if (r.status !== 0) {
        notes.push(
          `npm install ${what} failed: ${(r.stderr || r.stdout || "").trim().slice(-500)}`,
        );
      }
    }
  }
  const firstRunnable = (cands: string[], args: string[]): string | undefined =>
    cands.find((c) => existsSync(c) && versionOf(c, args) !== undefined);
  const rt: Runtimes = { notes };
  const node24 = firstRunnable([join(nm, "node", "bin", "node")], ["--version"]);
  const bun = firstRunnable(
    [join(nm, "bun", "bin", "bun.exe"), join(nm, "@oven", "bun-linux-x64", "bin", "bun")],
    ["--version"],
  );
  const deno = firstRunnable(
    [join(nm, "@deno", "linux-x64-glibc", "deno"), join(nm, "deno", "deno")],
    ["--version"],
  );
  if (node24) rt.node24 = node24;
  if (bun) rt.bun = bun;
  if (deno) rt.deno = deno;
  return rt;
}

// ---------------------------------------------------------------- processes

const live = new Set<ChildProcess>();

/** SIGKILL every process this benchmark started, with their descendants. */
export function killAll(): void {
  for (const p of live) {
    const tree = p.pid ? processTree(p.pid) : [];
    p.kill("SIGKILL");
    killLeftovers(tree);
  }
}

let clkTck = 0;
function ticks(): number {
  if (clkTck === 0) {
    const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
    clkTck = Number(r.stdout?.trim()) || 100;
  }
  return clkTck;
}

/** The fields of /proc/PID/stat after "(comm) ", so that f[0] is field 3 (state); undefined when gone. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/**
 * A process and its descendants, each as [pid, start time] (field 22, so that
 * a pid the kernel reuses is told apart), from /proc.
 */
export function processTree(pid: number): Array<[number, string]> {
  const children = new Map<number, number[]>();
  const start = new Map<number, string>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(Number(name));
    if (!f) continue;
    const ppid = Number(f[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
    start.set(Number(name), f[19]!);
  }
  const out: Array<[number, string]> = [];
  const todo = start.has(pid) ? [pid] : [];
  while (todo.length > 0) {
    const p = todo.pop()!;
    out.push([p, start.get(p)!]);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/** SIGKILL the processes of a {@link processTree} that are still there (same pid, same start). */
function killLeftovers(tree: Array<[number, string]>): void {
  for (const [pid, started] of tree) {
    if (statFields(pid)?.[19] !== started) continue;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}

/**
 * CPU time (user + system, all threads) of a process and its descendants, in
 * seconds, from /proc; with the time of children they have reaped, so that a
 * worker that exits between two readings is not lost.
 */
export function processCpuSeconds(pid: number): number {
  let sum = 0;
  for (const [p] of processTree(pid)) {
    const f = statFields(p);
    // utime, stime, cutime, cstime: fields 14 to 17.
    if (f) sum += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  }
  return sum / ticks();
}

/**
 * CPU time the whole machine was not idle, in seconds, from /proc/stat: user,
 * nice, system, irq, softirq and steal (time the hypervisor gave to others).
 */
export function machineBusySeconds(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  return (
    ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0)) / ticks()
  );
}

export interface Launch {
  cmd: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /**
   * A file for the program's stdout and stderr, for programs that log every
   * conn (a pipe would make this process read it all); else pipes.
   */
  log?: string;
  /** Stop it with SIGTERM: it does not exit when its stdin closes. */
  sigterm?: boolean;
  /**
   * On SIGUSR2 it collects garbage and prints its process.memoryUsage() as a
   * {"type":"memory",…} line (bench/server.ts under --expose-gc).
   */
  gc?: boolean;
}

/** A server process (or a proxy, or a backend) under test. */
export class Server {
  readonly proc: ChildProcess;
  private stderr = "";
  private exited = false;
  private out = "";
  private lineWaiters: Array<(line: string) => boolean> = [];
  port = 0;

  constructor(
    readonly name: string,
    private readonly launch: Launch,
    cpus: string | undefined,
  ) {
    const [cmd, args] = pinned(cpus, launch.cmd, launch.args);
    const log = launch.log === undefined ? undefined : openSync(launch.log, "a");
    try {
      this.proc = spawn(cmd, args, {
        cwd: root,
        env: launch.env ?? process.env,
        stdio: ["pipe", log ?? "pipe", log ?? "pipe"],
      });
    } finally {
      if (log !== undefined) closeSync(log);
    }
    live.add(this.proc);
    this.proc.on("exit", () => {
      this.exited = true;
      live.delete(this.proc);
    });
    this.proc.on("error", () => {});
    this.proc.stdin?.on("error", () => {});
    this.proc.stderr?.setEncoding("utf8");
    this.proc.stderr?.on("data", (s: string) => {
      this.stderr = (this.stderr + s).slice(-2000);
    });
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  get alive(): boolean {
    return !this.exited;
  }

  /** Wait for the {"port":N} line. */
  ready(ms: number): Promise<number> {
    return new Promise((resolveReady, reject) => {
      let buf = "";
      const fail = (why: string) => {
        clearTimeout(timer);
        reject(new Error(`${this.name}: ${why}${this.stderr ? `: ${this.stderr.trim()}` : ""}`));
      };
      const timer = setTimeout(() => fail(`no port within ${ms} ms`), ms);
      this.proc.once("error", (e) => fail(`cannot start (${e.message})`));
      this.proc.once("exit", (code, sig) => fail(`exited (${sig ?? `code ${code}`})`));
      this.proc.stdout?.setEncoding("utf8");
      this.proc.stdout?.on("data", (s: string) => {
        if (this.port) {
          this.onStdout(s);
          return;
        }
        buf += s;
        for (const line of buf.split("\n")) {
          try {
            const port = (JSON.parse(line) as { port?: number }).port;
            if (typeof port === "number" && port > 0) {
              this.port = port;
              clearTimeout(timer);
              resolveReady(port);
              return;
            }
          } catch {
            // not the port line
          }
        }
      });
    });
  }

  private onStdout(s: string): void {
    this.out += s;
    for (let i = this.out.indexOf("\n"); i >= 0; i = this.out.indexOf("\n")) {
      const line = this.out.slice(0, i);
      this.out = this.out.slice(i + 1);
      this.lineWaiters = this.lineWaiters.filter((w) => !w(line));
    }
  }

  /** The next line on stdout (after the port line) that `pred` accepts; undefined after `ms`. */
  nextLine(pred: (line: string) => boolean, ms: number): Promise<string | undefined> {
    return new Promise((resolveLine) => {
      const timer = setTimeout(() => {
        this.lineWaiters = this.lineWaiters.filter((w) => w !== waiter);
        resolveLine(undefined);
      }, ms);
      const waiter = (line: string) => {
        if (!pred(line)) return false;
        clearTimeout(timer);
        resolveLine(line);
        return true;
      };
      this.lineWaiters.push(waiter);
    });
  }

  /** Whether it collects garbage and reports its heap on request ({@link Launch.gc}). */
  get gc(): boolean {
    return this.launch.gc === true;
  }

  /** Wait until 127.0.0.1:`port` accepts conns: for programs that do not print their port. */
  async listening(port: number, ms: number): Promise<number> {
    const deadline = performance.now() + ms;
    for (;;) {
      if (this.exited) throw new Error(`${this.name}: exited: ${this.lastError()}`);
      if (await accepts(port)) return (this.port = port);
      if (performance.now() > deadline) {
        throw new Error(
          `${this.name}: not listening on ${port} within ${ms} ms: ${this.lastError()}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  lastError(): string {
    let text = this.stderr;
    if (this.launch.log !== undefined) {
      try {
        text = readFileSync(this.launch.log, "utf8").slice(-2000);
      } catch {
        // no log yet
      }
    }
    return text.trim().split("\n").slice(-3).join(" | ");
  }

  /**
   * Close stdin (every server of the servers benchmark exits on that) or send
   * SIGTERM (Launch.sigterm), then TERM, then KILL; then KILL any descendant
   * left behind (a worker process).
   */
  async stop(): Promise<void> {
    if (this.exited) return;
    const tree = processTree(this.pid);
    const gone = new Promise<void>((r) => this.proc.once("exit", () => r()));
    if (this.launch.sigterm) this.proc.kill("SIGTERM");
    else this.proc.stdin?.end();
    const term = setTimeout(() => this.proc.kill("SIGTERM"), 3000);
    const kill = setTimeout(() => this.proc.kill("SIGKILL"), 6000);
    await gone;
    clearTimeout(term);
    clearTimeout(kill);
    killLeftovers(tree.slice(1));
  }
}

/** Whether something accepts a TCP conn on 127.0.0.1:`port` (the conn is closed at once). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolveTry) => {
    const c = net.connect({ host: "127.0.0.1", port });
    c.once("connect", () => {
      c.destroy();
      resolveTry(true);
    });
    c.once("error", () => resolveTry(false));
  });
}

/** Start a server and wait until it is ready: its {"port":N} line, or a known `port` listening. */
export async function startServer(
  name: string,
  launch: Launch,
  cpus: string | undefined,
  port?: number,
): Promise<Server> {
  const s = new Server(name, launch, cpus);
  try {
    if (port === undefined) await s.ready(60_000);
    else await s.listening(port, 20_000);
    return s;
  } catch (err) {
    await s.stop();
    throw err;
  }
}

/** The command line that runs `cmd` on `cpus` (taskset execs it: same pid). */
function pinned(cpus: string | undefined, cmd: string, args: string[]): [string, string[]] {
  return cpus ? ["taskset", ["-c", cpus, cmd, ...args]] : [cmd, args];
}

function runLoadgen(
  bin: string,
  args: string[],
  cpus: string | undefined,
  timeoutMs: number,
): Promise<LoadResult> {
  return new Promise((resolveRun, reject) => {
    const [cmd, argv] = pinned(cpus, bin, args);
    const p = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
    live.add(p);
    let out = "";
    let err = "";
    p.stdout.setEncoding("utf8").on("data", (s: string) => {
      out += s;
    });
    p.stderr.setEncoding("utf8").on("data", (s: string) => {
      err = (err + s).slice(-2000);
    });
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.on("exit", (code, sig) => {
      clearTimeout(timer);
      live.delete(p);
      const line = out.trim().split("\n").pop() ?? "";
      try {
        resolveRun(JSON.parse(line) as LoadResult);
      } catch {
        reject(new Error(`loadgen ${sig ?? `exit ${code}`}: ${(err || out).trim().slice(-500)}`));
      }
    });
  });
}

// ---------------------------------------------------------------- run

interface Setup {
  loadgen: string;
  loadgenVersion: string;
  /** `gc`: for the memory workload (Node servers: --expose-gc, a heap report on SIGUSR2). */
  launches: Map<ServerId, (mode: Behaviour, gc?: boolean) => Launch>;
  servers: ServerInfo[];
  notes: string[];
}

/** Compile src/ with the project's build config into `dir`/node_modules/tlsnet-dist; returns it. */
export function compileTlsnet(dir: string, log: (s: string) => void): string {
  // Under node_modules: the bench servers run with `--import tsx`, and tsx transforms every
  // .js file outside node_modules (minified, with a keepNames call per function and closure
  // made: ~45 µs more server CPU per handshake), so compiled code there is not what users run.
  const out = join(dir, "node_modules", "tlsnet-dist");
  log("compiling tlsnet with tsc (what users run) …");
  const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
  const r = spawnSync(
    process.execPath,
    [tsc, "-p", join(root, "tsconfig.build.json"), "--outDir", out],
    {
      encoding: "utf8",
    },
  );
  if (r.status !== 0) throw new Error(`tsc failed: ${(r.stdout + r.stderr).trim().slice(-500)}`);
  writeFileSync(join(out, "package.json"), '{ "type": "module" }\n'); // ESM, as tlsnet's own
  return out;
}

/**
 * Build bench/loadgen and, if `withServer`, bench/peers/go (goserver, else
 * ""), with Debian's Go, into the cache; or say why not (no Go).
 */
export function goTools(
  name: string,
  cache: string,
  withServer: boolean,
  log: (s: string) => void,
): { goVersion: string; loadgen: string; goserver: string } | string {
  const go = findGo();
  if (!go) {
    return (
      `the ${name} benchmark needs Go for its load generator, and \`go\` is not installed.\n` +
      "Install Debian's Go and run it again:  apt-get install -y golang-go\n" +
      "(skipped; nothing was measured)"
    );
  }
  const goVersion = versionOf(go, ["version"]) ?? "go (unknown version)";
  log(`building bench/loadgen and bench/peers/go with ${goVersion} (cached) …`);
  return {
    goVersion,
    loadgen: buildGo(go, goVersion, join(here, "loadgen"), "loadgen", cache),
    goserver: withServer
      ? buildGo(go, goVersion, join(here, "peers", "go"), "goserver", cache)
      : "",
  };
}

async function setup(
  o: ServersOptions,
  certDir: string,
  certsJson: string,
  log: (s: string) => void,
): Promise<Setup | string> {
  const tools = goTools("servers", o.cache, o.servers.includes("go"), log);
  if (typeof tools === "string") return tools;
  const { goVersion, loadgen, goserver } = tools;
  const wanted = (["node", "bun", "deno"] as const).filter((r) =>
    o.servers.includes(r === "node" ? "node24" : r),
  );
  const rt: Runtimes =
    wanted.length > 0 ? ensureRuntimes(o.cache, o.install, wanted, log) : { notes: [] };
  const notes = [...rt.notes];

  const cert = join(certDir, "cert.pem");
  const key = join(certDir, "key.pem");
  const nodeEnv = { ...process.env, [CERTS_ENV]: certsJson };
  // tlsnet is measured as users run it: compiled by tsc, not through tsx (whose
  // keepNames helper costs a call per closure created).
  const tlsnetEnv = { ...nodeEnv, [DIST_ENV]: compileTlsnet(certDir, log) };
  const serverTs = join(here, "server.ts");
  type NodeImpl = "node" | "node-await" | "tlsnet" | "tlsnet-await";
  const nodeArgs = (impl: NodeImpl, mode: Behaviour, gc?: boolean) => [
    ...(gc ? ["--expose-gc"] : []),
    "--import",
    "tsx",
    serverTs,
    impl,
    "tls",
    mode === "sink" ? "discard" : "echo",
  ];
  /** A server of bench/server.ts under a Node binary. */
  const nodeLaunch =
    (impl: NodeImpl, env: NodeJS.ProcessEnv = nodeEnv, cmd: string = process.execPath) =>
    (m: Behaviour, gc?: boolean): Launch => ({
      cmd,
      args: nodeArgs(impl, m, gc),
      env,
      gc: gc === true,
    });
  const launches = new Map<ServerId, (mode: Behaviour, gc?: boolean) => Launch>();
  const servers: ServerInfo[] = [];
  const ssl = process.versions.openssl;
  const add = (info: ServerInfo, launch?: (mode: Behaviour, gc?: boolean) => Launch) => {
    if (!o.servers.includes(info.id)) return;
    servers.push(info);
    if (info.available && launch) launches.set(info.id, launch);
    else notes.push(`${info.label}: ${info.note ?? "not available"} (skipped)`);
  };
  add(
    {
      id: "node20",
      label: `node:tls, Node ${process.version}`,
      detail: `Node ${process.version}, OpenSSL ${ssl}; bench/server.ts "node" (socket.pipe / on("data"))`,
      available: true,
    },
    nodeLaunch("node"),
  );
  add(
    {
      id: "node20-await",
      label: `node:tls for await, Node ${process.version}`,
      detail: `Node ${process.version}, OpenSSL ${ssl}; bench/server.ts "node-await" (for await over the socket, write + await "drain")`,
      available: true,
    },
    nodeLaunch("node-await"),
  );
  if (o.servers.includes("node24")) {
    const v = rt.node24
      ? versionOf(rt.node24, ["-p", "process.version + ' ' + process.versions.openssl"])
      : undefined;
    const [nv, nssl] = (v ?? "? ?").split(" ");
    add(
      {
        id: "node24",
        label: `node:tls, Node ${nv}`,
        detail: `Node ${nv} (npm node@${RUNTIME_PINS.node}), OpenSSL ${nssl}; same bench/server.ts`,
        available: rt.node24 !== undefined,
        note: `Node ${RUNTIME_PINS.node} from npm is not installed`,
      },
      rt.node24 ? nodeLaunch("node", nodeEnv, rt.node24) : undefined,
    );
  }
  add(
    {
      id: "tlsnet",
      label: `tlsnet, Node ${process.version}`,
      detail: `tlsnet ${revision()} on Node ${process.version}, node engine (node:tls, OpenSSL ${ssl}); bench/server.ts "tlsnet", TLSNET_ENGINE=node`,
      available: true,
    },
    nodeLaunch("tlsnet", { ...tlsnetEnv, TLSNET_ENGINE: "node" }),
  );
  add(
    {
      id: "tlsnet-await",
      label: `tlsnet for await, Node ${process.version}`,
      detail: `as "tlsnet", with echo written as for await + await conn.write instead of copyTo; bench/server.ts "tlsnet-await", TLSNET_ENGINE=node`,
      available: true,
    },
    nodeLaunch("tlsnet-await", { ...tlsnetEnv, TLSNET_ENGINE: "node" }),
  );
  // The native engine: the addon built in this checkout (npm run build:native).
  const addon = join(root, "build", "native", "tlsnet_native.node");
  add(
    {
      id: "tlsnet-native",
      label: `tlsnet native, Node ${process.version}`,
      detail: `tlsnet ${revision()} on Node ${process.version}, native engine (OpenSSL ${ssl}); bench/server.ts "tlsnet", TLSNET_ENGINE=native`,
      available: existsSync(addon),
      note: "the native engine is not built (npm run build:native)",
    },
    nodeLaunch("tlsnet", { ...tlsnetEnv, TLSNET_ENGINE: "native", TLSNET_NATIVE_ADDON: addon }),
  );
  if (o.servers.includes("bun")) {
    const v = rt.bun ? versionOf(rt.bun, ["--version"]) : undefined;
    add(
      {
        id: "bun",
        label: `Bun ${v ?? RUNTIME_PINS.bun}`,
        detail: `Bun ${v} (npm bun@${RUNTIME_PINS.bun}), BoringSSL; Bun.listen (bench/peers/bun-server.js)`,
        available: rt.bun !== undefined,
        note: `Bun ${RUNTIME_PINS.bun} from npm is not installed`,
      },
      (m) => ({ cmd: rt.bun!, args: [join(here, "peers", "bun-server.js"), m, cert, key] }),
    );
  }
  if (o.servers.includes("deno")) {
    const v = rt.deno ? versionOf(rt.deno, ["--version"])?.split("\n")[0] : undefined;
    const dv = v?.split(" ")[1] ?? RUNTIME_PINS.deno;
    add(
      {
        id: "deno",
        label: `Deno ${dv}`,
        detail: `Deno ${dv} (npm deno@${RUNTIME_PINS.deno}), rustls; Deno.listenTls (bench/peers/deno-server.js)`,
        available: rt.deno !== undefined,
        note: `Deno ${RUNTIME_PINS.deno} from npm is not installed`,
      },
      (m) => ({
        cmd: rt.deno!,
        args: [
          "run",
          "--no-prompt",
          "--allow-net=127.0.0.1",
          `--allow-read=${certDir}`,
          join(here, "peers", "deno-server.js"),
          m,
          cert,
          key,
        ],
        env: {
          ...process.env,
          DENO_NO_UPDATE_CHECK: "1",
          DENO_DIR: join(o.cache, "deno-dir"),
        },
      }),
    );
  }
  const goShort = goVersion.split(" ")[2]?.replace(/^go/, "") ?? "?";
  add(
    {
      id: "go",
      label: `Go ${goShort} crypto/tls`,
      detail: `${goVersion}, crypto/tls; io.Copy per conn (bench/peers/go)`,
      available: goserver !== "",
    },
    (m) => ({ cmd: goserver, args: ["-mode", m, "-cert", cert, "-key", key] }),
  );
  return { loadgen, loadgenVersion: goVersion, launches, servers, notes };
}

export function revision(): string {
  const head = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" });
  if (head.status !== 0) return "unknown";
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "src"], {
    cwd: root,
    encoding: "utf8",
  });
  return `${head.stdout.trim()}${dirty.stdout.trim() ? "+dirty" : ""}`;
}

/** One measured run. */
export interface Sample {
  rate: number;
  cpuPerOp: number;
  serverCores: number;
  loadgenCores: number;
  /** The plaintext backend's cores, when there is one (proxies), else 0. */
  backendCores: number;
  otherCores: number;
  result: LoadResult;
  /** The memory workload's readings. */
  memory?: MemorySample;
}

/**
 * One load generator run of `w` against `s`, with the CPU time `s` (and its
 * descendants), the load generator, `backend` (if any) and the whole machine
 * spent meanwhile.
 */
export async function measure(
  s: Server,
  w: Workload,
  loadgen: string,
  certFile: string,
  cpus: string | undefined,
  seconds: number,
  backend?: Server,
): Promise<Sample> {
  const args = [
    "-addr",
    `127.0.0.1:${s.port}`,
    "-mode",
    w.id,
    "-pin", // the exact leaf: cheaper for the load generator than verifying the chain
    certFile,
    "-duration",
    `${Math.round(seconds * 1000)}ms`,
  ];
  const cpu = (x: Server | undefined) =>
    x === undefined ? 0 : x.alive ? processCpuSeconds(x.pid) : Number.NaN;
  const c0 = cpu(s);
  const b0 = cpu(backend);
  const m0 = machineBusySeconds();
  const t0 = performance.now();
  const r = await runLoadgen(loadgen, args, cpus, seconds * 1000 + 60_000);
  const wall = (performance.now() - t0) / 1000;
  const c1 = cpu(s);
  const b1 = cpu(backend);
  const m1 = machineBusySeconds();
  if (!r.ok) {
    const dead = [s, backend].filter((x) => x !== undefined && !x.alive) as Server[];
    throw new Error(
      `${r.first_error ?? "failed"} (${r.errors} errors, ${r.ops} ops)` +
        dead.map((x) => `; ${x.name} exited: ${x.lastError()}`).join(""),
    );
  }
  const ops = w.ops(r);
  const serverCores = (c1 - c0) / wall;
  const loadgenCores = r.cpu_s / wall;
  const backendCores = (b1 - b0) / wall;
  return {
    rate: r.rate,
    cpuPerOp: ((c1 - c0) * w.scale) / Math.max(1e-9, ops),
    serverCores,
    loadgenCores,
    backendCores,
    // Everything else: other jobs, and kernel work not charged to these processes.
    otherCores: Math.max(0, (m1 - m0) / wall - serverCores - loadgenCores - backendCores),
    result: r,
  };
}

/** VmRSS of a process and its descendants, KiB, and how many there are (tsx's esbuild aside). */
export function treeRssKiB(pid: number): { kib: number; processes: number } {
  let kib = 0;
  let processes = 0;
  for (const [p] of processTree(pid)) {
    try {
      // tsx's esbuild service (bench/server.ts is TypeScript) is a tool, not the server.
      if (readFileSync(`/proc/${p}/comm`, "utf8").trim() === "esbuild") continue;
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/status`, "utf8"));
      if (m) {
        kib += Number(m[1]);
        processes++;
      }
    } catch {
      // gone meanwhile
    }
  }
  return { kib, processes };
}

/** The soft limit on open files of this process (servers and the load generator inherit it). */
export function openFilesLimit(): number {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    return m ? Number(m[1]) : 1024;
  } catch {
    return 1024;
  }
}

/**
 * The conns the memory workload can hold: `wanted`, capped so that a server
 * with two fds per conn (the native engine's dup) stays below the open files
 * limit it inherits; with a note when capped.
 */
export function idleConnsFor(wanted: number, notes: string[]): number {
  const limit = openFilesLimit();
  const cap = Math.max(1, Math.floor((limit - 256) / 2));
  if (wanted <= cap) return wanted;
  notes.push(
    `memory: ${wanted} idle conns capped to ${cap}: the open files limit is ${limit} ` +
      "(ulimit -n; the native engine takes two fds per conn)",
  );
  return cap;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Settle, then the server's RSS; Node servers collect garbage first and report their heap. */
async function settledMemory(
  s: Server,
): Promise<{ kib: number; processes: number; heap?: Record<string, number> }> {
  await sleep(1000);
  let heap: Record<string, number> | undefined;
  if (s.gc && s.alive) {
    const line = s.nextLine((l) => l.includes('"memory"'), 10_000);
    process.kill(s.pid, "SIGUSR2");
    const got = await line;
    if (got === undefined) throw new Error(`${s.name}: no memory report after SIGUSR2`);
    heap = JSON.parse(got) as Record<string, number>;
    await sleep(100);
  }
  return { ...treeRssKiB(s.pid), ...(heap ? { heap } : {}) };
}

/**
 * One memory run against a fresh server `s` (bench/loadgen -mode memory): RSS
 * after a warm-up conn, then with `conns` conns open and idle (one echo each);
 * the rate is the growth in KiB per conn, the CPU per op the server's CPU per
 * conn opened (handshake and echo).
 */
export async function measureMemory(
  s: Server,
  w: Workload,
  loadgen: string,
  certFile: string,
  cpus: string | undefined,
  conns: number,
): Promise<Sample> {
  const args = ["-addr", `127.0.0.1:${s.port}`, "-mode", "memory", "-pin", certFile];
  args.push("-conns", String(conns));
  const [cmd, argv] = pinned(cpus, loadgen, args);
  const p = spawn(cmd, argv, { stdio: ["pipe", "pipe", "pipe"] });
  live.add(p);
  const timer = setTimeout(() => p.kill("SIGKILL"), 120_000 + conns * 20);
  let out = "";
  let err = "";
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  p.stdout.setEncoding("utf8").on("data", (x: string) => {
    out += x;
    for (let i = out.indexOf("\n"); i >= 0; i = out.indexOf("\n")) {
      lines.push(out.slice(0, i));
      out = out.slice(i + 1);
    }
    wake?.();
  });
  p.stderr.setEncoding("utf8").on("data", (x: string) => {
    err = (err + x).slice(-2000);
  });
  p.stdin.on("error", () => {});
  const exited = new Promise<void>((r) => p.once("exit", () => r()));
  let gone = false;
  void exited.then(() => {
    gone = true;
    wake?.();
  });
  /** The next line from the load generator, or undefined when it exited. */
  const next = async (): Promise<string | undefined> => {
    while (lines.length === 0 && !gone) await new Promise<void>((r) => (wake = r));
    return lines.shift();
  };
  const phase = (line: string | undefined) => {
    try {
      return line ? (JSON.parse(line) as { phase?: string }).phase : undefined;
    } catch {
      return undefined;
    }
  };
  try {
    let line = await next();
    if (phase(line) !== "warm") throw new Error(`warm-up: ${line ?? err.trim().slice(-500)}`);
    const before = await settledMemory(s);
    const c0 = processCpuSeconds(s.pid);
    const t0 = performance.now();
    p.stdin.write("go\n");
    line = await next();
    if (phase(line) !== "held") throw new Error(line ?? `loadgen exited: ${err.trim()}`);
    const wall = (performance.now() - t0) / 1000;
    const c1 = processCpuSeconds(s.pid);
    const after = await settledMemory(s);
    if (!s.alive) throw new Error(`${s.name} exited: ${s.lastError()}`);
    p.stdin.end();
    await exited;
    line = lines.pop() ?? out.trim();
    const r = JSON.parse(line) as LoadResult;
    if (!r.ok) throw new Error(`${r.first_error ?? "failed"} (${r.errors} errors, ${r.ops} ops)`);
    const held = r.ops;
    const perConn = (k: string) =>
      after.heap && before.heap ? (after.heap[k]! - before.heap[k]!) / held : Number.NaN;
    const memory: MemorySample = {
      conns: held,
      rssBeforeKiB: before.kib,
      rssAfterKiB: after.kib,
      processes: after.processes,
      gc: s.gc,
    };
    if (after.heap) {
      memory.perConn = {
        heapUsed: perConn("heapUsed"),
        external: perConn("external"),
        arrayBuffers: perConn("arrayBuffers"),
      };
    }
    return {
      rate: (after.kib - before.kib) / held,
      cpuPerOp: ((c1 - c0) * w.scale) / Math.max(1, held),
      serverCores: (c1 - c0) / wall,
      loadgenCores: Number.NaN,
      backendCores: 0,
      otherCores: Number.NaN,
      result: r,
      memory,
    };
  } catch (e) {
    p.kill("SIGKILL");
    const dead = s.alive ? "" : `; ${s.name} exited: ${s.lastError()}`;
    throw new Error(`${(e as Error).message}${dead}`);
  } finally {
    clearTimeout(timer);
    await exited;
    live.delete(p);
  }
}

/** What {@link measureRounds} runs. */
export interface RoundsPlan<Id extends string> {
  ids: readonly Id[];
  workloads: readonly WorkloadId[];
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  loadgen: string;
  certFile: string;
  /** The load generator's taskset CPU list, or undefined (not pinned). */
  loadgenCpus: string | undefined;
  label(id: Id): string;
  log(s: string): void;
  /** Start, ready, what every server of one behaviour talks to (the proxies' backend). */
  backend?(mode: Behaviour): Promise<Server>;
  /** Conns the memory workload holds (when it is among the workloads). */
  idleConns?: number;
  /**
   * Start `id`, ready, for `mode`; throws (having stopped what it started) when
   * it cannot. `gc`: for the memory workload (a Node server reports its heap).
   */
  start(id: Id, mode: Behaviour, backend: Server | undefined, gc?: boolean): Promise<Server>;
}

/** Samples and errors per {@link cellKey}. */
export interface Measured {
  samples: Map<string, Sample[]>;
  errors: Map<string, string>;
}

export const cellKey = (id: string, w: WorkloadId): string => `${id}/${w}`;

/**
 * Per behaviour (sink, then echo) and workload: start every server, then `rounds` measured
 * runs of each, rotating who goes first, each server warmed up right before its first; stop
 * them. A server that fails a run is left out of that workload's later runs.
 */
export async function measureRounds<Id extends string>(p: RoundsPlan<Id>): Promise<Measured> {
  const samples = new Map<string, Sample[]>();
  const errors = new Map<string, string>();
  const fail = (ids: readonly Id[], ws: readonly Workload[], err: unknown, prefix = "") => {
    for (const id of ids) {
      for (const w of ws) errors.set(cellKey(id, w.id), `${prefix}${(err as Error).message}`);
    }
  };
  for (const mode of ["sink", "echo"] as const) {
    const ws = p.workloads
      .map((id) => WORKLOADS[id])
      .filter((w) => w.mode === mode && w.id !== "memory");
    if (ws.length === 0) continue;
    let backend: Server | undefined;
    try {
      if (p.backend) {
        try {
          backend = await p.backend(mode);
        } catch (err) {
          fail(p.ids, ws, err, "backend: ");
          continue;
        }
      }
      for (const w of ws) {
        // Fresh servers per workload: what one workload taught a JIT (a long echo run's
        // feedback) does not carry into the next one's figures, and each starts alike.
        const running = new Map<Id, Server>();
        try {
          await Promise.all(
            p.ids.map(async (id) => {
              try {
                running.set(id, await p.start(id, mode, backend));
              } catch (err) {
                fail([id], [w], err);
              }
            }),
          );
          await measureWorkload(p, w, running, backend, samples, errors, fail);
        } finally {
          await Promise.all([...running.values()].map((s) => s.stop()));
        }
      }
    } finally {
      await backend?.stop();
    }
  }
  if (p.workloads.includes("memory")) await measureMemoryRounds(p, samples, fail);
  return { samples, errors };
}

/** One workload over running servers: `rounds` runs of each, the first right after its warm-up run. */
async function measureWorkload<Id extends string>(
  p: RoundsPlan<Id>,
  w: Workload,
  running: Map<Id, Server>,
  backend: Server | undefined,
  samples: Map<string, Sample[]>,
  errors: Map<string, string>,
  fail: (ids: readonly Id[], ws: readonly Workload[], err: unknown, prefix?: string) => void,
): Promise<void> {
  p.log(`${w.title} …`);
  const ids = p.ids.filter((id) => running.has(id) && !errors.has(cellKey(id, w.id)));
  const run = (id: Id, seconds: number) =>
    measure(running.get(id)!, w, p.loadgen, p.certFile, p.loadgenCpus, seconds, backend);
  for (let r = 0; r < p.rounds; r++) {
    const order = rotated(ids, r);
    for (const id of order) {
      // Each server's warm-up right before its first measured run: after a warm-up pass over
      // all of them, the first ones measured had idled beside the others' warm-ups and their
      // first round cost 25-35 % more CPU per handshake.
      if (r === 0) {
        try {
          await run(id, p.warmupSeconds);
        } catch (err) {
          fail([id], [w], err, "warm-up: ");
        }
      }
      if (errors.has(cellKey(id, w.id))) continue;
      try {
        const smp = await run(id, p.seconds);
        samples.set(cellKey(id, w.id), [...(samples.get(cellKey(id, w.id)) ?? []), smp]);
      } catch (err) {
        fail([id], [w], err);
      }
    }
    p.log(roundLine(p.rounds, w, ids, r, samples));
  }
}

/**
 * Round `r`'s order: rotated by one a round, so that a change in the machine's load does not
 * always land on the same server (and two servers run as interleaved pairs).
 */
function rotated<Id>(ids: readonly Id[], r: number): Id[] {
  return ids.map((_, i) => ids[(i + r) % ids.length]!);
}

/** The progress line of round `r`: each id's rate in it, or "failed". */
function roundLine(
  rounds: number,
  w: Workload,
  ids: readonly string[],
  r: number,
  samples: Map<string, Sample[]>,
): string {
  const rates = ids.map((id) => {
    const last = samples.get(cellKey(id, w.id))?.[r];
    return `${id} ${last ? fmtRate(last.rate, w.unit) : "failed"}`;
  });
  return `  round ${r + 1}/${rounds}: ${rates.join(", ")}`;
}

/**
 * The memory workload: per round and id (rotating who goes first), a fresh
 * server, one run, stopped; so that no earlier run's garbage or allocator
 * caches count. No warm-up run: the run's own warm-up conn is it.
 */
async function measureMemoryRounds<Id extends string>(
  p: RoundsPlan<Id>,
  samples: Map<string, Sample[]>,
  fail: (ids: readonly Id[], ws: readonly Workload[], err: unknown, prefix?: string) => void,
): Promise<void> {
  const w = WORKLOADS.memory;
  const conns = p.idleConns ?? IDLE_CONNS;
  p.log(`${w.title}, ${conns} conns …`);
  const failed = new Set<Id>();
  for (let r = 0; r < p.rounds; r++) {
    const order = rotated(p.ids, r);
    for (const id of order) {
      if (failed.has(id)) continue;
      let s: Server | undefined;
      try {
        s = await p.start(id, w.mode, undefined, true);
        const smp = await measureMemory(s, w, p.loadgen, p.certFile, p.loadgenCpus, conns);
        samples.set(cellKey(id, w.id), [...(samples.get(cellKey(id, w.id)) ?? []), smp]);
      } catch (err) {
        failed.add(id);
        fail([id], [w], err);
      } finally {
        await s?.stop();
      }
    }
    p.log(roundLine(p.rounds, w, p.ids, r, samples));
  }
}

/** Taskset CPU lists: the server on CPU 0, the load generator on the others; null (with a note) when it cannot. */
export function pinCpus(
  wanted: boolean,
  nproc: number,
  notes: string[],
): { server: string; loadgen: string } | null {
  if (wanted && nproc >= 2 && onPath("taskset")) {
    return { server: "0", loadgen: nproc === 2 ? "1" : `1-${nproc - 1}` };
  }
  if (wanted) {
    notes.push(
      nproc < 2
        ? "one CPU: server and load generator share it"
        : "taskset not found (Debian util-linux): server and load generator not pinned",
    );
  }
  return null;
}

/** The files of one CA and one ECDSA P-256 leaf for localhost and 127.0.0.1, in `dir`. */
export interface CertFiles {
  ca: string;
  cert: string;
  key: string;
  /** JSON {ca, cert, key} for bench/server.ts (CERTS_ENV). */
  json: string;
}

export async function writeCerts(dir: string): Promise<CertFiles> {
  const ca = await createCA({ keyType: "ec-p256" });
  const leaf = await ca.issue({ names: ["localhost", "127.0.0.1"], keyType: "ec-p256" });
  const f: CertFiles = {
    ca: join(dir, "ca.pem"),
    cert: join(dir, "cert.pem"),
    key: join(dir, "key.pem"),
    json: join(dir, "certs.json"),
  };
  writeFileSync(f.ca, ca.cert);
  writeFileSync(f.cert, leaf.cert);
  writeFileSync(f.key, leaf.key, { mode: 0o600 });
  writeFileSync(f.json, JSON.stringify({ ca: ca.cert, cert: leaf.cert, key: leaf.key }), {
    mode: 0o600,
  });
  return f;
}

/** Run the servers benchmark; returns the exit code (0 ok or skipped, 1 failure, 2 usage). */
export function runServers(argv: string[]): Promise<number> {
  return loadBench("servers", argv, parseServersArgs, USAGE, async (o, env) => {
    const st = await setup(o, env.tmp, env.certs.json, env.log);
    if (typeof st === "string") {
      console.log(`bench servers: ${st}`);
      return 0;
    }
    const notes = [...st.notes];
    const nproc = os.availableParallelism?.() ?? os.cpus().length;
    const pin = pinCpus(o.pin, nproc, notes);
    const active = o.servers.filter((id) => st.launches.has(id));
    const labelOf = (id: ServerId) => st.servers.find((s) => s.id === id)?.label ?? id;
    env.log(
      `bench servers: ${active.map(labelOf).join(", ")}; ${o.workloads.join(", ")}; ` +
        `${o.rounds} × ${o.seconds} s after a ${o.warmupSeconds} s warm-up`,
    );
    const idleConns = o.workloads.includes("memory") ? idleConnsFor(o.idleConns, notes) : 0;
    if (idleConns > 0) {
      notes.push(
        `memory: RSS (VmRSS, all of a server's processes) after a warm-up conn and with ` +
          `${idleConns} idle conns open, each read 1 s after the last conn; Node servers ` +
          "(node:tls, tlsnet) collect garbage first (--expose-gc, SIGUSR2), the others do not; " +
          "a fresh server per run",
      );
    }
    const measured = await measureRounds({
      ...o,
      ids: active,
      loadgen: st.loadgen,
      certFile: env.certs.cert,
      loadgenCpus: pin?.loadgen,
      idleConns,
      label: labelOf,
      log: env.log,
      start: (id, mode, _backend, gc) =>
        startServer(
          `${labelOf(id)} (${gc ? "memory" : mode})`,
          st.launches.get(id)!(mode, gc),
          pin?.server,
        ),
    });
    const cells = buildCells(o, measured, pin !== null, nproc);
    finishReport({
      name: "servers",
      argv,
      o,
      started: env.started,
      pin,
      loadgenVersion: st.loadgenVersion,
      notes,
      cells: rated(cells),
      labelOf,
      report: (base): ServersReport => ({ ...base, servers: st.servers, cells }),
      chart: serversChart,
      memoryChart: (r) => serversChart(r, "memory"),
      ...serverTables,
    });
    return 0;
  });
}

/**
 * The frame of a load generator benchmark: parse the options (usage errors
 * exit 2), check for Linux, make a temporary directory with the certificates,
 * run `body`, and whatever happens kill what it started and remove the
 * directory. Returns `body`'s exit code, or 1 if it throws.
 */
export async function loadBench<O>(
  name: string,
  argv: string[],
  parse: (argv: readonly string[]) => O,
  usage: string,
  body: (
    o: O,
    env: { tmp: string; certs: CertFiles; log: (s: string) => void; started: number },
  ) => Promise<number>,
): Promise<number> {
  let o: O;
  try {
    o = parse(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      if (err.message) console.error(`bench ${name}: ${err.message}\n${usage}`);
      else console.log(usage);
      return err.message ? 2 : 0;
    }
    throw err;
  }
  if (process.platform !== "linux") {
    console.error(`bench ${name}: needs Linux (/proc for the CPU times); skipped`);
    return 0;
  }
  const started = performance.now();
  const log = (s: string) => console.error(s);
  const tmp = mkdtempSync(join(os.tmpdir(), `tlsnet-bench-${name}-`));
  const onExit = () => killAll();
  process.once("exit", onExit);
  try {
    // One CA and one ECDSA P-256 leaf for everything measured.
    const certs = await writeCerts(tmp);
    return await body(o, { tmp, certs, log, started });
  } catch (err) {
    console.error(`bench ${name}: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  } finally {
    killAll();
    process.off("exit", onExit);
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** What {@link finishReport} needs. */
export interface Finish<R extends LoadBenchReport, Id extends string> {
  name: string;
  argv: readonly string[];
  o: Pick<
    LoadBenchOptions<string>,
    "seconds" | "warmupSeconds" | "rounds" | "quick" | "workloads" | "json" | "svg"
  >;
  started: number;
  /** taskset CPU lists, or null when not pinned. */
  pin: LoadBenchReport["options"]["pin"];
  loadgenVersion: string;
  notes: string[];
  cells: readonly RatedCell<Id>[];
  labelOf(id: Id): string;
  /** The whole report, from the fields every report has. */
  report(base: LoadBenchReport): R;
  chart(r: R, what: "rate" | "cpu"): string;
  /** The memory workload's chart, for reports that can have one. */
  memoryChart?(r: R): string;
  table(r: R): string;
  markdown(r: R): string;
}

/**
 * Add the failures and what limits the numbers to the notes; make the report;
 * write the rate and CPU charts (o.svg and its -cpu.svg) when anything was
 * measured, bench/out/NAME.json and NAME.md; print the table, the notes and
 * where the files went, or the report as JSON with --json.
 */
export function finishReport<R extends LoadBenchReport, Id extends string>(f: Finish<R, Id>): void {
  const { o, notes } = f;
  for (const c of f.cells) {
    if (c.error) notes.push(`${f.labelOf(c.id)}, ${c.workload}: ${c.error}`);
  }
  notes.push(...diagnose(f.cells, f.labelOf));
  const report = f.report({
    date: new Date().toISOString(),
    command: `npm run bench -- ${f.name} ${f.argv.filter((a) => a !== f.name).join(" ")}`.trim(),
    revision: revision(),
    machine: machine(),
    options: {
      seconds: o.seconds,
      warmupSeconds: o.warmupSeconds,
      rounds: o.rounds,
      quick: o.quick,
      pin: f.pin,
    },
    loadgen: `bench/loadgen, ${f.loadgenVersion}`,
    workloads: o.workloads.map((id) => {
      const w = WORKLOADS[id];
      return { id, title: w.title, unit: w.unit, cpuUnit: w.cpuUnit };
    }),
    notes,
    chart: null,
    elapsedSeconds: 0,
  });
  const measured = (lower: boolean) =>
    f.cells.some((c) => c.rates.length > 0 && !!WORKLOADS[c.workload].lowerIsBetter === lower);
  const charts: string[] = [];
  if (measured(false)) {
    mkdirSync(dirname(o.svg), { recursive: true });
    writeFileSync(o.svg, f.chart(report, "rate"));
    writeFileSync(cpuChartPath(o.svg), f.chart(report, "cpu"));
    report.chart = o.svg;
    charts.push(o.svg, cpuChartPath(o.svg));
  }
  if (measured(true) && f.memoryChart) {
    mkdirSync(dirname(o.svg), { recursive: true });
    writeFileSync(memoryChartPath(o.svg), f.memoryChart(report));
    report.chart ??= memoryChartPath(o.svg);
    charts.push(memoryChartPath(o.svg));
  }
  report.elapsedSeconds = Math.round((performance.now() - f.started) / 100) / 10;
  const out = join(here, "out");
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, `${f.name}.json`), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(out, `${f.name}.md`), `${f.markdown(report)}\n`);
  if (o.json) {
    console.log(JSON.stringify(report, null, 2));
    return;
  }
  console.log(f.table(report));
  if (notes.length) console.log(`\n${notes.map((n) => `- ${n}`).join("\n")}`);
  if (charts.length > 0) {
    console.log(`charts: ${charts.map((p) => relative(process.cwd(), p)).join(", ")}`);
  }
  console.log(
    `report: ${relative(process.cwd(), join(out, `${f.name}.json`))} and ${f.name}.md; ` +
      `${report.elapsedSeconds} s`,
  );
}

/**
 * What held a rate back: the server when it kept its core (or, unpinned, as
 * much as a single-threaded server can) busy; the load generator when it
 * kept its CPUs busy; the whole machine when together they used every core;
 * other jobs when they took a noticeable share; latency when neither process
 * was busy (a wait, such as Nagle's algorithm against delayed ACKs); else
 * something that is not CPU.
 */
export function limitOf(
  c: { serverCores: number; loadgenCores: number; otherCores: number },
  pinned: boolean,
  loadgenCpus: number,
  nproc: number,
): string {
  if (!Number.isFinite(c.serverCores)) return "";
  if (c.serverCores + c.loadgenCores < 0.3 && c.otherCores < 0.75 * nproc) return "latency";
  if (c.serverCores >= 0.85) return "server";
  if (c.loadgenCores >= 0.85 * loadgenCpus) return "loadgen";
  if (c.serverCores + c.loadgenCores + c.otherCores >= 0.85 * nproc) {
    return c.otherCores >= 0.2 ? "shared" : "machine";
  }
  return pinned || c.serverCores + c.loadgenCores < 0.5 * nproc ? "not CPU" : "machine";
}

/** The CPU chart goes beside the rate chart: servers.svg → servers-cpu.svg. */
export function cpuChartPath(svg: string): string {
  return svg.endsWith(".svg") ? `${svg.slice(0, -4)}-cpu.svg` : `${svg}-cpu.svg`;
}

/** The memory chart too: servers.svg → servers-memory.svg. */
export function memoryChartPath(svg: string): string {
  return svg.endsWith(".svg") ? `${svg.slice(0, -4)}-memory.svg` : `${svg}-memory.svg`;
}

/**
 * rate: rates / the base's; cpu: the base's CPU per op / each one's; memory:
 * the memory workload's KiB per conn / the base's (lower is better).
 */
export type ChartKind = "rate" | "cpu" | "memory";

/** A cell of any load generator benchmark: its figures, and its rate against a baseline. */
export interface RatedCell<Id extends string> extends CellStats {
  id: Id;
  workload: WorkloadId;
  /** Median rate / the baseline's. */
  vsBase: number;
  /** Median rate / the best peer's (every id but tlsnet is a peer). */
  vsBest: number;
}

/**
 * Per workload, a cell for each id that ran or failed, with its rate against
 * `base`'s and against the best peer's. With `backend`, the backend's cores
 * count with the load generator's (they share its CPUs) when judging the limit.
 */
export function rateCells<Id extends string>(
  ids: readonly Id[],
  workloads: readonly WorkloadId[],
  { samples, errors }: Measured,
  base: Id,
  pinned: boolean,
  nproc: number,
  backend = false,
): RatedCell<Id>[] {
  const loadgenCpus = pinned ? nproc - 1 : nproc;
  const cells: RatedCell<Id>[] = [];
  for (const wid of workloads) {
    const row: RatedCell<Id>[] = [];
    for (const id of ids) {
      const list = samples.get(cellKey(id, wid)) ?? [];
      const rates = list.map((s) => s.rate);
      const first = list[0]?.result;
      const mid = (f: (s: Sample) => number) => median(list.map(f));
      const cell: RatedCell<Id> = {
        id,
        workload: wid,
        rates,
        median: median(rates),
        min: rates.length ? Math.min(...rates) : Number.NaN,
        max: rates.length ? Math.max(...rates) : Number.NaN,
        cpuPerOp: mid((s) => s.cpuPerOp),
        cpuPerOps: list.map((s) => s.cpuPerOp),
        serverCores: mid((s) => s.serverCores),
        loadgenCores: mid((s) => s.loadgenCores),
        ...(backend ? { backendCores: mid((s) => s.backendCores) } : {}),
        otherCores: mid((s) => s.otherCores),
        limit: "",
        vsBase: Number.NaN,
        vsBest: Number.NaN,
        resumed: list.reduce((a, s) => a + s.result.resumed, 0),
        handshakes:
          wid === "full" || wid === "resumed" ? list.reduce((a, s) => a + s.result.ops, 0) : 0,
        version: first?.version ?? "",
        cipher: first?.cipher ?? "",
      };
      const mem = list.flatMap((s) => (s.memory ? [s.memory] : []));
      if (mem.length > 0) cell.memory = mem;
      const clientSide = { ...cell, loadgenCores: cell.loadgenCores + (cell.backendCores ?? 0) };
      // A memory figure is not held back by a CPU.
      if (!WORKLOADS[wid].lowerIsBetter)
        cell.limit = limitOf(clientSide, pinned, loadgenCpus, nproc);
      const err = errors.get(cellKey(id, wid));
      if (err) cell.error = err;
      if (list.length > 0 || err) row.push(cell);
    }
    const baseRate = row.find((c) => c.id === base)?.median ?? Number.NaN;
    const peers = row.filter((c) => !c.id.startsWith("tlsnet") && Number.isFinite(c.median));
    const pick = WORKLOADS[wid].lowerIsBetter ? Math.min : Math.max;
    const best = peers.length ? pick(...peers.map((c) => c.median)) : Number.NaN;
    for (const c of row) {
      c.vsBase = c.median / baseRate;
      c.vsBest = c.median / best;
    }
    cells.push(...row);
  }
  return cells;
}

function buildCells(o: ServersOptions, measured: Measured, pinned: boolean, nproc: number): Cell[] {
  return rateCells(o.servers, o.workloads, measured, "node20", pinned, nproc).map(
    ({ id, workload, vsBase, vsBest, ...stats }) => ({
      server: id,
      workload,
      ...stats,
      vsNode: vsBase,
      vsBest,
    }),
  );
}

/** The servers report's cells as {@link RatedCell}s. */
const rated = (cells: readonly Cell[]): RatedCell<ServerId>[] =>
  cells.map(({ server, vsNode, ...c }) => ({ ...c, id: server, vsBase: vsNode }));

/** Notes on what limits a number, read off the measurements. */
export function diagnose<Id extends string>(
  cells: readonly RatedCell<Id>[],
  labelOf: (id: Id) => string,
): string[] {
  const out: string[] = [];
  for (const c of cells) {
    if (c.workload === "bulk" && c.error?.includes("reading the byte count: EOF")) {
      out.push(
        `${labelOf(c.id)}, bulk: the conn ended before the byte count came back: it does not ` +
          "keep the other direction open when the client half-closes (close_notify + FIN)",
      );
    }
    if (!c.rates.length) continue;
    const who = `${labelOf(c.id)}, ${c.workload}`;
    if (c.workload === "resumed" && c.handshakes > 0 && c.resumed < 0.9 * c.handshakes) {
      out.push(`${who}: only ${c.resumed}/${c.handshakes} handshakes resumed`);
    }
    if (c.limit === "latency") {
      out.push(
        `${who}: server ${c.serverCores.toFixed(2)} cores, load generator ` +
          `${c.loadgenCores.toFixed(2)}: neither is busy, so the rate measures a wait ` +
          "(latency), not the server's speed",
      );
    }
  }
  const ciphers = new Map<string, string[]>();
  for (const c of cells) {
    if (!c.cipher) continue;
    const l = ciphers.get(c.cipher) ?? [];
    if (!l.includes(labelOf(c.id))) l.push(labelOf(c.id));
    ciphers.set(c.cipher, l);
  }
  if (ciphers.size > 1) {
    out.push(
      `negotiated ciphers differ (each server's default): ${[...ciphers]
        .map(([k, v]) => `${k}: ${v.join(", ")}`)
        .join("; ")}`,
    );
  }
  return out;
}

export function machine(): LoadBenchReport["machine"] {
  const cpus = os.cpus();
  return {
    nproc: os.availableParallelism?.() ?? cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

// ---------------------------------------------------------------- output

export function fmtRate(v: number, unit: string): string {
  if (!Number.isFinite(v)) return "n/a";
  if (unit === "KiB/conn") return v.toFixed(1);
  if (unit === "MB/s") return Math.round(v).toLocaleString("en-US");
  return Math.round(v).toLocaleString("en-US");
}

export function fmtCpu(v: number, unit: string): string {
  if (!Number.isFinite(v)) return "n/a";
  return unit === "ms/MB" ? v.toFixed(2) : v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

const ratio = (r: number) => (Number.isFinite(r) ? r.toFixed(2) : "n/a");
const cores = (v: number | undefined) =>
  v !== undefined && Number.isFinite(v) ? v.toFixed(2) : "n/a";

/**
 * The table's rows, one per cell: workload, who, rate, CPU per op, cores
 * (server, load generator, backend when measured, others), limit, × base, × best peer.
 */
export function tableRows<Id extends string>(
  workloads: LoadBenchReport["workloads"],
  cells: readonly RatedCell<Id>[],
  labelOf: (id: Id) => string,
): string[][] {
  const rows: string[][] = [];
  for (const w of workloads) {
    for (const c of cells.filter((x) => x.workload === w.id)) {
      const spread =
        c.rates.length > 1
          ? `${fmtRate(c.median, w.unit)} (${fmtRate(c.min, w.unit)}–${fmtRate(c.max, w.unit)})`
          : fmtRate(c.median, w.unit);
      rows.push([
        `${w.title} (${w.unit})`,
        labelOf(c.id),
        c.rates.length ? spread : "failed",
        `${fmtCpu(c.cpuPerOp, w.cpuUnit)} ${w.cpuUnit}`,
        cores(c.serverCores),
        cores(c.loadgenCores),
        ...("backendCores" in c ? [cores(c.backendCores)] : []),
        cores(c.otherCores),
        c.limit,
        ratio(c.vsBase),
        ratio(c.vsBest),
      ]);
    }
  }
  return rows;
}

/** Columns that are text (left-aligned): workload, who, limit (third from the end). */
const isText = (i: number, n: number) => i < 2 || i === n - 3;

/** A plain-text table; a workload's name only on its first row, a blank line between workloads. */
export function textTable(head: readonly string[], body: readonly string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (isText(i, head.length) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ");
  const out = [line(head), widths.map((w) => "-".repeat(w)).join("  ")];
  let last = "";
  for (const b of body) {
    if (last && b[0] !== last) out.push("");
    out.push(line(b[0] === last ? ["", ...b.slice(1)] : b));
    last = b[0]!;
  }
  return out.join("\n");
}

/** The same table in Markdown, tlsnet's rows in bold. */
export function markdownTable(head: readonly string[], body: readonly string[][]): string {
  const align = head.map((_, i) => (isText(i, head.length) ? "---" : "--:"));
  const out = [`| ${head.join(" | ")} |`, `|${align.join("|")}|`];
  let last = "";
  for (const b of body) {
    const cells = b[0] === last ? ["", ...b.slice(1)] : [...b];
    if (b[1]!.startsWith("tlsnet")) cells[1] = `**${cells[1]}**`;
    out.push(`| ${cells.join(" | ")} |`);
    last = b[0]!;
  }
  return out.join("\n");
}

/** The table's header: `who` is "server" or "proxy", `base` what the ratios are against. */
export function tableHead(who: string, base: string, backend: boolean): string[] {
  return [
    "workload",
    who,
    "median (min–max)",
    `${who} CPU/op`,
    `${who} cores`,
    "loadgen cores",
    ...(backend ? ["backend cores"] : []),
    "other cores",
    "limit",
    `× ${base}`,
    "× best peer",
  ];
}

/** A report's plain-text and Markdown tables. */
export function tableFormatters<R extends LoadBenchReport, Id extends string>(
  head: readonly string[],
  cellsOf: (r: R) => readonly RatedCell<Id>[],
  labelsOf: (r: R) => (id: Id) => string,
): { table(r: R): string; markdown(r: R): string } {
  const rows = (r: R) => tableRows(r.workloads, cellsOf(r), labelsOf(r));
  return { table: (r) => textTable(head, rows(r)), markdown: (r) => markdownTable(head, rows(r)) };
}

const serverLabels = (report: ServersReport) => (id: ServerId) =>
  report.servers.find((s) => s.id === id)?.label ?? id;

const serverTables = tableFormatters(
  tableHead("server", "node:tls", false),
  (r: ServersReport) => rated(r.cells),
  serverLabels,
);
export const formatServersTable = serverTables.table;
export const formatServersMarkdown = serverTables.markdown;

/**
 * A chart, per workload and id: `rate`, the rate / `base`'s; `cpu`, `base`'s
 * CPU per operation / this one's (how many operations it gets out of the CPU
 * time `base` needs for one). tlsnet green/orange, `base` grey, others blue.
 */
export function comparisonChart<Id extends string>(
  workloads: LoadBenchReport["workloads"],
  cells: readonly RatedCell<Id>[],
  base: Id,
  labelOf: (id: Id) => string,
  what: ChartKind,
  title: string,
  subtitle: string,
): string {
  const bars: Bar[] = [];
  for (const w of workloads) {
    // The memory chart has the memory workload, the others the rest.
    if (!!WORKLOADS[w.id].lowerIsBetter !== (what === "memory")) continue;
    const row = cells.filter((x) => x.workload === w.id);
    const baseCpu = row.find((c) => c.id === base)?.cpuPerOp ?? Number.NaN;
    for (const c of row) {
      const r = what === "cpu" ? baseCpu / c.cpuPerOp : c.vsBase;
      const bar: Bar = { label: `${w.id} · ${labelOf(c.id)}`, ratio: r, group: w.id };
      if (what === "memory") bar.lowerIsBetter = true;
      if (!c.id.startsWith("tlsnet")) bar.color = c.id === base ? "#9e9e9e" : "#5c7f9c";
      bars.push(bar);
    }
  }
  return ratioChart(bars, title, subtitle);
}

/** The servers charts: rate / raw node:tls on this Node, and node:tls's CPU per op / each server's. */
export function serversChart(report: ServersReport, what: ChartKind = "rate"): string {
  const m = report.machine;
  const labelOf = serverLabels(report);
  const conns = report.cells.find((c) => c.memory)?.memory?.[0]?.conns;
  return comparisonChart(
    report.workloads,
    rated(report.cells),
    "node20",
    labelOf,
    what,
    what === "rate"
      ? `TLS servers under a Go load generator: rate / ${labelOf("node20")}`
      : what === "cpu"
        ? "Server CPU efficiency: node:tls's CPU per op / each server's"
        : `Server RSS per idle TLS conn / ${labelOf("node20")}'s (lower is better)`,
    what === "memory"
      ? `${m.nproc} × ${m.cpuModel}; ${conns ?? "?"} idle conns, one 64 B echo each; ` +
          `median of ${report.options.rounds} runs; tlsnet green/orange`
      : `${m.nproc} × ${m.cpuModel}; median of ${report.options.rounds} × ${report.options.seconds} s` +
          `${report.options.pin ? "; server on CPU 0, load generator on the rest" : ""}; tlsnet green/orange`,
  );
}

const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(resolve(entry)).href) {
  process.exitCode = await runServers(process.argv.slice(2));
}
