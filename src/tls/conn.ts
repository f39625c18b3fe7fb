/**
 * TLSConn: a Conn whose transport is a TLS socket over the TCP socket. The
 * handshake is a small state machine (idle → running → done | failed): it runs
 * on `handshake()` or the first read or write, concurrent callers share one
 * run, and a failure is sticky.
 * @module
 */
import type { Socket } from "node:net";
import {
  checkServerIdentity,
  type PeerCertificate as NodePeerCertificate,
  TLSSocket,
  connect as tlsConnect,
} from "node:tls";
import { isIPLiteral } from "../addr.ts";
import { Conn } from "../conn.ts";
import { abortReason, checkOpOptions, msUntil, NEVER, type OpOptions } from "../deadline.ts";
import {
  ClosedError,
  certificateError,
  DeadlineExceededError,
  HandshakeTimeoutError,
  mapTLSError,
  TLSError,
  type TlsnetError,
} from "../errors.ts";
import type { TLSConfig } from "./config.ts";
import type { SessionCache } from "./sessions.ts";
import { sniSelector } from "./sni.ts";
import {
  type ConnectionState,
  derChain,
  dn,
  emptyState,
  type PeerCertificate,
  stateOf,
} from "./state.ts";

/** How long close() waits for a TLS 1.3 session ticket the client has not read yet. */
const TICKET_WAIT_MS = 250;

/** How a TLSConn is set up; the public API fills this in. */
export interface TLSConnInit {
  role: "client" | "server";
  /** The config, or (servers) a function giving the config in force at handshake time. */
  config: TLSConfig | (() => TLSConfig);
  /** Client: SNI to send (null: none, for IP literals). */
  serverName?: string | null | undefined;
  /** Client: the name or IP to verify the certificate against. */
  verifyName?: string | undefined;
  /** Client: session cache key (server name and port). */
  sessionKey?: string | undefined;
  sessions?: SessionCache | undefined;
  /** Client: monotonic expiry of the dial; the handshake must end by then. */
  dialExpiry?: number | undefined;
  /** The Conn this one upgrades (STARTTLS), reported as netConn. */
  netConn?: Conn | undefined;
  /** Told about every failed handshake (listener stats). */
  onHandshakeFailure?: ((err: TlsnetError) => void) | undefined;
}

type Phase = "idle" | "running" | "done" | "failed";

/** A TLS connection. All Conn methods work; the first of them runs the handshake. */
export class TLSConn extends Conn {
  private readonly init: TLSConnInit;
  private readonly raw: Socket;
  private phase: Phase = "idle";
  private running: Promise<ConnectionState> | undefined;
  private result: ConnectionState | undefined;
  private failure: TlsnetError | undefined;
  private tlsSocket: TLSSocket | undefined;
  private abortRun: ((err: TlsnetError) => void) | undefined;
  private netConnView: Conn | undefined;
  /** Whether this client conn has received a session (ticket) to resume with. */
  private gotTicket = false;
  /** The peer chain Node built while verifying the server's name (client, full handshakes). */
  private peerDetail: NodePeerCertificate | undefined;
  /** The I/O that started the handshake, to name the deadline that cut it short. */
  private trigger: "read" | "write" = "read";
  /** The ALPN list a client offered (server side), for error messages. */
  private offeredAlpn: string[] | undefined;

  constructor(raw: Socket, init: TLSConnInit) {
    super(raw, null);
    this.raw = raw;
    this.init = init;
    this.netConnView = init.netConn;
  }

  /** The plain TCP conn underneath (for addresses; its reads and writes belong to TLS now). */
  get netConn(): Conn {
    this.netConnView ??= Conn.addressView(this.raw);
    return this.netConnView;
  }

  /** The negotiated ALPN protocol, or null (none, or no handshake yet). */
  get alpnProtocol(): string | null {
    return this.result?.alpnProtocol ?? null;
  }

  /** The peer's leaf certificate, or null. */
  peerCertificate(): PeerCertificate | null {
    return this.result?.peerCertificates[0] ?? null;
  }

  /** A snapshot of the connection state; never starts the handshake. */
  state(): ConnectionState {
    return (
      this.result ?? emptyState(this.init.role === "client" ? (this.init.serverName ?? null) : null)
    );
  }

