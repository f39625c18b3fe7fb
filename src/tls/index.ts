/**
 * TLS over OpenSSL (node:tls): verified clients, multi-certificate servers,
 * STARTTLS upgrades, all as async/await {@link TLSConn}s.
 *
 * @example
 * ```ts
 * import { tls } from "tlsnet";
 * const conn = await tls.connect("example.com:443", { alpnProtocols: ["http/1.1"], timeout: 10_000 });
 * console.log(conn.state().version, conn.state().cipherSuite);
 * await conn.write("GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
 * console.log((await conn.readAll({ maxBytes: 1 << 20 })).toString());
 * ```
 * @module
 */
import { Socket } from "node:net";
import { DEFAULT_CIPHERS, DEFAULT_MAX_VERSION, DEFAULT_MIN_VERSION } from "node:tls";
import type { Address } from "../addr.ts";
import { Conn, kHandOver, kRelease } from "../conn.ts";
import { dialChannel, traced } from "../diagnostics.ts";
import { checkDialOptions, type DialOptions, dial } from "../dial.ts";
import { dialHostOf } from "../dialed.ts";
import { ConfigError, StartTLSInjectionError } from "../errors.ts";
import { cipherList, TLSConfig, type TLSOptions, tlsOptionsOf } from "./config.ts";
import { sniFor, TLSConn, type TLSInit } from "./conn.ts";
import { defaultEngine } from "./engine/choice.ts";
import { tlsTransport } from "./engine/index.ts";
import { TLSListener, type TLSListenOptions } from "./listener.ts";
import { LRU, SessionCache } from "./sessions.ts";

export type { CertEntry, ClientAuth, TLSOptions, TLSVersion } from "./config.ts";
export { TLSConfig } from "./config.ts";
export { TLSConn } from "./conn.ts";
export type { EngineName } from "./engine/choice.ts";
export type { ReloadOptions, TLSListenOptions } from "./listener.ts";
export { TLSListener } from "./listener.ts";
export type { ConnectionState, PeerCertificate } from "./state.ts";

/** Client session caches by config scope: configs that verify alike share resumption. Bounded. */
const sessionCaches = new LRU<string, SessionCache>(64);

/**
 * Validate and freeze options into a reusable {@link TLSConfig}: files are read and
 * certificates parsed once, here. A TLSConfig passed in is returned as it is. Build one config
 * and pass it to any number of connects, listeners and upgrades: they share its contexts and
 * its client session cache.
 *
 * Throws {@link ConfigError} naming the field (before any I/O on the network): a cert without
 * its key or the reverse, a key that does not match, unreadable or non-PEM files, min > max,
 * a version below TLS 1.2, a verifying clientAuth without clientCa, a negative timeout, a bad
 * ALPN name, ticketKeys not 48 bytes.
 *
 * @example
 * ```ts
 * const config = tls.config({ ca: readFileSync("ca.pem"), alpnProtocols: ["h2", "http/1.1"] });
 * const a = await tls.connect("api.internal:443", config, { timeout: 5000 });
 * const b = await tls.connect("api.internal:443", config); // resumes a's session
 * ```
 */
export function config(opts: TLSOptions | TLSConfig): TLSConfig {
  return opts instanceof TLSConfig ? opts : new TLSConfig(opts);
}

/**
 * Dial and handshake: resolves to a {@link TLSConn} whose handshake is done and verified.
 * `opts` holds TLS and dial options together, or is a
 * TLSConfig; with a TLSConfig, dial options go in the third argument.
 * The name verified (and sent as SNI) is `serverName`, else the dial host; an IP literal
 * sends no SNI and is verified against the certificate's IP SANs. The dial `timeout` and
 * `deadline` cover the handshake too; `handshakeTimeout` (default 30 s on clients) bounds the
 * handshake alone.
 *
 * Rejects with {@link DialError}, {@link DeadlineExceededError} (op "connect"),
 * {@link HandshakeTimeoutError}, {@link TLSError} or {@link CertificateError}, or
 * `signal.reason`, or {@link ConfigError} (before any I/O) for invalid options.
 *
 * @param address Where to connect: `"example.com:443"`, `"[::1]:8443"`, `{ host, port }`.
 * @param opts TLS options and dial options in one object, or a {@link TLSConfig}. Default: `{}`
 * (verify against Node's bundled roots).
 * @param dialOptions Dial options, for when `opts` is a TLSConfig; they win over those in `opts`.
 *
 * @example
 * ```ts
 * const conn = await tls.connect("example.com:443", { alpnProtocols: ["http/1.1"] });
 * console.log(conn.state().version, conn.alpnProtocol); // "TLSv1.3" "http/1.1"
 * // mTLS against a private CA:
 * const m = await tls.connect("10.0.0.5:8443", {
 *   ca: readFileSync("ca.pem"), serverName: "db.internal",
 *   certs: [{ cert: readFileSync("client.pem"), key: readFileSync("client-key.pem") }],
 * });
 * ```
 */
