/**
 * Listener: accepts connections over node:net and hands them out as Conns,
 * either one by one (`accept()`, `for await`) or to a `handler` that the
 * listener runs for each connection. Shared by tcp.listen and tls.listen.
 * @module
 */
import { createServer, type Server, type Socket } from "node:net";
import { type Address, formatHostPort, parseAddress, SocketAddr } from "./addr.ts";
import { type Conn, kOnClose } from "./conn.ts";
import {
  Alarm,
  abortReason,
  checkOpOptions,
  expiryAfter,
  NEVER,
  type OpOptions,
  toMonotonic,
} from "./deadline.ts";
import { acceptChannel, errorChannel, publish } from "./diagnostics.ts";
import {
  asError,
  ClosedError,
  ConfigError,
  DeadlineExceededError,
  describeSystemError,
  ListenError,
} from "./errors.ts";
import {
  type HeaderRead,
  type ProxyHeader,
  type ProxyProtocolOptions,
  type ProxyProtocolPolicy,
  proxyProtocolPolicy,
  readProxyHeader,
} from "./proxy.ts";
import { remoteAddrOf } from "./socket-transport.ts";

/**
 * Options of tcp.listen and tls.listen. Invalid values are a {@link ConfigError} before the
 * bind.
 *
 * @example
 * ```ts
 * await tcp.listen({
 *   addr: ":7000",
 *   maxConnections: 1000,
 *   handler: async (conn) => { for await (const chunk of conn) await conn.write(chunk) },
 *   onError: (err, { remoteAddr }) => console.error(`${remoteAddr ?? "listener"}: ${err.message}`),
 * });
 * ```
 */
export interface ListenOptions<C> {
  /** Where to listen: `"127.0.0.1:8443"`, `"[::1]:0"`, `":8443"` (all interfaces); port 0 picks one. */
  addr: Address;
  /** Kernel accept backlog, default 511. Also bounds conns waiting for accept(). */
  backlog?: number | undefined;
  /** SO_REUSEPORT where the platform and Node version have it (Node >= 22.12 on Linux). */
  reusePort?: boolean | undefined;
  /**
   * Run the listener's own accept loop and call this for each conn. The conn is
   * closed when the handler settles; a handler that throws goes to `onError`.
   */
  handler?: ((conn: C) => void | Promise<void>) | undefined;
  /** Failures that never reach a handler or accept(): handshakes, handler errors. */
  onError?: ((err: Error, info: { remoteAddr?: SocketAddr }) => void) | undefined;
  /**
   * Connections beyond this many active ones are closed at once and counted as rejected.
   * Default: no limit.
   */
  maxConnections?: number | undefined;
  /**
   * TCP_NODELAY on accepted sockets, as on dialed ones. Default true: with Nagle's
   * algorithm a small reply that follows another small write (a TLS 1.3 session
   * ticket, a header) waits for the peer's ACK, about 40 ms.
   */
  noDelay?: boolean | undefined;
  /**
   * Read a PROXY protocol header (v1 or v2) from each conn before anything else
   * (before TLS): `conn.remoteAddr` becomes the client's address and `conn.proxy`
   * holds the header. `true` = `{ mode: "required", timeout: 5000 }`, any peer trusted.
   */
  proxyProtocol?: boolean | ProxyProtocolOptions | undefined;
}

/** Counters of a listener; `active` counts conns not yet closed (by the app or the peer). */
export interface ListenerStats {
  /** Connections taken from the kernel and made into conns (rejected ones not included). */
  accepted: number;
  /** Accepted conns not yet closed, by the app or the peer. */
  active: number;
  /** Connections closed at once: over `maxConnections`, or over `backlog` waiting for accept(). */
  rejected: number;
  /** TLS handshakes that failed (handler mode, and lazy conns from accept()); 0 for TCP. */
  handshakeFailures: number;
}

/**
 * How a kind of listener turns sockets into conns (TCP: plain; TLS: lazy TLS).
 * @internal
 */
export interface ConnFactory<C extends Conn> {
  /**
   * `proxy`: the PROXY header read from the socket first, or null. `localAddr`: the conn's
   * local address when the listener knows it without asking the socket (bound to one IP).
   */
  wrap(socket: Socket, proxy: ProxyHeader | null, localAddr: SocketAddr | undefined): C;
  /** Runs before a handler gets the conn (TLS: the handshake); a failure counts as a handshake failure. */
  prepare?: ((conn: C) => Promise<unknown>) | undefined;
  /** The handler for this conn (TLS: by ALPN protocol); default: options.handler. */
  pick?: ((conn: C) => ((conn: C) => void | Promise<void>) | undefined) | undefined;
}

