/**
 * Every error tlsnet throws, and the one place where Node/OpenSSL errors are
 * mapped onto them. Each class has a stable `code` (match on it, not on the
 * message) and keeps the original error as `cause`.
 *
 * @example
 * ```ts
 * try { await conn.readExactly(4, { timeout: 1000 }) }
 * catch (err) { if (err instanceof DeadlineExceededError) retry() }
 * ```
 * @module
 */

import { unbracket } from "./addr.ts";

/** Per-class brands, shared across copies of the package (two versions in one process). */
const BRAND_PREFIX = "tlsnet.error.";

function brandOf(name: string): symbol {
  return Symbol.for(BRAND_PREFIX + name);
}

/**
 * Base class: `err instanceof TlsnetError` catches everything tlsnet throws.
 * `instanceof` works across two copies of the package: classes are matched by
 * brand (`Symbol.for`), not by identity, as undici does.
 *
 * Exceptions to "everything": arguments of the wrong type or range throw `TypeError` /
 * `RangeError`, and an aborted signal rejects with `signal.reason`.
 *
 * @example
 * ```ts
 * try {
 *   await tls.connect("example.com:443", { timeout: 5000 });
 * } catch (err) {
 *   if (!(err instanceof TlsnetError)) throw err;
 *   console.error(err.code, err.message, err.syscallCode); // ERR_TLSNET_DIAL, ..., ECONNREFUSED
 * }
 * ```
 */
export class TlsnetError extends Error {
  /** Stable machine-readable code, always `ERR_TLSNET_*`. Match on it, not on the message. */
  readonly code: string = "ERR_TLSNET";
  /** The class name, a fixed literal per class ("TlsnetError", "ConfigError"...). */
  override readonly name: string = "TlsnetError";
  /** The Node/OS error code behind this error (`ECONNRESET`, `ETIMEDOUT`...), when there was one. */
  readonly syscallCode: string | undefined;

  /**
   * tlsnet creates its errors; the constructors are public so that code wrapping tlsnet
   * (a proxy, a test double) can create the same errors. `options.cause` is kept as `cause`
   * and its Node/OS code becomes {@link TlsnetError.syscallCode}.
   */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    const cause = options?.cause;
    const code = cause instanceof TlsnetError ? cause.syscallCode : errorCode(cause);
    this.syscallCode = code?.startsWith("ERR_TLSNET") ? undefined : code;
  }

  /**
   * Brand check behind `instanceof`: true for an error of this class or a subclass, also
   * when it comes from another copy of the package in the same process.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (typeof value !== "object" || value === null) return false;
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class asked about, a subclass too
    const brand = (this as unknown as { brand?: string }).brand;
    return brand !== undefined && (value as Record<symbol, unknown>)[brandOf(brand)] === true;
  }
}

/** Give a class its brand: instances of it and of its subclasses carry it. */
function branded(cls: { prototype: object }, name: string): void {
  Object.defineProperty(cls, "brand", { value: name });
  Object.defineProperty(cls.prototype, brandOf(name), { value: true });
}
branded(TlsnetError, "TlsnetError");

/**
 * Invalid options, reported before any I/O. The message names the field. Code
 * `ERR_TLSNET_CONFIG`.
 *
 * @example
 * ```ts
 * try {
 *   tls.config({ certFile: "server.pem" });
 * } catch (err) {
 *   // err.field: "keyFile"; err.message: "certFile is set but keyFile is missing"
 *   if (err instanceof ConfigError) console.error(err.field, err.message);
 * }
 * ```
 */
export class ConfigError extends TlsnetError {
  /** `"ERR_TLSNET_CONFIG"`. */
  override readonly code = "ERR_TLSNET_CONFIG";
  /** `"ConfigError"`. */
  override readonly name = "ConfigError";
  /** The option at fault, e.g. `"certs[0].key"`, when one can be named. */
  readonly field: string | undefined;
  /** See {@link TlsnetError}'s constructor; `options.field` becomes {@link ConfigError.field}. */
  constructor(message: string, options?: { field?: string; cause?: unknown }) {
    super(message, options);
    this.field = options?.field;
  }
}
branded(ConfigError, "ConfigError");

