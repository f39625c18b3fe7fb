/**
 * The proxies benchmark: TLS-terminating proxies (TLS in, plaintext out) in
 * front of one plaintext backend, driven by the servers benchmark's Go load
 * generator (bench/loadgen). All measured in one run, one table.
 *
 *   npm run bench -- proxies [--quick] [--seconds S] [--rounds N] [--warmup S] [--proxies a,b]
 *                            [--workloads a,b] [--json] [--svg FILE] [--no-pin]
 *   npm run bench:proxies -- …   (the same)
 *
 * Proxies (each in its own process, the same ECDSA P-256 certificate, TLS 1.2
 * and 1.3 allowed, on 127.0.0.1; configurations written to a temporary directory):
 *   stunnel  stunnel4 (Debian), its defaults: one process, a thread per conn
 *   hitch    hitch (Debian), workers = 1
 *   haproxy  HAProxy (Debian) in TCP mode, `bind … ssl crt`, nbthread 1
 *   tlsnet   `tlsnet proxy`, the CLI compiled by tsc, on this Node (node engine)
 *   tlsnet-native  the same on the native engine (needs npm run build:native)
 * A proxy whose program is not installed is reported and its rows skipped
 * (Debian: apt-get install -y stunnel4 hitch haproxy).
 *
 * The backend is bench/peers/go with -plain: a goroutine per conn, `io.Copy`
 * for echo, 256 KiB reads for the sink (read to EOF, answer "<n>\n"). Go,
 * because the backend shares the load generator's CPUs: the less CPU it needs
 * per byte and per message, the more is left for the load generator.
 *
 * Workloads: bulk (MB/s), echo 64 B × 64 conns (rt/s), full handshakes (hs/s);
 * `--workloads` also takes `resumed`. bench/loadgen/main.go says what the
 * client does.
 *
 * Pinning (taskset, 2 or more CPUs): every proxy runs on CPU 0 (its worker
 * processes too: they inherit the mask); the load generator and the backend on
 * the others. The proxy's CPU time is read from /proc for its whole process
 * tree; the backend's is measured on its own and reported as a column, never
 * counted as the proxy's.
 * @module
 */

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  comparisonChart,
  compileTlsnet,
  finishReport,
  goTools,
  isExecutable,
  type Launch,
  type LoadBenchOptions,
  type LoadBenchReport,
  loadBench,
  measureRounds,
  onPath,
  parseLoadBenchArgs,
  pinCpus,
  type RatedCell,
  rateCells,
  revision,
  runHelp,
  type ServerInfo,
  startServer,
  tableFormatters,
  tableHead,
  versionOf,
  WORKLOAD_IDS,
  type WorkloadId,
} from "./servers.ts";

export const PROXY_IDS = ["stunnel", "hitch", "haproxy", "tlsnet", "tlsnet-native"] as const;
export type ProxyId = (typeof PROXY_IDS)[number];
/** The workloads of a default run; `resumed` only when asked for. */
const DEFAULT_WORKLOADS: readonly WorkloadId[] = ["bulk", "echo", "full"];
/** What the ratios are against: the oldest and most widespread of them. */
const BASE: ProxyId = "stunnel";

const USAGE = `usage: npm run bench -- proxies [--quick] [--seconds S] [--rounds N] [--warmup S] [--proxies LIST]
                                [--workloads LIST] [--json] [--svg FILE] [--no-pin]
  proxies:    ${PROXY_IDS.join(" ")} (default: all installed)
  workloads:  ${WORKLOAD_IDS.join(" ")} (default: ${DEFAULT_WORKLOADS.join(" ")})
${runHelp("proxies", "proxy", "under a minute")}
  --no-pin      do not pin the proxy to CPU 0 and the load generator and backend to the others
  Needs Go (the load generator, the backend) and, for their rows, Debian's stunnel4, hitch
  and haproxy: apt-get install -y golang-go stunnel4 hitch haproxy`;

export function parseProxiesArgs(argv: readonly string[]): LoadBenchOptions<ProxyId> {
  return parseLoadBenchArgs(argv, {
    command: "proxies",
    ids: PROXY_IDS,
    idsFlag: "--proxies",
    workloads: DEFAULT_WORKLOADS,
    installs: false,
  });
}

