/**
 * `tlsnet fetch`: many HTTPS/1.1 GETs at once over tlsnet, a progress bar on a
 * terminal, a summary table, bodies saved under --out. One failing URL does
 * not stop the others; the exit status is 1 if any failed.
 * @module
 */
import type { Buffer } from "node:buffer";
import { type FileHandle, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { type TLSConfig, TlsnetError, tls } from "../index.ts";
import {
  bytes,
  CliError,
  type Command,
  ensureDir,
  err,
  intFlag,
  out,
  paint,
  parseFlags,
  UsageError,
} from "./common.ts";
import { debugLines, explain } from "./explain.ts";
import { get } from "./http-client.ts";
import { ProgressBar } from "./progress.ts";

const usage =
  "tlsnet fetch URL... [--concurrency N] [--out DIR] [--ca F] [--insecure] [--json] [--timeout MS]";

const help = `${usage}

GET each https:// URL over HTTP/1.1 (one connection per URL, Connection: close),
up to N at a time, and print a table of status, size, time, TLS version and
ALPN per URL. Redirects are not followed. A URL that fails does not stop the
others; tlsnet exits 1 if any failed.

Options:
  --concurrency N   requests in flight at once (default 8)
  --out DIR         save each body to DIR, one file per URL (names made safe)
  --ca F            trust the CAs in this PEM file instead of Node's bundled roots
  --insecure        do not verify certificates
  --json            print the results as JSON instead of a table
  --timeout MS      per URL: connect, and each read or write (default 30000)
  -h, --help        this help

Example:
  tlsnet fetch https://127.0.0.1:8443/a https://127.0.0.1:8443/b \\
    --ca ~/.local/share/tlsnet/ca.pem --out /tmp/bodies`;

export const command: Command = { usage, help, run };

/** The outcome for one URL. */
export interface Result {
  url: string;
  ok: boolean;
  status?: number;
  bytes: number;
  timeMs: number;
  version?: string | null;
  alpnProtocol?: string | null;
  file?: string;
  error?: string;
  code?: string;
  /** The error itself, for TLSNET_DEBUG (not in --json). */
  cause?: unknown;
}

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    concurrency: { type: "string" },
    out: { type: "string" },
    ca: { type: "string" },
    insecure: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    timeout: { type: "string" },
  });
  if (values.help) {
    out(help);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError("give at least one https:// URL");
  const urls = positionals.map((u) => {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw new UsageError(`'${u}' is not a URL (expected https://host[:port]/path)`);
    }
    if (url.protocol !== "https:") {
      throw new UsageError(`'${u}': tlsnet fetch speaks https:// only`);
    }
    return url;
  });
  const concurrency = intFlag(values.concurrency, "concurrency", 8, 1, 1000);
  const timeout = intFlag(values.timeout, "timeout", 30_000, 1);
  if (values.insecure && values.ca !== undefined) {
    throw new UsageError("--insecure turns verification off; --ca would have no effect");
  }
  if (values.out) await ensureDir(values.out, "pass --out a directory you can write to");
  const files = values.out ? fileNames(urls, values.out) : undefined;
  // One validated config for every URL: the CA file is read once.
  let config: TLSConfig;
  try {
    config = tls.config({
      alpnProtocols: ["http/1.1"],
      ...(values.ca ? { caFile: values.ca } : {}),
      ...(values.insecure ? { verifyPeer: false } : {}),
    });
  } catch (e) {
    throw new CliError(explain(e, { role: "client", fields: { caFile: "--ca" } }).message);
  }

  const bar =
    process.stderr.isTTY && !values.json ? new ProgressBar(process.stderr, "URLs") : undefined;
  let failedCount = 0;
  bar?.start(urls.length);

  const started = performance.now();
  const results: Result[] = new Array(urls.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < urls.length; i = next++) {
      const r = await fetchOne(urls[i]!, config, timeout, files?.[i]);
      results[i] = r;
      if (!r.ok) failedCount++;
      bar?.increment(failedCount);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, urls.length) }, worker));
  bar?.stop();
  const total = performance.now() - started;

  const okCount = results.length - failedCount;
  if (values.json) {
    const plain = results.map(({ cause: _, ...r }) => r);
    out(
      JSON.stringify({
        ok: okCount,
        failed: failedCount,
        timeMs: Math.round(total),
        results: plain,
      }),
    );
  } else {
    printTable(results);
    out(`${okCount} ok, ${failedCount} failed (${(total / 1000).toFixed(2)} s)`);
  }
  if (process.env.TLSNET_DEBUG) {
    for (const r of results) {
      if (r.ok) continue;
      err(`debug: ${r.url}`);
      for (const line of debugLines(r.cause)) err(`  ${line}`);
    }
  }
  if (failedCount > 0) {
    err(`tlsnet fetch: ${failedCount} of ${urls.length} URL(s) failed`);
    return 1;
  }
  return 0;
}

