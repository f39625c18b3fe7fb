/**
 * The node engine: TLS as a {@link Transport} over a plain TCP socket, done by
 * node:tls. It owns the handshake state machine (idle → running → done |
 * failed): the handshake runs on the first need (`whenReady()`, `handshake()`),
 * concurrent callers share one run, a failure is sticky. Once the handshake is
 * done and verified, bytes flow through a {@link SocketTransport} over the
 * TLSSocket, and `ready` turns true.
 * @module
 */
import { Buffer } from "node:buffer";
import { isIP, type Socket } from "node:net";
import {
  checkServerIdentity,
  type PeerCertificate as NodePeerCertificate,
  TLSSocket,
  connect as tlsConnect,
} from "node:tls";
import { ipBytes } from "../../cidr.ts";
import { abortReason, type OpOptions } from "../../deadline.ts";
import {
  ClosedError,
  mapTLSError,
  peerClosedDuringHandshake,
  type TlsnetError,
} from "../../errors.ts";
import { SocketTransport } from "../../socket-transport.ts";
import type { Transport, TransportOp } from "../../transport.ts";
import type { TLSConfig } from "../config.ts";
import type { SessionIdentity } from "../sessions.ts";
import { sniSelector } from "../sni.ts";
import { type ConnectionState, derChain, stateOf } from "../state.ts";
import { HandshakeTransport } from "./handshake.ts";

export type { TLSInit } from "./handshake.ts";

const RESOLVED = Promise.resolve();

/**
 * The node:tls engine: a {@link Transport} that owns a lazy TLS handshake over a TCP socket,
 * then moves bytes through a SocketTransport over the verified TLS socket.
 * @internal
 */
export class NodeTLSTransport extends HandshakeTransport implements Transport {
  private tlsSocket: TLSSocket | undefined;
  /** Bytes flow through this once the TLS socket is secure. */
  private stream: SocketTransport | undefined;
  private wantPaused = false;
  /**
   * Client (made by wrapClient): what the socket's callbacks saw: the chain Node built while
   * checking the server's name (full handshakes), and whether a session (ticket) arrived.
   */
  private seen: { peerDetail?: NodePeerCertificate; gotTicket?: boolean } | undefined;
  /** Client: the identity this handshake verifies, stored with the session it yields. */
  private identity: SessionIdentity | undefined;
  /** Server: the ALPN list the client offered, for error messages. */
  private offeredAlpn: { protocols: string[] | undefined } | undefined;

  get socket(): Socket {
    return this.tlsSocket ?? this.rawSocket;
  }
  protected override abandon(): void {
    this.stream = undefined;
    this.tlsSocket?.destroy();
    this.rawSocket.destroy();
  }

  /** One handshake run: wrap, wait for "secure", verify, run the verifyConnection hook. */
  protected override async run(opts: OpOptions | undefined): Promise<ConnectionState> {
    const cfg = this.config();
    if (this.rawSocket.destroyed) throw peerClosedDuringHandshake(this.peerName);
    const socket = this.init.role === "client" ? this.wrapClient(cfg) : this.wrapServer(cfg);
    this.tlsSocket = socket;
    socket.on("error", noop); // handshake errors are handled by waitSecure; later ones by the stream
    if (cfg.keyLog) {
      const keyLog = cfg.keyLog;
      socket.on("keylog", (line: Buffer) => keyLog(line.toString("latin1").trimEnd()));
    }
    await this.waitSecure(socket, cfg, opts);
    const isClient = this.init.role === "client";
    const resumed = this.offered !== undefined && socket.isSessionReused();
    const verified = isClient
      ? resumed
        ? this.offered!.identity.verified && cfg.verifyPeer
        : this.verifyServer(socket, cfg)
      : this.clientVerdict(
          cfg,
          () => socket.getPeerX509Certificate(),
          () => chainError(socket),
        );
    const chain = resumed ? this.offered!.identity.chain : this.peerDer(socket, cfg);
    if (isClient && !resumed) {
      this.identity!.chain = chain;
      this.identity!.verified = verified;
    }
    const serverName = isClient ? (this.init.serverName ?? null) : serverNameOf(socket);
    const state = stateOf(socket, serverName, verified, chain);
    return this.accepted(cfg, state);
  }

