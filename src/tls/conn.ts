/**
 * TLSConn: a {@link Conn} whose transport is TLS. The handshake belongs to the
 * transport (tls/engine/node.ts); TLSConn adds the TLS-only members of the API:
 * `handshake()`, `state()`, `alpnProtocol`, `peerCertificate()`, `netConn`.
 * @module
 */
import type { Socket } from "node:net";
import { isIPLiteral, type SocketAddr } from "../addr.ts";
import { Conn, kHandOver } from "../conn.ts";
import type { OpOptions } from "../deadline.ts";
import { ClosedError, mapError, type TlsnetError } from "../errors.ts";
import { localAddrOf, remoteAddrOf } from "../socket-transport.ts";
import type { Transport } from "../transport.ts";
import { NodeTLSTransport } from "./engine/node.ts";
import type { TLSTransport } from "./engine/types.ts";
import type { ConnectionState, PeerCertificate } from "./state.ts";

export type { TLSInit } from "./engine/node.ts";

/**
 * A TLS connection. All {@link Conn} methods work; on a lazy conn (from `accept()`, the
 * listener's iterator, `tls.client` or `tls.server`) the first of them runs the handshake.
 * `tls.connect` and listener handlers give conns whose handshake is already done.
 *
 * @example
 * ```ts
 * const ln = await tls.listen({ addr: ":8443", certs: [server] });
 * for await (const conn of ln) {
 *   const state = await conn.handshake({ timeout: 5000 }).catch(() => null);
 *   if (!state) { await conn.close(); continue; }
 *   console.log(conn.remoteAddr.toString(), state.version, state.serverName, conn.alpnProtocol);
 * }
 * ```
 */
export class TLSConn extends Conn {
  private readonly tls: TLSTransport;
  private netConnView: Conn | undefined;

  /**
   * tls.connect, tls.listen, tls.client and tls.server make TLSConns.
   * @internal
   */
  constructor(tls: TLSTransport, netConn?: Conn) {
    super(tls);
    this.tls = tls;
    this.netConnView = netConn;
  }

  /**
   * The plain TCP conn underneath, for its addresses: it moves no bytes of its own (its
   * reads and writes reject with {@link ClosedError}), and closing it closes this conn.
   */
  get netConn(): Conn {
    if (!this.netConnView) {
      const view = new Conn(new ViewTransport(this.tls.rawSocket));
      view[kHandOver](this);
      this.netConnView = view;
    }
    return this.netConnView;
  }

  /** The negotiated ALPN protocol, or null (none, or no handshake yet); no handshake is started. */
  get alpnProtocol(): string | null {
    return this.tls.state().alpnProtocol;
  }

  /**
   * The peer's leaf certificate, or null (no handshake yet, or the peer sent none, as a client
   * does unless the server asks). Never starts the handshake.
   */
  peerCertificate(): PeerCertificate | null {
    return this.tls.state().peerCertificates[0] ?? null;
  }

  /**
   * A snapshot of the connection state; never starts the handshake. Before the handshake is
   * done it reports `handshakeComplete: false`.
   */
  state(): ConnectionState {
    return this.tls.state();
  }

  /**
   * Run the handshake if it has not run; idempotent. Concurrent callers share
   * one run; a failure is remembered and re-thrown as the same error. The
   * options of the call that starts it bound the handshake itself.
   *
   * Rejects with {@link HandshakeTimeoutError} (`handshakeTimeout`: servers 10 s, clients 30 s
   * by default, or this call's `timeout`), {@link CertificateError} (verification failed),
   * {@link TLSError} (negotiation failed, the verifyConnection hook threw...),
   * {@link ClosedError} after close(), or `signal.reason`. A failed handshake destroys the socket.
   *
   * @example
   * ```ts
   * const conn = tls.server(plain, config);
   * const { version, alpnProtocol } = await conn.handshake({ timeout: 5000 });
   * ```
   */
  handshake(opts?: OpOptions): Promise<ConnectionState> {
    return this.tls.handshake(opts);
  }
}

/** The TCP socket under a TLS conn, seen only for its addresses: it moves no bytes. */
class ViewTransport implements Transport {
  readonly ready = false;
  readonly remoteAddr: SocketAddr;
  readonly localAddr: SocketAddr;
  readonly queuedBytes = 0;
  constructor(readonly rawSocket: Socket) {
    this.remoteAddr = remoteAddrOf(rawSocket);
    this.localAddr = localAddrOf(rawSocket);
  }
  get socket(): Socket {
    return this.rawSocket;
  }
  get destroyed(): boolean {
    return this.rawSocket.destroyed;
  }
  whenReady(): Promise<void> {
    return new Promise(noop); // never: a view is closed before anyone can wait on it
  }
  start(): void {}
  write(): boolean {
    return false;
  }
  writev(): boolean {
    return false;
  }
  end(): Promise<void> {
    return Promise.resolve();
  }
  pause(): void {}
  resume(): void {}
  close(): Promise<void> {
    return Promise.resolve();
  }
  handOff(): Socket {
    throw new ClosedError("the TCP conn under a TLS conn has no socket of its own to hand over");
  }
  mapError(err: unknown): TlsnetError {
    return mapError(err, { op: "read", peer: this.remoteAddr.toString() });
  }
}

function noop(): void {}

/**
 * The SNI to send for a dial host or serverName: none for IP literals, trailing dot stripped.
 * @internal
 */
export function sniFor(host: string): string | null {
  return isIPLiteral(host) ? null : host.replace(/\.$/, "");
}

export { NodeTLSTransport };
