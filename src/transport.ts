/**
 * Transport: what a {@link Conn} needs from the thing that moves its bytes,
 * written down. Conn is the buffered reader/writer (chunk list, turns,
 * deadlines, limit) and knows nothing else; a transport moves bytes and says
 * whether it can. Implementations:
 * - {@link SocketTransport}: a node:net Socket (plain TCP), or a node:tls
 *   TLSSocket once its handshake is done;
 * - the node TLS engine (tls/engine/node.ts): a lazy handshake over a TCP
 *   socket, then a SocketTransport over the TLS socket;
 * - a native engine later: decrypts into buffers it owns and hands them to
 *   `onData`, encrypts straight from the caller's buffers.
 *
 * Rules a transport keeps:
 * - `ready` is a plain field read: no side effects, ever (Conn's fast paths read it).
 * - `whenReady()` returns one shared promise and handles its rejection itself,
 *   so a caller may drop it; a failure is also delivered to `onError` before
 *   the transport closes, so the Conn sees why.
 * - Events go to the one sink given to `start`, in stream order; `onData`
 *   hands the chunk over (the Conn keeps it).
 * @module
 */
import type { Buffer } from "node:buffer";
import type { Socket } from "node:net";
import type { SocketAddr } from "./addr.ts";
import type { TlsnetError } from "./errors.ts";
import type { ProxyHeader } from "./proxy.ts";

/**
 * The operations an error can be reported for: what {@link Transport.mapError} is told the
 * error interrupted.
 *
 * @inline
 */
export type TransportOp = "read" | "write" | "close";

/**
 * Where a {@link Transport} delivers what happens to it: the {@link Conn} that owns it passes
 * one sink to {@link Transport.start}. Events arrive in stream order; the methods are bound
 * once, so a transport may register them directly as event listeners.
 *
 * Part of the engine seam, with {@link Transport}; applications never call it.
 *
 * @inline
 */
export interface TransportSink {
  /** Bytes from the peer, in order; the sink owns the chunk from now on. */
  onData(chunk: Buffer): void;
  /** The peer ended its direction in order (FIN; TLS: close_notify or FIN). */
  onEnd(): void;
  /** The transport failed (reset, TLS error, failed handshake); raw, map with mapError. */
  onError(err: unknown): void;
  /** The transport is closed for good (its socket released). */
  onClose(): void;
  /** Writes may go on: what was queued has drained below the high-water mark. */
  onDrain(): void;
}

/**
 * The engine seam: the bytes-moving half of a connection, written down. A {@link Conn} is
 * the buffered reader/writer (chunk list, turns, deadlines, limit) over one Transport and asks
 * it only what is listed here; plain TCP is a transport over a node:net Socket, TLS a
 * transport that owns the handshake and then moves bytes over the TLS socket. A faster engine
 * (a native TLS library) plugs in by implementing this interface; `new Conn(transport)` wraps
 * one.
 *
 * Rules a transport keeps:
 * - `ready` is a plain field read, without side effects (Conn's fast paths read it often).
 * - `whenReady()` returns one shared promise and handles its rejection itself, so a caller may
 *   drop it; a failure is also delivered to the sink's `onError` before the transport closes.
 * - Events go to the one sink given to `start()`, in stream order; `onData` hands the chunk
 *   over (the Conn keeps it, the transport must not reuse it).
 *
 * Applications do not implement or call this; it is exported as a type for engine authors.
 */
export interface Transport {
  /** The peer's address: the client a PROXY header named, else the socket's peer. It never changes. */
  readonly remoteAddr: SocketAddr;
  /** Our side's address. Known when the transport is made; it never changes. */
  readonly localAddr: SocketAddr;
  /** The PROXY protocol header the listener read before this transport existed, if any. */
  readonly proxy?: ProxyHeader | null | undefined;
  /** Bytes flow now (plain TCP: always; TLS: once the handshake is done and verified). */
  readonly ready: boolean;
  /** Become ready (TLS: start or join the handshake). One shared, self-handled promise. */
  whenReady(): Promise<void>;
  /** Begin delivering events to `sink`. Called once, by the Conn. */
  start(sink: TransportSink): void;
  /** Queue bytes for the peer (only when ready); false: wait for onDrain before more. */
  write(data: string | Uint8Array): boolean;
  /** Queue several buffers as one write (only when ready). */
  writev(parts: ReadonlyArray<string | Uint8Array>): boolean;
  /** Bytes accepted by write() whose write has not completed yet. */
  readonly queuedBytes: number;
  /** Half-close after what is queued (TLS: close_notify, then FIN); resolves once handed to the kernel. */
  end(): Promise<void>;
  /** Stop delivering data (flow control: the Conn's buffer is at its limit); idempotent. */
  pause(): void;
  /** Deliver data again after {@link Transport.pause}; idempotent. */
  resume(): void;
  /**
   * Close for good. With `flush`, a lingering close: end our direction after
   * what is queued, keep reading and discarding until the peer's EOF or
   * `lingerMs`, then release the socket, so that unread input never turns our
   * FIN into a reset that discards our tail. Without, at once.
   */
  close(lingerMs: number, flush: boolean): Promise<void>;
  /** True once the socket is destroyed (closed, reset, failed): no more bytes will move. */
  readonly destroyed: boolean;
  /**
   * Stop delivering events and give up the socket that carries the bytes (only
   * when ready): STARTTLS puts TLS over it, toSocket() gives it to node:http.
   */
  handOff(): Socket;
  /** Map an error this transport reported onto tlsnet's classes, for `op`. */
  mapError(err: unknown, op: TransportOp): TlsnetError;
  /** The node socket that carries the bytes (TLS: the TLSSocket once created), for inspection. */
  readonly socket: Socket;
  /** The plain TCP socket underneath (the same as `socket` for TCP). */
  readonly rawSocket: Socket;
}
