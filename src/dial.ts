/**
 * Dialing: resolve a host, then race connection attempts RFC 8305 style
 * ("Happy Eyeballs"): addresses alternate between families, a new attempt
 * starts every `fallbackDelay` ms or as soon as the previous one fails, the
 * first to connect wins and the rest are destroyed.
 * @module
 */
import { lookup } from "node:dns/promises";
import { isIP, Socket } from "node:net";
import { type Address, formatHostPort, parseAddress, unbracket } from "./addr.ts";
import { Alarm, abortReason, bounded, checkTimeout, NEVER, toMonotonic } from "./deadline.ts";
import {
  asError,
  ConfigError,
  DeadlineExceededError,
  DialError,
  describeSystemError,
} from "./errors.ts";
import { encodeProxyHeader, type ProxyHeaderInit } from "./proxy.ts";

/**
 * Options shared by tcp.connect and tls.connect. They are validated before any I/O: an
 * invalid value is a {@link ConfigError} naming the field.
 *
 * @example
 * ```ts
 * const ac = new AbortController();
 * const conn = await tcp.connect("db.internal:5432", {
 *   timeout: 5000,        // the whole connect
 *   signal: ac.signal,
 *   family: "ipv4",
 *   keepAlive: 30_000,
 * });
 * ```
 */
export interface DialOptions {
  /**
   * Milliseconds for the whole connect, TLS handshake included: resolution, every attempt,
   * and (tls.connect) the handshake. When it elapses the connect rejects with
   * {@link DeadlineExceededError}, op "connect". Default: none (a TLS handshake still has its
   * own `handshakeTimeout`).
   */
  timeout?: number | undefined;
  /**
   * Absolute deadline (Date or epoch ms); the earlier of timeout/deadline wins. Default: none.
   */
  deadline?: Date | number | undefined;
  /** Abort the dial; it rejects with `signal.reason` (at once if already aborted). */
  signal?: AbortSignal | undefined;
  /**
   * Local address to bind: `"10.0.0.5"` or `"10.0.0.5:0"` (`"[::1]:0"` for IPv6). With
   * `family: "any"`, only addresses of its family are tried. Default: the kernel picks.
   * Anything but an IP (and port) is a ConfigError with `field: "localAddress"`.
   */
  localAddress?: string | undefined;
  /**
   * Custom name resolution; default node:dns lookup with all addresses.
   * It must resolve to IP address strings; a rejection or anything else is a
   * {@link DialError}. Not called for IP literals.
   *
   * @example
   * ```ts
   * await tcp.connect("svc:80", { resolver: async () => ["10.0.0.7", "10.0.0.8"] });
   * ```
   */
  resolver?: ((host: string) => Promise<string[]>) | undefined;
  /**
   * Address family policy, default "any": "ipv4" or "ipv6" try only the addresses of that
   * family (a DialError when there are none).
   */
  family?: "any" | "ipv4" | "ipv6" | undefined;
  /**
   * Happy Eyeballs attempt delay in ms, default 250; 0 tries addresses one after another.
   * A failed attempt starts the next one at once either way.
   */
  fallbackDelay?: number | undefined;
  /** TCP_NODELAY, default true. */
  noDelay?: boolean | undefined;
  /**
   * TCP keep-alive initial delay in ms, or false (default). A conn lost to keep-alive
   * fails with {@link ConnectionResetError} (syscallCode ETIMEDOUT).
   */
  keepAlive?: number | false | undefined;
  /**
   * Send a PROXY protocol header (v1 or v2) right after connecting, before any
   * other byte (before the TLS ClientHello): tell the server who the client is.
   */
  proxyHeader?: ProxyHeaderInit | undefined;
}

/** A connected socket and what the dial learned on the way. */
export interface DialResult {
  socket: Socket;
  /** The host as given (name or literal, no brackets). */
  host: string;
  port: number;
  /** Monotonic expiry of the whole connect (NEVER if none): what is left is the handshake's. */
  expiry: number;
}

const DEFAULT_FALLBACK_DELAY = 250;

