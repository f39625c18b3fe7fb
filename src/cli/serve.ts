/**
 * `tlsnet serve`: a TLS echo or minimal HTTP/1.1 server, with a generated dev
 * certificate when none is given, one log line per connection, reload on
 * SIGHUP (and file change with --watch), graceful stop on Ctrl-C / SIGTERM.
 *
 * It listens with tcp.listen and upgrades each connection with tls.server (the
 * STARTTLS path), after a look at the first bytes: in http mode a plain
 * `http://` request gets a 400 that says to use https://, not silence.
 * @module
 */
import { X509Certificate } from "node:crypto";
import { type FSWatcher, watch as fsWatch, readFileSync } from "node:fs";
import { basename, dirname, resolve as resolvePath } from "node:path";
import { parseAddress } from "../addr.ts";
import {
  type ClientAuth,
  type Conn,
  DeadlineExceededError,
  type TLSConfig,
  type TLSConn,
  type TLSOptions,
  tcp,
  tls,
  UnexpectedEOFError,
} from "../index.ts";
import { CLIENT_AUTH_MODES } from "../tls/config.ts";
import { dn, splitSANs } from "../tls/state.ts";
import {
  CliError,
  type Command,
  cliName,
  day,
  err,
  listFlag,
  ms,
  out,
  paint,
  parseFlags,
  UsageError,
} from "./common.ts";
import { dataDir, ensureLeaf, openCA } from "./devcerts.ts";
import { type Context, debugLines, explain } from "./explain.ts";
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
(connections get 2 s to finish). Run from an npm script (npm start), the server
also stops when npm does.

Example:
  tlsnet serve --addr 127.0.0.1:8443 --mode http
  curl --cacert ${dataDir()}/ca.pem https://127.0.0.1:8443/hello`;

