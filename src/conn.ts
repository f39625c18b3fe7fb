/**
 * Conn: one async/await connection type for plain TCP and TLS alike.
 *
 * A Conn owns a read buffer (a chunk list), a reader queue and a writer queue,
 * deadlines and a buffering limit. It knows nothing about TLS: TLSConn adds the
 * handshake on top by attaching a TLS socket as the transport.
 *
 * @example
 * ```ts
 * const conn = await tcp.connect("127.0.0.1:7000");
 * await conn.write("PING\r\n");
 * console.log(await conn.readLine({ timeout: 5000 }));
 * await conn.close();
 * ```
 * @module
 */
import { Buffer } from "node:buffer";
import { Socket } from "node:net";
import type { SocketAddr } from "./addr.ts";
import { ChunkList } from "./chunks.ts";
import {
  Alarm,
  abortReason,
  bounded,
  checkOpOptions,
  type DeadlineInput,
  expiryAfter,
  NEVER,
  type OpOptions,
  toMonotonic,
} from "./deadline.ts";
import { closeChannel, errorChannel, publish } from "./diagnostics.ts";
import {
  ClosedError,
  DeadlineExceededError,
  LimitExceededError,
  StateError,
  type TlsnetError,
  UnexpectedEOFError,
} from "./errors.ts";
import type { ProxyHeader } from "./proxy.ts";
import { SocketTransport } from "./socket-transport.ts";
import type { Transport, TransportSink } from "./transport.ts";
import { DeadlineWait } from "./wait.ts";

export type { Transport, TransportSink } from "./transport.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Default and largest `read()` size. */
export const DEFAULT_READ_SIZE = 64 * KiB;
export const MAX_READ_SIZE = 16 * MiB;
/** Default `maxBytes` of readUntil / readLine. */
export const DEFAULT_MAX_LINE = 1 * MiB;
/** Default buffering limit: a reader that stops reading stops the socket at this much. */
export const DEFAULT_LIMIT = 4 * MiB;
/** How long close() lets buffered writes flush and waits for the peer's EOF before it destroys the socket. */
const CLOSE_LINGER_MS = 2000;
const RESOLVED = Promise.resolve();
/** The successor of a conn given away by toSocket(): the socket's new owner closes it, not us. */
const HANDED_TO_SOCKET = { close: () => RESOLVED };
/**
 * Internal: hand a conn's socket to a TLS layer (STARTTLS). Not exported from the package.
 * @internal
 */
export const kRelease = Symbol("tlsnet.release");
/**
 * Internal: run a function once when the conn is closed (by close() or by its transport).
 * @internal
 */
export const kOnClose = Symbol("tlsnet.onClose");
/**
 * Internal: mark a conn as handed over to `successor` (closing it closes that one).
 * @internal
 */
export const kHandOver = Symbol("tlsnet.handOver");

const LF = new Uint8Array([0x0a]);
const utf8 = new TextDecoder("utf-8");

type Turn = { grant: () => void };

/**
 * A queue that lets one operation at a time run, in call order. A waiting
 * operation's own timeout and signal run while it waits its turn.
 */
class TurnQueue {
  private busy = false;
  /** Made on the first wait: most turns are taken at once. */
  private waiting: Turn[] | undefined;

