/**
 * TLS configuration: options are validated once (ConfigError naming the field,
 * before any I/O), files are read once, and the result is a frozen, reusable
 * TLSConfig that owns one SecureContext per certificate entry.
 * @module
 */
import { Buffer } from "node:buffer";
import {
  constants,
  createHash,
  createPrivateKey,
  type KeyObject,
  X509Certificate,
} from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { createSecureContext, type SecureContext, type SecureContextOptions } from "node:tls";
import { checkTimeout } from "../deadline.ts";
import { asError, ConfigError, errorCode } from "../errors.ts";
import { type EngineName, resolveEngine } from "./engine/choice.ts";
import { type ConnectionState, splitSANs } from "./state.ts";

/** TLS protocol versions tlsnet speaks. Older ones are refused (a {@link ConfigError}). */
export type TLSVersion = "TLSv1.2" | "TLSv1.3";

/**
 * Client-certificate policy of a server, with Go's semantics:
 * - "none": no certificate requested (the default);
 * - "request": requested, not required, not verified;
 * - "require-any": required, not verified;
 * - "verify-if-given": verified when sent;
 * - "require-and-verify": required and verified.
 *
 * The verifying modes need `clientCa` or `clientCaFile`. A failure names the reason ("client
 * did not provide a certificate", "client certificate signed by unknown authority").
 */
export type ClientAuth =
  | "none"
  | "request"
  | "require-any"
  | "verify-if-given"
  | "require-and-verify";

/**
 * One certificate (chain) with its private key, PEM. What `tlsnet/certs`' `issue()` returns
 * has this shape.
 */
export interface CertEntry {
  /** The certificate, PEM; it may be followed by its intermediates (what a server sends). */
  cert: string | Buffer;
  /** Its private key, PEM (PKCS#8, PKCS#1 or SEC1; encrypted with `passphrase`). */
  key: string | Buffer;
  /** The passphrase of an encrypted `key`. Default: none (the key is not encrypted). */
  passphrase?: string | undefined;
}

/**
 * Everything TLS about a client or server. Validated once by `tls.config()` (or by the call
 * that takes them): an invalid value is a {@link ConfigError} naming the field, before any
 * I/O on the network. Files are read once, then.
 *
 * @example
 * ```ts
 * // A client that trusts a private CA and presents a client certificate (mTLS):
 * const client: TLSOptions = {
 *   ca: readFileSync("ca.pem"),
 *   certFile: "client.pem", keyFile: "client-key.pem",
 *   alpnProtocols: ["h2"],
 * };
 * // A server with two certificates (SNI picks) that requires verified client certificates:
 * const server: TLSOptions = {
 *   certs: [{ cert: a, key: aKey }, { cert: b, key: bKey }],
 *   clientAuth: "require-and-verify", clientCaFile: "clients-ca.pem",
 * };
 * ```
 */