/**
 * Name resolution or every connect attempt failed. `errors` holds each attempt's error
 * (`AggregateError` style), `cause` the first of them. Code `ERR_TLSNET_DIAL`; the OS code
 * (`ECONNREFUSED`, `ENOTFOUND`...) is in {@link TlsnetError.syscallCode}.
 */
export class DialError extends TlsnetError {
  /** `"ERR_TLSNET_DIAL"`. */
  override readonly code = "ERR_TLSNET_DIAL";
  /** `"DialError"`. */
  override readonly name = "DialError";
  /** The host that was dialed, as given (a name or an IP literal, without brackets). */
  readonly host: string;
  /** The port that was dialed. */
  readonly port: number;
  /** One error per attempt (address tried), in the order they failed. */
  readonly errors: readonly Error[];
  /** See {@link TlsnetError}'s constructor; `cause` defaults to the first of `errors`. */
  constructor(
    message: string,
    options: { host: string; port: number; errors?: readonly Error[]; cause?: unknown },
  ) {
    super(message, { cause: options.cause ?? options.errors?.[0] });
    this.host = options.host;
    this.port = options.port;
    this.errors = options.errors ?? [];
  }
}
branded(DialError, "DialError");

/**
 * Binding a listener failed (address in use, permission denied...): `tcp.listen` and
 * `tls.listen` reject with it. Code `ERR_TLSNET_LISTEN`; the OS code (`EADDRINUSE`,
 * `EACCES`...) is in {@link TlsnetError.syscallCode}.
 */
export class ListenError extends TlsnetError {
  /** `"ERR_TLSNET_LISTEN"`. */
  override readonly code = "ERR_TLSNET_LISTEN";
  /** `"ListenError"`. */
  override readonly name = "ListenError";
  /** The address that could not be bound, e.g. `"127.0.0.1:8443"` or `":443"`. */
  readonly address: string;
  /** See {@link TlsnetError}'s constructor. */
  constructor(message: string, options: { address: string; cause?: unknown }) {
    super(message, options);
    this.address = options.address;
  }
}
branded(ListenError, "ListenError");

/**
 * A TLS handshake, read, write or close failed. `reason` is OpenSSL's code
 * (`ERR_SSL_...`), or one of tlsnet's own: `ECONNRESET` (the peer closed or reset
 * during the handshake), `VERIFY_CONNECTION` (the verifyConnection hook threw),
 * `PEER_DID_NOT_RETURN_A_CERTIFICATE`, `STARTTLS_INJECTION`. Code `ERR_TLSNET_TLS`; the
 * subclasses {@link CertificateError} and {@link StartTLSInjectionError} have codes of their own.
 */
export class TLSError extends TlsnetError {
  /** `"ERR_TLSNET_TLS"` (subclasses: their own code). */
  override readonly code: string = "ERR_TLSNET_TLS";
  /** `"TLSError"` (subclasses: their own name). */
  override readonly name: string = "TLSError";
  /**
   * Why, as a closed set of codes: OpenSSL's code as Node reports it (`ERR_SSL_*`, with
   * OpenSSL 3.2+'s `ERR_SSL_SSL/TLS_ALERT_*` spelled as the stable `ERR_SSL_SSLV3_ALERT_*`),
   * a Node TLS code (`ERR_TLS_*`), `EPROTO`, or one of tlsnet's own: `ECONNRESET`,
   * `VERIFY_CONNECTION`, `PEER_DID_NOT_RETURN_A_CERTIFICATE`, `STARTTLS_INJECTION`.
   * Undefined when there is no code.
   */
  readonly reason: string | undefined;
  /** See {@link TlsnetError}'s constructor; `options.reason` becomes {@link TLSError.reason}. */
  constructor(message: string, options?: { reason?: string | undefined; cause?: unknown }) {
    super(message, options);
    this.reason = options?.reason;
  }
}
branded(TLSError, "TLSError");

/**
 * The peer's certificate failed verification: `reason` says why, `host` and `subject` say
 * whose. Code `ERR_TLSNET_CERT`. The message says what to do, and depends on the side that
 * verified (a server names `clientCa`/`clientCaFile`).
 *
 * @example
 * ```ts
 * try {
 *   await tls.connect("localhost:8443", { ca: caPem });
 * } catch (err) {
 *   if (err instanceof CertificateError && err.reason === "CERT_HAS_EXPIRED") alert(err.subject);
 *   throw err;
 * }
 * ```
 */