export interface ProxiesReport extends LoadBenchReport {
  proxies: ServerInfo<ProxyId>[];
  /** The plaintext backend and where it ran. */
  backend: string;
  /** vsBase is the rate / stunnel's. */
  cells: RatedCell<ProxyId>[];
}

// ---------------------------------------------------------------- proxies

/** Certificate files every proxy is configured with. */
interface Files {
  dir: string;
  cert: string;
  key: string;
  /** Key then certificate in one PEM file (hitch, HAProxy). */
  combined: string;
}

interface Proxy {
  info: ServerInfo<ProxyId>;
  /** The launch of the proxy listening on `port` in front of the backend on `backend`. */
  launch?(port: number, backend: number): Launch;
}

/** An executable on PATH or in the sbin directories (hitch and haproxy live in /usr/sbin). */
function findProgram(name: string): string | undefined {
  return (
    onPath(name) ??
    ["/usr/sbin", "/usr/local/sbin", "/sbin"].map((d) => join(d, name)).find(isExecutable)
  );
}

/** The Debian package's version (dpkg-query), or undefined. */
function debianVersion(pkg: string): string | undefined {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format, not a template
  return versionOf("dpkg-query", ["-W", "-f", "${Version}", pkg]) || undefined;
}

/** The upstream part of a Debian version: 3:5.68-2+deb12u1 → 5.68. */
const upstream = (v: string) => v.replace(/^\d+:/, "").replace(/-[^-]*$/, "");

/** A user for hitch's worker when this runs as root (hitch refuses to run workers as root). */
function hitchUser(): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  let passwd = "";
  try {
    passwd = readFileSync("/etc/passwd", "utf8");
  } catch {
    // no /etc/passwd: nobody it is
  }
  return ["_hitch", "hitch", "nobody"].find((u) => passwd.includes(`\n${u}:`)) ?? "nobody";
}

