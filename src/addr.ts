/**
 * Parsing and formatting of addresses: `"example.com:443"`, `"127.0.0.1:8443"`,
 * `"[::1]:8443"`, `":8443"` (all interfaces) or `{ host, port }`.
 * @module
 */
import { isIP } from "node:net";
import { ConfigError } from "./errors.ts";

/**
 * Where to connect or listen: `"host:port"`, `"[v6]:port"`, `":port"`, `{ host, port }`,
 * or a {@link SocketAddr} that a listener or conn reported (it means the same thing).
 * A malformed address (no port, a port outside 1..65535 — 0 only for listening —, an IPv6
 * literal without brackets) is a {@link ConfigError} before any I/O. An empty or missing host
 * means all interfaces when listening and is an error when connecting.
 * In the object form, `host` is a host name, an IPv4 literal or an IPv6 literal (brackets
 * optional), and `port` a number in 1..65535 (0 picks a free port when listening).
 *
 * @example
 * ```ts
 * await tcp.connect("example.com:80");
 * await tcp.connect("[::1]:8443");
 * await tcp.connect({ host: "10.0.0.5", port: 5432 });
 * await tcp.listen({ addr: ":0" }); // all interfaces, a free port
 * await tcp.connect(listener.addr); // a SocketAddr a listener reported
 * ```
 */
export type Address = string | { host?: string; port: number } | SocketAddr;

/** A parsed address; `host` is undefined for "all interfaces" (`":8443"`). */
export interface HostPort {
  host: string | undefined;
  port: number;
}

/**
 * A concrete socket endpoint, as conns and listeners report it (`conn.remoteAddr`,
 * `listener.addr`). `toString()` gives `"127.0.0.1:8443"` or `"[::1]:8443"`, and a SocketAddr
 * is accepted wherever an {@link Address} is.
 */
export class SocketAddr {
  /** The IP family of `address`. */
  readonly family: "IPv4" | "IPv6";
  /** The IP address, without brackets: "127.0.0.1", "::1". */
  readonly address: string;
  /** The port number. */
  readonly port: number;

  /**
   * A socket address. tlsnet makes these; constructing one is for tests and custom transports.
   *
   * @param address An IP address, without brackets.
   * @param port The port number.
   * @param family Default: "IPv6" when `address` is an IPv6 literal, else "IPv4".
   */
  constructor(address: string, port: number, family?: "IPv4" | "IPv6") {
    this.address = address;
    this.port = port;
    this.family = family ?? (isIP(address) === 6 ? "IPv6" : "IPv4");
  }

  /** `"127.0.0.1:8443"` or `"[::1]:8443"`: the form {@link Address} strings take. */
  toString(): string {
    return formatHostPort(this.address, this.port);
  }

  /** The same as {@link SocketAddr.toString}, so that JSON.stringify prints `"127.0.0.1:8443"`. */
  toJSON(): string {
    return this.toString();
  }
}

/** `host:port`, with IPv6 literals in brackets. */
export function formatHostPort(host: string | undefined, port: number): string {
  if (host === undefined || host === "") return `:${port}`;
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Parse an {@link Address}. Throws ConfigError naming the input when it has no
 * port, a port outside 1..65535 (0 only when `forListen`), or bad brackets.
 */
export function parseAddress(address: Address, forListen = false): HostPort {
  let host: string | undefined;
  let port: unknown;
  if (typeof address === "string") {
    [host, port] = splitHostPort(address);
  } else if (address instanceof SocketAddr) {
    host = address.address;
    port = address.port;
  } else if (typeof address === "object" && address !== null) {
    host = address.host;
    port = address.port;
    if (host !== undefined && typeof host !== "string") {
      throw new ConfigError(`address host must be a string, got ${typeof host}`, {
        field: "host",
      });
    }
    if (host !== undefined) host = unbracket(host);
  } else {
    throw new ConfigError(
      `address must be a "host:port" string or { host, port }, got ${describe(address)}`,
      { field: "address" },
    );
  }
  const shown = JSON.stringify(address);
  if (typeof port !== "number" || !Number.isInteger(port)) {
    throw new ConfigError(`address ${shown} has no valid port`, { field: "port" });
  }
  const min = forListen ? 0 : 1;
  if (port < min || port > 65535) {
    throw new ConfigError(
      `address ${shown}: port ${port} is out of range ${min}..65535` +
        (port === 0 ? " (port 0 is only for listening)" : ""),
      { field: "port" },
    );
  }
  if (host === "") host = undefined;
  if (!forListen && host === undefined) {
    throw new ConfigError(`address ${shown} has no host to connect to`, { field: "host" });
  }
  if (host?.includes(":") && isIP(host) !== 6) {
    throw new ConfigError(`address ${shown}: "${host}" is not a valid IPv6 address`, {
      field: "host",
    });
  }
  return { host, port };
}

function splitHostPort(s: string): [string | undefined, number | undefined] {
  const bad = (why: string): never => {
    throw new ConfigError(`address ${JSON.stringify(s)}: ${why}`, { field: "address" });
  };
  let host: string;
  let portText: string;
  if (s.startsWith("[")) {
    const close = s.indexOf("]");
    if (close < 0) bad("missing ']' after the IPv6 address");
    host = s.slice(1, close);
    const rest = s.slice(close + 1);
    if (!rest.startsWith(":")) bad('expected ":port" after "]"');
    portText = rest.slice(1);
  } else {
    if (s.includes("]")) bad("']' without '['");
    const colon = s.lastIndexOf(":");
    if (colon < 0) bad('no port; write "host:port"');
    host = s.slice(0, colon);
    if (host.includes(":")) bad('IPv6 addresses need brackets, e.g. "[::1]:8443"');
    portText = s.slice(colon + 1);
  }
  if (!/^\d{1,5}$/.test(portText)) bad(`port "${portText}" is not a number`);
  return [host, Number(portText)];
}

function describe(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "an array" : typeof v;
}

/** `host` without IPv6 brackets: "[::1]" -> "::1". */
export function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/** Is `host` an IP literal (v4 or v6, brackets allowed)? */
export function isIPLiteral(host: string): boolean {
  return isIP(unbracket(host)) !== 0;
}
