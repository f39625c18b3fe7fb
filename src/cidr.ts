/**
 * A small CIDR matcher for IPv4 and IPv6 (`proxyProtocol.trusted`). Every
 * address is compared as 16 bytes: IPv4 as its IPv4-mapped IPv6 form
 * (`::ffff:a.b.c.d`), so `"127.0.0.1/32"` also matches a peer reported as
 * `::ffff:127.0.0.1` by a dual-stack listener, and the reverse.
 * @module
 */
import { isIPv4, isIPv6 } from "node:net";
import { ConfigError } from "./errors.ts";

/** One parsed range: the network's 16 bytes and the prefix length over them. */
interface Range {
  bytes: Uint8Array;
  bits: number;
}

/** The 16-byte form of an IP literal (IPv4 mapped into IPv6), or undefined if it is not one. */
export function ipBytes(address: string): Uint8Array | undefined {
  const ip = address.replace(/%.*$/, ""); // a zone ("fe80::1%eth0") does not change the address
  if (isIPv4(ip)) {
    const out = new Uint8Array(16);
    out[10] = 0xff;
    out[11] = 0xff;
    ip.split(".").forEach((p, i) => {
      out[12 + i] = Number(p);
    });
    return out;
  }
  if (!isIPv6(ip)) return undefined;
  let tail: number[] = [];
  let text = ip;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const v4 = dotted[1]!.split(".").map(Number);
    tail = [(v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!];
    text = text.slice(0, -dotted[1]!.length);
    if (text.endsWith(":") && !text.endsWith("::")) text = text.slice(0, -1);
  }
  const [head, rest] = text.split("::") as [string, string | undefined];
  const groups = (s: string) => (s === "" ? [] : s.split(":").map((g) => Number.parseInt(g, 16)));
  const left = groups(head);
  const right = [...(rest === undefined ? [] : groups(rest)), ...tail];
  const words =
    rest === undefined
      ? [...left, ...tail]
      : [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
  if (words.length !== 8) return undefined;
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

function parseRange(entry: unknown, field: string): Range {
  if (typeof entry !== "string" || entry === "") {
    throw new ConfigError(`${field} must be a CIDR string like "10.0.0.0/8" or "::1/128"`, {
      field,
    });
  }
  const slash = entry.indexOf("/");
  const ip = slash < 0 ? entry : entry.slice(0, slash);
  const bytes = ipBytes(ip);
  if (bytes === undefined || ip.includes("%")) {
    throw new ConfigError(`${field}: "${entry}" is not an IP address or CIDR range`, { field });
  }
  const v4 = isIPv4(ip);
  const max = v4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const text = entry.slice(slash + 1);
    bits = Number(text);
    if (!/^\d{1,3}$/.test(text) || bits > max) {
      throw new ConfigError(`${field}: prefix length in "${entry}" must be 0..${max}`, { field });
    }
  }
  return { bytes, bits: v4 ? 96 + bits : bits };
}

function inRange(addr: Uint8Array, r: Range): boolean {
  const whole = r.bits >> 3;
  for (let i = 0; i < whole; i++) if (addr[i] !== r.bytes[i]) return false;
  const rem = r.bits & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (addr[whole]! & mask) === (r.bytes[whole]! & mask);
}

/**
 * Compile a list of CIDR ranges (or bare addresses) into a predicate over IP
 * address strings. Throws ConfigError naming `field[i]` for a bad entry.
 *
 * @example
 * ```ts
 * const trusted = cidrMatcher(["10.0.0.0/8", "::1"]);
 * trusted("10.1.2.3"); // true
 * ```
 */
export function cidrMatcher(list: unknown, field = "trusted"): (address: string) => boolean {
  if (!Array.isArray(list)) {
    throw new ConfigError(`${field} must be an array of CIDR strings, e.g. ["10.0.0.0/8"]`, {
      field,
    });
  }
  const ranges = list.map((e, i) => parseRange(e, `${field}[${i}]`));
  return (address: string) => {
    const bytes = ipBytes(address);
    return bytes !== undefined && ranges.some((r) => inRange(bytes, r));
  };
}
