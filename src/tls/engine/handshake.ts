/**
 * What every TLS engine's transport shares: the peer's addresses (PROXY-aware),
 * and the handshake state machine (idle → running → done | failed). The
 * handshake runs on the first need (`whenReady()`, `handshake()`), concurrent
 * callers share one run, a failure is sticky; `ready` turns true once it is
 * done and verified. An engine supplies `run()` (one handshake) and `abandon()`
 * (release what a failed run held).
 * @internal
 * @module
 */
import type { X509Certificate } from "node:crypto";
import type { Socket } from "node:net";
import type { SocketAddr } from "../../addr.ts";
import {
  Alarm,
  abortReason,
  bounded,
  checkOpOptions,
  expiryAfter,
  NEVER,
  type OpOptions,
} from "../../deadline.ts";
import { handshakeChannel } from "../../diagnostics.ts";
import { ClosedError, certificateError, TLSError, type TlsnetError } from "../../errors.ts";
import type { ProxyHeader } from "../../proxy.ts";
import { localAddrOf, remoteAddrOf } from "../../socket-transport.ts";
import { TimerQueue } from "../../timer-queue.ts";
import type { TransportSink } from "../../transport.ts";
import type { TLSConfig } from "../config.ts";
import type { CachedSession, SessionCache } from "../sessions.ts";
import { type ConnectionState, dn, emptyState } from "../state.ts";
import { callTimeoutError, handshakeLimit } from "./limits.ts";

/**
 * How a TLS transport is set up; the public API fills this in.
 * @internal
 */
export interface TLSInit {
  role: "client" | "server";
  /** The config, or (servers) a function giving the config in force at handshake time. */
  config: TLSConfig | (() => TLSConfig);
  /** Client: SNI to send (null: none, for IP literals). */
  serverName?: string | null | undefined;
  /** Client: the name or IP to verify the certificate against. */
  verifyName?: string | undefined;
  /** Client: session cache key (the server name). */
  sessionKey?: string | undefined;
  sessions?: SessionCache | undefined;
  /** Client: monotonic expiry of the dial; the handshake must end by then. */
  dialExpiry?: number | undefined;
  /** Told about every failed handshake but our own close (listener stats). */
  onHandshakeFailure?: ((err: TlsnetError) => void) | undefined;
  /** Server: the PROXY header read before TLS; its source is the peer reported. */
  proxy?: ProxyHeader | null | undefined;
  /** Server: the local address, when the listener knows it without asking the socket. */
  localAddr?: SocketAddr | undefined;
}

type Phase = "idle" | "running" | "done" | "failed";

/** How long a client's close() waits for a TLS 1.3 session ticket it has not read yet. */
const TICKET_WAIT_MS = 250;

function noop(): void {}

/** A server's own handshake timeout, from its shared queue. */
function serverHandshakeExpired(t: HandshakeTransport): void {
  t.limitExpired();
}

/** The handshake state machine and addresses every engine's transport shares. @internal */
export abstract class HandshakeTransport {
  readonly remoteAddr: SocketAddr;
  readonly localAddr: SocketAddr;
  /** True once the handshake is done and verified: a plain field, read by fast paths. */
  ready = false;
  protected phase: Phase = "idle";
  protected result: ConnectionState | undefined;
  /** close() was called. */
  protected closed = false;
  protected sink: TransportSink | undefined;
  /** Client: the cached session offered for resumption, with the identity it was verified as. */
  protected offered: CachedSession | undefined;
  private running: Promise<ConnectionState> | undefined;
  private readyPromise: Promise<void> | undefined;
  private failure: TlsnetError | undefined;
  /** Ends the running handshake's wait: undefined for success, else the error. */
  protected abortRun: ((err: TlsnetError | undefined) => void) | undefined;
  /** The config of the running handshake (a listener's reload does not change it midway). */
  protected runConfig: TLSConfig | undefined;
  /** The running handshake's timer (armLimit): a ticket in a shared queue, or an Alarm. */
  private limitQueue: TimerQueue<HandshakeTransport> | undefined;
  private limitTicket = 0;
  private limitAlarm: Alarm | undefined;

  constructor(
    readonly rawSocket: Socket,
    protected readonly init: TLSInit,
  ) {
    this.remoteAddr = init.proxy?.source ?? remoteAddrOf(rawSocket);
    this.localAddr = init.proxy?.destination ?? init.localAddr ?? localAddrOf(rawSocket);
    rawSocket.on("error", noop); // until the engine takes the socket over: never crash on a reset
  }

  /** One handshake run: wrap, handshake, verify, run the verifyConnection hook. */
  protected abstract run(opts: OpOptions | undefined): Promise<ConnectionState>;

  /** A run failed: release the sockets and whatever else it held. */
  protected abstract abandon(): void;

  /** The run succeeded, just before `ready` callers resume (an engine may start reading). */
  protected handshakeDone(): void {}