export interface TLSOptions {
  /**
   * Certificates with their keys. Server: the certificates it serves; SNI picks the entry
   * whose certificate names the requested host (its SAN DNS names, or its CN when it has no
   * SAN; an exact name beats a wildcard), and no SNI or an unknown name gets the first entry.
   * Client: the first entry is presented when the server asks (mTLS). A server needs at
   * least one certificate (here or in `certFile`/`keyFile`). Default: none.
   */
  certs?: CertEntry[] | undefined;
  /**
   * Path of a PEM certificate (chain) to read: shorthand for one `certs` entry, added after
   * them. Needs `keyFile`. Read once, at validation; {@link TLSListener.watch} reloads it.
   */
  certFile?: string | undefined;
  /** Path of the PEM private key for `certFile`; needs `certFile`. */
  keyFile?: string | undefined;
  /**
   * Verify the peer's certificate chain and, on a client, its name. Default: true. false is
   * insecure: for tests only. (Servers verify client certificates per `clientAuth` instead.)
   */
  verifyPeer?: boolean | undefined;
  /**
   * Client: the name sent as SNI and verified against the certificate. Default: the dial host
   * (or, for `tls.client`, the host `tcp.connect` dialed). An IP literal verifies against
   * the certificate's IP SANs and sends no SNI (RFC 6066). A trailing dot is dropped.
   */
  serverName?: string | undefined;
  /**
   * Trusted roots (PEM; a string or Buffer may hold several certificates), replacing the
   * default: Node's bundled roots. Client: verifies the server.
   */
  ca?: string | Buffer | Array<string | Buffer> | undefined;
  /**
   * Path of a PEM bundle, or of an OpenSSL hashed directory (`*.pem`, `*.crt`, `<hash>.0`),
   * of trusted roots; added to `ca`.
   */
  caFile?: string | undefined;
  /** Server: the client-certificate policy, see {@link ClientAuth}. Default: "none". */
  clientAuth?: ClientAuth | undefined;
  /**
   * Server: the roots client certificates are verified against (PEM), for the verifying
   * `clientAuth` modes, which require it (or `clientCaFile`). Default: none.
   */
  clientCa?: string | Buffer | Array<string | Buffer> | undefined;
  /** Server: a PEM bundle or hashed directory of client roots, added to `clientCa`. */
  clientCaFile?: string | undefined;
  /**
   * An extra check after the handshake and the built-in verification (pinning, a policy on
   * the peer's subject...). Throwing or rejecting fails the handshake with a
   * {@link TLSError} whose reason is `VERIFY_CONNECTION`. Runs on resumed handshakes too (a
   * resumed client conn reports the identity of the original handshake). Default: none.
   *
   * @example
   * ```ts
   * const pin = "AB:CD:...";
   * await tls.connect("api.example:443", {
   *   verifyConnection: (s) => {
   *     if (s.peerCertificates[0]?.fingerprint256 !== pin) throw new Error("pin mismatch");
   *   },
   * });
   * ```
   */
  verifyConnection?: ((state: ConnectionState) => void | Promise<void>) | undefined;
  /**
   * ALPN protocols, in preference order; the server's preference wins. A client offering
   * protocols with no overlap fails the handshake (alert 120, a {@link TLSError} naming both
   * lists). Each name is 1..255 bytes. Default: no ALPN.
   */
  alpnProtocols?: string[] | undefined;
  /**
   * The lowest version to negotiate. Default: "TLSv1.2"; older versions ("TLSv1.1"...) are
   * refused by ConfigError.
   */
  minVersion?: TLSVersion | undefined;
  /** The highest version to negotiate. Default: "TLSv1.3". Must not be below `minVersion`. */
  maxVersion?: TLSVersion | undefined;
  /**
   * OpenSSL cipher list for TLS 1.2. Default: ECDHE key exchange with AEAD ciphers only
   * (`ECDHE-{ECDSA,RSA}-AES{128,256}-GCM`, `-CHACHA20-POLY1305`), stricter than Node's. A list
   * naming only TLS 1.2 suites keeps the TLS 1.3 suites on. Servers apply their own order.
   * Checked by OpenSSL at validation.
   */
  ciphers?: string | undefined;
  /**
   * Milliseconds a handshake may take; past it, {@link HandshakeTimeoutError} and the socket
   * is destroyed. Default: 10_000 on servers, 30_000 on clients; 0 = none.
   */
  handshakeTimeout?: number | undefined;
  /**
   * Client: resume sessions (TLS 1.3 tickets, TLS 1.2 sessions) per server name. true or a
   * size (sessions kept, least recently used evicted), false or 0 to turn it off. Default:
   * on, 100. Connects whose verification settings and client identity are equal share one
   * cache, so a session is never resumed under other trust settings.
   */
  sessionCache?: boolean | number | undefined;
  /**
   * Server: 48-byte session ticket key(s) (`crypto.randomBytes(48)`), shared by a fleet for
   * resumption on any replica. A list: the first encrypts new tickets; the native engine
   * decrypts with every listed key, node:tls only with the first (see docs/fleet.md). Default: random keys that OpenSSL picks, so only this
   * process can resume its tickets.
   */
  ticketKeys?: Buffer | readonly Buffer[] | undefined;
  /**
   * Receives NSS key log lines (SSLKEYLOGFILE format) for Wireshark. Debugging only: whoever
   * reads them can decrypt the traffic. Default: none.
   *
   * @example
   * ```ts
   * const log = createWriteStream("keys.log", { flags: "a" });
   * await tls.connect("example.com:443", { keyLog: (line) => log.write(`${line}\n`) });
   * ```
   */
  keyLog?: ((line: string) => void) | undefined;
  /**
   * The TLS engine: "node" (node:tls) or "native" (tlsnet's OpenSSL addon, built by
   * `npm run build:native`). Default: the TLSNET_ENGINE environment variable, else "node".
   */
  engine?: EngineName | undefined;
}