export function connect(
  address: Address,
  opts: (TLSOptions & DialOptions) | TLSConfig = {},
  dialOptions?: DialOptions,
): Promise<TLSConn> {
  return traced(
    dialChannel,
    () => ({ address, transport: "tls" }),
    () => dialTLS(address, opts, dialOptions),
  );
}

async function dialTLS(
  address: Address,
  opts: (TLSOptions & DialOptions) | TLSConfig,
  dialOptions: DialOptions | undefined,
): Promise<TLSConn> {
  const cfg = config(opts instanceof TLSConfig ? opts : tlsOnly(opts));
  const dialOpts: DialOptions = { ...(opts instanceof TLSConfig ? {} : opts), ...dialOptions };
  checkDialOptions(dialOpts);
  const { socket, host, expiry } = await dial(address, dialOpts);
  const serverName = sniFor(cfg.serverName ?? host); // never SNI for an IP literal (RFC 6066)
  const conn = new TLSConn(
    tlsTransport(socket, {
      role: "client",
      config: cfg,
      serverName,
      verifyName: cfg.serverName ?? host.replace(/\.$/, ""),
      sessionKey: serverName ?? host, // per server name: a fleet sharing ticketKeys resumes across ports
      sessions: sessionsOf(cfg),
      dialExpiry: expiry,
    }),
  );
  try {
    await conn.handshake(dialOpts.signal ? { signal: dialOpts.signal } : undefined);
  } catch (err) {
    await conn.close();
    throw err;
  }
  return conn;
}

/**
 * Listen for TLS connections. Conns from `accept()` or the iterator are lazy: their
 * handshake runs on `handshake()` or the first read or write. With `handler` (or
 * `alpnHandlers`) the listener handshakes first and hands over only conns whose handshake
 * succeeded; failures go to `onError` and `stats().handshakeFailures`.
 *
 * Rejects with {@link ConfigError} for invalid options (a server needs `certs` or
 * `certFile`/`keyFile`) and {@link ListenError} when the bind fails.
 *
 * @example
 * ```ts
 * const ln = await tls.listen({
 *   addr: ":8443",
 *   certFile: "server.pem", keyFile: "server-key.pem",
 *   handler: async (conn) => {
 *     for await (const line of conn.lines()) await conn.write(`${line}\n`);
 *   },
 * });
 * ln.watch(); // reload the certificate when the files change
 * ```
 */
export function listen(opts: TLSListenOptions): Promise<TLSListener> {
  return TLSListener.listen(opts);
}

/**
 * Upgrade an existing plain conn or socket to TLS as the client (STARTTLS). The handshake is
 * lazy: it runs on `handshake()` or the first read or write. The name verified is
 * `serverName`, else the host `tcp.connect` dialed, else the peer's IP address. From now on
 * use the returned conn; the plain one's ops reject with {@link ClosedError}, and closing it
 * closes the connection.
 *
 * Throws {@link StateError} with a read, write or closeWrite pending on `conn`, and
 * {@link StartTLSInjectionError} when plaintext bytes are buffered (they arrived after the
 * server's go-ahead, before our ClientHello): read the server's reply exactly before upgrading.
 * Throws {@link ConfigError} for invalid options.
 *
 * @example
 * ```ts
 * const conn = await tcp.connect("mail.example:587");
 * await conn.readLine(); // 220 greeting
 * await conn.write("STARTTLS\r\n");
 * await conn.readLine(); // 220 go ahead: read exactly the reply, nothing more
 * const secure = tls.client(conn, { serverName: "mail.example" });
 * await secure.handshake({ timeout: 10_000 });
 * ```
 */