async function fetchOne(
  url: URL,
  config: TLSConfig,
  timeout: number,
  file: string | undefined,
): Promise<Result> {
  const t0 = performance.now();
  const port = url.port === "" ? 443 : Number(url.port);
  const result: Result = { url: url.href, ok: false, bytes: 0, timeMs: 0 };
  let fh: FileHandle | undefined;
  try {
    // url.hostname keeps IPv6 brackets, which is the address syntax tlsnet takes.
    const conn = await tls.connect(`${url.hostname}:${port}`, config, { timeout });
    try {
      const s = conn.state();
      result.version = s.version;
      result.alpnProtocol = s.alpnProtocol;
      if (file) fh = await open(file, "w");
      const sink = fh ? (b: Buffer) => fh!.write(b).then(() => undefined) : () => undefined;
      const res = await get(conn, url, sink, { timeout });
      result.status = res.status;
      result.bytes = res.bytes;
      result.ok = true;
      if (file) result.file = file;
    } finally {
      await conn.close();
    }
  } catch (e) {
    const target = `${url.hostname}:${port}`;
    result.error = explain(e, {
      role: "client",
      target,
      timeout,
      fields: { caFile: "--ca" },
    }).message;
    result.cause = e;
    if (e instanceof TlsnetError) result.code = e.code;
  } finally {
    await fh?.close();
    if (!result.ok && file) await rm(file, { force: true }); // no half bodies left behind
    result.timeMs = Math.round(performance.now() - t0);
  }
  return result;
}

/** A safe, unique file name per URL: host_port_path, with anything odd replaced by "_". */
function fileNames(urls: URL[], dir: string): string[] {
  const used = new Set<string>();
  return urls.map((u) => {
    const path = (u.pathname + u.search).replace(/^\/+/, "") || "index";
    let base = `${u.hostname}_${u.port || "443"}_${path}`
      .replace(/[^A-Za-z0-9._-]+/g, "_")
      .replace(/^[.]+/, "_")
      .slice(0, 120);
    if (used.has(base)) {
      let n = 2;
      while (used.has(`${base}-${n}`)) n++;
      base = `${base}-${n}`;
    }
    used.add(base);
    return join(dir, base);
  });
}

function printTable(results: Result[]): void {
  const c = paint(process.stdout);
  const urlWidth = Math.min(60, Math.max(3, ...results.map((r) => r.url.length)));
  const pad = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s.padEnd(n));
  out(
    c.bold(
      `${pad("URL", urlWidth)}  ${"STATUS".padEnd(6)}  ${"BYTES".padStart(9)}  ${"TIME".padStart(8)}  ${"TLS".padEnd(7)}  ALPN`,
    ),
  );
  for (const r of results) {
    if (!r.ok) {
      out(`${pad(r.url, urlWidth)}  ${c.red("error")}   ${r.error}`);
      continue;
    }
    const status = String(r.status);
    const colored = r.status! >= 400 ? c.yellow(status.padEnd(6)) : c.green(status.padEnd(6));
    out(
      `${pad(r.url, urlWidth)}  ${colored}  ${bytes(r.bytes).padStart(9)}  ${`${r.timeMs} ms`.padStart(8)}  ${(r.version ?? "-").padEnd(7)}  ${r.alpnProtocol ?? "-"}`,
    );
  }
}