type AcceptWaiter<C> = {
  resolve: (c: C) => void;
  reject: (e: unknown) => void;
  /** Monotonic expiry of this call's own timeout (NEVER if none); the listener deadline applies too. */
  callExpiry: number;
  alarm: Alarm;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
};

/**
 * A listening socket. Iterate it, call accept(), or give `handler` in the options.
 *
 * @example
 * ```ts
 * await using ln = await tcp.listen({ addr: "127.0.0.1:0" });
 * for await (const conn of ln) serve(conn);
 * ```
 */
export class Listener<C extends Conn> implements AsyncIterable<C>, AsyncDisposable {
  /** The address the listener is bound to, with the port the kernel picked for port 0. */
  readonly addr: SocketAddr;
  private readonly server: Server;
  private readonly factory: ConnFactory<C>;
  private readonly opts: ListenOptions<C>;
  private readonly backlog: number;
  private readonly queue: C[] = [];
  private readonly waiters: AcceptWaiter<C>[] = [];
  private readonly handled = new Map<C, Promise<void>>();
  private closing: Promise<void> | undefined;
  private deadline = NEVER;
  /** Bound to one IP address (not a wildcard): conns' local address is `addr`. */
  private readonly specificAddr: boolean;
  /** Resolved `proxyProtocol` option, if on. */
  private readonly proxyPolicy: ProxyProtocolPolicy | undefined;
  /** Sockets whose PROXY header is being read (not conns yet). */
  private readonly headerReads = new Set<HeaderRead>();
  private readonly counters: ListenerStats = {
    accepted: 0,
    active: 0,
    rejected: 0,
    handshakeFailures: 0,
  };

  /** Use tcp.listen / tls.listen; subclasses pass a server from {@link bindServer}. */
  protected constructor(server: Server, opts: ListenOptions<C>, factory: ConnFactory<C>) {
    this.server = server;
    this.opts = opts;
    this.factory = factory;
    this.backlog = opts.backlog ?? 511;
    this.proxyPolicy = proxyProtocolPolicy(opts.proxyProtocol);
    const a = server.address();
    if (a === null || typeof a === "string") throw new Error("listener has no TCP address");
    this.addr = new SocketAddr(a.address, a.port, a.family === "IPv6" ? "IPv6" : "IPv4");
    this.specificAddr = a.address !== "0.0.0.0" && a.address !== "::";
    server.on("connection", (socket: Socket) => this.onConnection(socket));
    server.on("error", (err) => this.report(err, undefined));
  }

  /**
   * Bind and listen; rejects with ListenError (address in use...) or ConfigError.
   * @internal
   */
  static async open<C extends Conn>(
    opts: ListenOptions<C>,
    factory: ConnFactory<C>,
  ): Promise<Listener<C>> {
    return new Listener(await bindServer(opts), opts, factory);
  }

  /** True until close() is called. */
  get isOpen(): boolean {
    return this.closing === undefined;
  }

  /** A copy of the counters. */
  stats(): ListenerStats {
    return { ...this.counters };
  }

  /**
   * Count a failed handshake (TLS listeners call this for lazy conns too).
   * @internal
   */
  countHandshakeFailure(): void {
    this.counters.handshakeFailures++;
  }

