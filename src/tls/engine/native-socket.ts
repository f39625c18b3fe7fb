/**
 * What `toSocket()` returns on the native engine: a Duplex that stands in for a
 * connected TLSSocket, for code that wants a node:net Socket (node:http(s)
 * `createConnection`, node:http2 `connect`/`createServer`, undici's `connect`).
 * There is no node TLSSocket to give away: the addon does TLS on the fd. The
 * Duplex takes the native transport's sink: decrypted chunks are pushed (with
 * backpressure: a full buffer stops the addon's reads, `_read` restarts them),
 * writes go straight to the addon (callback at once when the kernel took it
 * all, else on its drain), `end()` sends close_notify and FIN, `destroy()`
 * closes the native conn (fd released) and the node socket under it.
 *
 * Socket members it carries: encrypted, alpnProtocol, servername, authorized,
 * the addresses, address(), setNoDelay/setKeepAlive (set by the addon on its
 * fd, the only one: node:net's was closed at the takeover), setTimeout (its own
 * idle timer), ref/unref (the addon's poll handle), destroySoon, getPeerCertificate,
 * getProtocol, getCipher, isSessionReused. No `_handle`: node:http2 wraps it in
 * a JSStreamSocket, node:http reads it as a stream.
 *
 * Chunks are views of the addon's slabs; a slab is reused only once no view of
 * it is alive, so pushed chunks stay valid without a copy.
 * @internal
 * @module
 */