export function client(conn: Conn | Socket, opts: TLSOptions | TLSConfig): TLSConn {
  const cfg = config(opts);
  // The name to verify: serverName, else the host tcp.connect dialed, else the peer's address.
  const dialed = conn instanceof Conn ? dialHostOf(conn) : undefined;
  const peer = conn instanceof Conn ? conn.remoteAddr.address : conn.remoteAddress;
  const host = cfg.serverName ?? dialed?.replace(/\.$/, "") ?? peer ?? "";
  const serverName = cfg.serverName ? sniFor(cfg.serverName) : dialed ? sniFor(dialed) : null;
  if (cfg.verifyPeer && cfg.serverName === undefined && host === "") {
    throw new ConfigError("tls.client needs serverName to verify the peer", {
      field: "serverName",
    });
  }
  // Plaintext that arrived after the server's go-ahead and before our ClientHello
  // is an attack (STARTTLS response injection): refuse it before any handshake.
  return upgrade(
    conn,
    "client",
    (buffered) => {
      if (buffered > 0) {
        const where = conn instanceof Conn ? conn.remoteAddr.toString() : (peer ?? "the server");
        throw new StartTLSInjectionError(
          `refusing to start TLS with ${where}: ${buffered} plaintext byte(s) arrived after the ` +
            "server's go-ahead and before the handshake (STARTTLS response injection?); " +
            "read the server's reply exactly (e.g. readLine) before tls.client(), and close this connection",
          { bytes: buffered },
        );
      }
    },
    {
      role: "client",
      config: cfg,
      serverName,
      verifyName: host,
      sessionKey: serverName ?? host,
      sessions: sessionsOf(cfg),
    },
  );
}

/**
 * Upgrade an existing plain conn or socket to TLS as the server. The handshake is lazy.
 * Bytes the plain conn buffered are kept: they are the client's ClientHello.
 *
 * Throws {@link ConfigError} for invalid options or a config without a certificate,
 * {@link StateError} with a read, write or closeWrite pending on `conn`.
 */
export function server(conn: Conn | Socket, opts: TLSOptions | TLSConfig): TLSConn {
  const cfg = config(opts);
  cfg.serverContexts(); // a server without certificates fails here, before any I/O
  return upgrade(conn, "server", undefined, { role: "server", config: cfg });
}

/** The TLS library and the JavaScript runtime behind tlsnet, as {@link backend} reports them. */
export interface Backend {
  /**
   * The TLS library that runs the handshakes: "openssl" on Node, "boringssl" on Bun, "rustls" on
   * Deno, "unknown" on a runtime tlsnet does not recognise.
   */
  name: "openssl" | "boringssl" | "rustls" | "unknown";
  /**
   * Its version where the runtime says: OpenSSL's version on Node ("3.0.15"), the BoringSSL
   * commit on Bun; "unknown" otherwise (Deno does not report its rustls version, and the
   * "openssl" entry of Bun's and Deno's `process.versions` describes no library they run).
   */
  version: string;
  /**
   * tlsnet's engine for configs that do not choose one: "native", tlsnet's OpenSSL addon (the
   * default on Node where it is built, loads and passes its self-check), or "node", the node:tls
   * API (which Bun and Deno implement too). TLSNET_ENGINE=node|native overrides the default.
   */
  engine: "node" | "native";
  /**
   * Why that engine: e.g. "TLSNET_ENGINE=node", or why the native engine is not available
   * ("the addon is not built (…/tlsnet_native.node is missing)").
   */
  engineReason: string;
  /** The JavaScript runtime: "node", "bun", "deno" or "unknown". */
  runtime: "node" | "bun" | "deno" | "unknown";
  /** The runtime's version, without a leading "v" ("20.19.0", "1.2.3"), or "unknown". */
  runtimeVersion: string;
}

/**
 * The TLS library and the JavaScript runtime behind tlsnet: which library runs the
 * handshakes differs between Node, Bun and Deno (see docs/runtimes.md).
 *
 * @example
 * ```ts
 * tls.backend(); // { name: "openssl", version: "3.0.15", engine: "native", engineReason: "the default: …", runtime: "node", runtimeVersion: "20.19.0" }
 * ```
 */