  private wrapClient(cfg: TLSConfig): TLSSocket {
    const { serverName: name, verifyName, sessionKey: key, sessions } = this.init;
    this.offered = key && sessions ? sessions.get(key) : undefined;
    const identity: SessionIdentity = { chain: [], verified: false };
    this.identity = identity;
    // The socket keeps its options and listeners after close: they hold boxes, not this
    // transport (see SocketTransport's onClose).
    const seen: NonNullable<typeof this.seen> = {};
    this.seen = seen;
    const offered = this.offered;
    const socket = tlsConnect({
      socket: this.rawSocket,
      secureContext: cfg.clientContext(),
      rejectUnauthorized: false, // verified below, so errors can name the host and subject
      ...(name ? { servername: name } : {}),
      ...(cfg.alpnProtocols ? { ALPNProtocols: [...cfg.alpnProtocols] } : {}),
      ...(this.offered ? { session: this.offered.session } : {}),
      // Node hands us the chain it already built for this check: keep it, not build it twice.
      checkServerIdentity: (_host, cert) => {
        seen.peerDetail = cert;
        return verifyName === undefined ? undefined : checkIdentity(verifyName, cert);
      },
    });
    if (key && sessions) {
      socket.on("session", (session: Buffer) => {
        seen.gotTicket = true;
        // A resumed conn hands on the identity of the full handshake it came from.
        const from = socket.isSessionReused() && offered ? offered.identity : identity;
        sessions.set(key, { session, identity: from });
      });
    }
    return socket;
  }

  private wrapServer(cfg: TLSConfig): TLSSocket {
    const contexts = cfg.serverContexts();
    // One options object, filled in place (no spread of a temporary per optional field).
    const options: ConstructorParameters<typeof TLSSocket>[1] & Record<string, unknown> = {
      isServer: true,
      secureContext: contexts[0]!,
      requestCert: cfg.clientAuth !== "none",
      // In the modes that require a certificate, OpenSSL itself refuses a client that sends
      // none, with a certificate_required alert the client can report. Everything else
      // (chain verification included) is checked after "secure", with its own message: a
      // standalone server TLSSocket does not destroy itself on a verify error.
      rejectUnauthorized:
        cfg.clientAuth === "require-any" || cfg.clientAuth === "require-and-verify",
    };
    if (cfg.alpnProtocols) options.ALPNCallback = this.alpnSelector(cfg.alpnProtocols);
    if (contexts.length > 1) {
      const select = sniSelector(cfg.identities);
      options.SNICallback = (sni, cb) => cb(null, contexts[select(sni)]);
    }
    return new TLSSocket(this.rawSocket, options);
  }

  /** Resolve on "secure"; reject on error, early close, timeout, abort or close(). */
  private waitSecure(
    socket: TLSSocket,
    cfg: TLSConfig,
    opts: OpOptions | undefined,
  ): Promise<void> {
    const secureEvent = this.init.role === "client" ? "secureConnect" : "secure";
    const signal = opts?.signal;
    (socket as OwnedSocket)[kOwner] = this;
    return new Promise<void>((resolve, reject) => {
      const onAbort = signal ? () => done(abortReason(signal)) : undefined;
      const done = (err?: unknown) => {
        this.disarmLimit();
        socket.off(secureEvent, onRunSecure);
        socket.off("error", onRunError);
        socket.off("close", onRunClose);
        socket.off("end", onRunClose);
        if (onAbort) signal!.removeEventListener("abort", onAbort);
        this.abortRun = undefined;
        // The socket outlives this conn in the heap (see SocketTransport's onClose): no link back.
        (socket as OwnedSocket)[kOwner] = undefined;
        if (err === undefined) resolve();
        else reject(err);
      };
      // Shared listeners that find this transport on the socket: no closure per listener.
      // `on`, not `once` (no wrapper per listener): done() removes all four at the first.
      socket.on(secureEvent, onRunSecure);
      socket.on("error", onRunError);
      socket.on("close", onRunClose);
      socket.on("end", onRunClose); // half-open sockets do not close on their own at EOF
      this.abortRun = done;
      if (onAbort) signal!.addEventListener("abort", onAbort, { once: true });
      this.armLimit(cfg, opts);
    });
  }