const MODES = ["echo", "http"] as const;
const GRACE_MS = 2000;
/** How long a new connection may take to send its first bytes (TLS's own timeout is 10 s). */
const FIRST_BYTES_MS = 10_000;

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
  if (clientAuth !== undefined && !CLIENT_AUTH_MODES.includes(clientAuth)) {
    throw new UsageError(`--client-auth must be one of ${CLIENT_AUTH_MODES.join(", ")}`);
  }
  if (values["client-ca"] !== undefined && clientAuth === undefined) {
    throw new UsageError("--client-ca needs --client-auth (e.g. --client-auth require-and-verify)");
  }
  if (
    (clientAuth === "verify-if-given" || clientAuth === "require-and-verify") &&
    values["client-ca"] === undefined
  ) {
    throw new UsageError(
      `--client-auth ${clientAuth} verifies client certificates: give the CA that issues them with --client-ca FILE`,
    );
  }
  const alpn = listFlag(values.alpn) ?? (mode === "http" ? ["http/1.1"] : undefined);
  const c = paint(process.stdout);

  // The identity: the files given, or the generated dev certificate.
  let pairs = certs.map((cert, i) => ({ cert, key: keys[i]! }));
  let devCA: string | undefined;
  const devFix =
    "set TLSNET_HOME to a directory you can write to (or serve your own files with --cert and --key)";
  const dev = async () => {
    const dir = dataDir();
    const stored = await openCA(dir, devFix);
    if (stored.created) out(`generated a dev CA in ${dir} (trust ${stored.certFile} to connect)`);
    const leaf = await ensureLeaf(dir, stored, "localhost", {
      names: ["localhost", "127.0.0.1", "::1"],
      fix: devFix,
    });
    if (leaf.created && !stored.created) out(`issued a new localhost certificate in ${dir}`);
    devCA = stored.certFile;
    return [{ cert: leaf.certFile, key: leaf.keyFile }];
  };
  if (pairs.length === 0) pairs = await dev();

  // What the library calls each option, as this command sets it (for ConfigError.field).
  const ctx: Context = { role: "server", clientAuth, caFile: devCA, fields: {} };
  const fields = (): Record<string, string> => {
    const f: Record<string, string> = {
      clientCaFile: "--client-ca",
      clientCa: "--client-ca",
      alpnProtocols: "--alpn",
    };
    if (pairs.length === 1) {
      const { cert, key } = pairs[0]!;
      const [certName, keyName] = devCA
        ? [`the dev certificate ${cert}`, `the dev key ${key}`]
        : [`--cert ${cert}`, `--key ${key}`];
      Object.assign(f, {
        // "certFile: cannot read /path: ..." names the path itself.
        certFile: devCA ? "the dev certificate" : "--cert",
        keyFile: devCA ? "the dev key" : "--key",
        "certFile/keyFile": devCA ? `the dev certificate files ${cert}, ${key}` : "--cert/--key",
        "certFile/keyFile.cert": certName,
        "certFile/keyFile.key": keyName,
      });
    }
    pairs.forEach((p, i) => {
      f[`certs[${i}]`] = `--cert/--key pair #${i + 1}`;
      f[`certs[${i}].cert`] = `--cert ${p.cert}`;
      f[`certs[${i}].key`] = `--key ${p.key}`;
    });
    return f;
  };

  const read = (file: string, flag: string) => {
    try {
      return readFileSync(file);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new CliError(
        `${flag} ${file}: cannot read it: ${code === "ENOENT" ? "no such file" : (e as Error).message}`,
      );
    }
  };
  const options = (): TLSOptions => ({
    ...(pairs.length === 1
      ? { certFile: pairs[0]!.cert, keyFile: pairs[0]!.key }
      : {
          certs: pairs.map((p) => ({ cert: read(p.cert, "--cert"), key: read(p.key, "--key") })),
        }),
    ...(alpn ? { alpnProtocols: alpn } : {}),
    ...(clientAuth ? { clientAuth } : {}),
    ...(values["client-ca"] ? { clientCaFile: values["client-ca"] } : {}),
  });
  /** A validated server config; its failures are worded with this command's flags. */
  const build = (): TLSConfig => {
    ctx.fields = fields();
    try {
      const config = tls.config(options());
      config.serverContexts(); // a bad key or cipher fails here, not at the first handshake
      return config;
    } catch (e) {
      if (e instanceof CliError) throw e;
      throw new CliError(explain(e, ctx).message);
    }
  };
  let config = build();

  let active = 0;
  const sessions = new Set<TLSConn>();
  const logFailure = (who: string, e: unknown) => {
    err(`${stamp()} ${who} ${c.red("failed:")} ${explain(e, ctx).message}`);
    if (process.env.TLSNET_DEBUG) for (const line of debugLines(e)) err(line);
  };
  const handle = async (conn: TLSConn) => {
    active++;
    sessions.add(conn);
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
      sessions.delete(conn);
      logConn(conn, performance.now() - t0, io, failure);
      await conn.close();
    }
  };

  // Each connection: look at the first bytes, then TLS (or, in http mode, a 400 for plain HTTP).
  const accept = async (raw: Conn) => {
    const who = raw.remoteAddr.toString();
    let head: Buffer;
    try {
      head = await raw.peek(1, { timeout: FIRST_BYTES_MS }); // look, do not consume
    } catch (e) {
      if (e instanceof UnexpectedEOFError) return; // connected and left (a port check)
      if (e instanceof DeadlineExceededError) {
        logFailure(who, new CliError(`sent nothing within ${FIRST_BYTES_MS / 1000} s`));
      } else logFailure(who, e);
      return;
    }
    if (mode === "http" && head[0] !== 0x16) {
      const seen = await raw.peek(raw.unreadBytes);
      if (/^[A-Z]{3,10} \S/.test(seen.toString("latin1"))) {
        const first = (await raw.read(raw.unreadBytes))!;
        await plainHTTP(raw, first, raw.localAddr.port);
        out(`${stamp()} ${who} plain HTTP on the TLS port: answered 400, use https://`);
        return;
      }
    }
    const conn = tls.server(raw, config); // what was peeked stays buffered: the ClientHello
    try {
      await conn.handshake();
    } catch (e) {
      logFailure(who, e);
      await conn.close();
      return;
    }
    await handle(conn);
  };

  const listener = await tcp.listen({
    addr: values.addr,
    handler: accept,
    onError: (e, info) => logFailure(info.remoteAddr?.toString() ?? "", e),
  });

  // The banner goes out in one write, so whoever reads it (a test, a script) sees it whole.
  const tlsnet = cliName();
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
    banner.push(`dev CA: ${devCA}`, `try:    ${tlsnet} connect ${host}:${port} --ca ${devCA}`);
    if (mode === "http") banner.push(`        curl --cacert ${devCA} https://${host}:${port}/`);
  } else {
    const name = pickName(pairs[0]!.cert, listener.addr.address);
    banner.push(
      `try:    ${tlsnet} connect ${host}:${port}${name ? ` --servername ${name}` : ""} --ca <the CA that issued it>`,
    );
  }
  banner.push(`stop:   Ctrl-C, or kill ${process.pid}`);

  const reload = async (why: string) => {
    try {
      if (devCA) pairs = await dev(); // re-issued if it expired meanwhile
      config = build();
      out(
        [
          `${stamp()} reloaded certificates (${why})`,
          ...pairs.map((p) => describeCert(p.cert, c)),
        ].join("\n"),
      );
    } catch (e) {
      err(
        `${stamp()} reload failed, keeping the old certificates: ${explain(e, ctx).message}` +
          (devCA ? ` (remove the dev certificate files and send SIGHUP again for new ones)` : ""),
      );
    }
  };
  process.on("SIGHUP", () => void reload("SIGHUP"));
  const unwatch = values.watch ? watchFiles(pairs[0]!, values["client-ca"], reload) : () => {};
  if (values.watch) banner.push("watching the certificate files for changes");
  out(banner.join("\n"));

  // Stop on the first Ctrl-C / SIGTERM; a second one does not wait.
  const stopped = new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (why: string) => {
      if (stopping) {
        err("stopping now");
        process.exit(130);
      }
      stopping = true;
      unwatch();
      out(
        `${why}: closing${active > 0 ? `, giving ${active} connection(s) up to ${GRACE_MS} ms` : ""}`,
      );
      listener
        .close({ graceful: GRACE_MS })
        .then(() => Promise.all([...sessions].map((s) => s.close())))
        .then(
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
    // Under an npm script, npm may go (kill <npm pid>) while its shell leaves us running:
    // when our parent changes, it has exited, and so do we.
    if (process.env.npm_lifecycle_event) {
      const parent = process.ppid;
      setInterval(() => {
        if (process.ppid !== parent) stop(`parent process ${parent} exited`);
      }, 500).unref();
    }
  });
  return stopped;
}

