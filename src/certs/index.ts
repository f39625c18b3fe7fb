/**
 * `tlsnet/certs`: throwaway certificate authorities and certificates for tests and local
 * development, in the spirit of Python's trustme.
 *
 * @example
 * ```ts
 * import { createCA } from "tlsnet/certs";
 * const ca = await createCA();
 * const server = await ca.issue({ names: ["localhost", "127.0.0.1"] });
 * // tlsnet: tls.listen({ certs: [server], ... }); node:tls: tls.createServer(server)
 * // clients trust the root: tls.connect(addr, { ca: ca.cert })
 * ```
 *
 * Never use these for production: keys live in memory and in whatever files you write them to.
 *
 * @module tlsnet/certs
 */

import { createPrivateKey, type KeyObject, randomBytes, X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import {
  exportPkcs8Pem,
  generateKeyPair,
  importKeyPair,
  type KeyPair,
  type KeyType,
  parseKeyType,
} from "./keys.ts";
import * as x509 from "./x509.ts";

export type { KeyType } from "./keys.ts";

/** Options for {@link createCA}. */
export interface CAOptions {
  /** Subject common name. Default: "tlsnet dev CA <random hex>", unique per CA. */
  name?: string | undefined;
  /** Key algorithm of the CA's own key. Default: "ec-p256". */
  keyType?: KeyType | undefined;
  /** Lifetime in days, counted from the notBefore (now minus one hour). Default: 3650. */
  validDays?: number | undefined;
}

/** Options for {@link CA.issue}. */
export interface IssueOptions {
  /**
   * Subject alternative names. IP literals (IPv4 or IPv6) become IP SANs, anything else a DNS
   * SAN (wildcards such as "*.example.test" are fine). Must be non-empty for a leaf; may be
   * empty for an intermediate, which then gets no SAN extension.
   */
  names: string[];
  /** Key algorithm of the new certificate's key; may differ from the CA's. Default: "ec-p256". */
  keyType?: KeyType | undefined;
  /** Start of validity (notBefore). Default: now minus one hour, to absorb clock skew. */
  validFrom?: Date | undefined;
  /** Lifetime in days, counted from `validFrom`; fractions allowed. Default: 825. */
  validDays?: number | undefined;
  /** Also usable as a TLS client certificate: EKU serverAuth + clientAuth. Default: false. */
  client?: boolean | undefined;
  /** Issue an intermediate CA (CA:true, pathLen 0) instead of a leaf. Default: false. */
  intermediate?: boolean | undefined;
  /** Subject common name. Default: `names[0]`, else "tlsnet" (or a unique intermediate name). */
  commonName?: string | undefined;
}

/**
 * A certificate issued by {@link CA.issue}, with its key. All fields are PEM. It has the shape of
 * a certificate entry (`{ cert, key }`), so `certs: [await ca.issue(...)]` serves the whole chain
 * whatever the CA's shape.
 */
export interface IssuedCert {
  /**
   * What a server (or an mTLS client) presents: the new certificate followed by every
   * intermediate up to, not including, the root. For a leaf of a root CA, the certificate alone.
   */
  readonly cert: string;
  /** The new certificate alone, without intermediates. */
  readonly leaf: string;
  /** Its private key, PKCS#8 ("-----BEGIN PRIVATE KEY-----"). */
  readonly key: string;
  /** The same as `cert` (its earlier name). */
  readonly chain: string;
  /** Present for intermediates: a CA that issues certificates signed by this one. */
  readonly ca?: CA;
}

/** What `issue({ intermediate: true })` returns: a certificate that can itself issue. */
export interface IssuedIntermediate extends IssuedCert {
  /** Issues leaves signed by the intermediate; their `cert` includes the intermediate. */
  readonly ca: CA;
}

/** A certificate authority that can issue certificates. Create one with {@link createCA}. */
export interface CA {
  /** The CA certificate (PEM): what clients put in `ca: [...]` to trust what it issues. */
  readonly cert: string;
  /** The CA private key, PKCS#8 PEM. */
  readonly key: string;
  /**
   * Issues a certificate signed by this CA.
   *
   * @example
   * ```ts
   * const server = await ca.issue({ names: ["localhost", "::1"] });
   * const client = await ca.issue({ names: ["alice"], client: true });
   * const expired = await ca.issue({
   *   names: ["localhost"], validFrom: new Date("2020-01-01"), validDays: 1,
   * });
   * const inter = await ca.issue({ names: [], intermediate: true });
   * const leaf = await inter.ca.issue({ names: ["localhost"] }); // leaf.cert = leaf + intermediate
   * ```
   */
  issue(opts: IssueOptions & { intermediate: true }): Promise<IssuedIntermediate>;
  /**
   * Issues a certificate signed by this CA: a leaf, or with `intermediate: true` an
   * intermediate CA (then the result has `ca`, see the overload above).
   *
   * Throws TypeError for options of the wrong type and RangeError for invalid values: empty
   * `names` for a leaf, a name that is neither an IP address nor a DNS name, a non-positive
   * `validDays` or one past the year 9999, `intermediate: true` on an intermediate (pathLen 0).
   */
  issue(opts: IssueOptions): Promise<IssuedCert>;
}

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
/** The last instant X.509 validity (GeneralizedTime) can express. */
const MAX_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59);

