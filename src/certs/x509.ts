/**
 * The X.509 layer of `tlsnet/certs`: just enough DER to write the certificates a dev CA issues
 * (RFC 5280) and to read back what `loadCA` needs, with Node's own crypto for keys and
 * signatures. No third-party package: an X.509 library would add 5 to 19 packages and, for the
 * two best known, a global (`Reflect` metadata for @peculiar/x509, `globalThis[pid]` for pkijs).
 * See docs/certs.md.
 */

import { Buffer } from "node:buffer";
import { createHash, type KeyObject, sign } from "node:crypto";
import { isIP } from "node:net";
import type { KeyType } from "./keys.ts";

// --- DER writer --------------------------------------------------------------------------------

function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

const seq = (...items: Uint8Array[]): Buffer => tlv(0x30, ...items);
const set = (...items: Uint8Array[]): Buffer => tlv(0x31, ...items);
const octets = (bytes: Uint8Array): Buffer => tlv(0x04, bytes);
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, "utf8"));
const bool = (b: boolean): Buffer => tlv(0x01, Buffer.from([b ? 0xff : 0x00]));
/** A BIT STRING of whole bytes (keys, signatures). */
const bits = (bytes: Uint8Array): Buffer => tlv(0x03, Buffer.from([0]), bytes);
const NULL = Buffer.from([0x05, 0x00]);

/** A non-negative INTEGER from big-endian magnitude bytes, in its minimal two's-complement form. */
function uint(magnitude: Uint8Array): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const bytes = Buffer.from(magnitude.subarray(i));
  return tlv(0x02, bytes[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes);
}

function smallInt(n: number): Buffer {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return uint(Buffer.from(bytes.length > 0 ? bytes : [0]));
}

function oid(dotted: string): Buffer {
  const arcs = dotted.split(".").map(Number);
  const out: number[] = [40 * arcs[0]! + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const b7: number[] = [];
    for (let v = arc; ; v = Math.floor(v / 128)) {
      b7.unshift((v & 0x7f) | (b7.length > 0 ? 0x80 : 0));
      if (v < 128) break;
    }
    out.push(...b7);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5); whole seconds, UTC. */
function time(d: Date): Buffer {
  const year = d.getUTCFullYear();
  if (year < 0 || year > 9999) throw new RangeError(`a certificate cannot hold the year ${year}`);
  const p2 = (n: number) => String(n).padStart(2, "0");
  const rest = `${p2(d.getUTCMonth() + 1)}${p2(d.getUTCDate())}${p2(d.getUTCHours())}${p2(
    d.getUTCMinutes(),
  )}${p2(d.getUTCSeconds())}Z`;
  if (year >= 1950 && year < 2050) return tlv(0x17, Buffer.from(`${p2(year % 100)}${rest}`));
  return tlv(0x18, Buffer.from(`${String(year).padStart(4, "0")}${rest}`));
}

// --- DER reader --------------------------------------------------------------------------------

interface Node {
  readonly tag: number;
  /** The whole TLV. */
  readonly raw: Buffer;
  /** The value bytes. */
  readonly content: Buffer;
}

function read(buf: Buffer, offset = 0): Node {
  const fail = () => new RangeError("the certificate is not valid DER");
  if (offset + 2 > buf.length) throw fail();
  const tag = buf[offset]!;
  let len = buf[offset + 1]!;
  let start = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > buf.length) throw fail();
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + i]!;
    start += n;
  }
  if (start + len > buf.length) throw fail();
  return { tag, raw: buf.subarray(offset, start + len), content: buf.subarray(start, start + len) };
}

function children(node: Node): Node[] {
  const out: Node[] = [];
  for (let off = 0; off < node.content.length; ) {
    const child = read(node.content, off);
    out.push(child);
    off += child.raw.length;
  }
  return out;
}