  /** "secure": start the byte stream and end the run's wait. @internal */
  secured(socket: TLSSocket): void {
    // End the run's wait first: its listeners come off before the stream's go on, so no
    // event ever has three listeners (node grows a listener array of two to 19 slots).
    this.abortRun?.(undefined);
    // Start the byte stream now, in the same event, before verification: data that came
    // with the peer's Finished is buffered, not lost; the Conn reads it once ready.
    this.startStream(socket);
  }

  /** A TLS error during the run's wait. @internal */
  runFailed(err: Error): void {
    this.abortRun?.(
      this.alpnFailure(
        mapTLSError(err, { op: "handshake", peer: this.peerName, role: this.init.role }),
        this.runConfig?.alpnProtocols,
        this.offeredAlpn?.protocols,
      ),
    );
  }

  /** The peer left (FIN or close) during the run's wait. @internal */
  peerLeft(): void {
    this.abortRun?.(peerClosedDuringHandshake(this.peerName));
  }

  private startStream(socket: TLSSocket): void {
    // A standalone server TLSSocket (no tls.Server) never clears secureConnecting,
    // and node:http2 waits for that before it reads: clear it, as tls.Server does.
    (socket as TLSSocket & { secureConnecting: boolean }).secureConnecting = false;
    // It also keeps "control" (tls.Server takes it over on "secure"), and while it does,
    // node:tls swallows TLS errors after the handshake: a bad record from the peer would
    // leave every read waiting forever. Release it, as tls.Server does.
    const release = (socket as unknown as { _releaseControl?: () => boolean })._releaseControl;
    if (typeof release === "function") release.call(socket);
    // No error mapper: the Conn maps errors with this transport's mapError, never the stream's.
    this.stream = new SocketTransport(socket, this.rawSocket, this);
    if (this.sink) this.stream.start(this.sink);
    if (this.wantPaused) this.stream.pause();
  }

  /** The peer's chain (DER, leaf first), asking OpenSSL only when no one did yet. */
  private peerDer(socket: TLSSocket, cfg: TLSConfig): Buffer[] {
    if (this.seen?.peerDetail) return derChain(this.seen.peerDetail);
    if (this.init.role === "server" && cfg.clientAuth === "none") return []; // none was asked for
    return derChain(socket.getPeerCertificate(true) as NodePeerCertificate);
  }

  /**
   * Server-preference ALPN that remembers what the client offered, for error messages. The
   * socket keeps the callback after close, so it holds a box, not this transport.
   */
  private alpnSelector(ours: readonly string[]) {
    const offered: { protocols: string[] | undefined } = { protocols: undefined };
    this.offeredAlpn = offered;
    return ({ protocols }: { servername: string; protocols: string[] }): string | undefined => {
      offered.protocols = protocols;
      return ours.find((p) => protocols.includes(p)); // undefined: alert no_application_protocol
    };
  }

  /** Client side: chain and host name, unless verifyPeer is off. */
  private verifyServer(socket: TLSSocket, cfg: TLSConfig): boolean {
    if (!cfg.verifyPeer) return false;
    if (socket.authorized) return true;
    throw this.certificateFailure(
      String(socket.authorizationError ?? "CERT_REJECTED"),
      socket.getPeerX509Certificate(),
    );
  }

  // ---------------------------------------------------------------- Transport

  write(data: string | Uint8Array): boolean {
    return this.stream!.write(data);
  }

  writev(parts: ReadonlyArray<string | Uint8Array>): boolean {
    return this.stream!.writev(parts);
  }

  get queuedBytes(): number {
    return this.stream?.queuedBytes ?? 0;
  }

  get destroyed(): boolean {
    return this.socket.destroyed || this.rawSocket.destroyed;
  }