/**
 * Creates a self-signed root CA: CA:true, keyCertSign + cRLSign, subject "O=tlsnet, CN=<name>".
 * Generated in memory in milliseconds (RSA: longer); nothing is written to disk. Throws
 * TypeError/RangeError for invalid options (an empty `name`, a non-positive `validDays`, an
 * unknown `keyType`).
 *
 * @param opts Default: `{}`, an EC P-256 CA valid for 3650 days with a unique name.
 *
 * @example
 * ```ts
 * const ca = await createCA({ keyType: "rsa-2048" });
 * const { cert, key } = await ca.issue({ names: ["localhost"] });
 * ```
 */
export async function createCA(opts: CAOptions = {}): Promise<CA> {
  checkObject(opts, "createCA: opts");
  const name = optionalName(opts.name, "createCA: opts.name") ?? `tlsnet dev CA ${randomHex()}`;
  const keyType = parseKeyType(opts.keyType, "createCA: opts.keyType");
  const notBefore = new Date(Date.now() - HOUR_MS);
  const notAfter = validityEnd(notBefore, opts.validDays, 3650, "createCA: opts.validDays");

  const keys = await generateKeyPair(keyType);
  const ski = x509.subjectKeyIdentifier(keys.publicKey);
  const cert = await x509.createCertificate({
    serialNumber: randomSerial(),
    subject: x509.subjectName(name),
    issuer: x509.subjectName(name),
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    signingKeyType: keyType,
    extensions: [...caExtensions(undefined), ski],
  });
  return DevCA.create({
    cert,
    keys,
    keyType,
    skiHex: ski.keyId,
    chainAbove: [],
    pathLen: undefined,
  });
}

/**
 * Loads a CA saved earlier (its `cert` and `key` PEM, e.g. from files), to issue more
 * certificates with it. A CA certificate whose key does not match it is a RangeError.
 * Throws TypeError when `cert` or `key` is not a string, RangeError when `cert` is not a PEM
 * certificate or not a CA certificate, or the key is of a type tlsnet/certs does not use.
 *
 * @example
 * ```ts
 * const ca = await loadCA({ cert: readFileSync("ca.pem", "utf8"), key: readFileSync("ca-key.pem", "utf8") });
 * const leaf = await ca.issue({ names: ["localhost"] });
 * ```
 */
export async function loadCA(opts: { cert: string; key: string }): Promise<CA> {
  checkObject(opts, "loadCA: opts");
  if (typeof opts.cert !== "string" || typeof opts.key !== "string") {
    throw new TypeError("loadCA: opts.cert and opts.key must be PEM strings");
  }
  let parsed: X509Certificate;
  try {
    parsed = new X509Certificate(opts.cert);
  } catch {
    throw new RangeError("loadCA: opts.cert is not a PEM certificate");
  }
  const cert = x509.parseCertificate(parsed.raw);
  if (!cert.ca) throw new RangeError("loadCA: opts.cert is not a CA certificate");
  const { keys, keyType } = importKeyPair(opts.key, parsed.publicKey);
  if (!parsed.checkPrivateKey(createPrivateKey(opts.key))) {
    throw new RangeError("loadCA: opts.key does not belong to opts.cert");
  }
  return DevCA.create({
    cert,
    keys,
    keyType,
    skiHex: cert.keyId,
    chainAbove: [],
    pathLen: cert.pathLen,
  });
}