export class CertificateError extends TLSError {
  /** `"ERR_TLSNET_CERT"`. */
  override readonly code = "ERR_TLSNET_CERT";
  /** `"CertificateError"`. */
  override readonly name = "CertificateError";
  /**
   * Whose certificate: on a client, the name that was verified (serverName or the dial host);
   * on a server verifying a client certificate, the client's address.
   */
  readonly host: string | undefined;
  /** The subject of the peer's leaf certificate, RFC 4514 order ("CN=example.com, O=..."). */
  readonly subject: string | undefined;
  /** See {@link TlsnetError}'s constructor. */
  constructor(
    message: string,
    options: {
      reason?: string | undefined;
      host?: string | undefined;
      subject?: string | undefined;
      cause?: unknown;
    },
  ) {
    super(message, { reason: options.reason, cause: options.cause });
    this.host = options.host;
    this.subject = options.subject;
  }
}
branded(CertificateError, "CertificateError");

/**
 * STARTTLS response injection: plaintext bytes arrived after the server's go-ahead
 * and before our ClientHello. They cannot be trusted, so the upgrade is refused.
 */
export class StartTLSInjectionError extends TLSError {
  /** `"ERR_TLSNET_STARTTLS_INJECTION"`. */
  override readonly code = "ERR_TLSNET_STARTTLS_INJECTION";
  /** `"StartTLSInjectionError"`. */
  override readonly name = "StartTLSInjectionError";
  /** How many plaintext bytes were waiting. */
  readonly bytes: number;
  /** See {@link TlsnetError}'s constructor; the reason is always `STARTTLS_INJECTION`. */
  constructor(message: string, options: { bytes: number }) {
    super(message, { reason: "STARTTLS_INJECTION" });
    this.bytes = options.bytes;
  }
}
branded(StartTLSInjectionError, "StartTLSInjectionError");

/**
 * A TLS handshake did not finish within `handshakeTimeout` (or the handshake call's timeout);
 * the socket is destroyed. Code `ERR_TLSNET_HANDSHAKE_TIMEOUT`.
 */
export class HandshakeTimeoutError extends TlsnetError {
  /** `"ERR_TLSNET_HANDSHAKE_TIMEOUT"`. */
  override readonly code = "ERR_TLSNET_HANDSHAKE_TIMEOUT";
  /** `"HandshakeTimeoutError"`. */
  override readonly name = "HandshakeTimeoutError";
  /** The bound that elapsed, in milliseconds. */
  readonly timeout: number;
  /** See {@link TlsnetError}'s constructor. */
  constructor(message: string, options: { timeout: number; cause?: unknown }) {
    super(message, options);
    this.timeout = options.timeout;
  }
}
branded(HandshakeTimeoutError, "HandshakeTimeoutError");

/** Which operation a deadline or per-call timeout cut short. */
export type DeadlineOp = "read" | "write" | "accept" | "connect";

/**
 * A deadline or per-call timeout elapsed; `op` names the operation. Code
 * `ERR_TLSNET_DEADLINE`. A read that timed out consumed nothing and the conn stays readable;
 * a write that timed out after handing bytes over leaves writing broken for good.
 *
 * @example
 * ```ts
 * const line = await conn.readLine({ timeout: 1000 }).catch((err) => {
 *   if (err instanceof DeadlineExceededError) return undefined; // nothing yet; try again later
 *   throw err;
 * });
 * ```
 */
export class DeadlineExceededError extends TlsnetError {
  /** `"ERR_TLSNET_DEADLINE"`. */
  override readonly code = "ERR_TLSNET_DEADLINE";
  /** `"DeadlineExceededError"`. */
  override readonly name = "DeadlineExceededError";
  /** The operation cut short: "read", "write", "accept" or "connect" (a dial and its handshake). */
  readonly op: DeadlineOp;
  /** See {@link TlsnetError}'s constructor; the message defaults to "`op` deadline exceeded". */
  constructor(op: DeadlineOp, message?: string, options?: { cause?: unknown }) {
    super(message ?? `${op} deadline exceeded`, options);
    this.op = op;
  }
}
branded(DeadlineExceededError, "DeadlineExceededError");

