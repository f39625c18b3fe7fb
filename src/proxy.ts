/**
 * The PROXY protocol (HAProxy's, versions 1 and 2): how a load balancer tells
 * the server behind it who the client is. A header is written by the sender
 * right after connecting, before any other byte, and read by the receiver
 * before anything else (before TLS).
 *
 * - v1 is one text line: `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`
 *   (at most 107 bytes with the CRLF).
 * - v2 is binary: a 12-byte signature, version/command, family/protocol, a
 *   16-bit length, the addresses, then TLVs (type, 16-bit length, value).
 *
 * Parsing is strict (anything not exactly per the spec is refused with
 * {@link ProxyProtocolError}) and bounded: a v1 line past 107 bytes or a v2
 * header past 64 KiB is refused as soon as that is known, without waiting.
 * @module
 */
import { Buffer } from "node:buffer";
import { isIPv4, isIPv6, type Socket } from "node:net";
import { type Address, parseAddress, SocketAddr } from "./addr.ts";
import { cidrMatcher, ipBytes } from "./cidr.ts";
import { ConfigError, ProxyProtocolError, type ProxyProtocolReason } from "./errors.ts";
import { remoteAddrOf } from "./socket-transport.ts";

/** One v2 TLV: type byte and value (ALPN 0x01, authority 0x02, CRC32C 0x03, unique id 0x05...). */
export interface ProxyTLV {
  /** The TLV type byte (PP2_TYPE_ALPN = 0x01, PP2_TYPE_AUTHORITY = 0x02, PP2_TYPE_SSL = 0x20...). */
  readonly type: number;
  /** The value bytes, as sent. */
  readonly value: Buffer;
}

/** A parsed PROXY protocol header, as `conn.proxy` shows it. */
export interface ProxyHeader {
  /** 1: the text header ("PROXY TCP4 ..."), 2: the binary one. */
  readonly version: 1 | 2;
  /**
   * "PROXY": relayed for a client, `source` is the client. "LOCAL": the balancer's
   * own connection (health check): the socket's addresses stand.
   */
  readonly command: "PROXY" | "LOCAL";
  /** Address family announced: v1 TCP4/TCP6/UNKNOWN, v2 AF_INET/AF_INET6/AF_UNIX/AF_UNSPEC. */
  readonly family: "IPv4" | "IPv6" | "unix" | "unspec";
  /** Transport announced: v1 is always "stream" (TCP) or "unspec" (UNKNOWN). */
  readonly protocol: "stream" | "dgram" | "unspec";
  /** The original client: null for LOCAL, UNKNOWN, UNSPEC, unix and datagram headers. */
  readonly source: SocketAddr | null;
  /** The address the client connected to (the balancer's), null when `source` is. */
  readonly destination: SocketAddr | null;
  /** v2 TLVs in order (always empty for v1 and LOCAL). */
  readonly tlvs: readonly ProxyTLV[];
}

/** What to write: `tcp.connect(addr, { proxyHeader })` and `tls.connect` send it first. */
export interface ProxyHeaderInit {
  /** 1: the text header, 2: the binary one (with TLVs). */
  version: 1 | 2;
  /** Default "PROXY"; "LOCAL" sends no addresses (v1: `PROXY UNKNOWN`). */
  command?: "PROXY" | "LOCAL" | undefined;
  /** The client's address, an IP literal with port: `"192.0.2.1:56324"`, `"[2001:db8::1]:443"`. */
  source?: Address | undefined;
  /** The address the client connected to. Same family as `source` (IPv4-mapped addresses adapt). */
  destination?: Address | undefined;
  /** v2 only: TLVs to append. */
  tlvs?:
    | ReadonlyArray<{
        /** The TLV type byte. */
        type: number;
        /** The value bytes. */
        value: Uint8Array;
      }>
    | undefined;
}

/** How a listener reads headers: `proxyProtocol: true | { mode, trusted, timeout }`. */
export interface ProxyProtocolOptions {
  /** "required" (default): every conn must start with a header. "optional": with or without. */
  mode?: "required" | "optional" | undefined;
  /** CIDRs allowed to send a header (default: any peer). A header from elsewhere is refused. */
  trusted?: string[] | undefined;
  /** ms for the header to arrive, default 5000. */
  timeout?: number | undefined;
}