/**
 * A certificate entry after validation: PEM text, the parsed leaf, and the names it serves.
 * @inline
 */
export interface Identity {
  /** The certificate (chain), PEM. */
  readonly cert: string;
  /** Its private key, PEM, as given. */
  readonly key: string;
  /** The key's passphrase, if any. */
  readonly passphrase: string | undefined;
  /** The first certificate of `cert`, parsed. */
  readonly leaf: X509Certificate;
  /** DNS names from the SAN (or CN without SAN), lower-case; wildcards kept as "*.x". */
  readonly names: readonly string[];
}

/** The five client-auth modes (Go's), in order of strictness. */
export const CLIENT_AUTH_MODES: readonly ClientAuth[] = [
  "none",
  "request",
  "require-any",
  "verify-if-given",
  "require-and-verify",
];
const VERSION_RANK: Record<TLSVersion, number> = { "TLSv1.2": 2, "TLSv1.3": 3 };
const DEFAULT_SERVER_HANDSHAKE_TIMEOUT = 10_000;
/** Clients get a bound too: a server that accepts TCP and never answers must not hang a dial. */
const DEFAULT_CLIENT_HANDSHAKE_TIMEOUT = 30_000;
const DEFAULT_SESSION_CACHE = 100;

/**
 * A validated, frozen TLS configuration. Build it once with `tls.config()` and
 * pass it to any number of connects or listeners; contexts are built lazily,
 * once, and shared by every connection. Its fields are the options with defaults applied.
 *
 * @example
 * ```ts
 * const config = tls.config({ ca: readFileSync("ca.pem") });
 * config.minVersion; // "TLSv1.2"
 * const conn = await tls.connect("db.internal:8443", config, { timeout: 5000 });
 * ```
 */
export class TLSConfig {
  /**
   * The certificate entries, validated, in order: `certs`, then `certFile`/`keyFile`. On a
   * server, index 0 is the default for SNI; on a client, index 0 is presented for mTLS. Each
   * has the PEM `cert`, `key` and `passphrase`, the parsed `leaf` certificate, and the `names`
   * it serves (its SAN DNS names, or its CN without SAN; lower-case).
   */
  readonly identities: readonly Identity[];
  /** Whether the peer is verified (`verifyPeer`, default true). */
  readonly verifyPeer: boolean;
  /** The client's SNI and name to verify, trailing dot dropped; undefined: the dial host. */
  readonly serverName: string | undefined;
  /** Trusted roots (PEM), or undefined for Node's bundled roots. */
  readonly ca: readonly string[] | undefined;
  /** The server's client-certificate policy (default "none"). */
  readonly clientAuth: ClientAuth;
  /** Roots for client certificates (PEM, from `clientCa` and `clientCaFile`), or undefined. */
  readonly clientCa: readonly string[] | undefined;
  /** The extra post-handshake check, if any. */
  readonly verifyConnection: TLSOptions["verifyConnection"];
  /** ALPN protocols in preference order (a frozen copy), or undefined for no ALPN. */
  readonly alpnProtocols: readonly string[] | undefined;
  /** The lowest version negotiated (default "TLSv1.2"). */
  readonly minVersion: TLSVersion;
  /** The highest version negotiated (default "TLSv1.3"). */
  readonly maxVersion: TLSVersion;
  /** The `ciphers` option as given, or undefined for tlsnet's default list. */
  readonly ciphers: string | undefined;
  /** Server handshake timeout in ms (0 = none). */
  readonly handshakeTimeout: number;
  /** Client handshake timeout in ms: `handshakeTimeout` when given, else 30_000 (0 = none). */
  readonly clientHandshakeTimeout: number;
  /** Client session cache size (0 = off). */
  readonly sessionCacheSize: number;
  /** Ticket keys (copies), first = the one that encrypts (node:tls: the only one in force); undefined for random ones. */
  readonly ticketKeys: readonly Buffer[] | undefined;
  /** The key log callback, if any. */
  readonly keyLog: TLSOptions["keyLog"];
  /** The engine that runs this config's handshakes and records. */
  readonly engine: EngineName;