/**
 * The peer ended the stream before the bytes asked for arrived. Code
 * `ERR_TLSNET_UNEXPECTED_EOF`. The bytes that did arrive stay buffered: `partial` says how many.
 *
 * @example
 * ```ts
 * const len = await conn.readUint32BE().catch((err) => {
 *   if (err instanceof UnexpectedEOFError && err.partial === 0) return null; // EOF between frames
 *   throw err;
 * });
 * ```
 */
export class UnexpectedEOFError extends TlsnetError {
  /** `"ERR_TLSNET_UNEXPECTED_EOF"`. */
  override readonly code = "ERR_TLSNET_UNEXPECTED_EOF";
  /** `"UnexpectedEOFError"`. */
  override readonly name = "UnexpectedEOFError";
  /** How many bytes were buffered (and left unconsumed) when EOF came. */
  readonly partial: number;
  /** See {@link TlsnetError}'s constructor. */
  constructor(message: string, options: { partial: number }) {
    super(message);
    this.partial = options.partial;
  }
}
branded(UnexpectedEOFError, "UnexpectedEOFError");

/**
 * A read would have buffered more than its `maxBytes`; nothing was consumed. Code
 * `ERR_TLSNET_LIMIT`.
 */
export class LimitExceededError extends TlsnetError {
  /** `"ERR_TLSNET_LIMIT"`. */
  override readonly code = "ERR_TLSNET_LIMIT";
  /** `"LimitExceededError"`. */
  override readonly name = "LimitExceededError";
  /** The `maxBytes` that was exceeded. */
  readonly limit: number;
  /** See {@link TlsnetError}'s constructor. */
  constructor(message: string, options: { limit: number }) {
    super(message);
    this.limit = options.limit;
  }
}
branded(LimitExceededError, "LimitExceededError");

/**
 * The conn or listener is closed, or was closed while this operation was pending (also: a
 * conn upgraded with STARTTLS or handed over with `toSocket()`). Code `ERR_TLSNET_CLOSED`.
 */
export class ClosedError extends TlsnetError {
  /** `"ERR_TLSNET_CLOSED"`. */
  override readonly code = "ERR_TLSNET_CLOSED";
  /** `"ClosedError"`. */
  override readonly name = "ClosedError";
  /** See {@link TlsnetError}'s constructor; the message defaults to "connection is closed". */
  constructor(message = "connection is closed", options?: { cause?: unknown }) {
    super(message, options);
  }
}
branded(ClosedError, "ClosedError");

/**
 * The connection broke under us: the peer reset it (ECONNRESET), it broke under
 * a write (EPIPE), or the network dropped it (ETIMEDOUT from keep-alive,
 * EHOSTUNREACH, ENETDOWN...). `syscallCode` holds the OS code. Code `ERR_TLSNET_RESET`.
 * Bytes that arrived before the break stay readable by reads they satisfy.
 */
