/**
 * The servers benchmark: TLS servers in several runtimes driven by one load
 * generator that is not Node (bench/loadgen, Go), so that the server, not the
 * client, is what saturates. All measured in one run, one table.
 *
 *   npm run bench -- servers [--quick] [--seconds S] [--rounds N] [--servers a,b]
 *                            [--workloads a,b] [--json] [--svg FILE] [--no-install] [--no-pin]
 *   npm run bench:servers -- …   (the same)
 *
 * Servers (each in its own process, same ECDSA P-256 certificate, on 127.0.0.1):
 *   node20  raw node:tls on this Node (bench/server.ts "node", the baseline)
 *   node24  the same code on Node 24 (npm package `node`)
 *   tlsnet  tlsnet on this Node (bench/server.ts "tlsnet")
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
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
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
  "node24",
  "tlsnet",
  "tlsnet-native",
  "bun",
  "deno",
  "go",
] as const;
export type ServerId = (typeof SERVER_IDS)[number];
export const WORKLOAD_IDS = ["bulk", "echo", "full", "resumed"] as const;
export type WorkloadId = (typeof WORKLOAD_IDS)[number];

export interface ServersOptions {
  servers: ServerId[];
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
}

const USAGE = `usage: npm run bench -- servers [--quick] [--seconds S] [--rounds N] [--servers LIST]
                                [--workloads LIST] [--json] [--svg FILE] [--no-install] [--no-pin]
  servers:    ${SERVER_IDS.join(" ")} (default: all)
  workloads:  ${WORKLOAD_IDS.join(" ")} (default: all)
  --seconds S   length of each measured run (default 2; --quick 1)
  --rounds N    measured runs per server and workload (default 3; --quick 1)
  --quick       1 round of 1 s after a 0.5 s warm-up (about a minute)
  --json        the report as JSON on stdout
  --svg FILE    the rate chart (default bench/out/servers.svg); the CPU chart goes
                beside it (servers-cpu.svg)
  --no-install  do not install Bun, Deno or Node 24 from npm (use them only if cached)
  --no-pin      do not pin the server to CPU 0 and the load generator to the others
  Cache: $TLSNET_BENCH_CACHE, else $XDG_CACHE_HOME/tlsnet-bench, else ~/.cache/tlsnet-bench`;

class UsageError extends Error {}

export function defaultCacheDir(): string {
  if (process.env.TLSNET_BENCH_CACHE) return resolve(process.env.TLSNET_BENCH_CACHE);
  const base = process.env.XDG_CACHE_HOME || join(os.homedir(), ".cache");
  return join(base, "tlsnet-bench");
}

export function parseServersArgs(argv: readonly string[]): ServersOptions {
  const o: ServersOptions = {
    servers: [...SERVER_IDS],
    workloads: [...WORKLOAD_IDS],
    seconds: 0,
    warmupSeconds: 0,
    rounds: 0,
    quick: false,
    json: false,
    svg: join(here, "out", "servers.svg"),
    install: true,
    pin: true,
    cache: defaultCacheDir(),
  };
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
    if (a === "servers") continue; // `npm run bench -- servers …`
    if (a === "--quick") o.quick = true;
    else if (a === "--json") o.json = true;
    else if (a === "--no-install") o.install = false;
    else if (a === "--no-pin") o.pin = false;
    else if (a === "--seconds") o.seconds = num(a, argv[++i], 0.2, 60);
    else if (a === "--rounds") o.rounds = Math.round(num(a, argv[++i], 1, 20));
    else if (a === "--servers") o.servers = list(a, argv[++i], SERVER_IDS);
    else if (a === "--workloads") o.workloads = list(a, argv[++i], WORKLOAD_IDS);
    else if (a === "--svg") {
      const v = argv[++i];
      if (!v) throw new UsageError("--svg takes a file name");
      o.svg = resolve(v);
    } else if (a === "-h" || a === "--help") throw new UsageError("");
    else throw new UsageError(`unknown argument ${a}`);
  }
  if (o.seconds === 0) o.seconds = o.quick ? 1 : 2;
  if (o.rounds === 0) o.rounds = o.quick ? 1 : 3;
  o.warmupSeconds = o.quick ? 0.5 : 1;
  return o;
}

// ---------------------------------------------------------------- workloads

interface Workload {
  id: WorkloadId;
  title: string;
  unit: string;
  /** What the server does. */
  mode: "sink" | "echo";
  /** CPU per operation: its unit and the operations of a loadgen result. */
  cpuUnit: string;
  ops(r: LoadResult): number;
  /** CPU seconds → the cpuUnit per op. */
  scale: number;
}