  /**
   * Bound the running handshake by its earliest limit (handshakeLimit), which ends the run
   * through `abortRun` with the limit's error; `cfg` becomes the run's config. A server's own
   * handshake timeout, the case of every conn a listener accepts, waits in a queue shared by
   * all handshakes of that timeout: no timer, object or closure per handshake. disarmLimit()
   * when the run ends, however it ends.
   */
  protected armLimit(cfg: TLSConfig, opts: OpOptions | undefined): void {
    this.runConfig = cfg;
    if (this.init.role === "server" && opts === undefined && cfg.handshakeTimeout > 0) {
      this.limitQueue = TimerQueue.of(cfg.handshakeTimeout, serverHandshakeExpired);
      this.limitTicket = this.limitQueue.arm(this);
      return;
    }
    const [expiry, timeoutError] = handshakeLimit(
      this.init.role,
      cfg,
      this.remoteAddr, // formatted only if an error needs it
      this.init.dialExpiry,
      opts,
    );
    if (expiry === NEVER) return;
    this.limitAlarm = new Alarm(() => this.abortRun?.(timeoutError()));
    this.limitAlarm.set(expiry);
  }

  protected disarmLimit(): void {
    this.limitQueue?.cancel(this.limitTicket);
    this.limitQueue = undefined;
    this.limitAlarm?.clear();
    this.limitAlarm = undefined;
  }

  /** The shared queue's timeout fired for this handshake. @internal */
  limitExpired(): void {
    this.limitQueue = undefined; // fired: nothing to cancel
    const cfg = this.runConfig;
    if (cfg === undefined) return;
    this.abortRun?.(
      handshakeLimit(this.init.role, cfg, this.remoteAddr, undefined, undefined)[1](),
    );
  }

  /** The PROXY protocol header read before this conn, or null. */
  get proxy(): ProxyHeader | null {
    return this.init.proxy ?? null;
  }

  get role(): "client" | "server" {
    return this.init.role;
  }

  protected get peerName(): string {
    return this.remoteAddr.toString();
  }

  /** A snapshot of the connection state; never starts the handshake. */
  state(): ConnectionState {
    return (
      this.result ?? emptyState(this.init.role === "client" ? (this.init.serverName ?? null) : null)
    );
  }

  start(sink: TransportSink): void {
    this.sink = sink;
  }

  whenReady(): Promise<void> {
    if (!this.readyPromise) {
      this.readyPromise = this.handshake().then(noop);
      this.readyPromise.catch(noop); // callers may drop it: the failure reaches them as readyError
    }
    return this.readyPromise;
  }

  /**
   * Run the handshake if it has not run; idempotent. The first call's options
   * bound the handshake itself; a later caller's options bound only its wait.
   */
  handshake(opts?: OpOptions): Promise<ConnectionState> {
    if (this.phase === "done") return Promise.resolve(this.result!);
    if (this.phase === "failed") return Promise.reject(this.failure);
    if (this.closed) {
      return Promise.reject(new ClosedError(`connection to ${this.peerName} is closed`));
    }
    try {
      checkOpOptions(opts);
    } catch (err) {
      return Promise.reject(err);
    }
    if (opts?.signal?.aborted) return Promise.reject(abortReason(opts.signal));
    if (this.phase === "running") {
      const timeout = opts?.timeout;
      return bounded(this.running!, expiryAfter(timeout), opts?.signal, () =>
        callTimeoutError(this.peerName, timeout ?? 0),
      );
    }
    this.phase = "running";
    const run = handshakeChannel.hasSubscribers
      ? handshakeChannel.tracePromise(() => this.run(opts), this.traceContext())
      : this.run(opts);
    this.running = run.then(
      (state) => {
        this.phase = "done";
        this.result = state;
        this.ready = true;
        this.handshakeDone();
        return state;
      },
      (err: TlsnetError) => {
        this.phase = "failed";
        this.failure = err;
        this.abandon();
        if (this.offered && this.init.sessions && this.init.sessionKey) {
          this.init.sessions.delete(this.init.sessionKey); // never resume what failed
        }
        if (!(err instanceof ClosedError)) this.init.onHandshakeFailure?.(err);
        throw err;
      },
    );
    return this.running;
  }

  /** The context of a traced handshake (tlsnet:handshake). */
  private traceContext(): object {
    return {
      role: this.init.role,
      remoteAddr: this.remoteAddr,
      serverName: this.init.role === "client" ? (this.init.serverName ?? null) : undefined,
    };
  }

  /**
   * The last step of every engine's run: the verifyConnection hook, then a
   * check that close() did not come meanwhile. Resolves with `state`.
   */
  protected accepted(
    cfg: TLSConfig,
    state: ConnectionState,
  ): ConnectionState | Promise<ConnectionState> {
    if (cfg.verifyConnection) return this.verifiedConnection(cfg.verifyConnection, state);
    if (this.closed) throw new ClosedError(`connection to ${this.peerName} was closed`);
    return state; // no hook: no extra promise on every handshake
  }