export class ConnectionResetError extends TlsnetError {
  /** `"ERR_TLSNET_RESET"`. */
  override readonly code = "ERR_TLSNET_RESET";
  /** `"ConnectionResetError"`. */
  override readonly name = "ConnectionResetError";
  /** See {@link TlsnetError}'s constructor. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
branded(ConnectionResetError, "ConnectionResetError");

/**
 * An operation that the conn's current state does not allow: upgrading (STARTTLS) or
 * `toSocket()` with a read, write or closeWrite pending, or `toSocket()` before a TLS
 * handshake. Code `ERR_TLSNET_STATE`.
 */
export class StateError extends TlsnetError {
  /** `"ERR_TLSNET_STATE"`. */
  override readonly code = "ERR_TLSNET_STATE";
  /** `"StateError"`. */
  override readonly name = "StateError";
}
branded(StateError, "StateError");

/** What was wrong with a PROXY protocol header; see {@link ProxyProtocolError}. */
export type ProxyProtocolReason =
  | "malformed"
  | "oversized"
  | "truncated"
  | "timeout"
  | "untrusted"
  | "missing";

/**
 * A PROXY protocol header (HAProxy's v1 text or v2 binary) was malformed,
 * oversized, truncated, too slow, missing, or sent by a peer outside
 * `proxyProtocol.trusted`. The connection is closed; `reason` says which.
 */
export class ProxyProtocolError extends TlsnetError {
  override readonly code = "ERR_TLSNET_PROXY_PROTOCOL";
  override readonly name = "ProxyProtocolError";
  /** What was wrong with the header: malformed, oversized, truncated, timeout, missing or untrusted. */
  readonly reason: ProxyProtocolReason;
  /** Built by the listener and the parser; `reason` is one of the closed set above. */
  constructor(message: string, options: { reason: ProxyProtocolReason; cause?: unknown }) {
    super(message, options);
    this.reason = options.reason;
  }
}
branded(ProxyProtocolError, "ProxyProtocolError");

/** Where an error happened, for messages: "connect to 127.0.0.1:8443", "read from [::1]:443". */
export interface ErrorContext {
  op: DeadlineOp | "close" | "handshake";
  /** Printable peer address or host, e.g. `"example.com:443"`. */
  peer?: string | undefined;
  /** Our side of a TLS connection, where the meaning of an alert depends on it. */
  role?: "client" | "server" | undefined;
}

/** What a Node system error code means to a person, and what to do about it. */
const SYSTEM_HINTS: Record<string, string> = {
  ECONNREFUSED: "connection refused: nothing is listening there; check the host and port",
  ECONNRESET: "connection reset by peer",
  EPIPE: "broken pipe: the peer closed the connection",
  ETIMEDOUT: "timed out: the host did not answer; check the address and any firewall",
  EHOSTUNREACH: "host unreachable: check the address and the route to it",
  ENETUNREACH: "network unreachable: check the address family and routing",
  ENOTFOUND: "host name not found: check the spelling or DNS",
  EAI_AGAIN: "temporary DNS failure: retry, or check the resolver",
  EADDRINUSE: "address already in use: pick another port or stop the other process",
  EADDRNOTAVAIL: "address not available on this machine: check localAddress / the bind address",
  EACCES: "permission denied: ports below 1024 need privileges",
};

/** The `code` property of a Node error, if any. */
export function errorCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === "string" ? code : undefined;
  }
  return undefined;
}

/** A person-readable description of a Node system error code, or undefined. */
export function describeSystemError(err: unknown): string | undefined {
  const code = errorCode(err);
  return code === undefined ? undefined : SYSTEM_HINTS[code];
}

/**
 * Map any error from node:net / node:tls / node:dns onto tlsnet's classes.
 * tlsnet errors pass through untouched, so it is safe to call twice.
 */
export function mapError(err: unknown, ctx: ErrorContext): TlsnetError {
  if (err instanceof TlsnetError) return err;
  const code = errorCode(err);
  const where = ctx.peer ? `${ctx.op} ${preposition(ctx.op)} ${ctx.peer}` : ctx.op;
  const detail = describeSystemError(err) ?? (err instanceof Error ? err.message : String(err));
  if (code === "ERR_STREAM_DESTROYED" || code === "ERR_STREAM_WRITE_AFTER_END") {
    return new ClosedError(`${where} failed: the connection is already closed`, { cause: err });
  }
  if (ctx.op === "connect") {
    const [host, port] = splitPeer(ctx.peer);
    return new DialError(`${where} failed: ${detail}`, { host, port, errors: [asError(err)] });
  }
  if (code?.startsWith("ERR_SSL_") || code?.startsWith("ERR_TLS_") || code === "EPROTO") {
    return new TLSError(`${where} failed: ${detail}`, { reason: code, cause: err });
  }
  // Everything else on an open connection (ECONNRESET, EPIPE, ETIMEDOUT from keep-alive,
  // EHOSTUNREACH, ENETDOWN...) means the same to the caller: the connection is gone.
  return new ConnectionResetError(`${where} failed: ${detail}`, { cause: err });
}

function preposition(op: ErrorContext["op"]): string {
  return op === "read" ? "from" : op === "write" ? "to" : op === "accept" ? "on" : "to";
}

function splitPeer(peer: string | undefined): [string, number] {
  const m = peer ? /^(.*):(\d+)$/.exec(peer) : null;
  return m ? [unbracket(m[1]!), Number(m[2])] : [peer ?? "", 0];
}

