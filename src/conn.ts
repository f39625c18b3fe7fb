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
import type { Socket } from "node:net";
import { SocketAddr } from "./addr.ts";
import { ChunkList } from "./chunks.ts";
import {
  checkOpOptions,
  type DeadlineInput,
  expiryAfter,
  NEVER,
  type OpOptions,
  toMonotonic,
} from "./deadline.ts";
import {
  ClosedError,
  DeadlineExceededError,
  LimitExceededError,
  mapError,
  type TlsnetError,
  UnexpectedEOFError,
} from "./errors.ts";
import { DeadlineWait } from "./wait.ts";

/**
 * What a Conn needs from its transport. node:net Socket and node:tls TLSSocket
 * both satisfy it; a future native engine must provide exactly this.
 * Events used: "data", "end", "error", "close", "drain", "finish".
 */
export type Transport = Socket;

const KiB = 1024;
const MiB = 1024 * KiB;
/** Default and largest `read()` size. */
export const DEFAULT_READ_SIZE = 64 * KiB;
export const MAX_READ_SIZE = 16 * MiB;
/** Default `maxBytes` of readUntil / readLine. */
export const DEFAULT_MAX_LINE = 1 * MiB;
/** Default buffering limit: a reader that stops reading stops the socket at this much. */
export const DEFAULT_LIMIT = 4 * MiB;
/** How long close() lets buffered writes flush before it destroys the socket. */
const CLOSE_LINGER_MS = 2000;

const LF = new Uint8Array([0x0a]);
const utf8 = new TextDecoder("utf-8");

/** A queue that lets one operation at a time run, in call order. */
class TurnQueue {
  private busy = false;
  private waiting: Array<() => void> = [];
  /** Resolves when it is the caller's turn; pair every acquire with release. */
  acquire(): Promise<void> | undefined {
    if (!this.busy) {
      this.busy = true;
      return undefined;
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.busy = false;
  }
  get pending(): number {
    return this.waiting.length;
  }
  get idle(): boolean {
    return !this.busy;
  }
}

/** Options for the readers that look for a delimiter or EOF. */
export type MaxBytesOptions = OpOptions & { maxBytes?: number | undefined };

/**
 * A connection. Reads are served in call order by one logical reader, writes
 * are written in call order by one logical writer; both sides may be used
 * concurrently. All methods are safe to call after close (they reject with
 * ClosedError).
 */
export class Conn implements AsyncIterable<Buffer>, AsyncDisposable {
  /** The socket we read from and write to; set by attach() (TLSConn attaches lazily). */
  protected transport: Transport | undefined;
  /** The socket whose addresses we report (the TCP socket, under TLS too). */
  protected readonly baseSocket: Socket;

  readonly remoteAddr: SocketAddr;
  readonly localAddr: SocketAddr;

  private readonly buf = new ChunkList();
  private eof = false;
  private readError: TlsnetError | undefined;
  private writeError: TlsnetError | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  private writeEnded = false;
  private upgraded = false;

  private readonly readers = new TurnQueue();
  private readonly writers = new TurnQueue();
  /** The reader waiting for data; a timeout leaves the conn readable. */
  private readonly readWait = new DeadlineWait(() => this.readTimeoutError());
  /** The writer waiting for drain; a timeout is permanent: a partial record cannot be resumed. */
  private readonly writeWait = new DeadlineWait(
    () =>
      (this.writeError ??= new DeadlineExceededError(
        "write",
        `write to ${this.peerName} timed out; the connection can no longer be written to`,
      )),
  );

  private limitBytes = DEFAULT_LIMIT;
  private paused = false;

  private readableStream: ReadableStream<Uint8Array> | undefined;
  private writableStream: WritableStream<Uint8Array> | undefined;

  // Handlers bound once, reused for every socket event and wait.
  private readonly onData = (chunk: Buffer) => {
    this.buf.push(chunk);
    if (this.readWait.pending) this.readWait.resolve();
    else if (this.limitBytes > 0 && this.buf.length >= this.limitBytes) this.updateFlow();
  };
  private readonly onEnd = () => {
    this.eof = true;
    this.readWait.resolve();
  };
  private readonly onError = (err: Error) => {
    this.readError ??= this.mapTransportError(err, "read");
    this.writeError ??= this.mapTransportError(err, "write");
    this.readWait.resolve();
    this.writeWait.reject(this.writeError);
  };
  private readonly onClose = () => {
    if (!this.eof && !this.readError) this.eof = true; // ended without FIN (destroyed)
    this.readWait.resolve();
    if (!this.closed)
      this.writeWait.reject(this.writeError ?? new ClosedError(this.closedMessage()));
  };
  private readonly onDrain = () => this.writeWait.resolve();