import type { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import type { AddressInfo, Socket } from "node:net";
import { constants } from "node:os";
import { Duplex } from "node:stream";
import type { SocketAddr } from "../../addr.ts";
import type { TransportSink } from "../../transport.ts";
import type { ConnectionState } from "../state.ts";

/** What the Duplex needs from the native transport it takes over. @internal */
export interface NativeSocketHost {
  /** The node socket the conn started on (without a handle: the addon holds the only fd). */
  readonly rawSocket: Socket;
  /** The native conn is closed (fd released). */
  isClosed(): boolean;
  /** The peer's end arrived before the hand-over (the Conn saw it). */
  readonly peerEnded: boolean;
  readonly peerName: string;
  state(): ConnectionState;
  /** Queue bytes; false: the rest waits for the sink's onDrain. */
  write(data: Uint8Array): boolean;
  writev(parts: Uint8Array[]): boolean;
  /** close_notify, then FIN, after what is queued. */
  end(): Promise<void>;
  pause(): void;
  resume(): void;
  /** Close the native conn now; the sink's onClose follows. */
  destroy(): void;
  /** Stop the native conn keeping the process alive, and start again. */
  unref(): void;
  ref(): void;
  /** The TCP socket's local address (node:net's handle, which knew it, is closed). */
  readonly tcpLocal: SocketAddr;
  /** TCP_NODELAY and SO_KEEPALIVE on the addon's fd (node:net holds none). */
  setNoDelay(on: boolean): void;
  setKeepAlive(on: boolean, idleSeconds: number): void;
  /** Route the transport's events to `sink` from now on. */
  attach(sink: TransportSink): void;
}

type Callback = (err?: Error | null) => void;

/** A transport error as node:net / node:tls spell them: `code` ECONNRESET, EPIPE, ERR_SSL_*. */
function socketError(err: unknown, peer: string): Error {
  const raw = err as { code?: unknown; reason?: unknown; message?: unknown } | undefined;
  const code = typeof raw?.code === "string" ? raw.code : "ERR_SSL_UNKNOWN";
  const text =
    typeof raw?.reason === "string"
      ? raw.reason
      : typeof raw?.message === "string"
        ? raw.message
        : String(err);
  const out = new Error(`TLS connection with ${peer} failed: ${text} [${code}]`, { cause: err });
  const extra: Record<string, unknown> = { code, reason: text };
  const errno = (constants.errno as Record<string, number | undefined>)[code];
  if (!code.startsWith("ERR_SSL_") && errno !== undefined) {
    extra.errno = -errno;
    extra.syscall = "read";
  }
  return Object.assign(out, extra);
}

/**
 * The native engine's stand-in for a connected TLSSocket (see the module doc).
 * @internal
 */
export class NativeSocket extends Duplex {
  readonly encrypted = true;
  readonly connecting = false;
  readonly pending = false;
  readonly alpnProtocol: string | false;
  readonly servername: string | false;
  readonly authorized: boolean;
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly remoteFamily: string | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  readonly localFamily: string | undefined;
  /** The idle timeout set with setTimeout (ms), or undefined. */
  timeout: number | undefined;
  bytesRead = 0;
  bytesWritten = 0;

  private readonly host: NativeSocketHost;
  private readonly tlsState: ConnectionState;
  private readonly local: AddressInfo;
  /** The addon's reads are stopped (our buffer is full, or nobody asked yet). */
  private readsStopped = true;
  private eofPending: boolean;
  private writeDone: Callback | undefined;
  private closeDone: Callback | undefined;
  private closeErr: Error | null = null;
  private idle: NodeJS.Timeout | undefined;

  constructor(host: NativeSocketHost) {
    super({ allowHalfOpen: true, emitClose: true, autoDestroy: true });
    this.host = host;
    const raw = host.rawSocket;
    const state = host.state();
    this.tlsState = state;
    this.alpnProtocol = state.alpnProtocol ?? false;
    this.servername = state.serverName ?? false;
    this.authorized = state.verified;
    this.remoteAddress = raw.remoteAddress;
    this.remotePort = raw.remotePort;
    this.remoteFamily = raw.remoteFamily;
    // node:net forgets its local address with its handle (closed at the takeover): the
    // transport kept it.
    const { address, family, port } = host.tcpLocal;
    this.localAddress = address;
    this.localPort = port;
    this.localFamily = family;
    this.local = { address, family, port };
    this.eofPending = host.peerEnded;
    host.pause(); // until the new owner reads (_read)
    host.attach(this.sink);
  }

  private readonly sink: TransportSink = {
    onData: (chunk) => {
      if (this.destroyed) return;
      this.bytesRead += chunk.length;
      this.touch();
      if (!this.push(chunk) && !this.readsStopped) {
        this.readsStopped = true;
        this.host.pause();
      }
    },
    onEnd: () => {
      if (!this.destroyed) this.push(null);
    },
    onError: (err) => {
      this.destroy(socketError(err, this.host.peerName));
    },
    onClose: () => {
      const done = this.closeDone;
      this.closeDone = undefined;
      if (done) done(this.closeErr);
      else if (!this.destroyed) this.destroy(); // closed underneath us (the TCP socket destroyed)
    },
    onDrain: () => {
      const done = this.writeDone;
      this.writeDone = undefined;
      done?.();
    },
  };

  override _read(): void {
    if (this.eofPending) {
      this.eofPending = false;
      this.push(null);
      return;
    }
    if (this.readsStopped && !this.host.isClosed()) {
      this.readsStopped = false;
      this.host.resume();
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: Callback): void {
    this.bytesWritten += chunk.length;
    this.touch();
    if (this.host.write(chunk)) cb();
    else this.writeDone = cb;
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: Callback): void {
    const parts = chunks.map((c) => c.chunk);
    for (const p of parts) this.bytesWritten += p.length;
    this.touch();
    if (this.host.writev(parts)) cb();
    else this.writeDone = cb;
  }

  override _final(cb: Callback): void {
    this.host.end().then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: Callback): void {
    this.clearTimers();
    const pending = this.writeDone;
    this.writeDone = undefined;
    if (pending) {
      pending(
        err ?? Object.assign(new Error("socket destroyed"), { code: "ERR_STREAM_DESTROYED" }),
      );
    }
    if (this.host.isClosed()) {
      this.host.rawSocket.destroy();
      cb(err);
      return;
    }
    // 'close' once the addon has closed the fd (EV_CLOSE), as a node socket after its handle.
    this.closeErr = err;
    this.closeDone = cb;
    this.host.destroy();
  }

  // ------------------------------------------------------------ socket members

  /** Ends our side, then destroys once it is flushed (node:http's choice for `Connection: close`). */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once("finish", () => this.destroy());
  }

  address(): AddressInfo {
    return this.local;
  }

  get readyState(): "open" | "readOnly" | "writeOnly" | "closed" {
    if (this.destroyed) return "closed";
    if (this.readable && this.writable) return "open";
    if (this.readable) return "readOnly";
    if (this.writable) return "writeOnly";
    return "closed";
  }

  setNoDelay(noDelay = true): this {
    if (!this.host.isClosed()) this.host.setNoDelay(noDelay);
    return this;
  }

  setKeepAlive(enable = false, initialDelay = 0): this {
    // node:net's units: ms, rounded down to whole seconds (0: the system's default).
    if (!this.host.isClosed()) this.host.setKeepAlive(enable, Math.floor(initialDelay / 1000));
    return this;
  }

  /** Emit 'timeout' after `ms` without bytes in or out (0: off), as node:net does. */
  setTimeout(ms: number, callback?: () => void): this {
    if (callback) {
      if (ms === 0) this.off("timeout", callback);
      else this.once("timeout", callback);
    }
    if (this.idle) clearTimeout(this.idle);
    this.idle = undefined;
    this.timeout = ms > 0 ? ms : undefined;
    if (ms > 0 && !this.destroyed) {
      this.idle = setTimeout(() => this.emit("timeout"), ms);
      this.idle.unref();
    }
    return this;
  }

  /** node:http's name for "there was activity": restarts the idle timer. */
  _unrefTimer(): void {
    this.touch();
  }

  ref(): this {
    if (!this.host.isClosed()) this.host.ref();
    return this;
  }

  unref(): this {
    if (!this.host.isClosed()) this.host.unref();
    return this;
  }

  getProtocol(): string | null {
    return this.tlsState.version;
  }

  getCipher(): { name: string; standardName: string; version: string } | undefined {
    const { cipherSuite, version } = this.tlsState;
    if (!cipherSuite) return undefined;
    return { name: cipherSuite, standardName: cipherSuite, version: version ?? "" };
  }

  isSessionReused(): boolean {
    return this.tlsState.resumed;
  }

  /** The peer's leaf certificate in node:tls's legacy shape; {} when it sent none. */
  getPeerCertificate(): object {
    const leaf = this.tlsState.peerCertificates[0];
    return leaf ? new X509Certificate(leaf.raw).toLegacyObject() : {};
  }

  private touch(): void {
    this.idle?.refresh();
  }

  private clearTimers(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = undefined;
  }
}