/** Wrap non-Error throwables so that `errors` / `cause` always hold Errors. */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** OpenSSL/Node TLS error codes and what they mean to a person. */
const TLS_HINTS: Record<string, string> = {
  ERR_SSL_WRONG_VERSION_NUMBER:
    "the peer does not speak TLS here (plaintext service, or a TLS version it refuses); check the port",
  ERR_SSL_PACKET_LENGTH_TOO_LONG: "the peer does not speak TLS here (plaintext?); check the port",
  ERR_SSL_HTTP_REQUEST: "the client sent a plain HTTP request to a TLS port; use https://",
  ERR_SSL_UNSUPPORTED_PROTOCOL:
    "no TLS version in common (tlsnet speaks TLS 1.2 and 1.3); the peer is too old or misconfigured",
  ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION:
    "the peer refused our TLS version range; check minVersion/maxVersion on both sides",
  ERR_SSL_NO_PROTOCOLS_AVAILABLE: "no TLS version enabled; check minVersion/maxVersion",
  ERR_SSL_NO_SHARED_CIPHER: "no cipher suite in common; check ciphers on both sides",
  ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE:
    "the peer aborted the handshake: it may require a client certificate (set certs), or share no cipher, version or signature algorithm with us",
  ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
    "the server supports none of the ALPN protocols we offered",
  ERR_SSL_NO_APPLICATION_PROTOCOL: "the client offered no ALPN protocol this server supports",
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    "the server requires a client certificate; set certs (or certFile/keyFile) on the client",
  ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE: "the client did not provide a certificate",
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED: "the peer says our certificate has expired",
  ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR: "the peer could not verify our handshake signature",
  ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC: "a TLS record failed integrity checks",
  ERR_SSL_SSLV3_ALERT_UNEXPECTED_MESSAGE: "the peer sent or received an unexpected TLS message",
  ERR_SSL_UNEXPECTED_MESSAGE: "the peer sent an unexpected TLS message",
  ERR_SSL_RECORD_LAYER_FAILURE: "malformed TLS record from the peer",
  ERR_SSL_UNEXPECTED_EOF_WHILE_READING: "the peer closed the connection without close_notify",
  ERR_TLS_CERT_ALTNAME_INVALID: "the certificate does not cover the host name",
};

/** Alerts about our own certificate: what they mean depends on which side we are. */
const PEER_REJECTED_US: Record<string, { client: string; server: string }> = {
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: {
    client: "the server does not trust the CA that signed our client certificate",
    server:
      "the client does not trust the CA that signed our certificate; give clients that CA (ca/caFile) or serve a chain they trust",
  },
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: {
    client: "the server rejected our client certificate",
    server: "the client rejected our certificate",
  },
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN: {
    client: "the server rejected our client certificate",
    server: "the client rejected our certificate (wrong name, untrusted CA, or expired?)",
  },
};

/** Certificate verification reasons (OpenSSL's X509_V_ERR names as Node reports them). */
const CERT_HINTS: Record<string, string> = {
  CERT_HAS_EXPIRED: "has expired",
  CERT_NOT_YET_VALID: "is not yet valid",
  DEPTH_ZERO_SELF_SIGNED_CERT: "is self-signed and not trusted",
  SELF_SIGNED_CERT_IN_CHAIN: "chains to a self-signed root that is not trusted",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    "is signed by an unknown authority (missing intermediate, or an untrusted CA)",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    "is signed by an unknown authority (missing intermediate, or an untrusted CA)",
  UNABLE_TO_GET_ISSUER_CERT: "is signed by an unknown authority",
  CERT_SIGNATURE_FAILURE: "has a bad signature",
  CERT_REVOKED: "has been revoked",
  INVALID_PURPOSE: "is not valid for this purpose (check its extended key usage)",
  CERT_UNTRUSTED: "is not trusted",
  CERT_REJECTED: "was rejected",
  HOSTNAME_MISMATCH: "does not match the host name",
  ERR_TLS_CERT_ALTNAME_INVALID: "does not match the host name",
};

/** What to do about a certificate failure, per reason and per side (we verify the peer's). */
function certAdvice(reason: string, role: "client" | "server"): string {
  if (reason === "CERT_HAS_EXPIRED" || reason === "CERT_NOT_YET_VALID") {
    return "renew it or fix the clock";
  }
  if (reason === "ERR_TLS_CERT_ALTNAME_INVALID" || reason === "HOSTNAME_MISMATCH") {
    return "connect with a name the certificate covers, or set serverName";
  }
  if (reason === "INVALID_PURPOSE") {
    return role === "client"
      ? "the server certificate needs the serverAuth extended key usage; reissue it for server use"
      : "the client certificate needs the clientAuth extended key usage; issue it as a client certificate (tlsnet/certs issue({ client: true }), CLI: tlsnet cert NAME --client)";
  }
  return role === "client"
    ? "pass the issuing CA in ca/caFile, or have the server send its full chain"
    : "add the client's issuing CA to clientCa/clientCaFile, and have the client send its full chain";
}