/** A listener's `proxyProtocol` option, validated and compiled. */
export interface ProxyProtocolPolicy {
  mode: "required" | "optional";
  timeout: number;
  trusted: (address: string) => boolean;
}

const DEFAULT_HEADER_TIMEOUT = 5000;

/** Validate `proxyProtocol` (ConfigError naming the field); undefined when off. */
export function proxyProtocolPolicy(
  opt: boolean | ProxyProtocolOptions | undefined,
): ProxyProtocolPolicy | undefined {
  if (opt === undefined || opt === false) return undefined;
  const o: ProxyProtocolOptions = opt === true ? {} : opt;
  if (typeof o !== "object" || o === null || Array.isArray(o)) {
    throw new ConfigError(
      'proxyProtocol must be true or { mode?: "required" | "optional", trusted?: string[], timeout?: ms }',
      { field: "proxyProtocol" },
    );
  }
  const mode = o.mode ?? "required";
  if (mode !== "required" && mode !== "optional") {
    throw new ConfigError(
      `proxyProtocol.mode must be "required" or "optional", got ${String(mode)}`,
      {
        field: "proxyProtocol.mode",
      },
    );
  }
  const timeout = o.timeout ?? DEFAULT_HEADER_TIMEOUT;
  if (typeof timeout !== "number" || !Number.isFinite(timeout) || timeout < 0) {
    throw new ConfigError(`proxyProtocol.timeout must be ms >= 0, got ${String(o.timeout)}`, {
      field: "proxyProtocol.timeout",
    });
  }
  const trusted =
    o.trusted === undefined ? () => true : cidrMatcher(o.trusted, "proxyProtocol.trusted");
  return { mode, timeout, trusted };
}

/** The v2 signature: `\r\n\r\n\0\r\nQUIT\n`. */
const V2_SIG = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
const V1_SIG = Buffer.from("PROXY", "latin1");
/** The longest v1 line the spec allows, CRLF included. */
export const V1_MAX_LINE = 107;
/** The largest v2 header accepted (16 fixed bytes + length). */
export const V2_MAX_HEADER = 64 * 1024;
const V2_FIXED = 16;
const TLV_CRC32C = 0x03;

/** What the bytes seen so far are: a header, not a header, or not known yet. */
export type ParseResult =
  | { kind: "more"; need?: number }
  | { kind: "none" }
  | { kind: "header"; header: ProxyHeader; length: number };

const MORE: ParseResult = { kind: "more" };
const NONE: ParseResult = { kind: "none" };

function fail(reason: ProxyProtocolReason, what: string): never {
  throw new ProxyProtocolError(what, { reason });
}

/**
 * Parse a PROXY header from the start of `buf`: `header` with its byte length,
 * `more` when the bytes so far are a valid beginning, or `none` when `buf` does
 * not start with either signature. Throws ProxyProtocolError for a header that
 * is malformed or past the size limits (the message says what, without the peer).
 */
export function parseProxyHeader(buf: Uint8Array): ParseResult {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const n2 = Math.min(b.length, V2_SIG.length);
  if (b.subarray(0, n2).equals(V2_SIG.subarray(0, n2))) {
    return n2 < V2_SIG.length ? MORE : parseV2(b);
  }
  const n1 = Math.min(b.length, V1_SIG.length);
  if (b.subarray(0, n1).equals(V1_SIG.subarray(0, n1))) {
    return n1 < V1_SIG.length ? MORE : parseV1(b);
  }
  return NONE;
}

// ------------------------------------------------------------------ v1