  /** Contexts built on first use; a holder object because the config itself is frozen. */
  private readonly contexts: { client?: SecureContext; server?: SecureContext[] } = {};

  /**
   * Use `tls.config(opts)`: the same validation, and it passes a TLSConfig through.
   * Throws {@link ConfigError} naming the field for any invalid option.
   */
  constructor(opts: TLSOptions) {
    if (typeof opts !== "object" || opts === null) {
      throw new ConfigError("TLS options must be an object", { field: "options" });
    }
    this.identities = Object.freeze(readIdentities(opts));
    this.verifyPeer = optBool(opts.verifyPeer, "verifyPeer", true);
    this.serverName = checkServerName(opts.serverName);
    this.ca = readPemList(opts.ca, opts.caFile, "ca", "caFile");
    this.clientAuth = opts.clientAuth ?? "none";
    if (!CLIENT_AUTH_MODES.includes(this.clientAuth)) {
      throw new ConfigError(
        `clientAuth must be one of ${CLIENT_AUTH_MODES.join(", ")}; got ${JSON.stringify(opts.clientAuth)}`,
        { field: "clientAuth" },
      );
    }
    this.clientCa = readPemList(opts.clientCa, opts.clientCaFile, "clientCa", "clientCaFile");
    if (
      (this.clientAuth === "verify-if-given" || this.clientAuth === "require-and-verify") &&
      this.clientCa === undefined
    ) {
      throw new ConfigError(
        `clientAuth "${this.clientAuth}" verifies client certificates and needs clientCa or clientCaFile`,
        { field: "clientCa" },
      );
    }
    this.verifyConnection = optFunction(opts.verifyConnection, "verifyConnection");
    this.keyLog = optFunction(opts.keyLog, "keyLog");
    this.alpnProtocols = checkAlpn(opts.alpnProtocols);
    this.minVersion = checkVersion(opts.minVersion, "minVersion", "TLSv1.2");
    this.maxVersion = checkVersion(opts.maxVersion, "maxVersion", "TLSv1.3");
    if (VERSION_RANK[this.minVersion] > VERSION_RANK[this.maxVersion]) {
      throw new ConfigError(
        `minVersion ${this.minVersion} is above maxVersion ${this.maxVersion}`,
        { field: "minVersion" },
      );
    }
    if (opts.ciphers !== undefined && (typeof opts.ciphers !== "string" || opts.ciphers === "")) {
      throw new ConfigError("ciphers must be a non-empty OpenSSL cipher list string", {
        field: "ciphers",
      });
    }
    this.ciphers = opts.ciphers;
    if (opts.handshakeTimeout !== undefined) {
      fieldCheck("handshakeTimeout", () => checkTimeout(opts.handshakeTimeout, "handshakeTimeout"));
    }
    this.handshakeTimeout = opts.handshakeTimeout ?? DEFAULT_SERVER_HANDSHAKE_TIMEOUT;
    this.clientHandshakeTimeout = opts.handshakeTimeout ?? DEFAULT_CLIENT_HANDSHAKE_TIMEOUT;
    this.sessionCacheSize = checkSessionCache(opts.sessionCache);
    this.ticketKeys = checkTicketKeys(opts.ticketKeys);
    if (this.ciphers !== undefined) {
      // Let OpenSSL judge the cipher string now, not at the first handshake.
      fieldCheck("ciphers", () => createSecureContext({ ciphers: cipherList(this.ciphers) }));
    }
    this.sessionScope = this.scope();
    this.engine = resolveEngine(opts.engine);
    Object.freeze(this);
  }

  /**
   * Identifies what a resumed session may be trusted under: configs that verify
   * the same way and present the same identity share client sessions.
   * @internal
   */
  readonly sessionScope: string;

  private scope(): string {
    const h = createHash("sha256");
    const parts = [
      String(this.verifyPeer),
      this.serverName ?? "",
      ...(this.ca ?? ["<bundled roots>"]),
      this.identities[0]?.cert ?? "",
      ...(this.alpnProtocols ?? []),
      this.minVersion,
      this.maxVersion,
      this.ciphers ?? "",
    ];
    for (const p of parts) h.update(p).update("\0");
    return h.digest("hex");
  }