const WORKLOADS: Record<WorkloadId, Workload> = {
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
}

// ---------------------------------------------------------------- report

export interface Cell {
  server: ServerId;
  workload: WorkloadId;
  /** Rates of the measured runs. */
  rates: number[];
  median: number;
  min: number;
  max: number;
  /** Median server CPU per operation, in the workload's cpuUnit. */
  cpuPerOp: number;
  /** Median server CPU time / wall time of a run (1 = one core busy). */
  serverCores: number;
  /** Median load generator CPU time / wall time. */
  loadgenCores: number;
  /** Median CPU time of everything else on the machine / wall time (other jobs, some kernel work). */
  otherCores: number;
  /** What the numbers say held the rate back (see limitOf). */
  limit: string;
  /** Median rate / node20's median rate. */
  vsNode: number;
  /** Median rate / the best peer's median rate (every server but tlsnet is a peer). */
  vsBest: number;
  resumed: number;
  handshakes: number;
  version: string;
  cipher: string;
  error?: string;
}

export interface ServerInfo {
  id: ServerId;
  label: string;
  /** Runtime and TLS library with versions. */
  detail: string;
  available: boolean;
  note?: string;
}

export interface ServersReport {
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
  servers: ServerInfo[];
  loadgen: string;
  workloads: Array<{ id: WorkloadId; title: string; unit: string; cpuUnit: string }>;
  cells: Cell[];
  notes: string[];
  chart: string | null;
  elapsedSeconds: number;
}

// ---------------------------------------------------------------- tools

/** The executable `cmd` on PATH, or undefined. */
export function onPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