/** Validate DialOptions once, before any I/O. */
export function checkDialOptions(opts: DialOptions): void {
  if (typeof opts !== "object" || opts === null) {
    throw new ConfigError("connect options must be an object", { field: "options" });
  }
  const field = (name: string, fn: () => void) => {
    try {
      fn();
    } catch (err) {
      throw new ConfigError(`invalid option ${name}: ${asError(err).message}`, {
        field: name,
        cause: err,
      });
    }
  };
  if (opts.timeout !== undefined) field("timeout", () => checkTimeout(opts.timeout, "timeout"));
  if (opts.fallbackDelay !== undefined) {
    field("fallbackDelay", () => checkTimeout(opts.fallbackDelay, "fallbackDelay"));
  }
  if (opts.deadline !== undefined) field("deadline", () => toMonotonic(opts.deadline, "deadline"));
  if (opts.keepAlive !== undefined && opts.keepAlive !== false) {
    field("keepAlive", () => checkTimeout(opts.keepAlive, "keepAlive"));
  }
  if (opts.family !== undefined && !["any", "ipv4", "ipv6"].includes(opts.family)) {
    throw new ConfigError(`family must be "any", "ipv4" or "ipv6", got ${String(opts.family)}`, {
      field: "family",
    });
  }
  if (opts.resolver !== undefined && typeof opts.resolver !== "function") {
    throw new ConfigError("resolver must be a function (host) => Promise<string[]>", {
      field: "resolver",
    });
  }
  if (opts.signal !== undefined && !(opts.signal instanceof AbortSignal)) {
    throw new ConfigError("signal must be an AbortSignal", { field: "signal" });
  }
  if (opts.localAddress !== undefined) parseLocal(opts.localAddress);
  if (opts.proxyHeader !== undefined) encodeProxyHeader(opts.proxyHeader);
}

/** The monotonic expiry of a dial: the earlier of `timeout` and `deadline`. */
export function dialExpiry(opts: DialOptions): number {
  const byTimeout = opts.timeout === undefined ? NEVER : performance.now() + opts.timeout;
  return Math.min(byTimeout, toMonotonic(opts.deadline));
}

/**
 * Resolve `address` and connect, racing attempts across addresses.
 * Rejects with DialError (all attempts failed, every cause attached),
 * DeadlineExceededError (op "connect") or the signal's reason.
 */
export async function dial(address: Address, opts: DialOptions = {}): Promise<DialResult> {
  const { host, port } = parseAddress(address);
  checkDialOptions(opts);
  const target = host!;
  const expiry = dialExpiry(opts);
  const signal = opts.signal;
  if (signal?.aborted) throw abortReason(signal);
  const local = opts.localAddress === undefined ? undefined : parseLocal(opts.localAddress);
  const header = opts.proxyHeader === undefined ? undefined : encodeProxyHeader(opts.proxyHeader);

  const ips = await bounded(resolve(target, port, opts, local?.host), expiry, signal, () =>
    timeoutError(target, port, "resolving the name", []),
  );
  const socket = await race(ips, target, port, opts, local, expiry);
  // First on the wire. Waiting for it to reach the kernel keeps it ahead of a TLS
  // layer that writes to the socket's handle directly.
  if (header) await new Promise<void>((resolve) => socket.write(header, () => resolve()));
  return { socket, host: target, port, expiry };
}

/** Addresses for `host` under the family policy, interleaved by family (RFC 8305 §4). */
async function resolve(
  host: string,
  port: number,
  opts: DialOptions,
  localHost: string | undefined,
): Promise<string[]> {
  const bare = unbracket(host);
  let family = opts.family ?? "any";
  if (localHost !== undefined && family === "any") {
    family = isIP(localHost) === 6 ? "ipv6" : "ipv4"; // a bound socket can only reach its own family
  }
  let ips: string[];
  if (isIP(bare) !== 0) {
    ips = [bare];
  } else {
    try {
      ips = opts.resolver
        ? await opts.resolver(bare)
        : (await lookup(bare, { all: true, verbatim: true })).map((a) => a.address);
    } catch (err) {
      const why = describeSystemError(err) ?? asError(err).message;
      throw new DialError(`could not resolve ${bare}: ${why}`, {
        host: bare,
        port,
        errors: [asError(err)],
      });
    }
    if (!Array.isArray(ips) || ips.some((ip) => typeof ip !== "string" || isIP(ip) === 0)) {
      throw new DialError(`resolver for ${bare} must return an array of IP addresses`, {
        host: bare,
        port,
      });
    }
  }
  const v4 = ips.filter((ip) => isIP(ip) === 4);
  const v6 = ips.filter((ip) => isIP(ip) === 6);
  if (family === "ipv4") return nonEmpty(v4, bare, port, family);
  if (family === "ipv6") return nonEmpty(v6, bare, port, family);
  const firstIs6 = isIP(ips[0] ?? "") === 6;
  const [a, b] = firstIs6 ? [v6, v4] : [v4, v6];
  const out: string[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (i < a.length) out.push(a[i]!);
    if (i < b.length) out.push(b[i]!);
  }
  return nonEmpty(out, bare, port, family);
}