  /**
   * Wrap a connected socket. `transport` may be omitted by subclasses that
   * attach one later (TLS wraps the TCP socket on first use).
   */
  constructor(socket: Socket, transport: Transport | null = socket) {
    this.baseSocket = socket;
    this.remoteAddr = new SocketAddr(
      socket.remoteAddress ?? "0.0.0.0",
      socket.remotePort ?? 0,
      familyOf(socket.remoteFamily),
    );
    this.localAddr = new SocketAddr(
      socket.localAddress ?? "0.0.0.0",
      socket.localPort ?? 0,
      familyOf(socket.localFamily),
    );
    if (transport) this.attach(transport);
  }

  /** Start reading from `transport`. Called once. */
  protected attach(transport: Transport): void {
    this.transport = transport;
    transport.allowHalfOpen = true; // the peer's FIN must not end our side: closeWrite is ours to call
    transport.on("data", this.onData);
    transport.on("end", this.onEnd);
    transport.on("error", this.onError);
    transport.on("close", this.onClose);
    transport.on("drain", this.onDrain);
    if (transport.destroyed) this.onClose();
    else if (!this.paused) transport.resume(); // accepted sockets start paused (pauseOnConnect)
  }

  /**
   * Stop reading and give up the socket, with every byte this Conn buffered
   * pushed back into it, so another reader (a TLS layer) sees the stream
   * from exactly where this Conn stopped. The Conn is unusable afterwards.
   */
  detach(): Socket {
    const t = this.transport;
    if (!t || this.upgraded || this.closed) {
      throw new ClosedError(`${this.peerName}: connection is closed or already upgraded`);
    }
    if (this.readers.pending > 0 || this.readWait.pending || this.writeWait.pending) {
      throw new Error(`${this.peerName}: cannot upgrade while a read or write is pending`);
    }
    this.upgraded = true;
    t.off("data", this.onData);
    t.off("end", this.onEnd);
    t.off("close", this.onClose);
    t.off("drain", this.onDrain);
    t.pause();
    const pending = this.buf.drain();
    for (let i = pending.length - 1; i >= 0; i--) t.unshift(pending[i]!);
    // Keep a listener so that an error during hand-over never crashes the process.
    t.off("error", this.onError);
    t.on("error", noop);
    return t;
  }

  /** Map a transport error for this kind of conn (TLSConn knows TLS reasons). */
  protected mapTransportError(err: unknown, op: "read" | "write"): TlsnetError {
    return mapError(err, { op, peer: this.peerName });
  }

  /** The earlier of the read and write deadlines (monotonic), for work that does both. */
  protected get ioDeadline(): number {
    return Math.min(this.readWait.deadline, this.writeWait.deadline);
  }

  /** A Conn that only reports addresses: the TCP conn under a TLS conn that owns the socket. */
  static addressView(socket: Socket): Conn {
    const view = new Conn(socket, null);
    view.upgraded = true;
    return view;
  }

  /** Hook for subclasses: something to wait for between our FIN and destroying the socket. */
  protected afterEnd(): Promise<void> | undefined {
    return undefined;
  }

  /** Hook for subclasses: a promise to wait for before any I/O (the TLS handshake). */
  protected beforeIO(_op: "read" | "write", _opts?: OpOptions): Promise<void> | undefined {
    return undefined;
  }

  /** Printable peer address for messages. */
  protected get peerName(): string {
    return this.remoteAddr.toString();
  }

  /** The underlying socket, for inspection. */
  get socket(): Socket {
    return this.transport ?? this.baseSocket;
  }

  /** False once closed locally, reset, or both directions ended. */
  get isOpen(): boolean {
    if (this.closed || this.upgraded) return false;
    if (this.readError && this.readError.code === "ERR_TLSNET_RESET") return false;
    if (this.eof && this.writeEnded) return false;
    return !this.transport?.destroyed || this.buf.length > 0;
  }