/**
 * A CertificateError for a failed verification.
 * @example certificate for 'localhost' has expired (notAfter 2020-01-31); renew it or fix the clock
 */
export function certificateError(opts: {
  reason: string;
  host: string | undefined;
  subject: string | undefined;
  validTo?: Date | undefined;
  validFrom?: Date | undefined;
  /** The certificate's subjectAltName, listed when the name does not match. */
  sans?: string | undefined;
  role: "client" | "server";
  cause?: unknown;
}): CertificateError {
  const whose = opts.role === "server" ? "client certificate" : "certificate";
  const of = opts.host ? ` for '${opts.host}'` : "";
  const subj = opts.subject ? ` (subject ${opts.subject})` : "";
  const what = CERT_HINTS[opts.reason] ?? `failed verification (${opts.reason})`;
  let when = "";
  if (opts.reason === "CERT_HAS_EXPIRED" && opts.validTo) {
    when = ` (notAfter ${opts.validTo.toISOString().slice(0, 10)})`;
  } else if (opts.reason === "CERT_NOT_YET_VALID" && opts.validFrom) {
    when = ` (notBefore ${opts.validFrom.toISOString().slice(0, 10)})`;
  } else if (
    (opts.reason === "ERR_TLS_CERT_ALTNAME_INVALID" || opts.reason === "HOSTNAME_MISMATCH") &&
    opts.sans
  ) {
    when = ` (it covers ${opts.sans})`;
  }
  return new CertificateError(
    `${whose}${of}${subj} ${what}${when}; ${certAdvice(opts.reason, opts.role)} [${opts.reason}]`,
    { reason: opts.reason, host: opts.host, subject: opts.subject, cause: opts.cause },
  );
}

/** Map an error from a TLS socket (handshake, read, write) onto tlsnet's classes. */
export function mapTLSError(err: unknown, ctx: ErrorContext): TlsnetError {
  if (err instanceof TlsnetError) return err;
  const code = stableSSLCode(errorCode(err));
  const byRole = code === undefined ? undefined : PEER_REJECTED_US[code];
  const hint = code === undefined ? undefined : (byRole?.[ctx.role ?? "client"] ?? TLS_HINTS[code]);
  const where = ctx.peer ? ` with ${ctx.peer}` : "";
  if (hint === undefined && !code?.startsWith("ERR_SSL_")) {
    if (ctx.op !== "handshake") return mapError(err, ctx);
    if (code === "ECONNRESET" || code === "EPIPE") return peerClosedDuringHandshake(ctx.peer, err);
    const detail = describeSystemError(err) ?? asError(err).message;
    return new TLSError(`TLS handshake${where} failed: ${detail}`, { reason: code, cause: err });
  }
  const phase = ctx.op === "handshake" ? "TLS handshake" : `TLS ${ctx.op}`;
  // Without a hint, OpenSSL's own reason text ("bad record mac") beats its error stack.
  const text = hint ?? (err as { reason?: string }).reason ?? code;
  return new TLSError(`${phase}${where} failed: ${text} [${code}]`, { reason: code, cause: err });
}

/**
 * The peer closed or reset the connection before the handshake finished: one
 * error for this event, whichever path noticed it (a reset, an EOF, a close).
 */
export function peerClosedDuringHandshake(peer: string | undefined, cause?: unknown): TLSError {
  const where = peer ? ` with ${peer}` : "";
  return new TLSError(
    `TLS handshake${where} failed: the peer closed the connection before it finished ` +
      "(does it speak TLS on this port? does it accept our certificate, versions and ALPN?)",
    { reason: "ECONNRESET", cause },
  );
}

/**
 * OpenSSL 3.2 renamed "sslv3 alert ..." reasons to "ssl/tls alert ...", which changes
 * Node's codes; report the older, stable spelling so `reason` means the same everywhere.
 */
function stableSSLCode(code: string | undefined): string | undefined {
  return code?.replace(/^ERR_SSL_SSL\/TLS_ALERT_/, "ERR_SSL_SSLV3_ALERT_");
}