  /** undefined: the caller has the turn now; else a promise of it. Pair every grant with release(). */
  acquire<O>(
    callExpiry: number,
    signal: AbortSignal | undefined,
    owner: O,
    onTimeout: (owner: O) => unknown, // shared, with its owner: no closure per turn taken
  ): Promise<void> | undefined {
    if (!this.busy) {
      this.busy = true;
      return undefined;
    }
    return new Promise<void>((resolve, reject) => {
      if (callExpiry === NEVER && signal === undefined) {
        (this.waiting ??= []).push({ grant: resolve });
        return;
      }
      const leave = (err: unknown) => {
        const i = this.waiting!.indexOf(turn);
        if (i >= 0) this.waiting!.splice(i, 1);
        alarm.clear();
        signal?.removeEventListener("abort", onAbort);
        reject(err);
      };
      const alarm = new Alarm(() => leave(onTimeout(owner)));
      const onAbort = () => leave(abortReason(signal!));
      const turn: Turn = {
        grant: () => {
          alarm.clear();
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      (this.waiting ??= []).push(turn);
      alarm.set(callExpiry);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Take the turn if nobody has it (fast paths); false if busy. */
  tryAcquire(): boolean {
    if (this.busy) return false;
    this.busy = true;
    return true;
  }

  release(): void {
    const next = this.waiting?.shift();
    if (next) next.grant();
    else this.busy = false;
  }

  get pending(): number {
    return this.waiting?.length ?? 0;
  }

  get idle(): boolean {
    return !this.busy;
  }
}

/**
 * Options of {@link Conn.copyTo}.
 *
 * @property end Half-close the destination (closeWrite) when this conn reaches EOF. Default true.
 * @property signal Abort the copy; it rejects with `signal.reason` and closes nothing.
 * @interface
 */
export type CopyOptions = { end?: boolean | undefined; signal?: AbortSignal | undefined };

/** Options of frames(): the length prefix and the largest frame accepted. */
export type FrameOptions = OpOptions & { lengthBytes?: 1 | 2 | 4; maxBytes?: number };

/**
 * Options of the readers that look for a delimiter or EOF ({@link Conn.readUntil},
 * {@link Conn.readLine}, {@link Conn.readAll}, {@link Conn.readUvarint} and the iterators):
 * the per-call {@link OpOptions} plus a bound on the bytes one result may span.
 *
 * @property maxBytes The most bytes one result may span (delimiter included). Past it the read
 * rejects with {@link LimitExceededError} and consumes nothing. Default: 1 MiB for readUntil,
 * readLine, lines and split; unlimited for readAll; 8 (the most allowed) for readUvarint.
 * Must be a number >= 1 (else RangeError).
 * @interface
 */
export type MaxBytesOptions = OpOptions & { maxBytes?: number | undefined };

/**
 * A connection: one async/await interface for plain TCP and TLS alike ({@link TLSConn}
 * extends it). Reads are served in call order by one logical reader, writes are written in
 * call order by one logical writer; both sides may be used concurrently. All methods are safe
 * to call after close: they reject with {@link ClosedError}.
 *
 * Every operation settles: a read waiting for more than the buffer holds rejects with
 * {@link ConnectionResetError} as soon as the connection breaks; EOF is sticky; a per-call
 * `timeout` or `signal` cancels that call only, never the conn. Deadlines
 * ({@link Conn.setReadDeadline}, {@link Conn.setWriteDeadline}) govern pending calls too.
 *
 * Get one from {@link tcp.connect}, {@link tcp.listen}, or the `tls` functions; `new Conn(socket)`
 * wraps a node:net Socket made elsewhere.
 *
 * @example
 * ```ts
 * import { tcp } from "tlsnet";
 * await using conn = await tcp.connect("127.0.0.1:7000", { timeout: 5000 });
 * conn.setDeadline(Date.now() + 30_000); // the whole exchange, reads and writes
 * await conn.write("PING\r\n");
 * const reply = await conn.readLine({ maxBytes: 512 }); // "PONG", or null at EOF
 * const header = await conn.readExactly(4, { timeout: 1000 });
 * ```
 */
export class Conn implements AsyncIterable<Buffer>, AsyncDisposable {
  /** What moves the bytes; Conn only asks it plain questions (is it ready?). */
  protected readonly transport: Transport;

  /** The peer's address, e.g. `127.0.0.1:8443`; it stays readable after close. */
  readonly remoteAddr: SocketAddr;
  /** Our side's address (the local IP and port); it stays readable after close. */
  readonly localAddr: SocketAddr;

  private readonly buf = new ChunkList();
  /** The peer ended its direction (or the transport closed): sticky. */
  private eof = false;
  /** Why reading stopped, when it stopped by an error. Never set once EOF was seen. */
  private readError: TlsnetError | undefined;
  /** Why writing is over, when it is over by an error (permanent). */
  private writeError: TlsnetError | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** closeWrite() started: no more writes. */
  private writeEnded = false;
  /** closeWrite() is flushing: close() lets it finish rather than failing it. */
  private finishing = false;
  /** The writer is waiting for drain after handing bytes over: a timeout now is permanent. */
  private draining = false;
  /** Set when the socket was handed to a TLS layer: closing this conn closes that one. */
  private successor: { close(): Promise<void> } | undefined;
  private readyHooked = false;
  /** Why the transport can never become ready (a failed handshake). */
  private readyError: TlsnetError | undefined;
  private closeListeners: Array<() => void> | undefined;
  private closeNotified = false;

  private readonly readers = new TurnQueue();
  private readonly writers = new TurnQueue();
  /** The reader waiting for data or readiness; a timeout leaves the conn readable. */
  private readonly readWait = new DeadlineWait<Conn>(this, Conn.readWaitTimedOut);
  /** The writer's wait, made on first need (most writes never wait): see the writeWait getter. */
  private writeWaitMade: DeadlineWait<Conn> | undefined;

  /** The writer waiting for drain (a timeout is permanent: a partial record cannot be resumed) or readiness. */
  private get writeWait(): DeadlineWait<Conn> {
    this.writeWaitMade ??= new DeadlineWait<Conn>(this, Conn.writeWaitTimedOut);
    return this.writeWaitMade;
  }

  // The waits' timeout errors: static, shared by all conns (no closures per conn).
  private static readWaitTimedOut(conn: Conn): unknown {
    return conn.readTimeoutError();
  }

  /** A write waiting for its turn timed out: nothing of it was sent, so not permanent. */
  private static writeTurnTimedOut(conn: Conn): unknown {
    return conn.writeTimeoutError();
  }

  private static writeWaitTimedOut(conn: Conn): unknown {
    if (!conn.draining) return conn.writeTimeoutError();
    conn.writeError ??= new DeadlineExceededError(
      "write",
      `write to ${conn.peerName} timed out; the connection can no longer be written to`,
    );
    return conn.writeError;
  }

  private limitBytes = DEFAULT_LIMIT;
  private paused = false;
  /** Bytes the transport delivered (bytesRead) and bytes write() handed to it (bytesWritten). */
  private received = 0;
  private handedOver = 0;
  /** Set while copyTo() waits for data: each chunk goes to the copy's destination, unbuffered. */
  private pump: ((chunk: Buffer) => void) | undefined;

  private readableStream: ReadableStream<Uint8Array> | undefined;
  private writableStream: WritableStream<Uint8Array> | undefined;

  // The transport's sink: handlers bound once, reused for every event.
  private readonly sink: TransportSink = {
    onData: (chunk: Buffer) => {
      this.received += chunk.length;
      if (this.pump !== undefined) return this.pump(chunk); // copyTo() takes it straight through
      this.buf.push(chunk);
      if (this.readWait.pending) this.readWait.resolve();
      else if (this.limitBytes > 0 && this.buf.length >= this.limitBytes) this.updateFlow();
    },
    onEnd: () => {
      this.eof = true;
      this.readWait.resolve();
    },
    onError: (err: unknown) => {
      publish(errorChannel, () => ({ error: err, remoteAddr: this.remoteAddr }));
      // An error after the peer's EOF (a write into a closed peer) does not rewrite
      // the read side's history: EOF stays EOF.
      if (!this.eof) {
        this.readError ??= this.transport.mapError(err, "read");
        this.readWait.failure = this.readError; // a waiting read the buffer does not satisfy never will be
      }
      this.writeError ??= this.transport.mapError(err, "write");
      this.readWait.resolve();
      this.writeWaitMade?.reject(this.writeError);
    },
    onClose: () => {
      this.notifyClosed();
      if (!this.readError) this.eof = true; // ended without FIN (destroyed)
      this.readWait.resolve();
      if (this.writeWaitMade?.pending) {
        this.writeWaitMade.reject(this.writeError ?? new ClosedError(this.closedMessage()));
      }
    },
    onDrain: () => this.writeWaitMade?.resolve(),
  };

  /**
   * Wrap a connected node:net Socket, or any {@link Transport} (the engine seam). tcp.connect,
   * tcp.listen and tls.* make Conns; this is for sockets made elsewhere. From now on the Conn
   * reads the socket: do not read from it or end it yourself.
   *
   * @param transport A connected `net.Socket` (the Conn wraps it in a transport of its own),
   * or a {@link Transport} implementation.
   *
   * @example
   * ```ts
   * import { once } from "node:events";
   * import { connect } from "node:net";
   * const socket = connect(7000, "127.0.0.1");
   * await once(socket, "connect");
   * const conn = new Conn(socket);
   * ```
   */
  constructor(transport: Transport | Socket) {
    this.transport = transport instanceof Socket ? new SocketTransport(transport) : transport;
    this.remoteAddr = this.transport.remoteAddr;
    this.localAddr = this.transport.localAddr;
    this.transport.start(this.sink);
  }

  /**
   * Internal (STARTTLS): stop reading and hand over the socket with the bytes
   * this Conn buffered. Closing this conn afterwards closes `successor`.
   * @internal
   */
  [kRelease](check: (buffered: number) => void): { socket: Socket; buffered: Buffer[] } {
    if (!(this.transport instanceof SocketTransport)) {
      throw new ClosedError(`connection to ${this.peerName} is already upgraded`);
    }
    return this.handOff("upgrade", check);
  }

  /**
   * Give the connection to code that wants a node:net Socket — node:http,
   * node:http2, undici's `connect` — as a flowing socket (TLS: the TLSSocket,
   * handshake done) with every byte this Conn had buffered put back in front.
   * From then on the socket is the caller's to end or destroy: this Conn's ops
   * reject with ClosedError and its close() does nothing.
   *
   * On the native TLS engine there is no TLSSocket to give: it returns a Duplex (typed as a
   * Socket, not a net.Socket instance) that stands in for one: reads with backpressure,
   * writes, end() (close_notify and FIN), destroy() (fd released), and the socket members
   * HTTP stacks use: `encrypted`, `alpnProtocol`, `servername`, `authorized`, the
   * remote/local address fields, `address()`, `setNoDelay`, `setKeepAlive`, `setTimeout`,
   * `ref`/`unref`, `destroySoon`, `getPeerCertificate`, `getProtocol`, `getCipher`,
   * `isSessionReused`. Its errors carry node's codes (ECONNRESET, ERR_SSL_*). It has no
   * `_handle`: node:http2 wraps it in a JSStreamSocket, whose session reports `encrypted`
   * false and has no `remoteAddress` (docs/api.md).
   *
   * Throws {@link StateError} while a read, write or closeWrite is pending, or before a TLS
   * conn's handshake is done (await `handshake()` first); {@link ClosedError} once closed or
   * handed over.
   *
   * @example
   * ```ts
   * const conn = await tls.connect("example.com:443", { alpnProtocols: ["http/1.1"] });
   * const req = https.request({ host: "example.com", createConnection: () => conn.toSocket() });
   * ```
   */
  toSocket(): Socket {
    const { socket, buffered } = this.handOff("socket", noop);
    for (let i = buffered.length - 1; i >= 0; i--) socket.unshift(buffered[i]!);
    socket.allowHalfOpen = false; // node's default, which node:http and http2 expect
    this.successor = HANDED_TO_SOCKET;
    this.notifyClosed();
    // Neither paused nor flowing, as a socket fresh from node:net is: the new owner's
    // first 'data' listener starts the flow, and node:http / http2 may consume the
    // native handle directly. (An explicitly paused socket would wait for a resume()
    // that node:http never calls; a flowing one would drop bytes before it listens.)
    const state = (socket as unknown as { _readableState?: { flowing: boolean | null } })
      ._readableState;
    if (state) {
      state.flowing = null;
      socket.read(0); // reading on, so that a consumer of the native handle (http2) gets data
    } else socket.resume();
    return socket;
  }

  private handOff(
    why: "upgrade" | "socket",
    check: (buffered: number) => void,
  ): { socket: Socket; buffered: Buffer[] } {
    const t = this.transport;
    if (this.closed || t.destroyed) {
      throw new ClosedError(`connection to ${this.peerName} is closed or already handed over`);
    }
    const what = why === "upgrade" ? "upgrade" : "hand over";
    if (!this.readers.idle || !this.writers.idle || this.writeEnded) {
      throw new StateError(
        `cannot ${what} the connection to ${this.peerName} while a read, write or closeWrite is pending; ` +
          "await them first",
      );
    }
    if (!t.ready) {
      throw new StateError(
        `cannot ${what} the connection to ${this.peerName} before its TLS handshake; await conn.handshake() first`,
      );
    }
    check(this.buf.length);
    const socket = t.handOff();
    this.closed = true;
    return { socket, buffered: this.buf.drain() };
  }

  /**
   * Internal: after `kRelease`, who owns the connection now.
   * @internal
   */
  [kHandOver](successor: { close(): Promise<void> }): void {
    this.closed = true;
    this.successor = successor;
  }

  /**
   * Internal: `fn` runs once when this conn is closed, by close() or by its transport.
   * @internal
   */
  [kOnClose](fn: () => void): void {
    // A literal of one, not [].push: a pushed array reserves 17 slots, and most conns have one.
    if (this.closeListeners) this.closeListeners.push(fn);
    else this.closeListeners = [fn];
  }

  private notifyClosed(): void {
    if (this.closeNotified) return;
    this.closeNotified = true;
    if (closeChannel.hasSubscribers) closeChannel.publish({ conn: this }); // no closure per close
    const listeners = this.closeListeners;
    this.closeListeners = undefined;
    if (listeners) for (const fn of listeners) fn();
  }

  /** Printable peer address for messages. */
  protected get peerName(): string {
    return this.remoteAddr.toString();
  }

  /** The PROXY protocol header read before this conn (listeners with `proxyProtocol`), or null. */
  get proxy(): ProxyHeader | null {
    return this.transport.proxy ?? null;
  }

  /**
   * The node socket that carries the bytes (TLS: the TLSSocket once created), for inspection
   * only: tlsnet keeps reading from it, so do not read, write or pause it. To give the
   * connection to code that wants a socket, use {@link Conn.toSocket}. On the native TLS engine
   * it is the node socket the conn started on, without its fd once the addon took the
   * connection over (one fd per conn): its remote address stays, its local address is
   * {@link Conn.localAddr}, and destroying it still ends the connection.
   */
  get socket(): Socket {
    return this.transport.socket;
  }

  /**
   * True while the conn can still move bytes; false once closed locally, reset, or once both
   * directions ended (the peer's EOF and our closeWrite()).
   */
  get isOpen(): boolean {
    if (this.closed) return false;
    if (this.readError && this.readError.code === "ERR_TLSNET_RESET") return false;
    if (this.eof && this.writeEnded) return false;
    return !this.transport.destroyed || this.buf.length > 0;
  }

  /** Bytes received and buffered, not yet returned to the caller by a read. */
  get unreadBytes(): number {
    return this.buf.length;
  }

  /**
   * Bytes received from the peer so far (TLS: application data, decrypted), read or not:
   * `unreadBytes` of them are still buffered. Like Node's `socket.bytesRead`; it stays
   * readable after close. After a STARTTLS upgrade the TLS conn counts from 0.
   */
  get bytesRead(): number {
    return this.received;
  }

  /**
   * Bytes accepted by write() so far (strings counted as UTF-8), sent or not: `unsentBytes`
   * of them may still wait. Like Node's `socket.bytesWritten`; it stays readable after close.
   */
  get bytesWritten(): number {
    return this.handedOver;
  }

  /**
   * Bytes accepted by write() whose write to the kernel has not completed yet
   * (Node's `writableLength`): one large write counts in full until the kernel
   * has taken all of it.
   */
  get unsentBytes(): number {
    return this.transport.queuedBytes;
  }

  /**
   * Stop reading from the socket while `bytes` unread bytes are buffered and no
   * read is waiting for more; 0 removes the limit. Default 4 MiB.
   *
   * The limit protects against a fast peer and a reader that stopped reading; it never fails a
   * read: a read waiting for more (a `readAll` with a larger `maxBytes`) lifts it while it waits.
   * Throws RangeError unless `bytes` is an integer >= 0.
   *
   * @example
   * ```ts
   * conn.limit(256 * 1024); // apply backpressure at 256 KiB of unread input
   * ```
   */
  limit(bytes: number): void {
    if (typeof bytes !== "number" || !Number.isInteger(bytes) || bytes < 0) {
      throw new RangeError(`limit(bytes) takes an integer >= 0, got ${String(bytes)}`);
    }
    this.limitBytes = bytes;
    this.updateFlow();
  }

  // ---------------------------------------------------------------- deadlines

  /**
   * Set both the read and the write deadline: an absolute time (Date or epoch ms) after which
   * reads and writes, pending ones included, reject with {@link DeadlineExceededError}.
   * `null` or 0 clears it; a time in the past expires at once. Throws TypeError for anything
   * else than a Date, a number or null.
   *
   * @example
   * ```ts
   * conn.setDeadline(Date.now() + 5000); // this exchange must finish within 5 s
   * await conn.write(request);
   * const reply = await conn.readLine();
   * conn.setDeadline(null);
   * ```
   */
  setDeadline(t: Date | number | null): void {
    this.setReadDeadline(t);
    this.setWriteDeadline(t);
  }

  /**
   * Absolute deadline for reads, pending ones included (the handshake wait too); null or 0
   * clears it. When it fires, the waiting read rejects with {@link DeadlineExceededError}
   * (op "read"); buffered data stays buffered and the conn stays readable, so a later read
   * with a new deadline gets it all.
   */
  setReadDeadline(t: Date | number | null): void {
    this.readWait.setDeadline(toMonotonic(t as DeadlineInput, "read deadline"));
  }

  /**
   * Absolute deadline for writes, pending ones included; null or 0 clears it. A write that
   * had not handed anything over rejects with {@link DeadlineExceededError} (op "write") and
   * writing goes on; one that fires while a write waits for drain is permanent: that write and
   * every later write reject with the same error, since a partly written record cannot resume.
   */
  setWriteDeadline(t: Date | number | null): void {
    this.writeWait.setDeadline(toMonotonic(t as DeadlineInput, "write deadline"));
  }

  // ---------------------------------------------------------------- reading

  /**
   * Read what is available: 1..max bytes (default 64 KiB, at most 16 MiB), or
   * null at EOF (and every time after). Waits only when nothing is buffered.
   *
   * Rejects with {@link DeadlineExceededError} (deadline or `opts.timeout`; nothing is lost),
   * {@link ConnectionResetError} or {@link TLSError} when the connection broke,
   * {@link ClosedError} after close(), or `signal.reason`. Throws TypeError/RangeError for a
   * `max` that is not an integer in 1..16 MiB.
   *
   * @param max The most bytes to return. Default 64 KiB.
   * @param opts Per-call timeout and signal.
   *
   * @example
   * ```ts
   * for (let chunk; (chunk = await conn.read()) !== null; ) process(chunk);
   * ```
   */
  read(max: number = DEFAULT_READ_SIZE, opts?: OpOptions): Promise<Buffer | null> {
    checkSize(max, "read(max)", 1, MAX_READ_SIZE);
    return this.readOp(opts, () => {
      if (this.buf.length > 0) return this.buf.take(Math.min(max, this.buf.headLength()));
      if (this.eof) return this.endOrThrow(null);
      return undefined;
    });
  }

  /**
   * Fill up to `buf.length` bytes from what is available; resolves to the count, or null at
   * EOF. Deno's read shape, without an allocation per call. Same errors as {@link Conn.read}.
   */
  readInto(buf: Uint8Array, opts?: OpOptions): Promise<number | null> {
    if (!(buf instanceof Uint8Array)) throw new TypeError("readInto(buf) takes a Uint8Array");
    if (buf.length === 0) throw new RangeError("readInto(buf): buf must not be empty");
    return this.readOp(opts, () => {
      if (this.buf.length > 0) {
        const n = Math.min(buf.length, this.buf.length);
        this.buf.copyInto(buf, n);
        return n;
      }
      if (this.eof) return this.endOrThrow(null);
      return undefined;
    });
  }

  /**
   * Exactly `n` bytes. At EOF first: {@link UnexpectedEOFError} (its `partial` is the count
   * buffered), and the buffered bytes stay unconsumed (a shorter readExactly or read() still
   * gets them). A timeout or deadline consumes nothing either. Otherwise the errors of
   * {@link Conn.read}; TypeError/RangeError unless `n` is a safe integer >= 0.
   *
   * @example
   * ```ts
   * const len = (await conn.readExactly(4)).readUInt32BE(0);
   * const body = await conn.readExactly(len, { timeout: 10_000 });
   * ```
   */
  readExactly(n: number, opts?: OpOptions): Promise<Buffer> {
    checkSize(n, "readExactly(n)", 0, Number.MAX_SAFE_INTEGER);
    // Fast path: the bytes are buffered and nothing is in the way (see canTakeNow): no
    // closure, no turn, no timer; an already-resolved promise.
    if (opts === undefined && this.buf.length >= n && this.canTakeNow()) {
      const out = this.buf.take(n);
      if (this.paused) this.updateFlow();
      return Promise.resolve(out);
    }
    return this.readOp(opts, () => (this.buf.length >= n ? this.buf.take(n) : this.short(n)));
  }

  /**
   * Exactly `n` bytes without consuming them (Go's bufio.Reader.Peek): the next
   * read returns them again. Same EOF rule as readExactly; n is at most 16 MiB.
   *
   * @example
   * ```ts
   * const first = await conn.peek(1); // sniff the protocol, leave the byte for the parser
   * if (first[0] === 0x16) tlsConn = tls.server(conn, config);
   * ```
   */
  peek(n: number, opts?: OpOptions): Promise<Buffer> {
    checkSize(n, "peek(n)", 0, MAX_READ_SIZE);
    return this.readOp(opts, () => (this.buf.length >= n ? this.buf.peek(n) : this.short(n)));
  }

  /** One unsigned byte. EOF before it: {@link UnexpectedEOFError}. */
  readUint8(opts?: OpOptions): Promise<number> {
    return this.readOp(opts, () => (this.buf.length >= 1 ? this.buf.take(1)[0]! : this.short(1)));
  }

  /** A big-endian (network order) unsigned 16-bit integer; errors as {@link Conn.readExactly}. */
  readUint16BE(opts?: OpOptions): Promise<number> {
    return this.readFixed(2, opts, (b) => b.readUInt16BE(0));
  }

  /** A little-endian unsigned 16-bit integer; errors as {@link Conn.readExactly}. */
  readUint16LE(opts?: OpOptions): Promise<number> {
    return this.readFixed(2, opts, (b) => b.readUInt16LE(0));
  }

  /** A big-endian (network order) unsigned 32-bit integer; errors as {@link Conn.readExactly}. */
  readUint32BE(opts?: OpOptions): Promise<number> {
    return this.readFixed(4, opts, (b) => b.readUInt32BE(0));
  }

  /** A little-endian unsigned 32-bit integer; errors as {@link Conn.readExactly}. */
  readUint32LE(opts?: OpOptions): Promise<number> {
    return this.readFixed(4, opts, (b) => b.readUInt32LE(0));
  }

  /**
   * An unsigned LEB128 varint (protobuf, MQTT's remaining length, Go's
   * binary.ReadUvarint): 7 bits a byte, low group first, high bit set on all
   * but the last. More than `maxBytes` bytes (default 8, at most 8):
   * LimitExceededError, nothing consumed. EOF inside it: UnexpectedEOFError.
   *
   * @example
   * ```ts
   * // MQTT: the fixed header's remaining length is a varint of at most 4 bytes.
   * const type = await conn.readUint8();
   * const remaining = await conn.readUvarint({ maxBytes: 4 });
   * ```
   */
  readUvarint(opts?: MaxBytesOptions): Promise<number> {
    const maxBytes = maxBytesOf(opts, 8, "readUvarint");
    if (maxBytes > 8) throw new RangeError(`readUvarint: maxBytes must be 1..8, got ${maxBytes}`);
    return this.readOp(opts, () => {
      const avail = Math.min(this.buf.length, maxBytes);
      let value = 0;
      for (let i = 0; i < avail; i++) {
        const b = this.buf.byteAt(i);
        value += (b & 0x7f) * 2 ** (7 * i);
        if (b < 0x80) {
          this.buf.take(i + 1);
          return value;
        }
      }
      if (this.buf.length >= maxBytes) {
        throw new LimitExceededError(
          `varint from ${this.peerName} is longer than maxBytes (${maxBytes})`,
          { limit: maxBytes },
        );
      }
      return this.short(this.buf.length + 1);
    });
  }

  private readFixed(n: number, opts: OpOptions | undefined, decode: (b: Buffer) => number) {
    return this.readOp(opts, () =>
      this.buf.length >= n ? decode(this.buf.take(n)) : this.short(n),
    );
  }

  /** Not enough buffered for `n` bytes: wait (undefined), or at EOF fail keeping the bytes. */
  private short(n: number): undefined {
    if (!this.eof) return undefined;
    this.throwIfFailed();
    throw new UnexpectedEOFError(
      `${this.peerName} closed the connection after ${this.buf.length} of ${n} bytes`,
      { partial: this.buf.length },
    );
  }

  /**
   * Bytes through `delim` (included). At EOF before it: UnexpectedEOFError with
   * the partial bytes left buffered. Past `maxBytes` (default 1 MiB):
   * LimitExceededError, nothing consumed. A string delimiter is matched as UTF-8; an empty
   * one is a RangeError.
   *
   * @example
   * ```ts
   * const headers = await conn.readUntil("\r\n\r\n", { maxBytes: 16 * 1024, timeout: 10_000 });
   * ```
   */
  readUntil(delim: string | Uint8Array, opts?: MaxBytesOptions): Promise<Buffer> {
    const d = typeof delim === "string" ? delimBytes(delim) : delim;
    if (!(d instanceof Uint8Array)) {
      throw new TypeError("readUntil(delim) takes a string or Uint8Array");
    }
    if (d.length === 0) throw new RangeError("readUntil(delim): delimiter must not be empty");
    const maxBytes = maxBytesOf(opts, DEFAULT_MAX_LINE, "readUntil");
    // Fast path: a one-byte delimiter found in the head chunk, nothing in the way.
    if (opts === undefined && d.length === 1 && this.canTakeNow()) {
      const hit = this.buf.takeThroughByte(d[0]!, maxBytes);
      if (hit !== undefined) {
        if (this.paused) this.updateFlow();
        return Promise.resolve(hit);
      }
    }
    return this.readOp(opts, () => this.scanFor(d, maxBytes, false) ?? undefined);
  }

  /**
   * One UTF-8 line without its "\n" or "\r\n". At EOF the last unterminated line
   * is returned (as it is: a lone trailing "\r" stays), then null. Past
   * `maxBytes` (default 1 MiB): LimitExceededError, nothing consumed.
   *
   * @example
   * ```ts
   * const greeting = await conn.readLine({ timeout: 5000 }); // "220 smtp.example ESMTP"
   * ```
   */
  readLine(opts?: MaxBytesOptions): Promise<string | null> {
    const maxBytes = maxBytesOf(opts, DEFAULT_MAX_LINE, "readLine");
    if (opts === undefined && this.canTakeNow()) {
      const hit = this.buf.takeThroughByte(0x0a, maxBytes);
      if (hit !== undefined) {
        if (this.paused) this.updateFlow();
        return Promise.resolve(decodeLine(hit));
      }
    }
    return this.readOp(opts, () => {
      const line = this.scanFor(LF, maxBytes, true);
      return line === undefined || line === null ? line : decodeLine(line);
    });
  }

  /**
   * Everything until EOF, copied once. Past `maxBytes` (default unlimited):
   * LimitExceededError, nothing consumed. A connection that broke before EOF rejects with
   * the error that broke it.
   *
   * @example
   * ```ts
   * const body = await conn.readAll({ maxBytes: 10 << 20, timeout: 30_000 });
   * ```
   */
  readAll(opts?: MaxBytesOptions): Promise<Buffer> {
    const maxBytes = maxBytesOf(opts, Number.POSITIVE_INFINITY, "readAll");
    return this.readOp(opts, () => {
      if (this.buf.length > maxBytes) {
        throw new LimitExceededError(
          `readAll from ${this.peerName}: more than maxBytes (${maxBytes}) before EOF`,
          { limit: maxBytes },
        );
      }
      if (!this.eof) return undefined;
      this.throwIfFailed();
      return this.buf.take(this.buf.length);
    });
  }

  /**
   * Lines until EOF, with readLine's rules (no "\n" / "\r\n"; the last
   * unterminated line, then the end). Lines already buffered are handed out
   * without waiting: no turn, no timer, no closure per line. `opts` apply to
   * each wait for more data.
   *
   * @example
   * ```ts
   * for await (const line of conn.lines({ maxBytes: 8192 })) console.log(line);
   * ```
   */
  lines(opts?: MaxBytesOptions & { batch?: false }): AsyncIterableIterator<string>;
  /** With `batch: true`: arrays of every complete line already buffered (at least one each). */
  lines(opts: MaxBytesOptions & { batch: true }): AsyncIterableIterator<string[]>;
  lines(
    opts?: MaxBytesOptions & { batch?: boolean },
  ): AsyncIterableIterator<string> | AsyncIterableIterator<string[]> {
    const maxBytes = maxBytesOf(opts, DEFAULT_MAX_LINE, "lines");
    // readLine's attempt: a line, undefined to wait, null at the end.
    const one = (): string | null | undefined => {
      const line = this.scanFor(LF, maxBytes, true);
      return line === undefined || line === null ? line : decodeLine(line);
    };
    if (opts?.batch !== true) return this.iterateEach(opts, one);
    return this.iterateEach<string[]>(opts, () => {
      const pieces = this.takeAllThrough(LF, maxBytes);
      if (pieces === undefined) return asBatch(one());
      const out = new Array<string>(pieces.length);
      for (let i = 0; i < pieces.length; i++) out[i] = decodeLine(pieces[i]!);
      return out;
    });
  }

  /**
   * Pieces through `delim` (included) until EOF, with readUntil's rules: a
   * clean EOF ends the iteration, bytes left without a delimiter reject with
   * UnexpectedEOFError. Pieces already buffered are handed out without waiting.
   */
  split(
    delim: string | Uint8Array,
    opts?: MaxBytesOptions & { batch?: false },
  ): AsyncIterableIterator<Buffer>;
  /** With `batch: true`: arrays of every complete piece already buffered (at least one each). */
  split(
    delim: string | Uint8Array,
    opts: MaxBytesOptions & { batch: true },
  ): AsyncIterableIterator<Buffer[]>;
  split(
    delim: string | Uint8Array,
    opts?: MaxBytesOptions & { batch?: boolean },
  ): AsyncIterableIterator<Buffer> | AsyncIterableIterator<Buffer[]> {
    const d = typeof delim === "string" ? Buffer.from(delim, "utf8") : delim;
    if (!(d instanceof Uint8Array) || d.length === 0) {
      throw new TypeError("split(delim) takes a non-empty string or Uint8Array");
    }
    const maxBytes = maxBytesOf(opts, DEFAULT_MAX_LINE, "split");
    // readUntil's attempt, with a clean EOF as the end (null).
    const one = (): Buffer | null | undefined => {
      const piece = this.takeThrough(d, maxBytes);
      if (piece !== undefined) return piece;
      try {
        return this.scanFor(d, maxBytes, false);
      } catch (err) {
        return endOfStream(err);
      }
    };
    if (opts?.batch !== true) return this.iterateEach(opts, one);
    return this.iterateEach<Buffer[]>(
      opts,
      () => this.takeAllThrough(d, maxBytes) ?? asBatch(one()),
    );
  }

  /**
   * Every piece through `d` buffered whole within maxBytes, consumed, or undefined if none.
   * A one-byte delimiter goes chunk by chunk (views, one pass), one straddler at a time.
   */
  private takeAllThrough(d: Uint8Array, maxBytes: number): Buffer[] | undefined {
    const out: Buffer[] = [];
    for (;;) {
      if (d.length === 1 && this.buf.splitHead(d[0]!, maxBytes, out) > 0) continue;
      const piece = this.takeThrough(d, maxBytes); // spans chunks, or none left
      if (piece === undefined) break;
      out.push(piece);
    }
    return out.length > 0 ? out : undefined;
  }

  /**
   * Length-prefixed frames until EOF: a big-endian length of `lengthBytes`
   * (1, 2 or 4; default 4), then that many bytes; yields the payloads. A clean
   * EOF between frames ends the iteration; EOF inside one rejects with
   * UnexpectedEOFError; a length over `maxBytes` (default 16 MiB) rejects with
   * LimitExceededError. Frames already buffered are handed out without waiting.
   */
  frames(opts?: FrameOptions & { batch?: false }): AsyncIterableIterator<Buffer>;
  /** With `batch: true`: arrays of every complete frame already buffered (at least one each). */
  frames(opts: FrameOptions & { batch: true }): AsyncIterableIterator<Buffer[]>;
  frames(
    opts?: FrameOptions & { batch?: boolean },
  ): AsyncIterableIterator<Buffer> | AsyncIterableIterator<Buffer[]> {
    const n = opts?.lengthBytes ?? 4;
    if (n !== 1 && n !== 2 && n !== 4)
      throw new RangeError("frames: lengthBytes must be 1, 2 or 4");
    const maxBytes = maxBytesOf(opts, MAX_READ_SIZE, "frames");
    const buf = this.buf;
    // One frame, undefined to wait, null at a clean EOF between frames.
    const one = (): Buffer | null | undefined => {
      if (buf.length >= n) {
        const len = buf.uintAt(n);
        if (len > maxBytes) {
          throw new LimitExceededError(
            `frame of ${len} bytes from ${this.peerName} is over maxBytes (${maxBytes})`,
            { limit: maxBytes },
          );
        }
        if (buf.length < n + len) return this.short(n + len);
        buf.skip(n);
        return buf.take(len);
      }
      if (buf.length === 0 && this.eof) {
        this.throwIfFailed();
        return null;
      }
      return this.short(n);
    };
    if (opts?.batch !== true) return this.iterateEach(opts, one);
    return this.iterateEach<Buffer[]>(opts, () => {
      const out: Buffer[] = [];
      return buf.takeFrames(n, maxBytes, out) > 0 ? out : asBatch(one());
    });
  }

  /**
   * An async iterator over `attempt`, a read op's attempt: a value, undefined to wait for more
   * data, null for the end; a throw fails the step and ends the iteration. What is buffered is
   * handed out at once (no turn, no timer); otherwise the step is a read op whose wait the
   * data event settles with the attempt's value. `opts`' timeout and signal bound each wait.
   */
  private iterateEach<T>(
    opts: OpOptions | undefined,
    attempt: () => T | null | undefined,
  ): AsyncIterableIterator<T> {
    const waitOpts =
      opts !== undefined && (opts.timeout !== undefined || opts.signal !== undefined)
        ? opts
        : undefined;
    let finished = false;
    const end = (): IteratorResult<T> => {
      finished = true;
      return { done: true, value: undefined };
    };
    const result = (value: T | null): IteratorResult<T> =>
      value === null ? end() : { done: false, value };
    const fail = (err: unknown): never => {
      finished = true;
      throw err;
    };
    const it: AsyncIterableIterator<T> = {
      [Symbol.asyncIterator]: () => it,
      next: (): Promise<IteratorResult<T>> => {
        if (finished) return Promise.resolve({ done: true, value: undefined });
        if (this.canTakeNow()) {
          let value: T | null | undefined;
          try {
            value = attempt();
          } catch (err) {
            if (waitOpts === undefined) {
              finished = true;
              return Promise.reject(err);
            }
            value = undefined; // a timeout or signal may come first: the full op decides
          }
          if (value !== undefined && (value !== null || waitOpts === undefined)) {
            if (this.paused) this.updateFlow();
            return Promise.resolve(result(value));
          }
        }
        return this.readOp(waitOpts, attempt).then(result, fail);
      },
      return: () => Promise.resolve(end()),
    };
    return it;
  }

  /**
   * Chunks until EOF, as {@link Conn.read} returns them. A plain iterator, not a generator:
   * one promise per chunk, the iterator result made by the read itself (no extra promise
   * hop). Breaking out of the loop leaves the conn open.
   *
   * @example
   * ```ts
   * for await (const chunk of conn) await conn.write(chunk); // echo
   * ```
   */
  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    const attempt = () => this.nextChunk(); // one per iterator, reused by every step
    return { next: () => this.readOp(undefined, attempt), return: iteratorReturn };
  }

  /** read()'s attempt, as an iterator result. */
  private nextChunk(): IteratorResult<Buffer> | undefined {
    if (this.buf.length > 0) {
      return {
        done: false,
        value: this.buf.take(Math.min(DEFAULT_READ_SIZE, this.buf.headLength())),
      };
    }
    if (this.eof) return this.endOrThrow(DONE);
    return undefined;
  }

  /** The bytes through `delim` if they are buffered within maxBytes, consumed; else undefined. */
  private takeThrough(delim: Uint8Array, maxBytes: number): Buffer | undefined {
    if (delim.length === 1) {
      const hit = this.buf.takeThroughByte(delim[0]!, maxBytes);
      if (hit !== undefined) return hit;
    }
    const end = this.buf.indexAfter(delim, maxBytes);
    return end >= 0 ? this.buf.take(end) : undefined;
  }

  /**
   * Delimiter scan shared by readUntil and readLine: the bytes through `delim`,
   * undefined to wait for more, or (with `lastLine`) the rest at EOF / null.
   */
  private scanFor(
    delim: Uint8Array,
    maxBytes: number,
    lastLine: boolean,
  ): Buffer | null | undefined {
    if (delim.length === 1) {
      const hit = this.buf.takeThroughByte(delim[0]!, maxBytes);
      if (hit !== undefined) return hit;
    }
    const end = this.buf.indexAfter(delim, maxBytes);
    if (end >= 0) return this.buf.take(end);
    // At EOF no delimiter can follow: a last line within maxBytes is a line.
    const lastFits = lastLine && this.eof && !this.readError && this.buf.length <= maxBytes;
    if (end === -2 && !lastFits) {
      throw new LimitExceededError(
        `no ${describeDelim(delim)} within maxBytes (${maxBytes}) from ${this.peerName}; ` +
          "raise maxBytes or check the peer's framing",
        { limit: maxBytes },
      );
    }
    if (!this.eof) return undefined;
    this.throwIfFailed();
    if (lastLine) return this.buf.length > 0 ? this.buf.take(this.buf.length) : null;
    throw new UnexpectedEOFError(
      `${this.peerName} closed the connection before ${describeDelim(delim)} ` +
        `(${this.buf.length} bytes buffered)`,
      { partial: this.buf.length },
    );
  }

  /** At EOF: the read error if the stream ended by one, else `value`. */
  private endOrThrow<T>(value: T): T {
    this.throwIfFailed();
    return value;
  }

  private throwIfFailed(): void {
    if (this.readError) throw this.readError;
  }

  /**
   * Run one read operation in its turn: `attempt` returns a result, or undefined
   * to wait for more data; it consumes only when it returns a result.
   */
  private readOp<T>(opts: OpOptions | undefined, attempt: () => T | undefined): Promise<T> {
    // Fast path, the common case of a busy reader: no options, no other reader, a
    // ready transport, no deadline passed, the answer already buffered. No async
    // frame, no turn, no timer. Every check is a plain read.
    let tried = false;
    if (opts === undefined && this.canTakeNow()) {
      let result: T | undefined;
      try {
        result = attempt();
      } catch (err) {
        return Promise.reject(err);
      }
      if (result !== undefined) {
        if (this.paused) this.updateFlow();
        return Promise.resolve(result);
      }
      tried = true; // nothing changes before the wait below: no second attempt
    }
    // Next most common: nobody else reading, nothing in the way, more data needed.
    // Wait in the reader's turn with the data event settling the read itself.
    if (
      opts === undefined &&
      this.readers.idle &&
      this.transport.ready &&
      !this.closed &&
      this.readError === undefined &&
      this.readWait.deadline === NEVER
    ) {
      if (!tried) {
        let result: T | undefined;
        try {
          result = attempt();
        } catch (err) {
          return Promise.reject(err);
        }
        if (result !== undefined) return Promise.resolve(result);
      }
      this.readers.tryAcquire();
      const settled = this.readWait.waitFor(NEVER, undefined, attempt, this.releaseReader);
      this.updateFlow(); // a waiting reader lifts the limit
      return settled;
    }
    return this.readOpInTurn(opts, attempt);
  }

  private readonly releaseReader = () => {
    this.readers.release();
    this.updateFlow();
  };

  /** Can a read be answered from the buffer right now, outside the turn queue? Plain reads only. */
  private canTakeNow(): boolean {
    return (
      this.buf.length > 0 &&
      this.readers.idle &&
      this.transport.ready &&
      !this.closed &&
      !this.readWait.expired(NEVER)
    );
  }

  private async readOpInTurn<T>(
    opts: OpOptions | undefined,
    attempt: () => T | undefined,
  ): Promise<T> {
    checkOpOptions(opts);
    const signal = opts?.signal;
    if (signal?.aborted) throw abortReason(signal); // one rule for every op: at once
    const callExpiry = expiryAfter(opts?.timeout);
    this.checkUsable();
    const turn = this.readers.acquire(callExpiry, signal, this, Conn.readWaitTimedOut);
    if (turn) await turn;
    try {
      this.checkUsable();
      if (this.readWait.expired(callExpiry)) {
        throw this.readTimeoutError(); // a deadline in the past fails at once, data or not
      }
      for (;;) {
        if (!this.transport.ready) {
          if (this.readyError) throw this.readyError; // the handshake failed: sticky
          await this.waitReady(this.readWait, callExpiry, signal);
          this.checkUsable();
          continue;
        }
        const result = attempt();
        if (result !== undefined) return result;
        // Broken (reset...) and what is buffered does not satisfy this read: it never will.
        if (this.readError) throw this.readError;
        await this.waitReadable(callExpiry, signal);
        this.checkUsable();
      }
    } finally {
      this.readers.release();
      this.updateFlow();
    }
  }

  private readTimeoutError(): DeadlineExceededError {
    return new DeadlineExceededError(
      "read",
      `read from ${this.peerName} ran past its read deadline or timeout` +
        (this.transport.ready
          ? "; buffered data is kept for the next read"
          : " while the TLS handshake was still running; the handshake goes on"),
    );
  }

  private writeTimeoutError(): DeadlineExceededError {
    return new DeadlineExceededError(
      "write",
      `write to ${this.peerName} ran past its write deadline or timeout before anything was sent` +
        (this.transport.ready ? "" : " (the TLS handshake was still running)"),
    );
  }

  private checkUsable(): void {
    if (this.closed) throw new ClosedError(this.closedMessage());
  }

  private closedMessage(): string {
    if (this.successor === HANDED_TO_SOCKET) {
      return `connection to ${this.peerName} was handed over with toSocket(); use that socket`;
    }
    return this.successor
      ? `connection to ${this.peerName} was upgraded; use the upgraded conn`
      : `connection to ${this.peerName} is closed`;
  }

  /** Wait in `wait` (bounded by its deadline, the call's expiry and signal) until the transport is ready. */
  private waitReady(
    wait: DeadlineWait<Conn>,
    callExpiry: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (!this.readyHooked) {
      this.readyHooked = true;
      // The transport handles its own rejection; a failure reaches us through onError.
      this.transport.whenReady().then(
        () => this.onReady(),
        (err: unknown) => this.onReadyFailed(err),
      );
    }
    return wait.wait(callExpiry, signal);
  }

  private onReadyFailed(err: unknown): void {
    this.readyError = this.transport.mapError(err, "read");
    this.readWait.resolve();
    this.writeWaitMade?.resolve();
  }

  private onReady(): void {
    this.readWait.resolve();
    this.writeWaitMade?.resolve();
    this.updateFlow();
  }

  private waitReadable(callExpiry: number, signal: AbortSignal | undefined): Promise<void> {
    const waiting = this.readWait.wait(callExpiry, signal);
    this.updateFlow(); // a waiting reader lifts the limit
    return waiting;
  }

  /** Pause the transport while the unread buffer is at the limit and nobody waits for more. */
  private updateFlow(): void {
    if (this.closed) return;
    const full =
      this.limitBytes > 0 && this.buf.length >= this.limitBytes && !this.readWait.pending;
    if (full && !this.paused) {
      this.paused = true;
      this.transport.pause();
    } else if (!full && this.paused) {
      this.paused = false;
      this.transport.resume();
    }
  }

  // ---------------------------------------------------------------- writing

  /**
   * Write bytes or strings (UTF-8), or an array of them (written together).
   * Resolves once the data is accepted: at once while the socket keeps up,
   * after "drain" under backpressure. Writes go out in call order. On a lazy TLS conn the
   * first write waits for the handshake.
   *
   * Rejects with {@link DeadlineExceededError} (op "write"; permanent once bytes were handed
   * over), {@link ConnectionResetError} or {@link TLSError} when the connection broke,
   * {@link ClosedError} after close() or closeWrite(), `signal.reason`, or TypeError for data
   * that is not a string, a Uint8Array or an array of them.
   *
   * @example
   * ```ts
   * await conn.write(["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "ok"]);
   * ```
   */
  write(
    data: string | Uint8Array | ReadonlyArray<string | Uint8Array>,
    opts?: OpOptions,
  ): Promise<void> {
    // Fast path: one buffer or string, no options, no other writer, a ready
    // transport, nothing to wait for: hand it over without an async frame.
    const t = this.transport;
    if (
      opts === undefined &&
      (typeof data === "string" || data instanceof Uint8Array) &&
      t.ready &&
      this.writers.idle &&
      this.writeError === undefined &&
      !this.closed &&
      !this.writeEnded &&
      !t.destroyed &&
      (this.writeWaitMade === undefined || !this.writeWaitMade.expired(NEVER))
    ) {
      this.handedOver += byteCount(data);
      if (data.length === 0 || t.write(data)) return RESOLVED;
      this.writers.tryAcquire(); // idle, so taken at once: later writes queue behind the drain
      this.draining = true;
      const drained = this.writeWait.wait(NEVER, undefined);
      const release = (this.releaseDrained ??= () => {
        this.draining = false;
        this.writers.release();
      });
      drained.then(release, release);
      return drained;
    }
    return this.writeInTurn(data, opts);
  }

  /** Made on the first write that waits for drain; reused after. */
  private releaseDrained: (() => void) | undefined;

  private async writeInTurn(
    data: string | Uint8Array | ReadonlyArray<string | Uint8Array>,
    opts?: OpOptions,
  ): Promise<void> {
    checkWriteData(data);
    checkOpOptions(opts);
    const signal = opts?.signal;
    if (signal?.aborted) throw abortReason(signal);
    const callExpiry = expiryAfter(opts?.timeout);
    this.checkWritable();
    const turn = this.writers.acquire(callExpiry, signal, this, Conn.writeTurnTimedOut);
    if (turn) await turn;
    try {
      this.checkWritable();
      const ready = this.writerReady(callExpiry, signal);
      if (ready) await ready;
      const t = this.transport;
      this.handedOver += byteCount(data);
      const more =
        typeof data === "string" || data instanceof Uint8Array
          ? data.length === 0 || t.write(data)
          : t.writev(data);
      if (!more) {
        this.draining = true;
        try {
          await this.writeWait.wait(callExpiry, signal);
        } finally {
          this.draining = false;
        }
      }
    } finally {
      this.writers.release();
    }
  }

  /**
   * In the writer's turn: wait for the transport, then check the deadline before handing
   * anything over. Undefined when the writer may go on at once (the usual case: no promise).
   */
  private writerReady(
    callExpiry: number,
    signal: AbortSignal | undefined,
  ): Promise<void> | undefined {
    if (!this.transport.ready) return this.writerReadyLater(callExpiry, signal);
    if (this.writeWait.expired(callExpiry)) throw this.writeTimeoutError(); // not permanent: nothing sent
    return undefined;
  }

  private async writerReadyLater(
    callExpiry: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    while (!this.transport.ready) {
      if (this.readyError) throw this.readyError; // the handshake failed: sticky
      await this.waitReady(this.writeWait, callExpiry, signal);
      this.checkWritable();
    }
    this.writerReady(callExpiry, signal); // ready now: only its deadline check is left
  }

  /**
   * Half-close: send FIN (TLS: close_notify first) after pending writes; reading
   * goes on until the peer ends too. Resolves once everything written and the
   * FIN are handed to the kernel; bounded by the write deadline and `opts`.
   * After a failed write it rejects with that write's error.
   */
  async closeWrite(opts?: OpOptions): Promise<void> {
    checkOpOptions(opts);
    const signal = opts?.signal;
    if (signal?.aborted) throw abortReason(signal);
    const callExpiry = expiryAfter(opts?.timeout);
    this.checkUsable();
    if (this.writeError) throw this.writeError;
    if (this.writeEnded) return;
    const turn = this.writers.acquire(callExpiry, signal, this, Conn.writeTurnTimedOut);
    if (turn) await turn;
    try {
      this.checkUsable();
      if (this.writeError) throw this.writeError;
      if (this.writeEnded) return;
      const ready = this.writerReady(callExpiry, signal);
      if (ready) await ready;
      this.writeEnded = true;
      this.finishing = true;
      this.transport.end().then(() => this.writeWait.resolve(), this.sink.onError);
      this.draining = true; // a timeout from here on is permanent: the FIN may be half out
      await this.writeWait.wait(callExpiry, signal);
    } finally {
      this.draining = false;
      this.finishing = false;
      this.writers.release();
    }
  }

  // ---------------------------------------------------------------- copying

  /**
   * Copy everything read from this conn into `dest` until EOF, then half-close `dest`
   * (closeWrite: FIN, TLS close_notify) unless `end` is false. Resolves with the number of
   * bytes copied. Go's `io.Copy(dest, conn)`, node's `pipe`: the way to write a proxy or an
   * echo server (`conn.copyTo(conn)`).
   *
   * While `dest` keeps up, each chunk is written from the event that brought it, with no
   * promise per chunk; when `dest` pushes back, this conn stops reading until it drains
   * (this conn's buffering limit bounds what waits). Other reads of this conn wait until the
   * copy ends; writes of others to `dest` go out between chunks. This conn's read deadline and
   * `dest`'s write deadline apply as they do to reads and writes.
   *
   * Rejects with the first read error (ConnectionResetError, TLSError, DeadlineExceededError
   * from the read deadline, ClosedError when this conn is closed) or write error of `dest`,
   * or `signal.reason`; neither conn is closed then: the caller decides (a proxy closes both).
   *
   * @example
   * ```ts
   * // A TCP proxy: both directions, each ending the other's write side at its EOF.
   * await Promise.all([client.copyTo(backend), backend.copyTo(client)]);
   * ```
   */
  async copyTo(dest: Conn, opts?: CopyOptions): Promise<number> {
    if (!(dest instanceof Conn)) throw new TypeError("copyTo(dest): dest must be a Conn");
    const end = opts?.end;
    if (end !== undefined && typeof end !== "boolean") {
      throw new TypeError(`copyTo(dest, { end }): end must be a boolean, got ${typeof end}`);
    }
    const signal = opts?.signal;
    const signalOnly = signal === undefined ? undefined : { signal }; // for the ops it calls
    checkOpOptions(signalOnly);
    if (signal?.aborted) throw abortReason(signal);
    this.checkUsable();
    const turn = this.readers.acquire(NEVER, signal, this, Conn.readWaitTimedOut);
    if (turn) await turn;
    let copied = 0;
    /** A write of `dest` that did not take the chunk at once: the copy waits for it. */
    let blocked: Promise<void> | undefined;
    const pump = (chunk: Buffer): void => {
      copied += chunk.length;
      const written = dest.write(chunk);
      if (written === RESOLVED) return; // taken: the common case, nothing to wait for
      written.catch(noop); // awaited below; the copy may end first (this conn closed)
      blocked = written;
      this.pump = undefined; // what comes next is buffered until dest is ready again
      this.readWait.resolve();
    };
    try {
      for (;;) {
        this.checkUsable();
        if (blocked !== undefined) {
          const waitFor = blocked;
          blocked = undefined;
          await bounded(waitFor, NEVER, signal, noop);
          continue;
        }
        if (!this.transport.ready) {
          if (this.readyError) throw this.readyError; // the handshake failed: sticky
          await this.waitReady(this.readWait, NEVER, signal);
          continue;
        }
        if (this.buf.length > 0) {
          const chunk = this.buf.take(Math.min(DEFAULT_READ_SIZE, this.buf.headLength()));
          copied += chunk.length;
          await dest.write(chunk, signalOnly);
          continue;
        }
        if (this.eof) {
          this.throwIfFailed();
          break;
        }
        if (this.readError) throw this.readError;
        this.pump = pump;
        try {
          await this.waitReadable(NEVER, signal);
        } finally {
          this.pump = undefined;
        }
      }
    } finally {
      this.readers.release();
      this.updateFlow();
    }
    if (end !== false) await dest.closeWrite(signalOnly);
    return copied;
  }

  private checkWritable(): void {
    this.checkUsable();
    if (this.readyError) throw this.readyError;
    if (this.writeError) throw this.writeError;
    if (this.writeEnded) {
      throw new ClosedError(`write to ${this.peerName} after closeWrite()`);
    }
    if (this.transport.destroyed) throw new ClosedError(this.closedMessage());
  }

  // ---------------------------------------------------------------- closing

  /**
   * Close both directions. Idempotent: every call returns the same promise, which never
   * rejects. Pending reads and writes reject with
   * ClosedError (a pending closeWrite() finishes its flush); data already
   * accepted by write() is flushed (TLS: with a close_notify), then the conn
   * reads and discards until the peer's EOF, for up to 2 s in all, before the
   * socket is released: a lingering close, so nothing sent is lost to a reset.
   * The promise resolves once our FIN is out; the discarding goes on in the background.
   * After a STARTTLS upgrade, closing the plain conn closes the upgraded one.
   *
   * @example
   * ```ts
   * await conn.write(lastResponse);
   * await conn.close(); // the response is not lost, even if the peer is still sending
   * ```
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    if (this.successor) {
      this.closing = this.successor.close(); // Go: closing the plain conn closes the connection
      return this.closing;
    }
    this.closed = true;
    this.pump = undefined; // a copy in progress stops here, not at its next turn
    if (this.readWait.pending || (this.writeWaitMade?.pending && !this.finishing)) {
      const closedErr = new ClosedError(`connection to ${this.peerName} was closed`);
      this.readWait.reject(closedErr);
      if (!this.finishing) this.writeWaitMade?.reject(closedErr);
    }
    const flush = this.writeError === undefined || this.finishing;
    this.closing = this.transport.close(CLOSE_LINGER_MS, flush).then(() => this.notifyClosed());
    return this.closing;
  }

  /** Calls {@link Conn.close}, for `await using conn = ...`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---------------------------------------------------------------- web streams

  /**
   * A ReadableStream over this conn's reads (created on first use; the same stream after).
   * Cancelling it closes the conn. Do not mix it with direct reads.
   */
  get readable(): ReadableStream<Uint8Array> {
    this.readableStream ??= new ReadableStream<Uint8Array>(
      {
        pull: async (controller) => {
          const chunk = await this.read();
          if (chunk === null) controller.close();
          else controller.enqueue(chunk);
        },
        cancel: () => this.close(),
      },
      { highWaterMark: 0 },
    );
    return this.readableStream;
  }

  /**
   * A WritableStream over write() (created on first use); closing it half-closes the conn
   * (closeWrite), aborting it closes the conn.
   */
  get writable(): WritableStream<Uint8Array> {
    this.writableStream ??= new WritableStream<Uint8Array>({
      write: (chunk) => this.write(chunk),
      close: () => this.closeWrite(),
      abort: () => this.close(),
    });
    return this.writableStream;
  }
}

function noop(): void {}

/** The `return()` of the chunk iterator: breaking out leaves the conn open. */
function iteratorReturn(): Promise<IteratorResult<Buffer>> {
  return Promise.resolve({ done: true, value: undefined });
}

/** A line's text without its "\n" or "\r\n" (only a "\r" before the "\n" is line ending). */
function decodeLine(line: Buffer): string {
  let end = line.length;
  if (end > 0 && line[end - 1] === 0x0a) {
    end--;
    if (end > 0 && line[end - 1] === 0x0d) end--;
  }
  return utf8.decode(line.subarray(0, end));
}

/** One piece as a batch of one; undefined (wait) and null (the end) as they are. */
function asBatch<T>(v: T | null | undefined): T[] | null | undefined {
  if (v === undefined) return undefined;
  return v === null ? null : [v];
}

/** A clean EOF (nothing partial) ends an iteration; anything else is an error. */
function endOfStream(err: unknown): null {
  if (err instanceof UnexpectedEOFError && err.partial === 0) return null;
  throw err;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

let lastDelim = "\n";
let lastDelimBytes: Buffer = Buffer.from(lastDelim);
/** The UTF-8 bytes of a string delimiter; one delimiter used over and over is encoded once. */
function delimBytes(delim: string): Buffer {
  if (delim !== lastDelim) {
    lastDelimBytes = Buffer.from(delim, "utf8");
    lastDelim = delim;
  }
  return lastDelimBytes;
}

function checkSize(n: unknown, what: string, min: number, max: number): void {
  if (typeof n !== "number" || !Number.isInteger(n)) {
    throw new TypeError(`${what} must be an integer, got ${String(n)}`);
  }
  if (n < min || n > max) throw new RangeError(`${what} must be in ${min}..${max}, got ${n}`);
}

function maxBytesOf(opts: MaxBytesOptions | undefined, dflt: number, what: string): number {
  const m = opts?.maxBytes;
  if (m === undefined) return dflt;
  if (typeof m !== "number" || Number.isNaN(m) || m < 1) {
    throw new RangeError(`${what}: maxBytes must be a number >= 1, got ${String(m)}`);
  }
  return m;
}

/** The bytes a write hands over: strings as UTF-8. */
function byteCount(data: string | Uint8Array | ReadonlyArray<string | Uint8Array>): number {
  if (typeof data === "string") return Buffer.byteLength(data);
  if (data instanceof Uint8Array) return data.length;
  let n = 0;
  for (const part of data) n += typeof part === "string" ? Buffer.byteLength(part) : part.length;
  return n;
}

function checkWriteData(data: unknown): void {
  if (typeof data === "string" || data instanceof Uint8Array) return;
  if (Array.isArray(data)) {
    for (const part of data) {
      if (typeof part !== "string" && !(part instanceof Uint8Array)) {
        throw new TypeError("write(data): array items must be strings or Uint8Arrays");
      }
    }
    return;
  }
  throw new TypeError(
    `write(data) takes a string, a Uint8Array or an array of them, got ${typeof data}`,
  );
}

function describeDelim(d: Uint8Array): string {
  if (d.length === 1 && d[0] === 0x0a) return "end of line";
  const printable = Buffer.from(d).toString("latin1");
  return `delimiter ${JSON.stringify(printable)}`;
}