function proxies(files: Files, dist: string, only: readonly ProxyId[]): Proxy[] {
  const ssl = debianVersion("libssl3");
  const sslText = ssl ? `OpenSSL ${upstream(ssl)} (Debian libssl3 ${ssl})` : "the system's OpenSSL";
  const conf = (name: string, lines: string[]) => {
    const f = join(files.dir, name);
    writeFileSync(f, `${lines.join("\n")}\n`);
    return f;
  };
  const log = (id: ProxyId, port: number) => join(files.dir, `${id}-${port}.log`);
  const debian = (id: ProxyId, pkg: string, program: string, name: string, how: string) => {
    const path = findProgram(program);
    const v = debianVersion(pkg);
    return {
      path,
      info: {
        id,
        label: v ? `${name} ${upstream(v)}` : name,
        detail: `${name} (Debian ${pkg} ${v ?? "?"}), ${sslText}; ${how}`,
        available: path !== undefined,
        ...(path
          ? {}
          : { note: `${program} is not installed (Debian: apt-get install -y ${pkg})` }),
      },
    };
  };
  const all: Proxy[] = [];

  const stunnel = debian(
    "stunnel",
    "stunnel4",
    "stunnel4",
    "stunnel",
    "its defaults (one process, a thread per conn, logs each conn at level notice)",
  );
  all.push({
    info: stunnel.info,
    launch: (port, backend) => ({
      cmd: stunnel.path!,
      args: [
        conf(`stunnel-${port}.conf`, [
          "; tlsnet proxies benchmark: stunnel's defaults, in the foreground, logging to stderr",
          "foreground = yes",
          "syslog = no",
          "[bench]",
          `accept = 127.0.0.1:${port}`,
          `connect = 127.0.0.1:${backend}`,
          `cert = ${files.cert}`,
          `key = ${files.key}`,
        ]),
      ],
      log: log("stunnel", port),
      sigterm: true,
    }),
  });

  const hitch = debian(
    "hitch",
    "hitch",
    "hitch",
    "hitch",
    "workers = 1 (a master and one worker process), logs errors only",
  );
  const user = hitchUser();
  all.push({
    info: hitch.info,
    launch: (port, backend) => ({
      cmd: hitch.path!,
      args: [
        `--config=${conf(`hitch-${port}.conf`, [
          "# tlsnet proxies benchmark",
          `frontend = "[127.0.0.1]:${port}"`,
          `backend = "[127.0.0.1]:${backend}"`,
          `pem-file = "${files.combined}"`,
          "workers = 1",
          "tls-protos = TLSv1.2 TLSv1.3",
          'ocsp-dir = ""',
          "daemon = off",
          ...(user ? [`user = "${user}"`] : []),
        ])}`,
      ],
      log: log("hitch", port),
      sigterm: true,
    }),
  });

  const haproxy = debian(
    "haproxy",
    "haproxy",
    "haproxy",
    "HAProxy",
    "mode tcp, bind … ssl crt, nbthread 1, no logging",
  );
  all.push({
    info: haproxy.info,
    launch: (port, backend) => ({
      cmd: haproxy.path!,
      args: [
        "-db", // foreground, one process
        "-f",
        conf(`haproxy-${port}.cfg`, [
          "# tlsnet proxies benchmark",
          "global",
          "    nbthread 1",
          "defaults",
          "    mode tcp",
          "    timeout connect 5s",
          "    timeout client 60s",
          "    timeout server 60s",
          "frontend tls",
          `    bind 127.0.0.1:${port} ssl crt ${files.combined}`,
          "    default_backend plain",
          "backend plain",
          `    server backend 127.0.0.1:${backend}`,
        ]),
      ],
      log: log("haproxy", port),
      sigterm: true,
    }),
  });

  const node = `Node ${process.version}`;
  const addon = resolve(
    fileURLToPath(import.meta.url),
    "..",
    "..",
    "build",
    "native",
    "tlsnet_native.node",
  );
  for (const engine of ["node", "native"] as const) {
    all.push({
      info: {
        id: engine === "node" ? "tlsnet" : "tlsnet-native",
        label: `tlsnet proxy${engine === "native" ? " native" : ""}, ${node}`,
        detail:
          `tlsnet ${revision()} compiled by tsc, on ${node} (OpenSSL ${process.versions.openssl}), ` +
          `${engine} engine (TLSNET_ENGINE=${engine}); ` +
          "`tlsnet proxy --cert --key`, its defaults (logs each conn)",
        available: engine === "node" || existsSync(addon),
      },
      launch: (port, backend) => ({
        cmd: process.execPath,
        args: [
          join(dist, "cli", "main.js"),
          "proxy",
          "--listen",
          `127.0.0.1:${port}`,
          "--to",
          `127.0.0.1:${backend}`,
          "--cert",
          files.cert,
          "--key",
          files.key,
        ],
        // The compiled copy lives outside the checkout: it gets the checkout's addon by path.
        env: { ...process.env, NO_COLOR: "1", TLSNET_ENGINE: engine, TLSNET_NATIVE_ADDON: addon },
        log: log(engine === "node" ? "tlsnet" : "tlsnet-native", port),
        sigterm: true,
      }),
    });
  }
  return all.filter((p) => only.includes(p.info.id));
}

/** A port nothing listens on now (the kernel's pick; free again when the proxy binds it). */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen({ host: "127.0.0.1", port: 0 }, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolvePort(port));
    });
  });
}

// ---------------------------------------------------------------- run