export function backend(): Backend {
  const v = process.versions as Record<string, string | undefined>;
  if (v.bun !== undefined) {
    return {
      name: "boringssl",
      version: v.boringssl ?? "unknown",
      engine: "node",
      engineReason: "Bun: the native engine runs on Node.js only",
      runtime: "bun",
      runtimeVersion: v.bun,
    };
  }
  if (v.deno !== undefined) {
    return {
      name: "rustls",
      version: "unknown",
      engine: "node",
      engineReason: "Deno: the native engine runs on Node.js only",
      runtime: "deno",
      runtimeVersion: v.deno,
    };
  }
  if (process.release?.name === "node" && v.node !== undefined) {
    const engine = defaultEngine();
    return {
      name: "openssl",
      version: v.openssl ?? "unknown",
      engine: engine.engine,
      engineReason: engine.why,
      runtime: "node",
      runtimeVersion: v.node,
    };
  }
  return {
    name: "unknown",
    version: "unknown",
    engine: "node",
    engineReason: "an unknown runtime: the native engine runs on Node.js only",
    runtime: "unknown",
    runtimeVersion: "unknown",
  };
}

/**
 * tlsnet's default protocol range and cipher list, beside Node's: tlsnet's TLS 1.2 suites are
 * ECDHE key exchange with AEAD ciphers only, Node's list also admits CBC and static RSA.
 *
 * @example
 * ```ts
 * const d = tls.defaults();
 * console.log(d.minVersion, d.nodeMin); // "TLSv1.2" "TLSv1.2"
 * ```
 */
export function defaults(): {
  /** tlsnet's default `minVersion`: "TLSv1.2". */
  minVersion: string;
  /** tlsnet's default `maxVersion`: "TLSv1.3". */
  maxVersion: string;
  /** Node's `tls.DEFAULT_MIN_VERSION` in this process. */
  nodeMin: string;
  /** Node's `tls.DEFAULT_MAX_VERSION` in this process. */
  nodeMax: string;
  /** tlsnet's default OpenSSL cipher string: TLS 1.3 suites, then ECDHE + AEAD TLS 1.2 suites. */
  ciphers: string;
  /** Node's `tls.DEFAULT_CIPHERS` in this process. */
  nodeCiphers: string;
} {
  return {
    minVersion: "TLSv1.2",
    maxVersion: "TLSv1.3",
    nodeMin: DEFAULT_MIN_VERSION,
    nodeMax: DEFAULT_MAX_VERSION,
    ciphers: cipherList(undefined),
    nodeCiphers: DEFAULT_CIPHERS,
  };
}

/**
 * Take the socket from a plain conn (or a bare socket) and put TLS over it.
 * Server side, bytes the plain conn buffered are the client's ClientHello: they
 * go back into the socket. Client side, `check` refuses buffered plaintext.
 */
function upgrade(
  conn: Conn | Socket,
  role: "client" | "server",
  check: ((buffered: number) => void) | undefined,
  init: TLSInit,
): TLSConn {
  if (conn instanceof Conn) {
    const { socket, buffered } = conn[kRelease](check ?? noop);
    for (let i = buffered.length - 1; i >= 0; i--) socket.unshift(buffered[i]!);
    const tlsConn = new TLSConn(tlsTransport(socket, { ...init, proxy: conn.proxy }), conn);
    conn[kHandOver](tlsConn);
    return tlsConn;
  }
  if (conn instanceof Socket) {
    if (role === "client") check?.(conn.readableLength);
    return new TLSConn(tlsTransport(conn, init));
  }
  throw new TypeError("expected a tlsnet Conn or a node:net Socket");
}

function noop(): void {}

function sessionsOf(cfg: TLSConfig): SessionCache | undefined {
  if (cfg.sessionCacheSize === 0) return undefined;
  let cache = sessionCaches.get(cfg.sessionScope);
  if (!cache) {
    cache = new SessionCache(cfg.sessionCacheSize);
    sessionCaches.set(cfg.sessionScope, cache);
  }
  return cache;
}

const DIAL_KEYS = new Set([
  "timeout",
  "deadline",
  "signal",
  "localAddress",
  "resolver",
  "family",
  "fallbackDelay",
  "noDelay",
  "keepAlive",
  "proxyHeader",
]);

function tlsOnly(opts: TLSOptions & DialOptions): TLSOptions {
  if (typeof opts !== "object" || opts === null) {
    throw new ConfigError("tls.connect options must be an object", { field: "options" });
  }
  return tlsOptionsOf(opts, DIAL_KEYS);
}