/** What a CA needs to sign: its certificate, keys, and where it sits in the hierarchy. */
interface Signer {
  readonly cert: x509.Certificate;
  readonly keys: KeyPair;
  readonly keyType: KeyType;
  /** Hex subject key identifier, reused as the authority key identifier of what it signs. */
  readonly skiHex: string;
  /** PEMs of the intermediates from this CA (inclusive) up to the root (exclusive). */
  readonly chainAbove: readonly string[];
  /** basicConstraints pathLen; 0 means it may not issue further CAs. */
  readonly pathLen: number | undefined;
}

/** Normalised, validated issue() options. */
interface IssuePlan {
  readonly names: readonly string[];
  readonly keyType: KeyType;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly client: boolean;
  readonly intermediate: boolean;
  readonly commonName: string;
}

class DevCA implements CA {
  readonly cert: string;
  readonly key: string;
  readonly #signer: Signer;

  private constructor(signer: Signer, keyPem: string) {
    this.#signer = signer;
    this.cert = certPem(signer.cert);
    this.key = keyPem;
  }

  static async create(signer: Signer): Promise<DevCA> {
    return new DevCA(signer, await privateKeyPem(signer.keys.privateKey));
  }

  issue(opts: IssueOptions & { intermediate: true }): Promise<IssuedIntermediate>;
  issue(opts: IssueOptions): Promise<IssuedCert>;
  async issue(opts: IssueOptions): Promise<IssuedCert> {
    const plan = planIssue(opts);
    if (plan.intermediate && this.#signer.pathLen === 0) {
      throw new RangeError(
        "issue: opts.intermediate is not allowed on an intermediate CA (pathLen 0); " +
          "issue intermediates from the root",
      );
    }
    const signer = this.#signer;
    const keys = await generateKeyPair(plan.keyType);
    const ski = x509.subjectKeyIdentifier(keys.publicKey);
    const cert = await x509.createCertificate({
      serialNumber: randomSerial(),
      subject: x509.subjectName(plan.commonName),
      issuer: signer.cert.subjectName,
      notBefore: plan.notBefore,
      notAfter: plan.notAfter,
      publicKey: keys.publicKey,
      signingKey: signer.keys.privateKey,
      signingKeyType: signer.keyType,
      extensions: [
        ...(plan.intermediate ? caExtensions(0) : leafExtensions(plan)),
        ...sanExtension(plan.names),
        ski,
        x509.authorityKeyIdentifier(signer.skiHex),
      ],
    });

    const pem = certPem(cert);
    const chainPems = [pem, ...signer.chainAbove];
    const chain = chainPems.join("");
    const result = { cert: chain, leaf: pem, key: await privateKeyPem(keys.privateKey), chain };
    if (!plan.intermediate) return result;
    const ca = new DevCA(
      { cert, keys, keyType: plan.keyType, skiHex: ski.keyId, chainAbove: chainPems, pathLen: 0 },
      result.key,
    );
    return { ...result, ca };
  }
}

/** Validates issue() options and fills in defaults. */
function planIssue(opts: IssueOptions): IssuePlan {
  checkObject(opts, "issue: opts");
  const intermediate = optionalBoolean(opts.intermediate, "issue: opts.intermediate");
  const names = parseNames(opts.names, intermediate);
  const commonName =
    optionalName(opts.commonName, "issue: opts.commonName") ??
    names[0] ??
    (intermediate ? `tlsnet dev intermediate CA ${randomHex()}` : "tlsnet");
  const validFrom = opts.validFrom ?? new Date(Date.now() - HOUR_MS);
  if (!(validFrom instanceof Date) || !Number.isFinite(validFrom.getTime())) {
    throw new TypeError("issue: opts.validFrom must be a valid Date");
  }
  return {
    names,
    keyType: parseKeyType(opts.keyType, "issue: opts.keyType"),
    notBefore: validFrom,
    notAfter: validityEnd(validFrom, opts.validDays, 825, "issue: opts.validDays"),
    client: optionalBoolean(opts.client, "issue: opts.client"),
    intermediate,
    commonName,
  };
}