  private async verifiedConnection(
    hook: NonNullable<TLSConfig["verifyConnection"]>,
    state: ConnectionState,
  ): Promise<ConnectionState> {
    try {
      await hook(state);
    } catch (err) {
      throw new TLSError(
        `verifyConnection rejected the connection with ${this.peerName}: ${
          err instanceof Error ? err.message : String(err)
        }`,
        { reason: "VERIFY_CONNECTION", cause: err },
      );
    }
    if (this.closed) throw new ClosedError(`connection to ${this.peerName} was closed`);
    return state;
  }

  /**
   * The clientAuth mode, with Go's semantics, for a server: `leafOf` gives the client's
   * certificate (undefined: none sent), asked only by the modes that look at it; `chainError`
   * OpenSSL's verdict on its chain
   * (null: verified). Returns whether a chain was verified; throws the failure.
   */
  protected clientVerdict(
    cfg: TLSConfig,
    leafOf: () => X509Certificate | undefined,
    chainError: () => string | null,
  ): boolean {
    const mode = cfg.clientAuth;
    if (mode === "none" || mode === "request") return false; // the certificate is not looked at
    const leaf = leafOf();
    if (!leaf) {
      if (mode === "verify-if-given") return false;
      throw new TLSError(
        `client ${this.peerName} did not provide a certificate (clientAuth "${mode}" requires one)`,
        { reason: "PEER_DID_NOT_RETURN_A_CERTIFICATE" },
      );
    }
    if (mode === "require-any") return false;
    const reason = chainError();
    if (reason === null) return true;
    throw this.certificateFailure(reason, leaf);
  }

  /** The CertificateError for `reason` about the peer's `leaf`, worded for our side. */
  protected certificateFailure(reason: string, leaf: X509Certificate | undefined): TlsnetError {
    const client = this.init.role === "client";
    return certificateError({
      reason,
      host: client ? this.init.verifyName : this.peerName,
      subject: leaf ? dn(leaf.subject) : undefined,
      validTo: leaf ? new Date(leaf.validTo) : undefined,
      validFrom: leaf ? new Date(leaf.validFrom) : undefined,
      ...(client ? { sans: leaf?.subjectAltName } : {}),
      role: this.init.role,
    });
  }

  /** A failed ALPN negotiation (no overlap), with both lists named; other errors as they are. */
  protected alpnFailure(
    err: TlsnetError,
    ours: readonly string[] | undefined,
    offered: readonly string[] | undefined,
  ): TlsnetError {
    const reason = err instanceof TLSError ? err.reason : undefined;
    if (!reason?.includes("NO_APPLICATION_PROTOCOL") && reason !== "ERR_SSL_CALLBACK_FAILED") {
      return err;
    }
    const mine = JSON.stringify(ours ?? []);
    const detail =
      this.init.role === "client"
        ? `we offered ALPN ${mine} and the server accepts none of them`
        : `the client offered ALPN ${JSON.stringify(offered ?? [])}, this server accepts ${mine}`;
    return new TLSError(`TLS handshake with ${this.peerName} failed: ${detail} (alert 120)`, {
      reason: reason ?? "ERR_SSL_NO_APPLICATION_PROTOCOL",
      cause: err,
    });
  }

  /**
   * Client, TLS 1.3: no session ticket has come yet for this conn's session key, and its
   * server usually sends one, right behind the handshake. A close now would lose it: once our
   * close_notify is out, OpenSSL drops whatever arrives, tickets included. So the engines'
   * close() reads on for up to TICKET_WAIT_MS first, and the next connect can resume.
   */
  protected ticketPending(gotTicket: boolean): boolean {
    const { role, sessions, sessionKey } = this.init;
    if (role !== "client" || !sessions || !sessionKey || gotTicket) return false;
    return this.result?.version === "TLSv1.3" && sessions.expectsTicket(sessionKey);
  }

  /**
   * Wait up to TICKET_WAIT_MS for that ticket. `hook(done)` makes the engine's events that end
   * the wait (the ticket, the peer's end, the close) call `done`, and returns what unhooks them.
   * Resolves once the wait ends, either way; a wait that runs out marks the server as one that
   * sends none, so later closes to it do not wait.
   */
  protected waitForTicket(hook: (done: () => void) => () => void): Promise<void> {
    return new Promise<void>((resolve) => {
      let unhook = noop;
      const done = () => {
        clearTimeout(timer);
        unhook();
        resolve();
      };
      const timer = setTimeout(() => {
        const { sessions, sessionKey } = this.init;
        if (sessions && sessionKey) sessions.noTicketFrom(sessionKey);
        done();
      }, TICKET_WAIT_MS);
      unhook = hook(done);
    });
  }

  /** The config in force for this handshake (servers: the listener's current one). */
  protected config(): TLSConfig {
    const c = this.init.config;
    return typeof c === "function" ? c() : c;
  }
}