  /**
   * The client's context (trust roots, our certificate for mTLS, versions), built once.
   * @internal
   */
  clientContext(): SecureContext {
    if (!this.contexts.client) {
      const id = this.identities[0];
      this.contexts.client = createSecureContext({
        ...this.baseContextOptions(),
        ...(this.ca ? { ca: [...this.ca] } : {}),
        ...(id ? identityOptions(id) : {}),
      });
    }
    return this.contexts.client;
  }

  /**
   * One server context per identity, in order; index 0 is the default. Built once.
   * @internal
   */
  serverContexts(): SecureContext[] {
    if (!this.contexts.server) {
      if (this.identities.length === 0) {
        throw new ConfigError("a TLS server needs a certificate: set certs or certFile/keyFile", {
          field: "certs",
        });
      }
      this.contexts.server = this.identities.map((id) => {
        const base = this.baseContextOptions();
        const ctx = createSecureContext({
          ...base,
          // Our order (forward secrecy and AEAD first) wins over the client's.
          secureOptions: (base.secureOptions ?? 0) | constants.SSL_OP_CIPHER_SERVER_PREFERENCE,
          ...identityOptions(id),
          ...(this.clientCa ? { ca: [...this.clientCa] } : {}),
          // Documented createSecureContext options, not SecureContext internals: Bun and Deno
          // implement the options but not `ctx.context`. One key per context: the first,
          // which encrypts (and decrypts); node:tls has no slot for more.
          ...(this.ticketKeys ? { ticketKeys: this.ticketKeys[0] } : {}),
          // OpenSSL refuses to resume sessions of verified clients without a session id context.
          sessionIdContext: this.sessionScope.slice(0, 32),
        });
        return ctx;
      });
    }
    return this.contexts.server;
  }

  private baseContextOptions(): SecureContextOptions {
    return {
      minVersion: this.minVersion,
      maxVersion: this.maxVersion,
      ciphers: cipherList(this.ciphers),
      // Renegotiation is a DoS lever and a source of past CVEs; TLS 1.3 has none.
      secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
    };
  }
}

/** The TLS options out of an object that mixes them with dial or listen options. */
export function tlsOptionsOf(opts: object, otherKeys: ReadonlySet<string>): TLSOptions {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(opts)) if (!otherKeys.has(k)) out[k] = v;
  return out as TLSOptions;
}

/** Validate and freeze TLS options into a reusable TLSConfig. Throws ConfigError. */
export function config(opts: TLSOptions | TLSConfig): TLSConfig {
  return opts instanceof TLSConfig ? opts : new TLSConfig(opts);
}

/**
 * TLS 1.2 suites by default: ECDHE key exchange with AEAD ciphers only (Mozilla's
 * "intermediate" profile without DHE), so every suite has forward secrecy and no CBC.
 */
const DEFAULT_TLS12_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

/** Node's TLS 1.3 suites: a cipher string without any TLS_ names would disable TLS 1.3. */
const TLS13_CIPHERS = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";

/** The full OpenSSL cipher string for a `ciphers` option (TLS 1.2 names, TLS 1.3 kept). */
export function cipherList(ciphers: string | undefined): string {
  const tls12 = ciphers ?? DEFAULT_TLS12_CIPHERS;
  return /(^|:)TLS_/.test(tls12) ? tls12 : `${TLS13_CIPHERS}:${tls12}`;
}

function identityOptions(id: Identity): SecureContextOptions {
  return { cert: id.cert, key: id.key, ...(id.passphrase ? { passphrase: id.passphrase } : {}) };
}

function fieldCheck(field: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`invalid ${field}: ${asError(err).message}`, { field, cause: err });
  }
}

function optBool(v: unknown, field: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== "boolean") {
    throw new ConfigError(`${field} must be true or false, got ${typeof v}`, { field });
  }
  return v;
}

function optFunction<T>(v: T, field: string): T {
  if (v !== undefined && typeof v !== "function") {
    throw new ConfigError(`${field} must be a function`, { field });
  }
  return v;
}

function checkServerName(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v === "") {
    throw new ConfigError("serverName must be a non-empty string", { field: "serverName" });
  }
  return v.replace(/\.$/, "");
}