  /**
   * The next connection. Rejects with ClosedError once closed, DeadlineExceededError on deadline.
   * Also DeadlineExceededError (op "accept") for `opts.timeout`, and `signal.reason`; a
   * TypeError on a listener that runs a `handler`. The conn belongs to the caller:
   * closing the listener does not close it.
   */
  accept(opts?: OpOptions): Promise<C> {
    if (this.opts.handler) {
      return Promise.reject(
        new TypeError("this listener runs its own handler; accept() is not available"),
      );
    }
    try {
      checkOpOptions(opts);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.closing) return Promise.reject(this.closedError());
    const callExpiry = expiryAfter(opts?.timeout);
    if (Math.min(this.deadline, callExpiry) <= performance.now()) {
      return Promise.reject(this.deadlineError());
    }
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const ready = this.queue.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise<C>((resolve, reject) => {
      const w: AcceptWaiter<C> = {
        resolve,
        reject,
        callExpiry,
        alarm: new Alarm(() => this.settle(w, this.deadlineError())),
        signal,
        onAbort: undefined,
      };
      this.arm(w);
      if (signal) {
        w.onAbort = () => this.settle(w, abortReason(signal));
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
      this.waiters.push(w);
    });
  }

  /** Deadline for accept() calls, pending ones included; null or 0 clears it. */
  setDeadline(t: Date | number | null): void {
    this.deadline = toMonotonic(t, "accept deadline");
    for (const w of this.waiters) this.arm(w); // pending accepts follow the new deadline
  }

  /**
   * The conns, one by one, as accept() gives them; the iteration ends when the listener is
   * closed. Not available on a listener that runs a `handler`.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<C> {
    for (;;) {
      try {
        yield await this.accept();
      } catch (err) {
        if (err instanceof ClosedError && this.closing) return;
        throw err;
      }
    }
  }

  /**
   * Stop accepting. Pending accept() calls reject with ClosedError, conns not
   * yet accepted are closed. Handler conns get `graceful` ms (default 0) to
   * finish, then are closed. Conns returned by accept() belong to the caller.
   * Idempotent: later calls return the same promise. A negative `graceful` is a RangeError.
   */
  close(opts?: { graceful?: number }): Promise<void> {
    if (this.closing) return this.closing;
    const graceful = opts?.graceful ?? 0;
    if (typeof graceful !== "number" || !(graceful >= 0)) {
      throw new RangeError(`close({ graceful }) takes ms >= 0, got ${String(graceful)}`);
    }
    this.closing = this.shutdown(graceful);
    return this.closing;
  }

  /** Calls {@link Listener.close} without a grace period, for `await using ln = ...`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async shutdown(graceful: number): Promise<void> {
    // server.close() stops listening at once; its callback would also wait for the
    // conns handed out by accept(), which belong to the caller, so it is not awaited.
    this.server.close();
    for (const w of this.waiters.splice(0)) this.settle(w, this.closedError(), false);
    for (const r of this.headerReads) r.cancel();
    for (const c of this.queue.splice(0)) void c.close();
    const running = [...this.handled.values()];
    if (running.length > 0 && graceful > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(running),
        new Promise((r) => {
          timer = setTimeout(r, graceful);
        }),
      ]);
      clearTimeout(timer);
    }
    await Promise.all([...this.handled.keys()].map((c) => c.close()));
  }

  private onConnection(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const max = this.opts.maxConnections;
    const full = max !== undefined && this.counters.active >= max;
    const backed = !this.opts.handler && this.queue.length >= this.backlog;
    if (full || backed) {
      this.counters.rejected++;
      socket.on("error", noop);
      socket.destroy();
      return;
    }
    this.counters.accepted++;
    this.counters.active++;
    let counted = true;
    const inactive = () => {
      if (counted) this.counters.active--;
      counted = false;
    };
    socket.on("close", inactive); // "close" comes once: no once() wrapper needed
    if (this.proxyPolicy) this.readHeader(socket, this.proxyPolicy, inactive);
    else this.admit(socket, null, inactive);
  }

  /** Read the PROXY header first; a failure goes to onError and the socket is gone. */
  private readHeader(socket: Socket, policy: ProxyProtocolPolicy, inactive: () => void): void {
    const read = readProxyHeader(socket, {
      mode: policy.mode,
      timeout: policy.timeout,
      trusted: policy.trusted(socket.remoteAddress ?? ""),
    });
    this.headerReads.add(read);
    read.done.then(
      ({ header, dropped }) => {
        this.headerReads.delete(read);
        if (dropped) return; // optional mode: the peer left without a byte
        if (this.closing) socket.destroy();
        else this.admit(socket, header, inactive);
      },
      (err: unknown) => {
        this.headerReads.delete(read);
        if (!this.closing) this.report(asError(err), remoteAddrOf(socket));
      },
    );
  }

  /** Make the conn and hand it to the handler or the accept queue. */
  private admit(socket: Socket, proxy: ProxyHeader | null, inactive: () => void): void {
    let conn: C;
    try {
      // Bound to one IP, every accepted socket's local address is the listener's: no
      // getsockname() per conn.
      const a = this.addr;
      const local = this.specificAddr ? new SocketAddr(a.address, a.port, a.family) : undefined;
      conn = this.factory.wrap(socket, proxy, local);
    } catch (err) {
      socket.destroy();
      this.report(asError(err), undefined);
      return;
    }
    conn[kOnClose](inactive); // a conn closed by the app is no longer active, even while it lingers
    if (this.opts.handler) {
      // runHandler deletes the entry itself when it ends, always after this set: it awaits first.
      this.handled.set(conn, this.runHandler(conn));
      return;
    }
    if (acceptChannel.hasSubscribers) {
      // No handshake to wait for here: the accept span is the hand-over itself.
      void acceptChannel.tracePromise(async () => conn, this.acceptContext(conn));
    }
    const w = this.waiters.shift();
    if (w) this.settle(w, undefined, true, conn);
    else this.queue.push(conn);
  }

  private async runHandler(conn: C): Promise<void> {
    const remoteAddr = conn.remoteAddr;
    try {
      const prepare = this.factory.prepare;
      if (prepare) {
        try {
          if (acceptChannel.hasSubscribers) {
            await acceptChannel.tracePromise(() => prepare(conn), this.acceptContext(conn));
          } else await prepare(conn);
        } catch (err) {
          // Our own shutdown cutting a handshake short is not the client's failure.
          if (!(this.closing && err instanceof ClosedError)) this.report(asError(err), remoteAddr);
          return;
        }
      } else if (acceptChannel.hasSubscribers) {
        void acceptChannel.tracePromise(async () => conn, this.acceptContext(conn));
      }
      const handler = this.factory.pick?.(conn) ?? this.opts.handler!;
      await handler(conn);
    } catch (err) {
      // A conn closed by the listener's own shutdown is not the handler's failure.
      if (this.closing && err instanceof ClosedError) return;
      this.report(asError(err), remoteAddr);
    } finally {
      await conn.close();
      this.handled.delete(conn);
    }
  }

  private acceptContext(conn: C): object {
    return { localAddr: this.addr, remoteAddr: conn.remoteAddr };
  }

  /** Tell onError, never letting it throw into the listener. */
  protected report(err: Error, remoteAddr: SocketAddr | undefined): void {
    publish(errorChannel, () => ({ error: err, remoteAddr }));
    const onError = this.opts.onError;
    if (!onError) return;
    try {
      onError(err, remoteAddr === undefined ? {} : { remoteAddr });
    } catch {
      // A throwing onError must not take the listener down.
    }
  }

  /** (Re)arm a waiter for the earlier of its own timeout and the listener deadline. */
  private arm(w: AcceptWaiter<C>): void {
    w.alarm.set(Math.min(w.callExpiry, this.deadline));
  }

  private settle(w: AcceptWaiter<C>, err: unknown, remove = true, conn?: C): void {
    w.alarm.clear();
    if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
    if (remove) {
      const i = this.waiters.indexOf(w);
      if (i >= 0) this.waiters.splice(i, 1);
    }
    if (conn) w.resolve(conn);
    else w.reject(err);
  }

  private closedError(): ClosedError {
    return new ClosedError(`listener on ${this.addr} is closed`);
  }

  private deadlineError(): DeadlineExceededError {
    return new DeadlineExceededError("accept", `accept on ${this.addr} timed out`);
  }
}

/**
 * Validate listen options and bind a paused-on-connect, half-open-capable server.
 * @internal
 */
export async function bindServer<C>(opts: ListenOptions<C>): Promise<Server> {
  checkListenOptions(opts);
  const { host, port } = parseAddress(opts.addr, true);
  const server = createServer({
    allowHalfOpen: true,
    pauseOnConnect: true,
    noDelay: opts.noDelay ?? true,
  });
  const where = formatHostPort(host, port);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      const why = describeSystemError(err) ?? err.message;
      reject(new ListenError(`cannot listen on ${where}: ${why}`, { address: where, cause: err }));
    };
    server.once("error", onError);
    server.listen(
      {
        port,
        backlog: opts.backlog ?? 511,
        ...(host === undefined ? {} : { host }),
        ...(opts.reusePort ? { reusePort: true } : {}),
      },
      () => {
        server.off("error", onError);
        resolve();
      },
    );
  });
  return server;
}

function noop(): void {}

function checkListenOptions<C>(opts: ListenOptions<C>): void {
  if (typeof opts !== "object" || opts === null) {
    throw new ConfigError("listen options must be an object with at least { addr }", {
      field: "options",
    });
  }
  if (opts.addr === undefined) {
    throw new ConfigError('listen needs addr, e.g. { addr: "127.0.0.1:0" }', { field: "addr" });
  }
  const positiveInt = (name: string, v: unknown) => {
    if (v !== undefined && (typeof v !== "number" || !Number.isInteger(v) || v < 0)) {
      throw new ConfigError(`${name} must be an integer >= 0, got ${String(v)}`, { field: name });
    }
  };
  positiveInt("backlog", opts.backlog);
  positiveInt("maxConnections", opts.maxConnections);
  if (opts.noDelay !== undefined && typeof opts.noDelay !== "boolean") {
    throw new ConfigError("noDelay must be a boolean", { field: "noDelay" });
  }
  proxyProtocolPolicy(opts.proxyProtocol); // throws ConfigError for a bad option
  for (const name of ["handler", "onError"] as const) {
    if (opts[name] !== undefined && typeof opts[name] !== "function") {
      throw new ConfigError(`${name} must be a function`, { field: name });
    }
  }
}