/** Checks `names` and puts IPv6 literals in the canonical form the encoder understands. */
function parseNames(names: unknown, intermediate: boolean): string[] {
  if (!Array.isArray(names)) throw new TypeError("issue: opts.names must be an array of strings");
  if (names.length === 0 && !intermediate) {
    throw new RangeError("issue: opts.names must not be empty (it lists the certificate's names)");
  }
  return names.map((name: unknown, i) => {
    const arg = `issue: opts.names[${i}]`;
    if (typeof name !== "string") throw new TypeError(`${arg} must be a string`);
    if (name === "") throw new RangeError(`${arg} must not be empty`);
    if (isIP(name) === 6) return canonicalIPv6(name, arg);
    if (isIP(name) === 4) return name;
    // A DNS SAN is an IA5String of LDH labels; an optional leading "*." makes a wildcard.
    if (!/^(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$/.test(name) || name.length > 253) {
      throw new RangeError(
        `${arg} is neither an IP address nor a valid DNS name: ${JSON.stringify(name)}` +
          " (use url.domainToASCII for internationalised names)",
      );
    }
    return name;
  });
}

/**
 * Rewrites forms such as "::ffff:127.0.0.1" to the canonical hex form. The URL parser does
 * exactly that and rejects zone ids ("%eth0"), which have no meaning in a certificate.
 */
function canonicalIPv6(ip: string, arg: string): string {
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    throw new RangeError(`${arg} is an IPv6 address that cannot go in a certificate: ${ip}`);
  }
}

function caExtensions(pathLen: number | undefined): x509.Extension[] {
  return [
    x509.basicConstraints(true, pathLen),
    x509.keyUsage([x509.KeyUsage.keyCertSign, x509.KeyUsage.cRLSign]),
  ];
}

function leafExtensions(plan: IssuePlan): x509.Extension[] {
  // RSA key exchange (TLS 1.2 RSA kx) needs keyEncipherment; EC and Ed25519 keys only sign.
  const usages =
    plan.keyType === "rsa-2048"
      ? [x509.KeyUsage.digitalSignature, x509.KeyUsage.keyEncipherment]
      : [x509.KeyUsage.digitalSignature];
  return [
    x509.basicConstraints(false, undefined),
    x509.keyUsage(usages),
    x509.extKeyUsage(plan.client),
  ];
}

/** The SAN extension, or none for an intermediate without names (an empty SAN is invalid). */
function sanExtension(names: readonly string[]): x509.Extension[] {
  if (names.length === 0) return [];
  return [x509.subjectAltName(names)];
}

/** notBefore + validDays, checked to be a positive duration that X.509 can express. */
function validityEnd(notBefore: Date, validDays: unknown, fallback: number, arg: string): Date {
  const days = validDays ?? fallback;
  if (typeof days !== "number") throw new TypeError(`${arg} must be a number`);
  if (!Number.isFinite(days) || days <= 0) {
    throw new RangeError(`${arg} must be a positive finite number of days; got ${days}`);
  }
  const end = notBefore.getTime() + days * DAY_MS;
  if (end > MAX_TIME_MS) throw new RangeError(`${arg} puts the expiry past the year 9999`);
  return new Date(end);
}

/** 16 random bytes with the high bit cleared (a positive INTEGER) and a non-zero first byte. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f || 0x01;
  return bytes.toString("hex");
}

function randomHex(): string {
  return randomBytes(6).toString("hex");
}

// PEM blocks end with a newline so they can be written to files or concatenated as-is.
function certPem(cert: x509.Certificate): string {
  return x509.pem(cert.der, "CERTIFICATE");
}

async function privateKeyPem(key: KeyObject): Promise<string> {
  return exportPkcs8Pem(key);
}

function checkObject(value: unknown, arg: string): void {
  if (typeof value !== "object" || value === null) throw new TypeError(`${arg} must be an object`);
}

function optionalBoolean(value: unknown, arg: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== "boolean") throw new TypeError(`${arg} must be a boolean`);
  return value;
}

function optionalName(value: unknown, arg: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw new TypeError(`${arg} must be a string`);
  if (value === "") throw new RangeError(`${arg} must not be empty`);
  return value;
}