function checkVersion(v: unknown, field: string, dflt: TLSVersion): TLSVersion {
  if (v === undefined) return dflt;
  if (v === "TLSv1.2" || v === "TLSv1.3") return v;
  const old = v === "TLSv1" || v === "TLSv1.1" || v === "SSLv3";
  throw new ConfigError(
    old
      ? `${field} ${v} is insecure and not supported; use "TLSv1.2" or "TLSv1.3"`
      : `${field} must be "TLSv1.2" or "TLSv1.3", got ${JSON.stringify(v)}`,
    { field },
  );
}

function checkAlpn(v: unknown): readonly string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) {
    throw new ConfigError('alpnProtocols must be an array like ["h2", "http/1.1"]', {
      field: "alpnProtocols",
    });
  }
  v.forEach((p, i) => {
    const len = typeof p === "string" ? Buffer.byteLength(p) : 0;
    if (typeof p !== "string" || len === 0 || len > 255) {
      throw new ConfigError(
        `alpnProtocols[${i}] must be a protocol name of 1..255 bytes, got ${JSON.stringify(p)}`,
        { field: `alpnProtocols[${i}]` },
      );
    }
  });
  return Object.freeze([...v]);
}

/** One 48-byte key or a non-empty list of them; each copied, the list frozen. */
function checkTicketKeys(v: unknown): readonly Buffer[] | undefined {
  if (v === undefined) return undefined;
  const list = Array.isArray(v) ? v : [v];
  if (list.length === 0) {
    throw new ConfigError("ticketKeys must hold at least one 48-byte key", { field: "ticketKeys" });
  }
  return Object.freeze(
    list.map((k: unknown, i) => {
      if (!Buffer.isBuffer(k) || k.length !== 48) {
        const field = Array.isArray(v) ? `ticketKeys[${i}]` : "ticketKeys";
        const got = Buffer.isBuffer(k) ? `${k.length} bytes` : typeof k;
        throw new ConfigError(
          `${field} must be a Buffer of exactly 48 bytes (crypto.randomBytes(48)), got ${got}`,
          { field },
        );
      }
      return Buffer.from(k);
    }),
  );
}

function checkSessionCache(v: unknown): number {
  if (v === undefined || v === true) return DEFAULT_SESSION_CACHE;
  if (v === false) return 0;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new ConfigError(`sessionCache must be a boolean or a size >= 0, got ${String(v)}`, {
      field: "sessionCache",
    });
  }
  return v;
}

/** Read a file for an option; ConfigError naming the option and the path. */
function readOptionFile(path: unknown, field: string): string {
  if (typeof path !== "string" || path === "") {
    throw new ConfigError(`${field} must be a file path`, { field });
  }
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    const why = errorCode(err) === "ENOENT" ? "no such file" : asError(err).message;
    throw new ConfigError(`${field}: cannot read ${path}: ${why}`, { field, cause: err });
  }
}

/** `name` is what the message shows ("caFile (/etc/ca.pem)"); `field` the option ("caFile"). */
function pemText(v: unknown, name: string, field = name): string {
  const text = Buffer.isBuffer(v) ? v.toString("utf8") : v;
  if (typeof text !== "string" || !/-----BEGIN [A-Z0-9 ]+-----/.test(text)) {
    throw new ConfigError(`${name} is not PEM (expected "-----BEGIN ...-----")`, { field });
  }
  return text;
}

/** CA bundles from an inline option and/or a file or OpenSSL hashed directory. */
function readPemList(
  inline: unknown,
  file: unknown,
  field: string,
  fileField: string,
): readonly string[] | undefined {
  if (inline === undefined && file === undefined) return undefined;
  const out: string[] = [];
  if (inline !== undefined) {
    const list = Array.isArray(inline) ? inline : [inline];
    list.forEach((item, i) => {
      const name = Array.isArray(inline) ? `${field}[${i}]` : field;
      const pem = pemText(item, name);
      checkCertificates(pem, name);
      out.push(pem);
    });
  }
  if (file !== undefined) {
    if (typeof file !== "string") {
      throw new ConfigError(`${fileField} must be a path`, { field: fileField });
    }
    let isDir = false;
    try {
      isDir = statSync(file).isDirectory();
    } catch {
      // readOptionFile reports the error below.
    }
    const paths = isDir
      ? readdirSync(file)
          .filter((n) => /^[0-9a-f]{8}\.\d+$|\.(pem|crt)$/i.test(n))
          .sort()
          .map((n) => join(file, n))
      : [file];
    for (const p of paths) {
      const pem = pemText(readOptionFile(p, fileField), `${fileField} (${p})`, fileField);
      checkCertificates(pem, `${fileField} (${p})`, fileField);
      out.push(pem);
    }
    if (out.length === 0) {
      throw new ConfigError(`${fileField}: no certificates found in ${file}`, { field: fileField });
    }
  }
  return Object.freeze(out);
}