  /** Bytes received and buffered, not yet returned to the caller. */
  get unreadBytes(): number {
    return this.buf.length;
  }

  /** Bytes accepted by write() but not yet handed to the kernel. */
  get unsentBytes(): number {
    return this.transport?.writableLength ?? 0;
  }

  /**
   * Stop reading from the socket while `bytes` unread bytes are buffered and no
   * read is waiting for more; 0 removes the limit. Default 4 MiB.
   */
  limit(bytes: number): void {
    if (typeof bytes !== "number" || !Number.isInteger(bytes) || bytes < 0) {
      throw new RangeError(`limit(bytes) takes an integer >= 0, got ${String(bytes)}`);
    }
    this.limitBytes = bytes;
    this.updateFlow();
  }

  // ---------------------------------------------------------------- deadlines

  /** Set both the read and the write deadline. */
  setDeadline(t: Date | number | null): void {
    this.setReadDeadline(t);
    this.setWriteDeadline(t);
  }

  /** Absolute deadline for reads, pending ones included; null or 0 clears it. */
  setReadDeadline(t: Date | number | null): void {
    this.readWait.setDeadline(toMonotonic(t as DeadlineInput, "read deadline"));
  }

  /** Absolute deadline for writes, pending ones included; once it fires, writing is over. */
  setWriteDeadline(t: Date | number | null): void {
    this.writeWait.setDeadline(toMonotonic(t as DeadlineInput, "write deadline"));
  }

  // ---------------------------------------------------------------- reading

  /**
   * Read what is available: 1..max bytes (default 64 KiB, at most 16 MiB), or
   * null at EOF (and every time after).
   */
  read(max: number = DEFAULT_READ_SIZE, opts?: OpOptions): Promise<Buffer | null> {
    checkSize(max, "read(max)", 1, MAX_READ_SIZE);
    return this.readOp(opts, () => {
      if (this.buf.length > 0) return this.buf.take(Math.min(max, this.buf.headLength()));
      if (this.eof) return this.endOrThrow(null);
      return undefined;
    });
  }

  /** Fill up to `buf.length` bytes from what is available; the count, or null at EOF. */
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
   * Exactly `n` bytes. At EOF first: UnexpectedEOFError, and the buffered bytes
   * stay unconsumed (a shorter readExactly or read() still gets them).
   */
  readExactly(n: number, opts?: OpOptions): Promise<Buffer> {
    checkSize(n, "readExactly(n)", 0, Number.MAX_SAFE_INTEGER);
    return this.readOp(opts, () => {
      if (this.buf.length >= n) return this.buf.take(n);
      if (this.eof) {
        this.throwIfFailed();
        throw new UnexpectedEOFError(
          `${this.peerName} closed the connection after ${this.buf.length} of ${n} bytes`,
          { partial: this.buf.length },
        );
      }
      return undefined;
    });
  }

  /**
   * Bytes through `delim` (included). At EOF before it: UnexpectedEOFError with
   * the partial bytes left buffered. Past `maxBytes` (default 1 MiB):
   * LimitExceededError, nothing consumed.
   */
  readUntil(delim: string | Uint8Array, opts?: MaxBytesOptions): Promise<Buffer> {
    const d = typeof delim === "string" ? delimBytes(delim) : delim;
    if (!(d instanceof Uint8Array)) {
      throw new TypeError("readUntil(delim) takes a string or Uint8Array");
    }
    if (d.length === 0) throw new RangeError("readUntil(delim): delimiter must not be empty");
    const maxBytes = maxBytesOf(opts, DEFAULT_MAX_LINE, "readUntil");
    return this.readOp(opts, () => this.scanFor(d, maxBytes, false) ?? undefined);
  }

  /**
   * One UTF-8 line without its "\n" or "\r\n". At EOF the last unterminated line
   * is returned, then null. Past `maxBytes` (default 1 MiB): LimitExceededError.
   */
  readLine(opts?: MaxBytesOptions): Promise<string | null> {
    const maxBytes = maxBytesOf(opts, DEFAULT_MAX_LINE, "readLine");
    return this.readOp(opts, () => {
      const line = this.scanFor(LF, maxBytes, true);
      if (line === undefined) return undefined;
      if (line === null) return null;
      let end = line.length;
      if (end > 0 && line[end - 1] === 0x0a) end--;
      if (end > 0 && line[end - 1] === 0x0d) end--;
      return utf8.decode(line.subarray(0, end));
    });
  }

