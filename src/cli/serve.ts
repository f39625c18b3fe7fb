/**
 * `tlsnet serve`: a TLS echo or minimal HTTP/1.1 server, with a generated dev
 * certificate when none is given, one log line per connection, reload on
 * SIGHUP (and file change with --watch), graceful stop on Ctrl-C / SIGTERM.
 * @module
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseAddress } from "../addr.ts";
import { type ClientAuth, type TLSConn, type TLSListener, type TLSOptions, tls } from "../index.ts";
import {
  type Command,
  day,
  err,
  flagNames,
  listFlag,
  ms,
  out,
  paint,
  parseFlags,
  UsageError,
} from "./common.ts";
import { dataDir, ensureLeaf, openCA } from "./devcerts.ts";
import { serveHTTP } from "./http-server.ts";

const usage =
  "tlsnet serve [--addr 127.0.0.1:8443] [--cert F --key F]... [--alpn h2,http/1.1] [--mode echo|http] [--client-auth MODE --client-ca F] [--watch]";

const help = `${usage}

Serve TLS on --addr: echo every byte back (--mode echo, the default) or answer
HTTP/1.1 GETs with a small text page (--mode http, for curl and browsers).

Without --cert/--key, a dev CA and a certificate for localhost, 127.0.0.1 and
::1 are generated once under ${dataDir()}
(set TLSNET_HOME to use another directory) and reused afterwards.

Options:
  --addr HOST:PORT      where to listen (default 127.0.0.1:8443; port 0 picks a free one)
  --cert F --key F      certificate chain and key (PEM); repeat the pair to serve several
                        names (SNI picks; the first pair is the default)
  --alpn LIST           ALPN protocols in preference order (http mode default: http/1.1)
  --mode echo|http      what to do with each connection (default echo)
  --client-auth MODE    none | request | require-any | verify-if-given | require-and-verify
  --client-ca F         CA bundle that verifies client certificates
  --watch               reload the certificate when its files change
  -h, --help            this help

Signals: SIGHUP reloads the certificates; Ctrl-C / SIGTERM stop gracefully
(connections get 2 s to finish).

Example:
  tlsnet serve --addr 127.0.0.1:8443 --mode http
  curl --cacert ${dataDir()}/ca.pem https://127.0.0.1:8443/hello`;

const MODES = ["echo", "http"] as const;
const CLIENT_AUTH: readonly ClientAuth[] = [
  "none",
  "request",
  "require-any",
  "verify-if-given",
  "require-and-verify",
];
const GRACE_MS = 2000;

export const command: Command = { usage, help, run };

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    addr: { type: "string", default: "127.0.0.1:8443" },
    cert: { type: "string", multiple: true },
    key: { type: "string", multiple: true },
    alpn: { type: "string" },
    mode: { type: "string", default: "echo" },
    "client-auth": { type: "string" },
    "client-ca": { type: "string" },
    watch: { type: "boolean", default: false },
  });
  if (values.help) {
    out(help);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  try {
    parseAddress(values.addr, true);
  } catch (e) {
    throw new UsageError(`--addr: ${(e as Error).message}`);
  }
  const mode = values.mode as (typeof MODES)[number];
  if (!MODES.includes(mode)) throw new UsageError(`--mode must be echo or http, got '${mode}'`);
  const certs = values.cert ?? [];
  const keys = values.key ?? [];
  if (certs.length !== keys.length) {
    throw new UsageError(
      `give --cert and --key in pairs (got ${certs.length} --cert, ${keys.length} --key)`,
    );
  }
  if (values.watch && certs.length > 1) {
    throw new UsageError("--watch follows one --cert/--key pair; use SIGHUP to reload several");
  }
  const clientAuth = values["client-auth"] as ClientAuth | undefined;
  if (clientAuth !== undefined && !CLIENT_AUTH.includes(clientAuth)) {
    throw new UsageError(`--client-auth must be one of ${CLIENT_AUTH.join(", ")}`);
  }
  if (values["client-ca"] !== undefined && clientAuth === undefined) {
    throw new UsageError("--client-ca needs --client-auth (e.g. --client-auth require-and-verify)");
  }
  const alpn = listFlag(values.alpn) ?? (mode === "http" ? ["http/1.1"] : undefined);
  const c = paint(process.stdout);

  // The identity: the files given, or the generated dev certificate.
  let pairs = certs.map((cert, i) => ({ cert, key: keys[i]! }));
  let devCA: string | undefined;
  const dev = async () => {
    const dir = dataDir();
    const stored = await openCA(dir);
    if (stored.created) out(`generated a dev CA in ${dir} (trust ${stored.certFile} to connect)`);
    const leaf = await ensureLeaf(dir, stored, "localhost", {
      names: ["localhost", "127.0.0.1", "::1"],
    });
    if (leaf.created && !stored.created) out(`issued a new localhost certificate in ${dir}`);
    devCA = stored.certFile;
    return [{ cert: leaf.certFile, key: leaf.keyFile }];
  };
  if (pairs.length === 0) pairs = await dev();

  const identity = (): Pick<TLSOptions, "certFile" | "keyFile" | "certs"> =>
    pairs.length === 1
      ? { certFile: pairs[0]!.cert, keyFile: pairs[0]!.key }
      : { certs: pairs.map((p) => ({ cert: readFileSync(p.cert), key: readFileSync(p.key) })) };

  let active = 0;
  const handle = async (conn: TLSConn) => {
    active++;
    const t0 = performance.now();
    const io = { in: 0, out: 0 };
    let failure: unknown;
    try {
      if (mode === "http") await serveHTTP(conn, io);
      else await echo(conn, io);
    } catch (e) {
      failure = e;
    } finally {
      active--;
      logConn(conn, performance.now() - t0, io, failure);
    }
  };

  const listener: TLSListener = await tls.listen({
    addr: values.addr,
    ...identity(),
    ...(alpn ? { alpnProtocols: alpn } : {}),
    ...(clientAuth ? { clientAuth } : {}),
    ...(values["client-ca"] ? { clientCaFile: values["client-ca"] } : {}),
    handler: handle,
    onError: (e, info) => {
      const who = info.remoteAddr ? `${info.remoteAddr} ` : "";
      err(`${stamp()} ${who}${c.red("failed:")} ${e.message}`);
    },
  });

  // The banner goes out in one write, so whoever reads it (a test, a script) sees it whole.
  const port = listener.addr.port;
  const host = tryHost(listener.addr.address);
  const banner = [
    `listening on ${c.bold(`https://${listener.addr}`)} (${mode}${alpn ? `, ALPN ${alpn.join(",")}` : ""})`,
    ...pairs.map((p) => describeCert(p.cert, c)),
  ];
  if (alpn?.includes("h2") && mode === "http") {
    banner.push(c.yellow("note: --mode http speaks HTTP/1.1 only; clients that pick h2 will fail"));
  }
  if (devCA) {
    banner.push(`dev CA: ${devCA}`, `try:    tlsnet connect ${host}:${port} --ca ${devCA}`);
    if (mode === "http") banner.push(`        curl --cacert ${devCA} https://${host}:${port}/`);
  } else {
    const name = pickName(pairs[0]!.cert, listener.addr.address);
    banner.push(
      `try:    tlsnet connect ${host}:${port}${name ? ` --servername ${name}` : ""} --ca <the CA that issued it>`,
    );
  }
  if (values.watch) {
    listener.watch();
    banner.push("watching the certificate files for changes");
  }
  out(banner.join("\n"));

  const reload = async () => {
    try {
      if (devCA) pairs = await dev(); // re-issued if it expired meanwhile
      await listener.reload(identity());
      out(
        [`${stamp()} reloaded certificates`, ...pairs.map((p) => describeCert(p.cert, c))].join(
          "\n",
        ),
      );
    } catch (e) {
      err(
        `${stamp()} reload failed, keeping the old certificates: ${flagNames((e as Error).message)}`,
      );
    }
  };
  process.on("SIGHUP", () => void reload());

  // Stop on the first Ctrl-C / SIGTERM; a second one does not wait.
  const stopped = new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) {
        err("stopping now");
        process.exit(130);
      }
      stopping = true;
      out(
        `${sig}: closing${active > 0 ? `, giving ${active} connection(s) up to ${GRACE_MS} ms` : ""}`,
      );
      listener.close({ graceful: GRACE_MS }).then(
        () => {
          out("stopped");
          resolve(0);
        },
        (e) => {
          err(`close failed: ${(e as Error).message}`);
          resolve(1);
        },
      );
    };
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGTERM", () => stop("SIGTERM"));
  });
  return stopped;
}

/** Echo until the client half-closes, then half-close back. */
async function echo(conn: TLSConn, io: { in: number; out: number }): Promise<void> {
  for await (const chunk of conn) {
    io.in += chunk.length;
    await conn.write(chunk);
    io.out += chunk.length;
  }
  await conn.closeWrite();
}

