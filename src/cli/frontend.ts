/**
 * What `serve` and `proxy` share as TLS front ends: the certificate, client-auth,
 * ticket-key and PROXY-in flags; the dev certificate when none is given; the TLS
 * config built from them (failures worded with the flags); the accept loop
 * (tcp.listen, a look at the first bytes, tls.server, the handshake); the banner
 * lines; reload on SIGHUP and --watch; one log line per connection; and the
 * drain on SIGTERM / Ctrl-C.
 * @module
 */
import { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import { type FSWatcher, watch as fsWatch, readFileSync } from "node:fs";
import { basename, dirname, resolve as resolvePath } from "node:path";
import {
  type ClientAuth,
  type Conn,
  DeadlineExceededError,
  type Listener,
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
  cliName,
  day,
  err,
  listFlag,
  ms,
  out,
  type paint,
  UsageError,
} from "./common.ts";
import { dataDir, ensureLeaf, openCA } from "./devcerts.ts";
import { type Context, debugLines, explain } from "./explain.ts";

/** Flags of every TLS front end (parseFlags options). */
export const FRONTEND_FLAGS = {
  cert: { type: "string", multiple: true },
  key: { type: "string", multiple: true },
  alpn: { type: "string" },
  "client-auth": { type: "string" },
  "client-ca": { type: "string" },
  watch: { type: "boolean", default: false },
  grace: { type: "string" },
  "ticket-keys": { type: "string" },
  "proxy-protocol-in": { type: "boolean", default: false },
  "proxy-trusted": { type: "string" },
} as const;

/** The --help lines for {@link FRONTEND_FLAGS}. */
export const FRONTEND_HELP = `  --cert F --key F      certificate chain and key (PEM); repeat the pair to serve several
                        names (SNI picks; the first pair is the default)
  --alpn LIST           ALPN protocols in preference order
  --client-auth MODE    none | request | require-any | verify-if-given | require-and-verify
  --client-ca F         CA bundle that verifies client certificates
  --watch               reload the certificate when its files change
  --grace DURATION      on SIGTERM / Ctrl-C, how long open connections get to finish
                        (default 10s; e.g. 500ms, 30s, 2m)
  --ticket-keys F       session ticket keys shared by a fleet: one base64 (or hex) 48-byte
                        key per line, the first encrypts; reread on SIGHUP (docs/fleet.md)
  --proxy-protocol-in   read a PROXY protocol header (v1 or v2) first on every connection
                        (behind HAProxy, an NLB...): logs and backends see the client
  --proxy-trusted LIST  CIDRs allowed to send that header (default: any), e.g. 10.0.0.0/8`;

const DEFAULT_GRACE_MS = 10_000;
/** How long a new connection may take to send its first bytes (TLS's own timeout is 10 s). */
const FIRST_BYTES_MS = 10_000;

/** The flag values {@link frontend} reads. */
export interface FrontendValues {
  cert?: string[] | undefined;
  key?: string[] | undefined;
  alpn?: string | undefined;
  "client-auth"?: string | undefined;
  "client-ca"?: string | undefined;
  watch: boolean;
  grace?: string | undefined;
  "ticket-keys"?: string | undefined;
  "proxy-protocol-in": boolean;
  "proxy-trusted"?: string | undefined;
}

/** A TLS front end configured from its flags. */
export interface Frontend {
  /** The certificate files in force (the generated ones without --cert). */
  readonly pairs: ReadonlyArray<{ cert: string; key: string }>;
  /** The dev CA file when the certificate was generated. */
  readonly devCA: string | undefined;
  readonly alpn: string[] | undefined;
  readonly graceMs: number;
  /** The TLS config in force for new connections. */
  readonly config: TLSConfig;
  /** TLS conns handed to the handler and not finished yet. */
  readonly sessions: ReadonlySet<TLSConn>;
  /** Log a failure of `who` in this command's terms. */
  logFailure(who: string, e: unknown): void;
  /**
   * Listen on `addr` (with PROXY-in when asked) and run `handle` for each TLS conn
   * after its handshake. `plain`, given the first bytes, may take a conn that is not
   * TLS (serve answers plain HTTP with a 400) by returning true.
   */
  listen(
    addr: string,
    handle: (conn: TLSConn) => Promise<void>,
    plain?: (raw: Conn, head: Buffer) => Promise<boolean>,
  ): Promise<Listener<Conn>>;
  /** Banner lines: the certificates, the dev CA, what to try, how to stop, watching. */
  banner(listener: Listener<Conn>, curl?: boolean): string[];
  /** Reload on SIGHUP (and on file change with --watch); returns a function that stops watching. */
  reloads(): () => void;
  /**
   * Stop on SIGTERM / Ctrl-C: stop accepting, give open conns the grace period,
   * close the rest and say how many; resolves with the exit code.
   */
  drain(listener: Listener<Conn>, unwatch: () => void): Promise<number>;
}

/** Validate the shared flags (UsageError), prepare the identity and build the config. */
export async function frontend(
  values: FrontendValues,
  c: ReturnType<typeof paint>,
  defaults: { alpn?: string[] | undefined } = {},
): Promise<Frontend> {
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
  if (values["proxy-trusted"] !== undefined && !values["proxy-protocol-in"]) {
    throw new UsageError("--proxy-trusted needs --proxy-protocol-in");
  }
  const graceMs = durationFlag(values.grace, "grace", DEFAULT_GRACE_MS);
  const ticketFile = values["ticket-keys"];
  const trusted = listFlag(values["proxy-trusted"]);
  const alpn = listFlag(values.alpn) ?? defaults.alpn;

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
      ticketKeys: "--ticket-keys",
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
    ...(ticketFile === undefined ? {} : { ticketKeys: readTicketKeys(ticketFile) }),
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
  const sessions = new Set<TLSConn>();
  let active = 0;

  const logFailure = (who: string, e: unknown) => {
    err(`${stamp()} ${who} ${c.red("failed:")} ${explain(e, ctx).message}`);
    if (process.env.TLSNET_DEBUG) for (const line of debugLines(e)) err(line);
  };

  const fe: Frontend = {
    get pairs() {
      return pairs;
    },
    get devCA() {
      return devCA;
    },
    alpn,
    graceMs,
    get config() {
      return config;
    },
    sessions,
    logFailure,

    listen(addr, handle, plain) {
      // Each connection: look at the first bytes, then TLS (unless `plain` takes it).
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
        if (plain && head[0] !== 0x16 && (await plain(raw, head))) return;
        const conn = tls.server(raw, config); // what was peeked stays buffered: the ClientHello
        try {
          await conn.handshake();
        } catch (e) {
          logFailure(who, e);
          await conn.close();
          return;
        }
        active++;
        sessions.add(conn);
        try {
          await handle(conn);
        } finally {
          active--;
          sessions.delete(conn);
          await conn.close();
        }
      };
      return tcp.listen({
        addr,
        handler: accept,
        onError: (e, info) => logFailure(info.remoteAddr?.toString() ?? "", e),
        ...(values["proxy-protocol-in"] ? { proxyProtocol: trusted ? { trusted } : true } : {}),
      });
    },

    banner(listener, curl = false) {
      const tlsnet = cliName();
      const port = listener.addr.port;
      const host = tryHost(listener.addr.address);
      const lines = pairs.map((p) => describeCert(p.cert, c));
      if (devCA) {
        lines.push(`dev CA: ${devCA}`, `try:    ${tlsnet} connect ${host}:${port} --ca ${devCA}`);
        if (curl) lines.push(`        curl --cacert ${devCA} https://${host}:${port}/`);
      } else {
        const name = pickName(pairs[0]!.cert, listener.addr.address);
        lines.push(
          `try:    ${tlsnet} connect ${host}:${port}${name ? ` --servername ${name}` : ""} --ca <the CA that issued it>`,
        );
      }
      lines.push(`stop:   Ctrl-C, or kill ${process.pid}`);
      if (values.watch) lines.push("watching the certificate files for changes");
      return lines;
    },

    reloads() {
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
              (devCA
                ? " (remove the dev certificate files and send SIGHUP again for new ones)"
                : ""),
          );
        }
      };
      process.on("SIGHUP", () => void reload("SIGHUP"));
      return values.watch ? watchFiles(pairs[0]!, values["client-ca"], reload) : () => {};
    },

    drain(listener, unwatch) {
      // Stop on the first Ctrl-C / SIGTERM; a second one does not wait.
      return new Promise<number>((resolve) => {
        let stopping = false;
        const stop = (why: string) => {
          if (stopping) {
            err("stopping now");
            process.exit(130);
          }
          stopping = true;
          unwatch();
          const open = active;
          out(
            `${why}: no longer accepting; ` +
              (open > 0
                ? `draining ${open} open connection(s) for up to ${showDuration(graceMs)}`
                : "no open connections"),
          );
          let cut = 0;
          const timer = setTimeout(() => {
            cut = active;
          }, graceMs);
          listener
            .close({ graceful: graceMs })
            .then(() => Promise.all([...sessions].map((s) => s.close())))
            .then(
              () => {
                clearTimeout(timer);
                out(
                  cut > 0
                    ? `stopped: closed ${cut} connection(s) still open after the ${showDuration(graceMs)} grace period`
                    : `stopped${open > 0 ? ": every connection finished" : ""}`,
                );
                resolve(0);
              },
              (e) => {
                clearTimeout(timer);
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
    },
  };
  return fe;
}

/**
 * Ticket keys from a file: one key per line, base64 (64 characters) or hex (96),
 * `#` comments and blank lines ignored; or exactly 48·n raw bytes. The first
 * key encrypts. Throws a CliError naming the file and line.
 */
export function readTicketKeys(file: string): Buffer[] {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(
      `--ticket-keys ${file}: cannot read it: ${code === "ENOENT" ? "no such file" : (e as Error).message}`,
    );
  }
  const text = raw.toString("latin1");
  if (raw.length > 0 && raw.length % 48 === 0 && !/^[\s0-9A-Za-z+/=#-]*$/.test(text)) {
    const keys: Buffer[] = [];
    for (let i = 0; i < raw.length; i += 48) keys.push(raw.subarray(i, i + 48));
    return keys;
  }
  const keys: Buffer[] = [];
  text.split("\n").forEach((line, i) => {
    const s = line.trim();
    if (s === "" || s.startsWith("#")) return;
    const hex = /^[0-9a-fA-F]{96}$/.test(s);
    if (!hex && !/^[A-Za-z0-9+/]{64}$/.test(s)) {
      throw new CliError(
        `--ticket-keys ${file}: line ${i + 1} is not a 48-byte key in base64 or hex ` +
          "(make one with: openssl rand -base64 48)",
      );
    }
    keys.push(Buffer.from(s, hex ? "hex" : "base64"));
  });
  if (keys.length === 0) {
    throw new CliError(
      `--ticket-keys ${file}: holds no key (make one with: openssl rand -base64 48)`,
    );
  }
  return keys;
}

/** `--grace 10s`: ms from "500ms", "10s", "2m", or a bare number of seconds. */
export function durationFlag(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  if (!m) {
    throw new UsageError(`--${name} takes a duration like 500ms, 10s or 2m, got '${value}'`);
  }
  const n = Number(m[1]);
  const unit = m[2] ?? "s";
  return Math.round(unit === "ms" ? n : unit === "s" ? n * 1000 : n * 60_000);
}

/** "10 s", "500 ms": a duration for people. */
export function showDuration(msValue: number): string {
  return msValue % 1000 === 0 ? `${msValue / 1000} s` : `${msValue} ms`;
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

/**
 * One log line per connection: when, who, TLS version, ALPN, SNI, client cert, extras, time,
 * and the bytes received from and written to the client (the conn's own counts).
 */
export function logConn(conn: TLSConn, took: number, failure: unknown, extra: string[] = []): void {
  const s = conn.state();
  const peer = conn.peerCertificate();
  const parts = [
    stamp(),
    conn.remoteAddr.toString(),
    s.version ?? "-",
    `alpn=${s.alpnProtocol ?? "-"}`,
    `sni=${s.serverName ?? "-"}`,
    ...(peer ? [`client="${peer.subject}"`] : []),
    ...extra,
    ms(took),
    `in=${conn.bytesRead}`,
    `out=${conn.bytesWritten}`,
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
export function tryHost(address: string): string {
  if (address === "0.0.0.0" || address === "::") return "localhost";
  return address.includes(":") ? `[${address}]` : address;
}

let stampMs = -1;
let stampText = "";

/** The time of day for a log line, HH:MM:SS.mmm (UTC). */
export function stamp(): string {
  // One Date and string per millisecond: a busy proxy logs many conns in the same one.
  const now = Date.now();
  if (now !== stampMs) {
    stampMs = now;
    stampText = new Date(now).toISOString().slice(11, 23);
  }
  return stampText;
}
