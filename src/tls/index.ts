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
export type { ReloadOptions, TLSListenOptions } from "./listener.ts";
export { TLSListener } from "./listener.ts";
export type { ConnectionState, PeerCertificate } from "./state.ts";

/** Client session caches by config scope: configs that verify alike share resumption. Bounded. */
const sessionCaches = new LRU<string, SessionCache>(64);

/** Validate and freeze options into a reusable TLSConfig (throws ConfigError). */
export function config(opts: TLSOptions | TLSConfig): TLSConfig {
  return opts instanceof TLSConfig ? opts : new TLSConfig(opts);
}

/**
 * Dial and handshake. `opts` holds TLS and dial options together, or is a
 * TLSConfig; with a TLSConfig, dial options go in the third argument.
 * Rejects with DialError, DeadlineExceededError, TLSError or CertificateError.
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

/** Listen for TLS connections. */
export function listen(opts: TLSListenOptions): Promise<TLSListener> {
  return TLSListener.listen(opts);
}

/**
 * Upgrade an existing plain conn or socket to TLS as the client (STARTTLS).
 * The handshake is lazy; bytes the plain conn had buffered are kept.
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

/** Upgrade an existing plain conn or socket to TLS as the server. The handshake is lazy. */
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
   * tlsnet's engine for configs that do not choose one: "node", the node:tls API (which Bun
   * and Deno implement too), or "native", tlsnet's OpenSSL addon (TLSNET_ENGINE=native).
   */
  engine: "node" | "native";
  /** The JavaScript runtime: "node", "bun", "deno" or "unknown". */
  runtime: "node" | "bun" | "deno" | "unknown";
  /** The runtime's version, without a leading "v" ("20.19.0", "1.2.3"), or "unknown". */
  runtimeVersion: string;
}

/**
 * The TLS library and the JavaScript runtime behind tlsnet.
 *
 * @example
 * ```ts
 * tls.backend(); // { name: "openssl", version: "3.0.15", engine: "node", runtime: "node", runtimeVersion: "20.19.0" }
 * ```
 */
export function backend(): Backend {
  const v = process.versions as Record<string, string | undefined>;
  if (v.bun !== undefined) {
    return {
      name: "boringssl",
      version: v.boringssl ?? "unknown",
      engine: "node",
      runtime: "bun",
      runtimeVersion: v.bun,
    };
  }
  if (v.deno !== undefined) {
    return {
      name: "rustls",
      version: "unknown",
      engine: "node",
      runtime: "deno",
      runtimeVersion: v.deno,
    };
  }
  if (process.release?.name === "node" && v.node !== undefined) {
    return {
      name: "openssl",
      version: v.openssl ?? "unknown",
      engine: defaultEngine().engine,
      runtime: "node",
      runtimeVersion: v.node,
    };
  }
  return {
    name: "unknown",
    version: "unknown",
    engine: "node",
    runtime: "unknown",
    runtimeVersion: "unknown",
  };
}

/** tlsnet's default protocol range and cipher list, beside Node's. */
export function defaults(): {
  minVersion: string;
  maxVersion: string;
  nodeMin: string;
  nodeMax: string;
  ciphers: string;
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
    const tlsConn = new TLSConn(tlsTransport(socket, init), conn);
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
]);

function tlsOnly(opts: TLSOptions & DialOptions): TLSOptions {
  if (typeof opts !== "object" || opts === null) {
    throw new ConfigError("tls.connect options must be an object", { field: "options" });
  }
  return tlsOptionsOf(opts, DIAL_KEYS);
}