  /**
   * Run the handshake if it has not run; idempotent. Concurrent callers share
   * one run; a failure is remembered and re-thrown as the same error.
   */
  handshake(opts?: OpOptions): Promise<ConnectionState> {
    if (this.phase === "done") return Promise.resolve(this.result!);
    if (this.phase === "failed") return Promise.reject(this.failure);
    if (this.phase === "running") return this.running!;
    try {
      checkOpOptions(opts);
    } catch (err) {
      return Promise.reject(err);
    }
    this.phase = "running";
    this.running = this.run(opts).then(
      (state) => {
        this.phase = "done";
        this.result = state;
        return state;
      },
      (err: TlsnetError) => {
        this.phase = "failed";
        this.failure = err;
        this.tlsSocket?.destroy();
        if (!this.tlsSocket) this.raw.destroy();
        this.init.onHandshakeFailure?.(err);
        throw err;
      },
    );
    return this.running;
  }

  override close(): Promise<void> {
    this.abortRun?.(
      new ClosedError(`connection to ${this.peerName} was closed during the handshake`),
    );
    return super.close();
  }

  /**
   * A client that closes right after a TLS 1.3 handshake has not read the session
   * ticket the server sent behind it; give it a moment, so the next connect resumes.
   */
  protected override afterEnd(): Promise<void> | undefined {
    const socket = this.tlsSocket;
    const { role, sessions, sessionKey } = this.init;
    if (role !== "client" || !socket || !sessions || !sessionKey || socket.destroyed) return;
    if (this.result?.version !== "TLSv1.3" || this.gotTicket) return;
    if (!sessions.expectsTicket(sessionKey)) return;
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        socket.off("session", done).off("end", done).off("close", done);
        resolve();
      };
      const timer = setTimeout(() => {
        sessions.noTicketFrom(sessionKey); // do not make every close() to it wait
        done();
      }, TICKET_WAIT_MS);
      socket.once("session", done).once("end", done).once("close", done);
    });
  }

  protected override beforeIO(op: "read" | "write", opts?: OpOptions): Promise<void> | undefined {
    if (this.phase === "done") return undefined;
    if (this.phase === "idle") this.trigger = op;
    return this.handshake(opts).then(noop);
  }

  protected override mapTransportError(err: unknown, op: "read" | "write"): TlsnetError {
    const phase = this.phase === "done" ? op : "handshake";
    return mapTLSError(err, { op: phase, peer: this.peerName, role: this.init.role });
  }

  private config(): TLSConfig {
    const c = this.init.config;
    return typeof c === "function" ? c() : c;
  }

  /** One handshake run: wrap, wait for "secure", verify, run the verifyConnection hook. */
  private async run(opts: OpOptions | undefined): Promise<ConnectionState> {
    const cfg = this.config();
    const socket = this.init.role === "client" ? this.wrapClient(cfg) : this.wrapServer(cfg);
    this.tlsSocket = socket;
    if (cfg.keyLog) {
      const keyLog = cfg.keyLog;
      socket.on("keylog", (line: Buffer) => keyLog(line.toString("latin1").trimEnd()));
    }
    this.attach(socket);
    await this.waitSecure(socket, cfg, opts);
    const verified =
      this.init.role === "client" ? this.verifyServer(socket, cfg) : this.verifyClient(socket, cfg);
    const serverName =
      this.init.role === "client" ? (this.init.serverName ?? null) : serverNameOf(socket);
    const state = stateOf(socket, serverName, verified, this.peerDer(socket, cfg));
    if (cfg.verifyConnection) {
      try {
        await cfg.verifyConnection(state);
      } catch (err) {
        throw new TLSError(
          `verifyConnection rejected the connection with ${this.peerName}: ${
            err instanceof Error ? err.message : String(err)
          }`,
          { reason: "VERIFY_CONNECTION", cause: err },
        );
      }
    }
    return state;
  }

  private wrapClient(cfg: TLSConfig): TLSSocket {
    const name = this.init.serverName;
    const verifyName = this.init.verifyName;
    const key = this.init.sessionKey;
    const sessions = this.init.sessions;
    const session = key && sessions ? sessions.get(key) : undefined;
    const socket = tlsConnect({
      socket: this.raw,
      secureContext: cfg.clientContext(),
      rejectUnauthorized: false, // verified below, so errors can name the host and subject
      ...(name ? { servername: name } : {}),
      ...(cfg.alpnProtocols ? { ALPNProtocols: [...cfg.alpnProtocols] } : {}),
      ...(session ? { session } : {}),
      // Node hands us the chain it already built for this check: keep it, not build it twice.
      checkServerIdentity: (_host, cert) => {
        this.peerDetail = cert;
        return verifyName === undefined ? undefined : checkServerIdentity(verifyName, cert);
      },
    });
    if (key && sessions) {
      socket.on("session", (s: Buffer) => {
        this.gotTicket = true;
        sessions.set(key, s);
      });
    }
    return socket;
  }

  private wrapServer(cfg: TLSConfig): TLSSocket {
    const contexts = cfg.serverContexts();
    const select = contexts.length > 1 ? sniSelector(cfg.identities) : undefined;
    return new TLSSocket(this.raw, {
      isServer: true,
      secureContext: contexts[0]!,
      requestCert: cfg.clientAuth !== "none",
      // In the modes that require a certificate, OpenSSL itself refuses a client that sends
      // none, with a certificate_required alert the client can report. Everything else
      // (chain verification included) is checked after "secure", with its own message: a
      // standalone server TLSSocket does not destroy itself on a verify error.
      rejectUnauthorized:
        cfg.clientAuth === "require-any" || cfg.clientAuth === "require-and-verify",
      ...(cfg.alpnProtocols ? { ALPNCallback: this.alpnSelector(cfg.alpnProtocols) } : {}),
      ...(select
        ? {
            SNICallback: (sni: string, cb: (e: Error | null, c?: unknown) => void) =>
              cb(null, contexts[select(sni)]),
          }
        : {}),
    } as ConstructorParameters<typeof TLSSocket>[1]);
  }

  /** Resolve on "secure"; reject on error, early close, timeout, deadline, abort or close(). */
  private waitSecure(
    socket: TLSSocket,
    cfg: TLSConfig,
    opts: OpOptions | undefined,
  ): Promise<void> {
    const isClient = this.init.role === "client";
    const peer = this.peerName;
    // Which limit ends the handshake first decides the error: the handshake timeout,
    // the dial's timeout/deadline, or a deadline/per-call timeout of the conn.
    const hsTimeout = isClient ? cfg.clientHandshakeTimeout : cfg.handshakeTimeout || undefined;
    const limits: Array<[number, () => TlsnetError]> = [];
    if (hsTimeout !== undefined) {
      limits.push([
        performance.now() + hsTimeout,
        () =>
          new HandshakeTimeoutError(
            `TLS handshake with ${peer} did not finish within ${hsTimeout} ms` +
              (isClient
                ? "; is the server up and speaking TLS?"
                : "; the client stalled or does not speak TLS"),
            { timeout: hsTimeout },
          ),
      ]);
    }
    if (this.init.dialExpiry !== undefined && this.init.dialExpiry !== NEVER) {
      limits.push([
        this.init.dialExpiry,
        () =>
          new DeadlineExceededError(
            "connect",
            `connect to ${peer} timed out during the TLS handshake; raise timeout/deadline or check the server`,
          ),
      ]);
    }
    if (this.ioDeadline !== NEVER) {
      const op = this.trigger;
      limits.push([
        this.ioDeadline,
        () =>
          new DeadlineExceededError(
            op,
            `TLS handshake with ${peer} ran past the conn's ${op} deadline; set a later deadline or check the peer`,
          ),
      ]);
    }
    const callTimeout = opts?.timeout;
    if (callTimeout !== undefined) {
      limits.push([
        performance.now() + callTimeout,
        () =>
          new HandshakeTimeoutError(
            `TLS handshake with ${peer} did not finish within the ${callTimeout} ms given to this call`,
            { timeout: callTimeout },
          ),
      ]);
    }
    limits.sort((a, b) => a[0] - b[0]);
    const first = limits[0];
    const signal = opts?.signal;

    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (err?: TlsnetError | unknown) => {
        clearTimeout(timer);
        socket.off("secure", onSecure);
        socket.off("secureConnect", onSecure);
        socket.off("error", onError);
        socket.off("close", onClose);
        socket.off("end", onClose);
        signal?.removeEventListener("abort", onAbort);
        this.abortRun = undefined;
        if (err === undefined) resolve();
        else reject(err);
      };
      const onSecure = () => done();
      const onError = (err: Error) =>
        done(
          this.explainAlpn(mapTLSError(err, { op: "handshake", peer, role: this.init.role }), cfg),
        );
      const onClose = () =>
        done(
          new TLSError(
            `TLS handshake with ${peer} failed: the peer closed the connection before it finished (it may have rejected our certificate or parameters)`,
            {
              reason: "ECONNRESET",
            },
          ),
        );
      const onAbort = () => done(abortReason(signal!));
      socket.once(isClient ? "secureConnect" : "secure", onSecure);
      socket.once("error", onError);
      socket.once("close", onClose);
      socket.once("end", onClose); // half-open sockets do not close on their own at EOF
      this.abortRun = done;
      if (signal) {
        if (signal.aborted) return onAbort();
        signal.addEventListener("abort", onAbort, { once: true });
      }
      if (first) timer = setTimeout(() => done(first[1]()), msUntil(first[0]));
    });
  }

  /** The peer's chain (DER, leaf first), asking OpenSSL only when no one did yet. */
  private peerDer(socket: TLSSocket, cfg: TLSConfig): Buffer[] {
    if (this.peerDetail) return derChain(this.peerDetail);
    if (this.init.role === "server" && cfg.clientAuth === "none") return []; // none was asked for
    return derChain(socket.getPeerCertificate(true) as NodePeerCertificate);
  }

  /** Server-preference ALPN that remembers what the client offered, for error messages. */
  private alpnSelector(ours: readonly string[]) {
    return ({ protocols }: { servername: string; protocols: string[] }): string | undefined => {
      this.offeredAlpn = protocols;
      return ours.find((p) => protocols.includes(p)); // undefined: alert no_application_protocol
    };
  }

  /** Name both ALPN lists when negotiation found no overlap. */
  private explainAlpn(err: TlsnetError, cfg: TLSConfig): TlsnetError {
    const reason = err instanceof TLSError ? err.reason : undefined;
    if (!reason?.includes("NO_APPLICATION_PROTOCOL") && reason !== "ERR_SSL_CALLBACK_FAILED")
      return err;
    const ours = JSON.stringify(cfg.alpnProtocols ?? []);
    const detail =
      this.init.role === "client"
        ? `we offered ALPN ${ours} and the server accepts none of them`
        : `the client offered ALPN ${JSON.stringify(this.offeredAlpn ?? [])}, this server accepts ${ours}`;
    return new TLSError(`TLS handshake with ${this.peerName} failed: ${detail} (alert 120)`, {
      reason: reason ?? "ERR_SSL_NO_APPLICATION_PROTOCOL",
      cause: err,
    });
  }

  /** Client side: chain and host name, unless verifyPeer is off. */
  private verifyServer(socket: TLSSocket, cfg: TLSConfig): boolean {
    if (!cfg.verifyPeer) return false;
    if (socket.authorized) return true;
    const leaf = socket.getPeerX509Certificate();
    throw certificateError({
      reason: String(socket.authorizationError ?? "CERT_REJECTED"),
      host: this.init.verifyName,
      subject: leaf ? dn(leaf.subject) : undefined,
      validTo: leaf ? new Date(leaf.validTo) : undefined,
      validFrom: leaf ? new Date(leaf.validFrom) : undefined,
      role: "client",
    });
  }

  /** Server side: the clientAuth mode, with Go's semantics. Returns whether a chain was verified. */
  private verifyClient(socket: TLSSocket, cfg: TLSConfig): boolean {
    const mode = cfg.clientAuth;
    if (mode === "none" || mode === "request") return false;
    const leaf = socket.getPeerX509Certificate();
    if (!leaf) {
      if (mode === "verify-if-given") return false;
      throw new TLSError(
        `client ${this.peerName} did not provide a certificate (clientAuth "${mode}" requires one)`,
        { reason: "PEER_DID_NOT_RETURN_A_CERTIFICATE" },
      );
    }
    if (mode === "require-any") return false;
    const failure = chainError(socket);
    if (failure === null) return true;
    throw certificateError({
      reason: failure,
      host: this.peerName,
      subject: dn(leaf.subject),
      validTo: new Date(leaf.validTo),
      validFrom: new Date(leaf.validFrom),
      role: "server",
    });
  }
}

function noop(): void {}

/**
 * OpenSSL's verdict on the peer's chain: null when it verified, else the reason code.
 * A standalone server TLSSocket never fills in `authorized`, so ask the handle as
 * node:tls's own server does.
 */
function chainError(socket: TLSSocket): string | null {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => Error | null } })._handle;
  if (typeof handle?.verifyError !== "function") {
    return socket.authorized ? null : String(socket.authorizationError ?? "CERT_REJECTED");
  }
  const err = handle.verifyError();
  return err ? String((err as Error & { code?: string }).code ?? err.message) : null;
}

function serverNameOf(socket: TLSSocket): string | null {
  const name = (socket as TLSSocket & { servername?: string | false }).servername;
  return typeof name === "string" && name !== "" ? name : null;
}

/** The SNI to send for a dial host: none for IP literals, trailing dot stripped. */
export function sniFor(host: string): string | null {
  return isIPLiteral(host) ? null : host.replace(/\.$/, "");
}