function findGo(): string | undefined {
  return (
    onPath("go") ??
    ["/usr/lib/go/bin/go", "/usr/local/go/bin/go"].find((p) => {
      try {
        accessSync(p, constants.X_OK);
        return true;
      } catch {
        return false;
      }
    })
  );
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

function version(cmd: string, args: string[]): string | undefined {
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
    cands.find((c) => existsSync(c) && version(c, args) !== undefined);
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

function killAll(): void {
  for (const p of live) p.kill("SIGKILL");
}

let clkTck = 0;
function ticks(): number {
  if (clkTck === 0) {
    const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
    clkTck = Number(r.stdout?.trim()) || 100;
  }
  return clkTck;
}

/** CPU time (user + system, all threads) of a process, in seconds, from /proc. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after "(comm) ": state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / ticks();
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

interface Launch {
  cmd: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
}

class Server {
  readonly proc: ChildProcess;
  private stderr = "";
  private exited = false;
  port = 0;

  constructor(
    readonly name: string,
    launch: Launch,
    cpus: string | undefined,
  ) {
    const [cmd, args] = pinned(cpus, launch.cmd, launch.args);
    this.proc = spawn(cmd, args, {
      cwd: root,
      env: launch.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
    });
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
        if (this.port) return;
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

  lastError(): string {
    return this.stderr.trim().split("\n").slice(-3).join(" | ");
  }

  /** Close stdin (every server exits on that), then TERM, then KILL. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((r) => this.proc.once("exit", () => r()));
    this.proc.stdin?.end();
    const term = setTimeout(() => this.proc.kill("SIGTERM"), 3000);
    const kill = setTimeout(() => this.proc.kill("SIGKILL"), 6000);
    await gone;
    clearTimeout(term);
    clearTimeout(kill);
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
  launches: Map<ServerId, (mode: "sink" | "echo") => Launch>;
  servers: ServerInfo[];
  notes: string[];
}

/** Compile src/ with the project's build config into `dir`/dist; returns that directory. */
export function compileTlsnet(dir: string, log: (s: string) => void): string {
  const out = join(dir, "dist");
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
  return out;
}

async function setup(
  o: ServersOptions,
  certDir: string,
  certsJson: string,
  log: (s: string) => void,
): Promise<Setup | string> {
  const go = findGo();
  if (!go) {
    return (
      "the servers benchmark needs Go for its load generator, and `go` is not installed.\n" +
      "Install Debian's Go and run it again:  apt-get install -y golang-go\n" +
      "(skipped; nothing was measured)"
    );
  }
  const goVersion = version(go, ["version"]) ?? "go (unknown version)";
  log(`building bench/loadgen and bench/peers/go with ${goVersion} (cached) …`);
  const loadgen = buildGo(go, goVersion, join(here, "loadgen"), "loadgen", o.cache);
  const goserver = o.servers.includes("go")
    ? buildGo(go, goVersion, join(here, "peers", "go"), "goserver", o.cache)
    : "";
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
  const nodeArgs = (impl: "node" | "tlsnet", mode: "sink" | "echo") => [
    "--import",
    "tsx",
    serverTs,
    impl,
    "tls",
    mode === "sink" ? "discard" : "echo",
  ];
  const launches = new Map<ServerId, (mode: "sink" | "echo") => Launch>();
  const servers: ServerInfo[] = [];
  const ssl = process.versions.openssl;
  const add = (info: ServerInfo, launch?: (mode: "sink" | "echo") => Launch) => {
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
    (m) => ({ cmd: process.execPath, args: nodeArgs("node", m), env: nodeEnv }),
  );
  if (o.servers.includes("node24")) {
    const v = rt.node24
      ? version(rt.node24, ["-p", "process.version + ' ' + process.versions.openssl"])
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
      (m) => ({ cmd: rt.node24!, args: nodeArgs("node", m), env: nodeEnv }),
    );
  }
  add(
    {
      id: "tlsnet",
      label: `tlsnet, Node ${process.version}`,
      detail: `tlsnet ${revision()} on Node ${process.version}, OpenSSL ${ssl}; bench/server.ts "tlsnet"`,
      available: true,
    },
    (m) => ({ cmd: process.execPath, args: nodeArgs("tlsnet", m), env: tlsnetEnv }),
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
    (m) => ({
      cmd: process.execPath,
      args: nodeArgs("tlsnet", m),
      env: { ...tlsnetEnv, TLSNET_ENGINE: "native", TLSNET_NATIVE_ADDON: addon },
    }),
  );
  if (o.servers.includes("bun")) {
    const v = rt.bun ? version(rt.bun, ["--version"]) : undefined;
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
    const v = rt.deno ? version(rt.deno, ["--version"])?.split("\n")[0] : undefined;
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

function revision(): string {
  const head = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" });
  if (head.status !== 0) return "unknown";
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "src"], {
    cwd: root,
    encoding: "utf8",
  });
  return `${head.stdout.trim()}${dirty.stdout.trim() ? "+dirty" : ""}`;
}

interface Sample {
  rate: number;
  cpuPerOp: number;
  serverCores: number;
  loadgenCores: number;
  otherCores: number;
  result: LoadResult;
}

async function measure(
  s: Server,
  w: Workload,
  loadgen: string,
  certFile: string,
  cpus: string | undefined,
  seconds: number,
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
  const c0 = processCpuSeconds(s.pid);
  const m0 = machineBusySeconds();
  const t0 = performance.now();
  const r = await runLoadgen(loadgen, args, cpus, seconds * 1000 + 60_000);
  const wall = (performance.now() - t0) / 1000;
  const c1 = s.alive ? processCpuSeconds(s.pid) : Number.NaN;
  const m1 = machineBusySeconds();
  if (!r.ok) {
    throw new Error(
      `${r.first_error ?? "failed"} (${r.errors} errors, ${r.ops} ops)` +
        (s.alive ? "" : `; server exited: ${s.lastError()}`),
    );
  }
  const ops = w.ops(r);
  const serverCores = (c1 - c0) / wall;
  const loadgenCores = r.cpu_s / wall;
  return {
    rate: r.rate,
    cpuPerOp: ((c1 - c0) * w.scale) / Math.max(1e-9, ops),
    serverCores,
    loadgenCores,
    // Everything else: other jobs, and kernel work not charged to either process.
    otherCores: Math.max(0, (m1 - m0) / wall - serverCores - loadgenCores),
    result: r,
  };
}

/** Run the servers benchmark; returns the exit code (0 ok or skipped, 1 failure, 2 usage). */
export async function runServers(argv: string[]): Promise<number> {
  let o: ServersOptions;
  try {
    o = parseServersArgs(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      if (err.message) console.error(`bench servers: ${err.message}\n${USAGE}`);
      else console.log(USAGE);
      return err.message ? 2 : 0;
    }
    throw err;
  }
  if (process.platform !== "linux") {
    console.error("bench servers: needs Linux (/proc for the servers' CPU time); skipped");
    return 0;
  }
  const started = performance.now();
  const log = (s: string) => console.error(s);
  const tmp = mkdtempSync(join(os.tmpdir(), "tlsnet-bench-servers-"));
  const onExit = () => killAll();
  process.once("exit", onExit);
  try {
    // One CA and one ECDSA P-256 leaf for every server.
    const ca = await createCA({ keyType: "ec-p256" });
    const leaf = await ca.issue({ names: ["localhost", "127.0.0.1"], keyType: "ec-p256" });
    const certFile = join(tmp, "cert.pem");
    writeFileSync(join(tmp, "ca.pem"), ca.cert);
    writeFileSync(certFile, leaf.cert);
    writeFileSync(join(tmp, "key.pem"), leaf.key, { mode: 0o600 });
    const certsJson = join(tmp, "certs.json");
    writeFileSync(certsJson, JSON.stringify({ ca: ca.cert, cert: leaf.cert, key: leaf.key }), {
      mode: 0o600,
    });

    const st = await setup(o, tmp, certsJson, log);
    if (typeof st === "string") {
      console.log(`bench servers: ${st}`);
      return 0;
    }
    const notes = [...st.notes];
    const nproc = os.availableParallelism?.() ?? os.cpus().length;
    let pin: { server: string; loadgen: string } | null = null;
    if (o.pin && nproc >= 2 && onPath("taskset")) {
      pin = { server: "0", loadgen: nproc === 2 ? "1" : `1-${nproc - 1}` };
    } else if (o.pin) {
      notes.push(
        nproc < 2
          ? "one CPU: server and load generator share it"
          : "taskset not found (Debian util-linux): server and load generator not pinned",
      );
    }
    const active = o.servers.filter((id) => st.launches.has(id));
    const labelOf = (id: ServerId) => st.servers.find((s) => s.id === id)?.label ?? id;
    const samples = new Map<string, Sample[]>();
    const errors = new Map<string, string>();
    const key = (s: ServerId, w: WorkloadId) => `${s}/${w}`;
    log(
      `bench servers: ${active.map(labelOf).join(", ")}; ${o.workloads.join(", ")}; ` +
        `${o.rounds} × ${o.seconds} s after a ${o.warmupSeconds} s warm-up`,
    );

    for (const mode of ["sink", "echo"] as const) {
      const ws = o.workloads.map((id) => WORKLOADS[id]).filter((w) => w.mode === mode);
      if (ws.length === 0) continue;
      const running = new Map<ServerId, Server>();
      try {
        await Promise.all(
          active.map(async (id) => {
            const s = new Server(
              `${labelOf(id)} (${mode})`,
              st.launches.get(id)!(mode),
              pin?.server,
            );
            try {
              await s.ready(60_000);
              running.set(id, s);
            } catch (err) {
              await s.stop();
              for (const w of ws) errors.set(key(id, w.id), (err as Error).message);
            }
          }),
        );
        for (const w of ws) {
          log(`${w.title} …`);
          const ids = active.filter((id) => running.has(id) && !errors.has(key(id, w.id)));
          for (const id of ids) {
            try {
              await measure(
                running.get(id)!,
                w,
                st.loadgen,
                certFile,
                pin?.loadgen,
                o.warmupSeconds,
              );
            } catch (err) {
              errors.set(key(id, w.id), `warm-up: ${(err as Error).message}`);
            }
          }
          for (let r = 0; r < o.rounds; r++) {
            // Rotate who goes first, so that a change in the machine's load
            // does not always land on the same server.
            const order = ids.map((_, i) => ids[(i + r) % ids.length]!);
            for (const id of order) {
              if (errors.has(key(id, w.id))) continue;
              try {
                const smp = await measure(
                  running.get(id)!,
                  w,
                  st.loadgen,
                  certFile,
                  pin?.loadgen,
                  o.seconds,
                );
                const list = samples.get(key(id, w.id)) ?? [];
                list.push(smp);
                samples.set(key(id, w.id), list);
              } catch (err) {
                errors.set(key(id, w.id), (err as Error).message);
              }
            }
            log(
              `  round ${r + 1}/${o.rounds}: ` +
                ids
                  .map((id) => {
                    const last = samples.get(key(id, w.id))?.[r];
                    return `${id} ${last ? fmtRate(last.rate, w.unit) : "failed"}`;
                  })
                  .join(", "),
            );
          }
        }
      } finally {
        await Promise.all([...running.values()].map((s) => s.stop()));
      }
    }

    const loadgenCpus = pin ? nproc - 1 : nproc;
    const cells = buildCells(o, samples, errors, pin !== null, loadgenCpus, nproc);
    for (const c of cells) {
      if (c.error) notes.push(`${labelOf(c.server)}, ${c.workload}: ${c.error}`);
    }
    notes.push(...diagnose(cells, labelOf));
    const report: ServersReport = {
      date: new Date().toISOString(),
      command: `npm run bench -- servers ${argv.filter((a) => a !== "servers").join(" ")}`.trim(),
      revision: revision(),
      machine: machine(),
      options: {
        seconds: o.seconds,
        warmupSeconds: o.warmupSeconds,
        rounds: o.rounds,
        quick: o.quick,
        pin,
      },
      servers: st.servers,
      loadgen: `bench/loadgen, ${st.loadgenVersion}`,
      workloads: o.workloads.map((id) => {
        const w = WORKLOADS[id];
        return { id, title: w.title, unit: w.unit, cpuUnit: w.cpuUnit };
      }),
      cells,
      notes,
      chart: null,
      elapsedSeconds: 0,
    };
    if (cells.some((c) => c.rates.length > 0)) {
      mkdirSync(dirname(o.svg), { recursive: true });
      writeFileSync(o.svg, serversChart(report, "rate"));
      writeFileSync(cpuChartPath(o.svg), serversChart(report, "cpu"));
      report.chart = o.svg;
    }
    report.elapsedSeconds = Math.round((performance.now() - started) / 100) / 10;
    const out = join(here, "out");
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, "servers.json"), `${JSON.stringify(report, null, 2)}\n`);
    writeFileSync(join(out, "servers.md"), `${formatServersMarkdown(report)}\n`);
    if (o.json) {
      console.log(JSON.stringify(report, null, 2));
    } else {
      console.log(formatServersTable(report));
      if (notes.length) console.log(`\n${notes.map((n) => `- ${n}`).join("\n")}`);
      if (report.chart) {
        const rel = (p: string) => relative(process.cwd(), p);
        console.log(`charts: ${rel(report.chart)}, ${rel(cpuChartPath(report.chart))}`);
      }
      console.log(
        `report: ${relative(process.cwd(), join(out, "servers.json"))} and servers.md; ` +
          `${report.elapsedSeconds} s`,
      );
    }
    return 0;
  } catch (err) {
    console.error(`bench servers: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  } finally {
    killAll();
    process.off("exit", onExit);
    rmSync(tmp, { recursive: true, force: true });
  }
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

function buildCells(
  o: ServersOptions,
  samples: Map<string, Sample[]>,
  errors: Map<string, string>,
  pinned: boolean,
  loadgenCpus: number,
  nproc: number,
): Cell[] {
  const cells: Cell[] = [];
  for (const wid of o.workloads) {
    const row: Cell[] = [];
    for (const sid of o.servers) {
      const list = samples.get(`${sid}/${wid}`) ?? [];
      const rates = list.map((s) => s.rate);
      const first = list[0]?.result;
      const cell: Cell = {
        server: sid,
        workload: wid,
        rates,
        median: median(rates),
        min: rates.length ? Math.min(...rates) : Number.NaN,
        max: rates.length ? Math.max(...rates) : Number.NaN,
        cpuPerOp: median(list.map((s) => s.cpuPerOp)),
        serverCores: median(list.map((s) => s.serverCores)),
        loadgenCores: median(list.map((s) => s.loadgenCores)),
        otherCores: median(list.map((s) => s.otherCores)),
        limit: "",
        vsNode: Number.NaN,
        vsBest: Number.NaN,
        resumed: list.reduce((a, s) => a + s.result.resumed, 0),
        handshakes:
          wid === "full" || wid === "resumed" ? list.reduce((a, s) => a + s.result.ops, 0) : 0,
        version: first?.version ?? "",
        cipher: first?.cipher ?? "",
      };
      cell.limit = limitOf(cell, pinned, loadgenCpus, nproc);
      const err = errors.get(`${sid}/${wid}`);
      if (err) cell.error = err;
      if (list.length > 0 || err) row.push(cell);
    }
    const base = row.find((c) => c.server === "node20")?.median ?? Number.NaN;
    const peers = row.filter((c) => !c.server.startsWith("tlsnet") && Number.isFinite(c.median));
    const best = peers.length ? Math.max(...peers.map((c) => c.median)) : Number.NaN;
    for (const c of row) {
      c.vsNode = c.median / base;
      c.vsBest = c.median / best;
    }
    cells.push(...row);
  }
  return cells;
}

/** Notes on what limits a number, read off the measurements. */
function diagnose(cells: Cell[], labelOf: (id: ServerId) => string): string[] {
  const out: string[] = [];
  for (const c of cells) {
    if (!c.rates.length) continue;
    const who = `${labelOf(c.server)}, ${c.workload}`;
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
    if (!l.includes(labelOf(c.server))) l.push(labelOf(c.server));
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

function machine(): ServersReport["machine"] {
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

function fmtRate(v: number, unit: string): string {
  if (!Number.isFinite(v)) return "n/a";
  if (unit === "MB/s") return Math.round(v).toLocaleString("en-US");
  return Math.round(v).toLocaleString("en-US");
}

function fmtCpu(v: number, unit: string): string {
  if (!Number.isFinite(v)) return "n/a";
  return unit === "ms/MB" ? v.toFixed(2) : v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

const ratio = (r: number) => (Number.isFinite(r) ? r.toFixed(2) : "n/a");

function tableRows(report: ServersReport): string[][] {
  const labelOf = (id: ServerId) => report.servers.find((s) => s.id === id)?.label ?? id;
  const rows: string[][] = [];
  for (const w of report.workloads) {
    for (const c of report.cells.filter((x) => x.workload === w.id)) {
      const spread =
        c.rates.length > 1
          ? `${fmtRate(c.median, w.unit)} (${fmtRate(c.min, w.unit)}–${fmtRate(c.max, w.unit)})`
          : fmtRate(c.median, w.unit);
      rows.push([
        `${w.title} (${w.unit})`,
        labelOf(c.server),
        c.rates.length ? spread : "failed",
        `${fmtCpu(c.cpuPerOp, w.cpuUnit)} ${w.cpuUnit}`,
        Number.isFinite(c.serverCores) ? c.serverCores.toFixed(2) : "n/a",
        Number.isFinite(c.loadgenCores) ? c.loadgenCores.toFixed(2) : "n/a",
        Number.isFinite(c.otherCores) ? c.otherCores.toFixed(2) : "n/a",
        c.limit,
        ratio(c.vsNode),
        ratio(c.vsBest),
      ]);
    }
  }
  return rows;
}

const HEAD = [
  "workload",
  "server",
  "median (min–max)",
  "server CPU/op",
  "server cores",
  "loadgen cores",
  "other cores",
  "limit",
  "× node:tls",
  "× best peer",
];

export function formatServersTable(report: ServersReport): string {
  const body = tableRows(report);
  const widths = HEAD.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i >= 2 && i !== 7 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ");
  const out = [line(HEAD), widths.map((w) => "-".repeat(w)).join("  ")];
  let last = "";
  for (const b of body) {
    if (last && b[0] !== last) out.push("");
    out.push(line(b[0] === last ? ["", ...b.slice(1)] : b));
    last = b[0]!;
  }
  return out.join("\n");
}

export function formatServersMarkdown(report: ServersReport): string {
  const out = [`| ${HEAD.join(" | ")} |`, "|---|---|--:|--:|--:|--:|--:|---|--:|--:|"];
  let last = "";
  for (const b of tableRows(report)) {
    const cells = b[0] === last ? ["", ...b.slice(1)] : b;
    if (b[1]!.startsWith("tlsnet")) cells[1] = `**${cells[1]}**`;
    out.push(`| ${cells.join(" | ")} |`);
    last = b[0]!;
  }
  return out.join("\n");
}

/**
 * The charts, per workload and server: `rate`, the rate / raw node:tls on
 * this Node; `cpu`, raw node:tls's server CPU per operation / this server's
 * (how many operations it gets out of the CPU time node:tls needs for one).
 */
export function serversChart(report: ServersReport, what: "rate" | "cpu" = "rate"): string {
  const labelOf = (id: ServerId) => report.servers.find((s) => s.id === id)?.label ?? id;
  const bars: Bar[] = [];
  for (const w of report.workloads) {
    const row = report.cells.filter((x) => x.workload === w.id);
    const baseCpu = row.find((c) => c.server === "node20")?.cpuPerOp ?? Number.NaN;
    for (const c of row) {
      const r = what === "rate" ? c.vsNode : baseCpu / c.cpuPerOp;
      const bar: Bar = { label: `${w.id} · ${labelOf(c.server)}`, ratio: r, group: w.id };
      if (!c.server.startsWith("tlsnet")) bar.color = c.server === "node20" ? "#9e9e9e" : "#5c7f9c";
      bars.push(bar);
    }
  }
  const m = report.machine;
  const base = labelOf("node20");
  return ratioChart(
    bars,
    what === "rate"
      ? `TLS servers under a Go load generator: rate / ${base}`
      : "Server CPU efficiency: node:tls's CPU per op / each server's",
    `${m.nproc} × ${m.cpuModel}; median of ${report.options.rounds} × ${report.options.seconds} s` +
      `${report.options.pin ? "; server on CPU 0, load generator on the rest" : ""}; tlsnet green/orange`,
  );
}

const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(resolve(entry)).href) {
  process.exitCode = await runServers(process.argv.slice(2));
}