/** Run the proxies benchmark; returns the exit code (0 ok or skipped, 1 failure, 2 usage). */
export function runProxies(argv: string[]): Promise<number> {
  return loadBench("proxies", argv, parseProxiesArgs, USAGE, async (o, env) => {
    const tools = goTools("proxies", o.cache, true, env.log);
    if (typeof tools === "string") {
      console.log(`bench proxies: ${tools}`);
      return 0;
    }
    const files: Files = {
      dir: env.tmp,
      cert: env.certs.cert,
      key: env.certs.key,
      combined: join(env.tmp, "combined.pem"),
    };
    writeFileSync(
      files.combined,
      readFileSync(env.certs.key, "utf8") + readFileSync(env.certs.cert, "utf8"),
      { mode: 0o600 },
    );
    // `tlsnet proxy` is measured as users run it: compiled by tsc.
    const dist = o.ids.some((id) => id.startsWith("tlsnet")) ? compileTlsnet(env.tmp, env.log) : "";
    const list = proxies(files, dist, o.ids);
    const notes: string[] = [];
    for (const p of list) {
      if (!p.info.available) notes.push(`${p.info.label}: ${p.info.note} (skipped)`);
    }
    const nproc = os.availableParallelism?.() ?? os.cpus().length;
    const pin = pinCpus(o.pin, nproc, notes);
    const active = list.filter((p) => p.info.available).map((p) => p.info.id);
    const labelOf = (id: ProxyId) => list.find((p) => p.info.id === id)?.info.label ?? id;
    const goShort = tools.goVersion.split(" ")[2] ?? "go";
    const backend =
      `bench/peers/go -plain (${goShort}): io.Copy echo, 256 KiB-read sink` +
      (pin ? `; on CPU ${pin.loadgen} with the load generator` : "");
    env.log(
      `bench proxies: ${active.map(labelOf).join(", ")} in front of ${backend}; ` +
        `${o.workloads.join(", ")}; ${o.rounds} × ${o.seconds} s after a ${o.warmupSeconds} s warm-up`,
    );
    const measured = await measureRounds({
      ...o,
      ids: active,
      loadgen: tools.loadgen,
      certFile: files.cert,
      loadgenCpus: pin?.loadgen,
      label: labelOf,
      log: env.log,
      backend: (mode) =>
        startServer(
          `backend (${mode})`,
          { cmd: tools.goserver, args: ["-mode", mode, "-plain"] },
          pin?.loadgen,
        ),
      start: async (id, mode, be) => {
        const port = await freePort();
        const launch = list.find((p) => p.info.id === id)!.launch!(port, be!.port);
        return startServer(`${labelOf(id)} (${mode})`, launch, pin?.server, port);
      },
    });
    const cells = rateCells(active, o.workloads, measured, BASE, pin !== null, nproc, true);
    for (const c of cells) {
      // The load generator's CPUs also run the backend; "server" is the proxy.
      c.limit =
        c.limit === "loadgen" ? "loadgen+backend" : c.limit === "server" ? "proxy" : c.limit;
    }
    finishReport({
      name: "proxies",
      argv,
      o,
      started: env.started,
      pin,
      loadgenVersion: tools.goVersion,
      notes,
      cells,
      labelOf,
      report: (base): ProxiesReport => ({
        ...base,
        proxies: list.map((p) => p.info),
        backend,
        cells,
      }),
      chart: proxiesChart,
      ...proxyTables,
    });
    return 0;
  });
}

// ---------------------------------------------------------------- output

const proxyLabels = (report: ProxiesReport) => (id: ProxyId) =>
  report.proxies.find((p) => p.id === id)?.label ?? id;

const proxyTables = tableFormatters(
  tableHead("proxy", "stunnel", true),
  (r: ProxiesReport) => r.cells,
  proxyLabels,
);
export const formatProxiesTable = proxyTables.table;
export const formatProxiesMarkdown = proxyTables.markdown;

/** The charts: rate / stunnel's, and stunnel's CPU per op / each proxy's. */
export function proxiesChart(report: ProxiesReport, what: "rate" | "cpu" = "rate"): string {
  const m = report.machine;
  const labelOf = proxyLabels(report);
  return comparisonChart(
    report.workloads,
    report.cells,
    BASE,
    labelOf,
    what,
    what === "rate"
      ? `TLS-terminating proxies under a Go load generator: rate / ${labelOf(BASE)}`
      : `Proxy CPU efficiency: ${labelOf(BASE)}'s CPU per op / each proxy's`,
    `${m.nproc} × ${m.cpuModel}; median of ${report.options.rounds} × ${report.options.seconds} s` +
      `${report.options.pin ? "; proxy on CPU 0, load generator and backend on the rest" : ""}; tlsnet green/orange`,
  );
}

const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(resolve(entry)).href) {
  process.exitCode = await runProxies(process.argv.slice(2));
}