function parseV1(b: Buffer): ParseResult {
  const limit = Math.min(b.length, V1_MAX_LINE);
  let end = -1;
  for (let i = 0; i < limit; i++) {
    const c = b[i]!;
    if (c === 0x0a) {
      if (i === 0 || b[i - 1] !== 0x0d) fail("malformed", "v1 line ends with LF without CR");
      end = i + 1;
      break;
    }
    if (c === 0x0d) {
      if (i + 1 < b.length && b[i + 1] !== 0x0a) fail("malformed", "v1 line has a CR without LF");
      continue;
    }
    if (c < 0x20 || c > 0x7e) {
      fail("malformed", `v1 line holds a non-ASCII or control byte 0x${hex2(c)} at offset ${i}`);
    }
  }
  if (end < 0) {
    if (b.length >= V1_MAX_LINE) {
      fail("oversized", `v1 line has no CRLF within ${V1_MAX_LINE} bytes`);
    }
    return MORE;
  }
  const line = b.toString("latin1", 0, end - 2);
  const parts = line.split(" ");
  if (parts[0] !== "PROXY")
    fail("malformed", `v1 line must start with "PROXY ", got ${show(line)}`);
  const proto = parts[1];
  if (proto === "UNKNOWN") {
    // The rest of the line is ignored, as the spec says.
    return header(end, {
      version: 1,
      command: "PROXY",
      family: "unspec",
      protocol: "unspec",
      source: null,
      destination: null,
      tlvs: [],
    });
  }
  if (proto !== "TCP4" && proto !== "TCP6") {
    fail("malformed", `v1 protocol must be TCP4, TCP6 or UNKNOWN, got ${show(proto ?? "")}`);
  }
  if (parts.length !== 6) {
    fail(
      "malformed",
      `v1 line has ${parts.length} space-separated fields, expected 6 ` +
        `("PROXY ${proto} SRC DST SPORT DPORT"): ${show(line)}`,
    );
  }
  const family = proto === "TCP4" ? "IPv4" : "IPv6";
  const src = v1Address(parts[2]!, family, "source address");
  const dst = v1Address(parts[3]!, family, "destination address");
  const sport = v1Port(parts[4]!, "source port");
  const dport = v1Port(parts[5]!, "destination port");
  return header(end, {
    version: 1,
    command: "PROXY",
    family,
    protocol: "stream",
    source: new SocketAddr(src, sport, family),
    destination: new SocketAddr(dst, dport, family),
    tlvs: [],
  });
}

function v1Address(s: string, family: "IPv4" | "IPv6", what: string): string {
  if (family === "IPv4") {
    const ok =
      /^(0|[1-9]\d{0,2})(\.(0|[1-9]\d{0,2})){3}$/.test(s) &&
      s.split(".").every((p) => Number(p) <= 255);
    if (!ok) fail("malformed", `v1 ${what} ${show(s)} is not a canonical IPv4 address`);
    return s;
  }
  if (!isIPv6(s) || s.includes("%")) {
    fail("malformed", `v1 ${what} ${show(s)} is not an IPv6 address`);
  }
  return s;
}

function v1Port(s: string, what: string): number {
  if (!/^(0|[1-9]\d{0,4})$/.test(s) || Number(s) > 65535) {
    fail("malformed", `v1 ${what} ${show(s)} is not a number in 0..65535 without leading zeros`);
  }
  return Number(s);
}

// ------------------------------------------------------------------ v2

const FAMILIES = ["unspec", "IPv4", "IPv6", "unix"] as const;
const PROTOCOLS = ["unspec", "stream", "dgram"] as const;
/** Address block size per family: AF_UNSPEC 0, AF_INET 12, AF_INET6 36, AF_UNIX 216. */
const ADDR_LEN = [0, 12, 36, 216];

