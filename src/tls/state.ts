/**
 * The connection state snapshot (Go's ConnectionState) and peer certificates
 * in a plain, serialisable shape.
 * @module
 */
import type { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import type { PeerCertificate as NodePeerCertificate, TLSSocket } from "node:tls";

/**
 * A certificate the peer presented, in a plain, serialisable shape (from
 * {@link TLSConn.peerCertificate} and {@link ConnectionState.peerCertificates}).
 *
 * @example
 * ```ts
 * const cert = conn.peerCertificate();
 * const days = cert ? (cert.validTo.getTime() - Date.now()) / 86_400_000 : Infinity;
 * if (days < 14) console.warn(`${cert?.subject} expires in ${Math.floor(days)} days`);
 * ```
 */
export interface PeerCertificate {
  /** RFC 4514 order, most specific first: "CN=example.com, O=Example". */
  subject: string;
  /** The issuer's name, RFC 4514 order like `subject`: "CN=Example CA, O=Example". */
  issuer: string;
  /** ["DNS:example.com", "IP Address:127.0.0.1"]; [] when the certificate has no SAN. */
  subjectAltNames: string[];
  /** Start of validity (notBefore). */
  validFrom: Date;
  /** End of validity (notAfter). */
  validTo: Date;
  /** Serial number, upper-case hex as Node reports it. */
  serialNumber: string;
  /** SHA-256 fingerprint, colon-separated hex: what to pin in `verifyConnection`. */
  fingerprint256: string;
  /** DER bytes. */
  raw: Buffer;
}

/**
 * What the handshake negotiated (Go's ConnectionState); {@link TLSConn.state} returns a
 * snapshot, {@link TLSConn.handshake} resolves to one, and `verifyConnection` receives one.
 * A resumed session reports the peer identity of the full handshake it came from.
 *
 * @example
 * ```ts
 * const s = await conn.handshake();
 * console.log(s.version, s.cipherSuite, s.alpnProtocol, s.resumed ? "resumed" : "full");
 * ```
 */
export interface ConnectionState {
  /** True once the handshake finished; a conn that never handshook reports false and nulls. */
  handshakeComplete: boolean;
  /** The negotiated protocol version, or null before the handshake. */
  version: "TLSv1.2" | "TLSv1.3" | null;
  /** IANA name, e.g. TLS_AES_128_GCM_SHA256. */
  cipherSuite: string | null;
  /** The negotiated ALPN protocol, or null (no handshake yet, or no ALPN on either side). */
  alpnProtocol: string | null;
  /** SNI sent (client) or received (server). */
  serverName: string | null;
  /** True when a session was resumed (TLS 1.3 ticket, TLS 1.2 session): no full handshake. */
  resumed: boolean;
  /** The certificates the peer presented, leaf first; [] when it presented none. */
  peerCertificates: PeerCertificate[];
  /**
   * Chain and name verified: true when the peer's chain was verified against the trusted
   * roots (on a client, its name too). False with `verifyPeer: false`, and on a server whose
   * `clientAuth` does not verify ("none", "request", "require-any", or "verify-if-given"
   * without a certificate).
   */
  verified: boolean;
}

/** The state of a conn whose handshake has not completed. */
export function emptyState(serverName: string | null): ConnectionState {
  return {
    handshakeComplete: false,
    version: null,
    cipherSuite: null,
    alpnProtocol: null,
    serverName,
    resumed: false,
    peerCertificates: [],
    verified: false,
  };
}

/** Snapshot a finished node:tls handshake. */
export function stateOf(
  socket: TLSSocket,
  serverName: string | null,
  verified: boolean,
  chain: Buffer[],
): ConnectionState {
  const alpn = socket.alpnProtocol;
  // One call for both: tlsnet negotiates only TLS 1.2 and 1.3, and a suite's version is the
  // lowest it runs on, so "TLSv1.3" means 1.3 and anything else 1.2. The socket's own
  // getProtocol() would be a second call into OpenSSL on every handshake.
  const cipher = socket.getCipher() as { standardName?: string; version?: string } | null;
  return finishedState(
    {
      version: cipher ? (cipher.version === "TLSv1.3" ? "TLSv1.3" : "TLSv1.2") : null,
      cipherSuite: cipher?.standardName ?? null,
      alpnProtocol: typeof alpn === "string" && alpn !== "" ? alpn : null,
      serverName,
      resumed: socket.isSessionReused(),
      verified,
    },
    chain,
  );
}

/**
 * The ConnectionState of a finished handshake, whichever engine ran it; the
 * chain (DER, leaf first) is parsed on first use: parsing costs about as much as
 * a third of a handshake.
 */
export function finishedState(
  fields: Omit<ConnectionState, "handshakeComplete" | "peerCertificates" | "version"> & {
    version: string | null;
  },
  chain: Buffer[],
): ConnectionState {
  const v = fields.version;
  // One literal in one shape (no spread); a plain [] when there is no chain to parse (a server
  // that asks for no client certificate): an accessor makes a slow object, so only when needed.
  const state: ConnectionState = {
    version: v === "TLSv1.2" || v === "TLSv1.3" ? v : null,
    cipherSuite: fields.cipherSuite,
    alpnProtocol: fields.alpnProtocol,
    serverName: fields.serverName,
    resumed: fields.resumed,
    verified: fields.verified,
    handshakeComplete: true,
    peerCertificates: [],
  };
  if (chain.length === 0) return state;
  let parsed: PeerCertificate[] | undefined;
  Object.defineProperty(state, "peerCertificates", {
    enumerable: true,
    get: () => (parsed ??= chain.map((der) => toPeerCertificate(new X509Certificate(der)))),
  });
  return state;
}

/**
 * The DER of the peer's chain, leaf first, from Node's detailed certificate object
 * (the one checkServerIdentity receives, or getPeerCertificate(true)).
 */
export function derChain(cert: NodePeerCertificate | undefined): Buffer[] {
  const out: Buffer[] = [];
  const seen = new Set<string>();
  let c = cert;
  while (c?.raw && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    out.push(c.raw);
    c = (c as { issuerCertificate?: NodePeerCertificate }).issuerCertificate;
  }
  return out;
}

/** Convert Node's X509Certificate. */
export function toPeerCertificate(x: X509Certificate): PeerCertificate {
  return {
    subject: dn(x.subject),
    issuer: dn(x.issuer),
    subjectAltNames: splitSANs(x.subjectAltName),
    validFrom: new Date(x.validFrom),
    validTo: new Date(x.validTo),
    serialNumber: x.serialNumber,
    fingerprint256: x.fingerprint256,
    raw: x.raw,
  };
}

/** Node prints DNs one attribute per line, least specific first; RFC 4514 is the reverse. */
export function dn(s: string): string {
  return s.split("\n").filter(Boolean).reverse().join(", ");
}

/** Node's subjectAltName string ("DNS:a, IP Address:1.2.3.4") as a list; [] for none. */
export function splitSANs(san: string | undefined): string[] {
  return san ? san.split(/,\s*/) : [];
}