  end(): Promise<void> {
    const stream = this.stream;
    if (!stream) return RESOLVED;
    // Node drops application data that arrived with the peer's Finished when
    // TLSSocket.end() runs before the next turn of the loop after "secure"
    // (TLS 1.3; seen on Node 20 and 24). A half-close is rare: always let one
    // turn pass first, rather than schedule a turn for every handshake. After the
    // peer's EOF (an echo, a proxy) no data is left to drop: end at once.
    if (stream.readEnded) return stream.end();
    return new Promise<void>((r) => setImmediate(r)).then(() => stream.end());
  }

  pause(): void {
    this.wantPaused = true;
    this.stream?.pause();
  }

  resume(): void {
    this.wantPaused = false;
    this.stream?.resume();
  }

  close(lingerMs: number, flush: boolean): Promise<void> {
    this.closed = true;
    if (this.phase === "done" && this.stream) {
      const closing = this.stream.close(lingerMs, flush);
      const ticket = this.ticketWait();
      return ticket ? Promise.all([closing, ticket]).then(noop) : closing;
    }
    this.abortRun?.(
      new ClosedError(`connection to ${this.peerName} was closed during the handshake`),
    );
    const raw = this.rawSocket;
    if (raw.destroyed && (raw.closed ?? true)) return RESOLVED;
    return new Promise<void>((resolve) => {
      raw.once("close", () => resolve());
      this.tlsSocket?.destroy();
      raw.destroy();
    });
  }

  handOff(): Socket {
    if (!this.ready || !this.stream) {
      throw new ClosedError(`connection to ${this.peerName}: no TLS socket to hand over yet`);
    }
    return this.stream.handOff();
  }

  destroy(): void {
    this.tlsSocket?.destroy();
    this.rawSocket.destroy();
  }

  /**
   * A client that closes right after a TLS 1.3 handshake has not read the session
   * ticket the server sent behind it; give it a moment, so the next connect resumes.
   */
  private ticketWait(): Promise<void> | undefined {
    const socket = this.tlsSocket;
    if (!socket || socket.destroyed || !this.ticketPending(this.seen?.gotTicket === true)) return;
    return this.waitForTicket((done) => {
      socket.once("session", done).once("close", done);
      return () => socket.off("session", done).off("close", done);
    });
  }

  mapError(err: unknown, op: TransportOp): TlsnetError {
    const phase = this.phase === "done" ? (op === "close" ? "write" : op) : "handshake";
    return mapTLSError(err, { op: phase, peer: this.peerName, role: this.init.role });
  }
}

function noop(): void {}

/** A TLS socket in a handshake run: its transport, for the shared listeners below. */
const kOwner = Symbol("tlsnet.nodeTLSTransport");
type OwnedSocket = TLSSocket & { [kOwner]?: NodeTLSTransport | undefined };

function onRunSecure(this: OwnedSocket): void {
  this[kOwner]?.secured(this);
}

function onRunError(this: OwnedSocket, err: Error): void {
  this[kOwner]?.runFailed(err);
}

function onRunClose(this: OwnedSocket): void {
  this[kOwner]?.peerLeft();
}

/**
 * node:tls's checkServerIdentity, except that an IP address is first matched here against the
 * certificate's IP SANs, compared as addresses. Node 22.23 runs domainToASCII on the name
 * before it checks for an IP, which turns "::1" into "" and sends it down the host name path,
 * so an IPv6 literal never matched there. A mismatch still gets node's error (the same code).
 */
function checkIdentity(name: string, cert: NodePeerCertificate): Error | undefined {
  if (isIP(name) !== 0 && ipSanCovers(cert.subjectaltname, name)) return undefined;
  return checkServerIdentity(name, cert);
}

/** Whether one of the "IP Address:" SANs is `ip`, compared as 16 bytes (src/cidr.ts). */
function ipSanCovers(sans: string | undefined, ip: string): boolean {
  const wanted = ipBytes(ip);
  if (!sans || !wanted) return false;
  for (const entry of sans.split(", ")) {
    if (!entry.startsWith("IP Address:")) continue;
    const san = ipBytes(entry.slice("IP Address:".length));
    if (san && Buffer.compare(san, wanted) === 0) return true;
  }
  return false;
}

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