function parseV2(b: Buffer): ParseResult {
  if (b.length < V2_FIXED) return MORE;
  const version = b[12]! >> 4;
  const cmd = b[12]! & 0x0f;
  if (version !== 2) fail("malformed", `v2 header has version ${version}, expected 2`);
  if (cmd > 1)
    fail("malformed", `v2 header has command 0x${cmd.toString(16)}, expected LOCAL or PROXY`);
  const fam = b[13]! >> 4;
  const proto = b[13]! & 0x0f;
  if (fam > 3)
    fail("malformed", `v2 header has address family 0x${fam.toString(16)} (0..3 allowed)`);
  if (proto > 2)
    fail("malformed", `v2 header has transport protocol 0x${proto.toString(16)} (0..2 allowed)`);
  const len = b.readUInt16BE(14);
  const total = V2_FIXED + len;
  if (total > V2_MAX_HEADER) {
    fail("oversized", `v2 header of ${total} bytes is over the ${V2_MAX_HEADER}-byte limit`);
  }
  if (b.length < total) return { kind: "more", need: total };
  const family = FAMILIES[fam]!;
  const protocol = PROTOCOLS[proto]!;
  if (cmd === 0) {
    // LOCAL: the receiver uses the real endpoints and skips the whole block.
    return header(total, {
      version: 2,
      command: "LOCAL",
      family,
      protocol,
      source: null,
      destination: null,
      tlvs: [],
    });
  }
  if (fam === 0 || proto === 0) {
    // UNSPEC: addresses (and where TLVs would start) are unknown; ignore the block.
    return header(total, {
      version: 2,
      command: "PROXY",
      family,
      protocol,
      source: null,
      destination: null,
      tlvs: [],
    });
  }
  const addrLen = ADDR_LEN[fam]!;
  if (len < addrLen) {
    fail(
      "malformed",
      `v2 ${family} address block needs ${addrLen} bytes, the header's length is ${len}`,
    );
  }
  let source: SocketAddr | null = null;
  let destination: SocketAddr | null = null;
  if (protocol === "stream" && (family === "IPv4" || family === "IPv6")) {
    const size = family === "IPv4" ? 4 : 16;
    const at = V2_FIXED;
    const src = formatIP(b.subarray(at, at + size));
    const dst = formatIP(b.subarray(at + size, at + 2 * size));
    const sport = b.readUInt16BE(at + 2 * size);
    const dport = b.readUInt16BE(at + 2 * size + 2);
    source = new SocketAddr(src, sport, family);
    destination = new SocketAddr(dst, dport, family);
  }
  const tlvs = parseTLVs(b, V2_FIXED + addrLen, total);
  return header(total, {
    version: 2,
    command: "PROXY",
    family,
    protocol,
    source,
    destination,
    tlvs,
  });
}

function parseTLVs(b: Buffer, start: number, end: number): ProxyTLV[] {
  const tlvs: ProxyTLV[] = [];
  let at = start;
  while (at < end) {
    if (end - at < 3) fail("malformed", `v2 TLV at offset ${at} is cut short (${end - at} bytes)`);
    const type = b[at]!;
    const len = b.readUInt16BE(at + 1);
    if (at + 3 + len > end) {
      fail(
        "malformed",
        `v2 TLV 0x${hex2(type)} at offset ${at} claims ${len} bytes past the header's end`,
      );
    }
    const value = Buffer.from(b.subarray(at + 3, at + 3 + len)); // a copy: the socket's chunk is not kept
    if (type === TLV_CRC32C) checkCRC(b.subarray(0, end), at + 3, value);
    tlvs.push({ type, value });
    at += 3 + len;
  }
  return tlvs;
}

function checkCRC(headerBytes: Buffer, valueAt: number, value: Buffer): void {
  if (value.length !== 4) fail("malformed", `v2 CRC32C TLV has ${value.length} bytes, expected 4`);
  const copy = Buffer.from(headerBytes);
  copy.fill(0, valueAt, valueAt + 4);
  if (crc32c(copy) !== value.readUInt32BE(0)) fail("malformed", "v2 header fails its CRC32C check");
}

function header(length: number, h: ProxyHeader): ParseResult {
  return { kind: "header", header: Object.freeze(h), length };
}

/** An address from 4 or 16 network-order bytes, formatted as Node reports addresses. */
function formatIP(bytes: Buffer): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push(bytes.readUInt16BE(i));
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  }
  // RFC 5952: the longest run (of 2 or more) of zero words becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hexes = words.map((w) => w.toString(16));
  if (best < 0) return hexes.join(":");
  return `${hexes.slice(0, best).join(":")}::${hexes.slice(best + bestLen).join(":")}`;
}

// ------------------------------------------------------------------ writing