function oidString(content: Buffer): string {
  const arcs = [Math.floor(content[0]! / 40), content[0]! % 40];
  let v = 0;
  for (const b of content.subarray(1)) {
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      arcs.push(v);
      v = 0;
    }
  }
  return arcs.join(".");
}

// --- X.509 -------------------------------------------------------------------------------------

const OID = {
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  ecdsaWithSHA256: "1.2.840.10045.4.3.2",
  sha256WithRSA: "1.2.840.113549.1.1.11",
  ed25519: "1.3.101.112",
} as const;

/** One extension, DER-encoded. `keyId` is set on a subject key identifier. */
export interface Extension {
  readonly der: Buffer;
  /** Hex key identifier, for the subject key identifier extension. */
  readonly keyId?: string;
}

function extension(id: string, critical: boolean, value: Buffer): Extension {
  return { der: seq(oid(id), ...(critical ? [bool(true)] : []), octets(value)) };
}

/** A distinguished name, DER-encoded. */
export type Name = Buffer;

/** "O=tlsnet, CN=<commonName>", the subject of everything tlsnet/certs issues. */
export function subjectName(commonName: string): Name {
  return seq(
    set(seq(oid(OID.organization), utf8("tlsnet"))),
    set(seq(oid(OID.commonName), utf8(commonName))),
  );
}

export function basicConstraints(ca: boolean, pathLen: number | undefined): Extension {
  const body = ca ? [bool(true), ...(pathLen === undefined ? [] : [smallInt(pathLen)])] : [];
  return extension(OID.basicConstraints, true, seq(...body));
}

/** The key usage bits this layer writes (RFC 5280 §4.2.1.3 bit numbers). */
export const KeyUsage = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

export function keyUsage(usages: readonly number[]): Extension {
  // A named BIT STRING in DER drops trailing zero bits.
  const last = Math.max(...usages);
  const bytes = Buffer.alloc(Math.floor(last / 8) + 1);
  for (const u of usages) bytes[u >> 3] = bytes[u >> 3]! | (0x80 >> (u & 7));
  const unused = 7 - (last % 8);
  return extension(OID.keyUsage, true, tlv(0x03, Buffer.from([unused]), bytes));
}

export function extKeyUsage(client: boolean): Extension {
  const ids = client ? [OID.serverAuth, OID.clientAuth] : [OID.serverAuth];
  return extension(OID.extKeyUsage, false, seq(...ids.map(oid)));
}

/** DNS and IP subject alternative names; IP literals become iPAddress entries. */
export function subjectAltName(names: readonly string[]): Extension {
  const general = names.map((name) =>
    isIP(name) ? tlv(0x87, ipBytes(name)) : tlv(0x82, Buffer.from(name, "ascii")),
  );
  return extension(OID.subjectAltName, false, seq(...general));
}

/** The subject key identifier: SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2, (1)). */
export function subjectKeyIdentifier(publicKey: KeyObject): Extension & { keyId: string } {
  const id = keyIdOf(publicKey.export({ type: "spki", format: "der" }));
  return { ...extension(OID.subjectKeyIdentifier, false, octets(id)), keyId: id.toString("hex") };
}

export function authorityKeyIdentifier(keyIdHex: string): Extension {
  return extension(OID.authorityKeyIdentifier, false, seq(tlv(0x80, Buffer.from(keyIdHex, "hex"))));
}

function keyIdOf(spki: Buffer): Buffer {
  const [, key] = children(read(spki));
  return createHash("sha1").update(key!.content.subarray(1)).digest();
}

/** What a certificate is made of. Names are DER; the serial is hex. */
export interface CertificateSpec {
  serialNumber: string;
  subject: Name;
  issuer: Name;
  notBefore: Date;
  notAfter: Date;
  publicKey: KeyObject;
  signingKey: KeyObject;
  /** The type of `signingKey`, which picks the signature algorithm. */
  signingKeyType: KeyType;
  extensions: readonly Extension[];
}