function checkCertificates(pem: string, name: string, field = name): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) throw new ConfigError(`${name} holds no certificate`, { field });
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new ConfigError(`${name}: certificate #${i + 1} cannot be parsed`, {
        field,
        cause: err,
      });
    }
  });
}

function readIdentities(opts: TLSOptions): Identity[] {
  const entries: Array<{ cert: unknown; key: unknown; passphrase?: unknown; field: string }> = [];
  if (opts.certs !== undefined) {
    if (!Array.isArray(opts.certs)) {
      throw new ConfigError("certs must be an array of { cert, key }", { field: "certs" });
    }
    opts.certs.forEach((e, i) => {
      if (typeof e !== "object" || e === null) {
        throw new ConfigError(`certs[${i}] must be { cert, key }`, { field: `certs[${i}]` });
      }
      entries.push({ cert: e.cert, key: e.key, passphrase: e.passphrase, field: `certs[${i}]` });
    });
  }
  if (opts.certFile !== undefined || opts.keyFile !== undefined) {
    if (opts.certFile === undefined) {
      throw new ConfigError("keyFile is set but certFile is missing", { field: "certFile" });
    }
    if (opts.keyFile === undefined) {
      throw new ConfigError("certFile is set but keyFile is missing", { field: "keyFile" });
    }
    entries.push({
      cert: readOptionFile(opts.certFile, "certFile"),
      key: readOptionFile(opts.keyFile, "keyFile"),
      field: "certFile/keyFile",
    });
  }
  return entries.map(toIdentity);
}

function toIdentity(e: {
  cert: unknown;
  key: unknown;
  passphrase?: unknown;
  field: string;
}): Identity {
  if (e.cert === undefined) {
    throw new ConfigError(`${e.field}: key given without cert`, { field: `${e.field}.cert` });
  }
  if (e.key === undefined) {
    throw new ConfigError(`${e.field}: cert given without key`, { field: `${e.field}.key` });
  }
  const cert = pemText(e.cert, `${e.field}.cert`);
  const keyPem = pemText(e.key, `${e.field}.key`);
  if (e.passphrase !== undefined && typeof e.passphrase !== "string") {
    throw new ConfigError(`${e.field}.passphrase must be a string`, {
      field: `${e.field}.passphrase`,
    });
  }
  const passphrase = e.passphrase as string | undefined;
  const leaf = checkCertificates(cert, `${e.field}.cert`)[0]!;
  let key: KeyObject;
  try {
    key = createPrivateKey(
      passphrase === undefined ? keyPem : { key: keyPem, passphrase, format: "pem" },
    );
  } catch (err) {
    throw new ConfigError(
      `${e.field}.key cannot be loaded (${asError(err).message}); is it an unencrypted PEM key, or is the passphrase right?`,
      { field: `${e.field}.key`, cause: err },
    );
  }
  if (!leaf.checkPrivateKey(key)) {
    throw new ConfigError(
      `${e.field}: the key does not match the certificate (${leaf.subject.replace(/\n/g, ", ")})`,
      { field: `${e.field}.key` },
    );
  }
  return Object.freeze({ cert, key: keyPem, passphrase, leaf, names: namesOf(leaf) });
}

/** DNS names a certificate serves: its SAN DNS entries, or its CN when it has no SAN. */
function namesOf(cert: X509Certificate): string[] {
  const san = cert.subjectAltName;
  if (san) {
    return splitSANs(san)
      .filter((s) => s.startsWith("DNS:"))
      .map((s) => s.slice(4).toLowerCase());
  }
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
  return cn ? [cn.toLowerCase()] : [];
}
