/**
 * The native engine's SSL_CTXs for a TLSConfig: one per certificate entry for
 * servers, one for clients, built once per config (and so once per reload)
 * and shared by every connection, as the node engine's SecureContexts are.
 * @module
 */
import { Buffer } from "node:buffer";
import { rootCertificates } from "node:tls";
import { ConfigError } from "../../errors.ts";
import { cipherList, type TLSConfig } from "../config.ts";
import type { NativeAddon, NativeContext, NativeContextOptions } from "./addon.ts";

const TLS1_2_VERSION = 0x0303;
const TLS1_3_VERSION = 0x0304;
const SSL_VERIFY_NONE = 0;
const SSL_VERIFY_PEER = 1;
const SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 2;

const built = new WeakMap<TLSConfig, { client?: NativeContext; server?: NativeContext[] }>();
let rootsSet = false;

/** The client context of a config (trust roots, our certificate for mTLS). */
export function clientContext(addon: NativeAddon, cfg: TLSConfig): NativeContext {
  const entry = entryOf(cfg);
  if (!entry.client) {
    if (!cfg.ca && !rootsSet) {
      addon.setRoots(rootCertificates);
      rootsSet = true;
    }
    const id = cfg.identities[0];
    entry.client = build(addon, {
      ...base(cfg),
      server: false,
      cert: id?.cert,
      key: id?.key,
      passphrase: id?.passphrase,
      ca: cfg.ca ? [...cfg.ca] : undefined,
      useRoots: !cfg.ca,
      verify: cfg.verifyPeer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
      clientSessions: cfg.sessionCacheSize > 0,
    });
  }
  return entry.client;
}

/** One server context per identity, in order; index 0 is the default. */
export function serverContexts(addon: NativeAddon, cfg: TLSConfig): NativeContext[] {
  const entry = entryOf(cfg);
  if (!entry.server) {
    if (cfg.identities.length === 0) {
      throw new ConfigError("a TLS server needs a certificate: set certs or certFile/keyFile", {
        field: "certs",
      });
    }
    const mode = cfg.clientAuth;
    const verify =
      mode === "none"
        ? SSL_VERIFY_NONE
        : mode === "require-any" || mode === "require-and-verify"
          ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
          : SSL_VERIFY_PEER;
    entry.server = cfg.identities.map((id) =>
      build(addon, {
        ...base(cfg),
        server: true,
        cert: id.cert,
        key: id.key,
        passphrase: id.passphrase,
        ca: cfg.clientCa ? [...cfg.clientCa] : undefined,
        verify,
        // OpenSSL refuses to resume sessions of verified clients without a session id context.
        sessionIdContext: cfg.sessionScope.slice(0, 32),
        // Every listed key decrypts, the first encrypts (node:tls holds only the first).
        ticketKeys: cfg.ticketKeys ? Buffer.concat(cfg.ticketKeys) : undefined,
      }),
    );
  }
  return entry.server;
}

function entryOf(cfg: TLSConfig): { client?: NativeContext; server?: NativeContext[] } {
  let entry = built.get(cfg);
  if (!entry) {
    entry = {};
    built.set(cfg, entry);
  }
  return entry;
}

function base(cfg: TLSConfig) {
  // One cipher string for both versions, as node:tls takes it: TLS_* names are TLS 1.3 suites.
  const all = cipherList(cfg.ciphers).split(":");
  return {
    minVersion: cfg.minVersion === "TLSv1.3" ? TLS1_3_VERSION : TLS1_2_VERSION,
    maxVersion: cfg.maxVersion === "TLSv1.3" ? TLS1_3_VERSION : TLS1_2_VERSION,
    cipherSuites: all.filter((c) => c.startsWith("TLS_")).join(":"),
    cipherList: all.filter((c) => c !== "" && !c.startsWith("TLS_")).join(":"),
    alpn: cfg.alpnProtocols ? alpnWire(cfg.alpnProtocols) : undefined,
    keyLog: cfg.keyLog !== undefined,
  };
}

/** ALPN protocol names in the wire format: a length byte before each. */
export function alpnWire(protocols: readonly string[]): Buffer {
  const parts = protocols.map((p) => Buffer.from(p, "utf8"));
  return Buffer.concat(parts.flatMap((p) => [Buffer.from([p.length]), p]));
}

/** The protocol names of an ALPN list in wire format. */
export function alpnNames(wire: Buffer | undefined): string[] {
  const out: string[] = [];
  for (let i = 0; wire && i < wire.length; i += 1 + wire[i]!) {
    out.push(wire.subarray(i + 1, i + 1 + wire[i]!).toString("utf8"));
  }
  return out;
}

function build(addon: NativeAddon, opts: NativeContextOptions): NativeContext {
  try {
    return addon.newContext(opts);
  } catch (err) {
    throw new ConfigError(
      `engine native: cannot build the TLS context: ${(err as Error).message}`,
      { field: opts.server ? "certs" : "ca", cause: err },
    );
  }
}