/** An encoded certificate and the parts of it a CA needs to issue below it. */
export interface Certificate {
  readonly der: Buffer;
  /** The subject name, DER, as the issuer of what this certificate signs. */
  readonly subjectName: Name;
}

/** Builds and signs a v3 certificate. */
export async function createCertificate(spec: CertificateSpec): Promise<Certificate> {
  const alg = algorithmIdentifier(spec.signingKeyType);
  const tbs = seq(
    tlv(0xa0, smallInt(2)),
    uint(Buffer.from(spec.serialNumber, "hex")),
    alg,
    spec.issuer,
    seq(time(spec.notBefore), time(spec.notAfter)),
    spec.subject,
    spec.publicKey.export({ type: "spki", format: "der" }),
    tlv(0xa3, seq(...spec.extensions.map((e) => e.der))),
  );
  const hash = spec.signingKeyType === "ed25519" ? null : "sha256";
  // ECDSA signatures in X.509 are DER (r, s), Node's default encoding for EC keys.
  const signature = await new Promise<Buffer>((resolve, reject) =>
    sign(hash, tbs, spec.signingKey, (err, sig) => (err ? reject(err) : resolve(sig))),
  );
  return { der: seq(tbs, alg, bits(signature)), subjectName: spec.subject };
}

function algorithmIdentifier(keyType: KeyType): Buffer {
  if (keyType === "rsa-2048") return seq(oid(OID.sha256WithRSA), NULL);
  return seq(oid(keyType === "ed25519" ? OID.ed25519 : OID.ecdsaWithSHA256));
}

/** What `loadCA` reads from a CA certificate (DER). */
export interface ParsedCA extends Certificate {
  /** basicConstraints cA. */
  readonly ca: boolean;
  /** basicConstraints pathLenConstraint, if any. */
  readonly pathLen: number | undefined;
  /** Hex subject key identifier: the extension's, else computed from the key. */
  readonly keyId: string;
}

export function parseCertificate(der: Buffer): ParsedCA {
  const tbs = children(children(read(der))[0]!);
  // An explicit version [0] comes first in every v3 certificate; v1 has none.
  const fields = tbs[0]?.tag === 0xa0 ? tbs.slice(1) : tbs;
  const [, , , , subject, spki] = fields;
  if (!subject || !spki) throw new RangeError("the certificate is not valid DER");
  let ca = false;
  let pathLen: number | undefined;
  let keyId: string | undefined;
  const exts = fields.find((f) => f.tag === 0xa3);
  for (const ext of exts ? children(children(exts)[0]!) : []) {
    const parts = children(ext);
    const id = oidString(parts[0]!.content);
    const value = read(parts[parts.length - 1]!.content);
    if (id === OID.basicConstraints) {
      for (const item of children(value)) {
        if (item.tag === 0x01) ca = item.content[0] !== 0;
        if (item.tag === 0x02) pathLen = item.content.reduce((n, b) => n * 256 + b, 0);
      }
    } else if (id === OID.subjectKeyIdentifier) {
      keyId = value.content.toString("hex");
    }
  }
  return {
    der,
    subjectName: Buffer.from(subject.raw),
    ca,
    pathLen,
    keyId: keyId ?? keyIdOf(spki.raw).toString("hex"),
  };
}

/** PEM with a trailing newline, so blocks concatenate and write to files as they are. */
export function pem(der: Buffer, label: string): string {
  const lines = der.toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** 4 or 16 bytes of an IP literal (IPv6 with "::" and an embedded IPv4 tail both accepted). */
function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split(".").map(Number));
  let text = ip;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted[1]!.split(".").map(Number);
    text = `${text.slice(0, dotted.index)}${((a! << 8) | b!).toString(16)}:${((c! << 8) | d!).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const groups = (s: string | undefined) => (s ? s.split(":") : []);
  const left = groups(head);
  const right = groups(tail);
  const all =
    tail === undefined
      ? left
      : [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  const out = Buffer.alloc(16);
  for (const [i, g] of all.entries()) out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return out;
}