  /** Everything until EOF, copied once. Past `maxBytes` (default unlimited): LimitExceededError. */
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

  /** Chunks until EOF. A plain iterator, not a generator: one promise per chunk. */
  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: () => this.read().then(iteratorResult),
      return: () => Promise.resolve({ done: true, value: undefined }),
    };
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
    const end = this.buf.indexAfter(delim, maxBytes);
    if (end >= 0) return this.buf.take(end);
    if (end === -2) {
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
    // Fast path, the common case of a busy reader: no options, no other reader, no
    // handshake or deadline to mind, and the answer is already buffered. No async
    // frame, no turn, no timer.
    if (
      opts === undefined &&
      this.buf.length > 0 &&
      this.readers.idle &&
      this.transport !== undefined &&
      !this.closed &&
      !this.upgraded &&
      !this.readWait.expired(NEVER) &&
      this.beforeIO("read") === undefined
    ) {
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
    }
    return this.readOpInTurn(opts, attempt);
  }

  private async readOpInTurn<T>(
    opts: OpOptions | undefined,
    attempt: () => T | undefined,
  ): Promise<T> {
    checkOpOptions(opts);
    const callExpiry = expiryAfter(opts?.timeout);
    this.checkUsable();
    const turn = this.readers.acquire();
    if (turn) await turn;
    try {
      this.checkUsable();
      const ready = this.beforeIO("read", opts);
      if (ready) {
        await ready;
        this.checkUsable();
      }
      if (!this.transport) throw new ClosedError(this.closedMessage());
      if (this.readWait.expired(callExpiry)) {
        throw this.readTimeoutError(); // a deadline in the past fails at once, data or not
      }
      for (;;) {
        const result = attempt();
        if (result !== undefined) return result;
        if (this.readError && this.buf.length === 0) throw this.readError;
        await this.waitReadable(callExpiry, opts?.signal);
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
      `read from ${this.peerName} timed out; buffered data is kept for the next read`,
    );
  }

  private checkUsable(): void {
    if (this.closed || this.upgraded) throw new ClosedError(this.closedMessage());
  }

  private closedMessage(): string {
    return this.upgraded
      ? `connection to ${this.peerName} was upgraded; use the upgraded conn`
      : `connection to ${this.peerName} is closed`;
  }

  private waitReadable(callExpiry: number, signal: AbortSignal | undefined): Promise<void> {
    const waiting = this.readWait.wait(callExpiry, signal);
    this.updateFlow(); // a waiting reader lifts the limit
    return waiting;
  }

  /** Pause the socket while the unread buffer is at the limit and nobody waits for more. */
  private updateFlow(): void {
    const t = this.transport;
    if (!t || this.upgraded) return;
    const full =
      this.limitBytes > 0 && this.buf.length >= this.limitBytes && !this.readWait.pending;
    if (full && !this.paused) {
      this.paused = true;
      t.pause();
    } else if (!full && this.paused) {
      this.paused = false;
      t.resume();
    }
  }

  // ---------------------------------------------------------------- writing

  /**
   * Write bytes or strings (UTF-8), or an array of them (written together).
   * Resolves once the data is accepted: at once while the socket keeps up,
   * after "drain" under backpressure. Writes go out in call order.
   */
  write(
    data: string | Uint8Array | ReadonlyArray<string | Uint8Array>,
    opts?: OpOptions,
  ): Promise<void> {
    // Fast path: one buffer or string, no options, no other writer, nothing to wait
    // for: hand it to the socket without an async frame.
    const t = this.transport;
    if (
      opts === undefined &&
      (typeof data === "string" || data instanceof Uint8Array) &&
      t !== undefined &&
      this.writers.idle &&
      this.writeError === undefined &&
      !this.closed &&
      !this.upgraded &&
      !this.writeEnded &&
      !t.destroyed &&
      !this.writeWait.expired(NEVER) &&
      this.beforeIO("write") === undefined
    ) {
      if (data.length > 0) t.write(data);
      if (!t.writableNeedDrain) return Promise.resolve();
      this.writers.acquire(); // idle, so taken at once: later writes queue behind the drain
      const drained = this.writeWait.wait(NEVER, undefined);
      drained.then(this.releaseWriter, this.releaseWriter);
      return drained;
    }
    return this.writeInTurn(data, opts);
  }

  private readonly releaseWriter = () => this.writers.release();

  private async writeInTurn(
    data: string | Uint8Array | ReadonlyArray<string | Uint8Array>,
    opts?: OpOptions,
  ): Promise<void> {
    checkWriteData(data);
    checkOpOptions(opts);
    const callExpiry = expiryAfter(opts?.timeout);
    this.checkWritable();
    const turn = this.writers.acquire();
    try {
      if (turn) await turn;
      this.checkWritable();
      const ready = this.beforeIO("write", opts);
      if (ready) {
        await ready;
        this.checkWritable();
      }
      if (!this.transport) throw new ClosedError(this.closedMessage());
      if (this.writeWait.expired(callExpiry)) {
        // Nothing was handed over yet, so this failure is not permanent.
        throw new DeadlineExceededError("write", `write to ${this.peerName} timed out`);
      }
      const t = this.transport!;
      if (typeof data === "string" || data instanceof Uint8Array) {
        if (data.length > 0) t.write(data);
      } else {
        t.cork(); // one writev for the whole array
        for (const part of data) if (part.length > 0) t.write(part);
        t.uncork();
      }
      if (t.writableNeedDrain) await this.writeWait.wait(callExpiry, opts?.signal);
    } finally {
      this.writers.release();
    }
  }

  /**
   * Half-close: send FIN (TLS: close_notify first) after pending writes; reading
   * goes on until the peer ends too.
   */
  async closeWrite(): Promise<void> {
    this.checkUsable();
    if (this.writeEnded) return;
    const turn = this.writers.acquire();
    try {
      if (turn) await turn;
      this.checkUsable();
      const ready = this.beforeIO("write");
      if (ready) await ready;
      if (this.writeEnded) return;
      this.writeEnded = true;
      const t = this.transport!;
      if (this.writeError) return;
      await new Promise<void>((resolve) => {
        if (t.writableFinished || t.destroyed) resolve();
        else t.end(resolve);
      });
    } finally {
      this.writers.release();
    }
  }

  private checkWritable(): void {
    this.checkUsable();
    if (this.writeError) throw this.writeError;
    if (this.transport?.destroyed) throw new ClosedError(this.closedMessage());
    if (this.writeEnded) {
      throw new ClosedError(`write to ${this.peerName} after closeWrite()`);
    }
  }

  // ---------------------------------------------------------------- closing

  /**
   * Close both directions. Idempotent. Pending reads and writes reject with
   * ClosedError; data already accepted by write() is flushed (TLS: with a
   * close_notify) for up to 2 s before the socket is destroyed.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    if (this.readWait.pending || this.writeWait.pending) {
      const closedErr = new ClosedError(`connection to ${this.peerName} was closed`);
      this.readWait.reject(closedErr);
      this.writeWait.reject(closedErr);
    }
    this.closing = this.shutdownTransport();
    return this.closing;
  }

  /** End the transport gracefully, destroy it once flushed or after the linger time. */
  protected shutdownTransport(): Promise<void> {
    const t = this.transport ?? this.baseSocket;
    if (this.upgraded) return Promise.resolve();
    if (t.destroyed && (t.closed ?? true)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      t.once("close", () => resolve());
      if (t.destroyed) return;
      if (this.writeError || this.writeEnded || !t.writable) {
        t.destroy();
        return;
      }
      const linger = setTimeout(() => t.destroy(), CLOSE_LINGER_MS);
      linger.unref();
      t.end(() => {
        const finish = () => {
          clearTimeout(linger);
          t.destroy();
        };
        const wait = this.afterEnd();
        if (wait) void wait.then(finish);
        else finish();
      });
      if (this.paused) t.resume(); // let the FIN / close_notify exchange proceed
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---------------------------------------------------------------- web streams

  /** A ReadableStream over this conn's reads (created on first use). */
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

  /** A WritableStream over write(); closing it half-closes the conn. */
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

function iteratorResult(chunk: Buffer | null): IteratorResult<Buffer> {
  return chunk === null ? { done: true, value: undefined } : { done: false, value: chunk };
}

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

function familyOf(f: string | undefined): "IPv4" | "IPv6" | undefined {
  return f === "IPv6" ? "IPv6" : f === "IPv4" ? "IPv4" : undefined;
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