/**
 * The bytes of a PROXY header. Throws ConfigError (field `proxyHeader...`)
 * for addresses that are not IP literals with ports, v1 with TLVs, or a v2
 * header over 64 KiB.
 */
export function encodeProxyHeader(init: ProxyHeaderInit): Buffer {
  if (typeof init !== "object" || init === null) {
    throw new ConfigError("proxyHeader must be { version: 1 | 2, source, destination }", {
      field: "proxyHeader",
    });
  }
  const { version } = init;
  if (version !== 1 && version !== 2) {
    throw new ConfigError(`proxyHeader.version must be 1 or 2, got ${String(version)}`, {
      field: "proxyHeader.version",
    });
  }
  const command = init.command ?? "PROXY";
  if (command !== "PROXY" && command !== "LOCAL") {
    throw new ConfigError(
      `proxyHeader.command must be "PROXY" or "LOCAL", got ${String(command)}`,
      {
        field: "proxyHeader.command",
      },
    );
  }
  const tlvs = init.tlvs ?? [];
  if (version === 1 && tlvs.length > 0) {
    throw new ConfigError("proxyHeader.tlvs need version 2 (v1 has no TLVs)", {
      field: "proxyHeader.tlvs",
    });
  }
  const tlvBytes = version === 2 ? encodeTLVs(tlvs) : Buffer.alloc(0);
  if (command === "LOCAL") {
    if (version === 1) return Buffer.from("PROXY UNKNOWN\r\n", "latin1");
    return v2(0x20, 0x00, [tlvBytes]);
  }
  let src = endpoint(init.source, "source");
  let dst = endpoint(init.destination, "destination");
  if (src.v4 !== dst.v4) {
    // One side IPv4, the other IPv6: announce both as IPv6 (IPv4-mapped).
    if (src.v4) src = { ...src, host: `::ffff:${src.host}`, v4: false };
    if (dst.v4) dst = { ...dst, host: `::ffff:${dst.host}`, v4: false };
  }
  if (version === 1) {
    const line = `PROXY ${src.v4 ? "TCP4" : "TCP6"} ${src.host} ${dst.host} ${src.port} ${dst.port}\r\n`;
    return Buffer.from(line, "latin1");
  }
  const size = src.v4 ? 4 : 16;
  const addrs = Buffer.alloc(2 * size + 4);
  ipToBytes(src.host, src.v4).copy(addrs, 0);
  ipToBytes(dst.host, dst.v4).copy(addrs, size);
  addrs.writeUInt16BE(src.port, 2 * size);
  addrs.writeUInt16BE(dst.port, 2 * size + 2);
  return v2(0x21, src.v4 ? 0x11 : 0x21, [addrs, tlvBytes]);
}

function v2(verCmd: number, famProto: number, body: Buffer[]): Buffer {
  const len = body.reduce((n, p) => n + p.length, 0);
  if (V2_FIXED + len > V2_MAX_HEADER) {
    throw new ConfigError(`proxyHeader is ${V2_FIXED + len} bytes, over the 64 KiB limit`, {
      field: "proxyHeader.tlvs",
    });
  }
  const fixed = Buffer.alloc(V2_FIXED);
  V2_SIG.copy(fixed, 0);
  fixed[12] = verCmd;
  fixed[13] = famProto;
  fixed.writeUInt16BE(len, 14);
  return Buffer.concat([fixed, ...body]);
}

function encodeTLVs(tlvs: ReadonlyArray<{ type: number; value: Uint8Array }>): Buffer {
  if (!Array.isArray(tlvs)) {
    throw new ConfigError("proxyHeader.tlvs must be an array of { type, value }", {
      field: "proxyHeader.tlvs",
    });
  }
  const parts: Buffer[] = [];
  tlvs.forEach((t, i) => {
    const ok =
      typeof t === "object" &&
      t !== null &&
      Number.isInteger(t.type) &&
      t.type >= 0 &&
      t.type <= 255 &&
      t.value instanceof Uint8Array &&
      t.value.length <= 0xffff;
    if (!ok) {
      throw new ConfigError(
        `proxyHeader.tlvs[${i}] must be { type: 0..255, value: Uint8Array of at most 65535 bytes }`,
        { field: `proxyHeader.tlvs[${i}]` },
      );
    }
    const head = Buffer.alloc(3);
    head[0] = t.type;
    head.writeUInt16BE(t.value.length, 1);
    parts.push(head, Buffer.from(t.value));
  });
  return Buffer.concat(parts);
}