/** Reload when the certificate files (or the client CA file) change: renames included, debounced. */
function watchFiles(
  pair: { cert: string; key: string },
  clientCa: string | undefined,
  reload: (why: string) => Promise<void>,
): () => void {
  const files = [pair.cert, pair.key, ...(clientCa ? [clientCa] : [])].map((f) => resolvePath(f));
  const names = new Set(files.map((f) => basename(f)));
  let timer: NodeJS.Timeout | undefined;
  // Watch the directories: certbot-style renames replace the file's inode.
  const watchers: FSWatcher[] = [...new Set(files.map((f) => dirname(f)))].map((dir) =>
    fsWatch(dir, { persistent: false }, (_event, name) => {
      if (name !== null && !names.has(String(name))) return;
      clearTimeout(timer);
      timer = setTimeout(() => void reload("files changed"), 200);
    }),
  );
  return () => {
    clearTimeout(timer);
    for (const w of watchers) w.close();
  };
}

/** A plain HTTP request on the TLS port: read its head (bounded) and answer 400. */
async function plainHTTP(raw: Conn, first: Buffer, port: number): Promise<void> {
  let head = first;
  try {
    while (!head.includes("\r\n\r\n") && head.length < 8192) {
      const more = await raw.read(8192, { timeout: 2000 });
      if (more === null) break;
      head = Buffer.concat([head, more]);
    }
  } catch {
    // answer what we have
  }
  const text = head.toString("latin1");
  const target = /^[A-Z]+ (\/\S*)/.exec(text)?.[1] ?? "/";
  const hostHeader = /\r\nhost:[ \t]*([A-Za-z0-9.:[\]-]+)/i.exec(text)?.[1];
  const host = hostHeader?.replace(/:\d+$/, "") ?? "localhost";
  const url = `https://${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}${target}`;
  const body = `This is an HTTPS server: use ${url}\n`;
  try {
    await raw.write(
      "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n" +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      { timeout: 2000 },
    );
    await raw.closeWrite();
  } catch {
    // the client went away: nothing to answer
  }
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
    let line = `certificate: ${dn(cert.subject)} [${names}] until ${day(new Date(cert.validTo))}`;
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
    const dns = splitSANs(cert.subjectAltName).find((n) => n.startsWith("DNS:"));
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