function nonEmpty(ips: string[], host: string, port: number, family: string): string[] {
  if (ips.length > 0) return ips;
  const which = family === "any" ? "" : ` ${family === "ipv4" ? "IPv4" : "IPv6"}`;
  throw new DialError(`${host} has no${which} addresses to connect to`, { host, port });
}

/** Race connection attempts; resolve with the first connected socket. */
function race(
  ips: string[],
  host: string,
  port: number,
  opts: DialOptions,
  local: { host: string; port: number } | undefined,
  expiry: number,
): Promise<Socket> {
  const delay = opts.fallbackDelay ?? DEFAULT_FALLBACK_DELAY;
  const signal = opts.signal;
  return new Promise<Socket>((resolve, reject) => {
    const live = new Set<Socket>();
    const errors: Error[] = [];
    let next = 0;
    let done = false;
    let stagger: NodeJS.Timeout | undefined;

    const finish = (err: unknown, winner?: Socket) => {
      if (done) return;
      done = true;
      clearTimeout(stagger);
      deadline.clear();
      signal?.removeEventListener("abort", onAbort);
      for (const s of live) if (s !== winner) s.destroy();
      if (winner) resolve(winner);
      else reject(err);
    };
    const onAbort = () => finish(abortReason(signal!));
    const deadline = new Alarm(() => finish(timeoutError(host, port, "connecting", errors)));
    deadline.set(expiry);
    signal?.addEventListener("abort", onAbort, { once: true });

    const startNext = () => {
      clearTimeout(stagger);
      if (done || next >= ips.length) return;
      const ip = ips[next++]!;
      const socket = new Socket({ allowHalfOpen: true });
      live.add(socket);
      const onFail = (err: Error) => {
        live.delete(socket);
        socket.destroy();
        const why = describeSystemError(err) ?? err.message;
        const e = new Error(`${formatHostPort(ip, port)}: ${why}`, { cause: err });
        (e as Error & { address: string }).address = ip;
        errors.push(e);
        if (done) return;
        if (live.size === 0 && next >= ips.length) {
          // One attempt: its reason alone, the address once (and the IP beside a name).
          const one = ips.length === 1;
          const list = one
            ? (describeSystemError(err) ?? err.message)
            : errors.map((x) => x.message).join("; ");
          const ip = one && ips[0] !== host ? ` (${ips[0]})` : "";
          finish(
            new DialError(`could not connect to ${formatHostPort(host, port)}${ip}: ${list}`, {
              host,
              port,
              errors,
            }),
          );
        } else if (next < ips.length) {
          startNext(); // a failure starts the next attempt at once
        }
      };
      socket.once("error", onFail);
      socket.once("connect", () => {
        socket.off("error", onFail);
        socket.setNoDelay(opts.noDelay ?? true);
        if (typeof opts.keepAlive === "number") socket.setKeepAlive(true, opts.keepAlive);
        finish(undefined, socket);
      });
      socket.connect({
        host: ip,
        port,
        ...(local ? { localAddress: local.host, localPort: local.port } : {}),
      });
      if (delay > 0 && next < ips.length) stagger = setTimeout(startNext, delay);
    };
    startNext();
  });
}

function timeoutError(
  host: string,
  port: number,
  phase: string,
  attempts: Error[],
): DeadlineExceededError {
  const tried = attempts.length ? ` (${attempts.map((e) => e.message).join("; ")})` : "";
  return new DeadlineExceededError(
    "connect",
    `connect to ${formatHostPort(host, port)} timed out while ${phase}${tried}; ` +
      "check the address, or raise timeout/deadline",
    attempts.length ? { cause: new AggregateError(attempts) } : undefined,
  );
}

/** `"10.0.0.5"` or `"10.0.0.5:0"` or `"[::1]:0"` -> host and port (0 = any). */
function parseLocal(s: string): { host: string; port: number } {
  if (typeof s !== "string" || s === "") {
    throw new ConfigError("localAddress must be an IP address string", { field: "localAddress" });
  }
  if (isIP(s) !== 0) return { host: s, port: 0 };
  let parsed: { host: string | undefined; port: number };
  try {
    parsed = parseAddress(s, true);
  } catch (err) {
    throw new ConfigError(
      `localAddress ${JSON.stringify(s)} is not an IP address or "IP:port": ${asError(err).message}`,
      { field: "localAddress", cause: err },
    );
  }
  const { host, port } = parsed;
  if (host === undefined || isIP(host) === 0) {
    throw new ConfigError(`localAddress ${JSON.stringify(s)} must be an IP address`, {
      field: "localAddress",
    });
  }
  return { host, port };
}