function endpoint(
  a: Address | undefined,
  which: string,
): { host: string; port: number; v4: boolean } {
  const field = `proxyHeader.${which}`;
  if (a === undefined) {
    throw new ConfigError(`${field} is required for a PROXY header (an "IP:port" string)`, {
      field,
    });
  }
  let host: string | undefined;
  let port: number;
  try {
    ({ host, port } = parseAddress(a, true));
  } catch (err) {
    throw new ConfigError(`${field}: ${(err as Error).message}`, { field, cause: err });
  }
  if (host === undefined || !(isIPv4(host) || isIPv6(host)) || host.includes("%")) {
    throw new ConfigError(`${field} must be an IP address with a port, got ${JSON.stringify(a)}`, {
      field,
    });
  }
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  if (mapped) return { host: mapped[1]!, port, v4: true };
  return { host, port, v4: isIPv4(host) };
}

function ipToBytes(host: string, v4: boolean): Buffer {
  const bytes = Buffer.from(ipBytes(host)!); // 16 bytes, IPv4 mapped
  return v4 ? bytes.subarray(12) : bytes;
}

// ------------------------------------------------------------------ CRC32C

let crcTable: Uint32Array | undefined;

/** CRC32C (Castagnoli), as the v2 CRC32C TLV uses it. */
export function crc32c(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
      crcTable[i] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// ------------------------------------------------------------------ reading from a socket

/** How one accepted socket's header is read (the listener's resolved options). */
export interface ReadHeaderOptions {
  mode: "required" | "optional";
  /** ms; 0 = no limit. */
  timeout: number;
  /** Whether this peer may send a header. */
  trusted: boolean;
}

/** A header read in progress; `cancel` destroys the socket (listener shutdown). */
export interface HeaderRead {
  /** The header (null: none, optional mode), or null-with-`dropped` when the peer left silently. */
  readonly done: Promise<{ header: ProxyHeader | null; dropped: boolean }>;
  cancel(): void;
}

/**
 * Read a PROXY header from a freshly accepted, paused socket, before anything
 * else reads it. Bytes after the header go back into the socket (unshift), so
 * the conn built next sees them first. On failure the socket is destroyed and
 * `done` rejects with ProxyProtocolError naming the peer. In optional mode, a
 * peer that says nothing within `timeout` is taken to have no header.
 */
export function readProxyHeader(socket: Socket, opts: ReadHeaderOptions): HeaderRead {
  const peer = remoteAddrOf(socket).toString();
  let settle!: (v: { header: ProxyHeader | null; dropped: boolean } | Error) => void;
  const done = new Promise<{ header: ProxyHeader | null; dropped: boolean }>((resolve, reject) => {
    settle = (v) => (v instanceof Error ? reject(v) : resolve(v));
  });
  done.catch(noop); // the listener awaits it; never unhandled if it does not get to
  if (opts.mode === "required" && !opts.trusted) {
    socket.on("error", noop);
    socket.destroy();
    settle(
      new ProxyProtocolError(
        `PROXY protocol: refused ${peer}: it is not in proxyProtocol.trusted, ` +
          "so it may not send a PROXY header, and this listener requires one",
        { reason: "untrusted" },
      ),
    );
    return { done, cancel: noop };
  }
  let buf: Buffer = Buffer.alloc(0);
  /** Chunks not yet joined into `buf`: a v2 body is joined once, when all of it is here. */
  const pending: Buffer[] = [];
  let pendingBytes = 0;
  let need = 0;
  let finished = false;
  const failWith = (reason: ProxyProtocolReason, what: string, cause?: unknown) =>
    finish(new ProxyProtocolError(`PROXY protocol from ${peer}: ${what}`, { reason, cause }));
  const finish = (result: { header: ProxyHeader | null; rest: Buffer } | Error | "dropped") => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.off("data", onData);
    socket.off("end", onEnd);
    socket.off("error", onError);
    socket.off("close", onClose);
    if (result instanceof Error || result === "dropped") {
      socket.on("error", noop);
      socket.destroy();
      settle(result === "dropped" ? { header: null, dropped: true } : result);
      return;
    }
    socket.on("error", noop); // until the conn's transport takes over the socket
    socket.pause();
    if (result.rest.length > 0) socket.unshift(result.rest);
    settle({ header: result.header, dropped: false });
  };
  const onData = (chunk: Buffer) => {
    pending.push(chunk);
    pendingBytes += chunk.length;
    if (buf.length + pendingBytes < need) return;
    buf = buf.length === 0 && pending.length === 1 ? chunk : Buffer.concat([buf, ...pending]);
    pending.length = 0;
    pendingBytes = 0;
    let r: ParseResult;
    try {
      r = parseProxyHeader(buf);
    } catch (err) {
      const e = err as ProxyProtocolError;
      return failWith(e.reason, `${e.message}${hint(e.reason)}`);
    }
    if (r.kind === "more") {
      need = r.need ?? 0;
      return;
    }
    if (r.kind === "none") {
      if (opts.mode === "optional") return finish({ header: null, rest: buf });
      return failWith(
        "missing",
        `the connection did not start with a PROXY header (it began ${describeStart(buf)}); ` +
          'is the balancer sending one (HAProxy: send-proxy-v2)? Otherwise set proxyProtocol.mode "optional" or turn it off',
      );
    }
    if (!opts.trusted) {
      return failWith(
        "untrusted",
        "refused a PROXY header from a peer not in proxyProtocol.trusted (it could forge any client address)",
      );
    }
    finish({ header: r.header, rest: buf.subarray(r.length) });
  };
  const onEnd = () => {
    const got = buf.length + pendingBytes;
    if (got === 0) {
      if (opts.mode === "optional") return finish("dropped");
      return failWith("truncated", "the peer closed the connection before sending a PROXY header");
    }
    failWith("truncated", `the peer closed the connection after ${got} byte(s) of a PROXY header`);
  };
  const onError = (err: Error) =>
    failWith("truncated", `the connection failed while reading the header: ${err.message}`, err);
  const onClose = () => failWith("truncated", "the connection closed while reading the header");
  const timer =
    opts.timeout > 0
      ? setTimeout(() => {
          const got = buf.length + pendingBytes;
          if (opts.mode === "optional" && got === 0) {
            finish({ header: null, rest: buf }); // silent client: a server-speaks-first protocol
            return;
          }
          failWith(
            "timeout",
            got === 0
              ? `no PROXY header within ${opts.timeout} ms (nothing arrived)`
              : `the PROXY header did not complete within ${opts.timeout} ms (${got} byte(s) arrived)`,
          );
        }, opts.timeout)
      : undefined;
  socket.on("data", onData);
  socket.on("end", onEnd);
  socket.on("error", onError);
  socket.on("close", onClose);
  socket.resume();
  return {
    done,
    cancel: () => failWith("truncated", "the listener closed while reading the header"),
  };
}

function hint(reason: ProxyProtocolReason): string {
  return reason === "malformed" || reason === "oversized"
    ? "; the connection was closed (is the balancer speaking another protocol, or a client sending a forged header?)"
    : "";
}

/** The first bytes of a connection, for a person: a TLS ClientHello, an HTTP request, or hex. */
function describeStart(b: Buffer): string {
  if (b[0] === 0x16 && b[1] === 0x03) return "with a TLS ClientHello";
  const text = b.toString("latin1", 0, Math.min(b.length, 16));
  if (/^[A-Z]{3,7} \S/.test(text)) return `with ${show(text.split("\r")[0]!)} (plain HTTP?)`;
  return `with bytes ${[...b.subarray(0, 8)].map(hex2).join(" ")}`;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

function show(s: string): string {
  return JSON.stringify(s.length > 60 ? `${s.slice(0, 60)}...` : s);
}

function noop(): void {}