function logConn(conn: TLSConn, took: number, io: { in: number; out: number }, failure: unknown) {
  const s = conn.state();
  const peer = conn.peerCertificate();
  const parts = [
    stamp(),
    conn.remoteAddr.toString(),
    s.version ?? "-",
    `alpn=${s.alpnProtocol ?? "-"}`,
    `sni=${s.serverName ?? "-"}`,
    ...(peer ? [`client="${peer.subject}"`] : []),
    ms(took),
    `in=${io.in}`,
    `out=${io.out}`,
  ];
  if (failure !== undefined) parts.push(`error: ${(failure as Error).message ?? String(failure)}`);
  out(parts.join(" "));
}

/** What a certificate file serves, with a warning when it is not valid now. */
function describeCert(file: string, c: ReturnType<typeof paint>): string {
  try {
    const cert = new X509Certificate(readFileSync(file));
    const names = cert.subjectAltName ?? "no SAN";
    let line = `certificate: ${cert.subject.split("\n").reverse().join(", ")} [${names}] until ${day(new Date(cert.validTo))}`;
    if (new Date(cert.validTo) < new Date()) line += c.red(" (EXPIRED: clients will refuse it)");
    if (new Date(cert.validFrom) > new Date()) line += c.red(" (NOT YET VALID)");
    return line;
  } catch {
    return `certificate: ${file}`; // the listener validated it; this is only a description
  }
}

/** A DNS name of the certificate to pass as --servername, unless it covers the listening IP. */
function pickName(file: string, address: string): string | undefined {
  try {
    const cert = new X509Certificate(readFileSync(file));
    if (address !== "0.0.0.0" && address !== "::" && cert.checkIP(address)) return undefined;
    const dns = (cert.subjectAltName ?? "").split(/,\s*/).find((n) => n.startsWith("DNS:"));
    return dns ? dns.slice(4).replace(/^\*\./, "www.") : "NAME";
  } catch {
    return "NAME";
  }
}

/** A host to suggest for connecting: the wildcard addresses are reachable as localhost. */
function tryHost(address: string): string {
  if (address === "0.0.0.0" || address === "::") return "localhost";
  return address.includes(":") ? `[${address}]` : address;
}

function stamp(): string {
  return new Date().toISOString().slice(11, 23);
}
