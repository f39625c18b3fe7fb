/**
 * SocketTransport: a {@link Transport} over a node stream socket — a node:net
 * Socket for plain TCP, or a node:tls TLSSocket once its handshake is done.
 * @module
 */
import type { Socket } from "node:net";
import { SocketAddr } from "./addr.ts";
import { startDirectReads, stopDirectReads } from "./direct-reads.ts";
import { mapError, type TlsnetError } from "./errors.ts";
import type { ProxyHeader } from "./proxy.ts";
import { TimerQueue } from "./timer-queue.ts";
import type { Transport, TransportOp, TransportSink } from "./transport.ts";

const RESOLVED = Promise.resolve();

/**
 * A stream socket as a Transport; always ready.
 * @internal
 */
export class SocketTransport implements Transport {
  readonly remoteAddr: SocketAddr;
  readonly localAddr: SocketAddr;
  readonly ready = true;
  /** The peer's EOF has been seen. */
  private peerEnded = false;
  private sink: TransportSink | undefined;
  /** Reads reach the sink through Node's onread path (TLS sockets), not "data" events. */
  private direct = false;

  /**
   * `socket` carries the bytes; `raw` is the TCP socket under it (the same for
   * TCP), whose addresses are reported unless a PROXY header (`proxy`) named
   * the client. (A TLS stream's errors are mapped by the TLS transport that owns it.)
   */
  constructor(
    readonly socket: Socket,
    readonly rawSocket: Socket = socket,
    /**
     * The addresses the caller already has (a TLS stream over a known socket; a listener
     * bound to one IP knows the local one); the others are asked of the socket.
     */
    addrs?: { remoteAddr?: SocketAddr | undefined; localAddr?: SocketAddr | undefined },
    /** The PROXY header a listener read first: its source and destination are the addresses. */
    readonly proxy: ProxyHeader | null = null,
  ) {
    this.remoteAddr = proxy?.source ?? addrs?.remoteAddr ?? remoteAddrOf(rawSocket);
    this.localAddr = proxy?.destination ?? addrs?.localAddr ?? localAddrOf(rawSocket);
  }

  whenReady(): Promise<void> {
    return RESOLVED;
  }

  start(sink: TransportSink): void {
    this.sink = sink;
    const s = this.socket;
    s.allowHalfOpen = true; // the peer's FIN must not end our side: closeWrite is the caller's
    // A TLS socket's records skip node's Readable machinery where this Node allows it.
    this.direct = (s as { encrypted?: boolean }).encrypted === true && startDirectReads(s, sink);
    if (!this.direct) s.on("data", sink.onData);
    s.on("end", this.onEnd);
    s.on("error", sink.onError);
    s.on("close", this.onClose);
    s.on("drain", sink.onDrain);
    if (s.destroyed) queueMicrotask(sink.onClose);
    else s.resume(); // accepted sockets start paused (pauseOnConnect)
  }

  /**
   * The socket closed: tell the sink, then take our listeners off it. Node keeps a closed
   * socket's objects until a full GC (its handle wrappers survive young-generation
   * collections), so anything of ours it still pointed to would be kept that long too: the
   * whole conn, about 9 KiB per closed conn, collected only by mark-compact.
   */
  private readonly onClose = () => {
    const sink = this.sink;
    if (sink === undefined) return;
    sink.onClose();
    this.unlisten(sink);
  };

  /** Our listeners off the socket; an error guard stays (a late error must not crash). */
  private unlisten(sink: TransportSink, handOff = false): void {
    const s = this.socket;
    if (this.direct) stopDirectReads(s, handOff);
    else s.off("data", sink.onData);
    s.off("end", this.onEnd);
    s.off("error", sink.onError);
    s.off("close", this.onClose);
    s.off("drain", sink.onDrain);
    s.on("error", noop);
    this.sink = undefined;
  }

  /** Stop delivering events (the socket is handed to another reader); keeps an error guard. */
  handOff(): Socket {
    const sink = this.sink;
    const s = this.socket;
    if (!sink) return s;
    this.unlisten(sink, true); // an error during hand-over must not crash the process
    s.pause();
    return s;
  }

  private readonly onEnd = () => {
    this.peerEnded = true;
    this.sink?.onEnd();
  };

  write(data: string | Uint8Array): boolean {
    return this.socket.write(data);
  }

  writev(parts: ReadonlyArray<string | Uint8Array>): boolean {
    const s = this.socket;
    s.cork(); // one writev for the whole array
    for (const part of parts) if (part.length > 0) s.write(part);
    s.uncork();
    return !s.writableNeedDrain;
  }

  get queuedBytes(): number {
    return this.socket.writableLength;
  }

  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  /** The peer's EOF has been delivered: no data can arrive any more. */
  get readEnded(): boolean {
    return this.peerEnded || this.socket.readableEnded;
  }

  end(): Promise<void> {
    const s = this.socket;
    if (s.writableFinished) return RESOLVED;
    return new Promise<void>((resolve, reject) => {
      s.end((err?: Error | null) => (err ? reject(err) : resolve()));
    });
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  close(lingerMs: number, flush: boolean): Promise<void> {
    const s = this.socket;
    if (s.destroyed) return s.closed ? RESOLVED : new Promise((r) => s.once("close", () => r()));
    if (!flush) {
      return new Promise<void>((resolve) => {
        s.once("close", () => resolve());
        s.destroy();
      });
    }
    // The peer has ended already (the usual end of a request/response exchange): nothing more
    // can arrive, so there is nothing to linger for. FIN after what is queued, then release.
    if (this.readEnded) return closeEnded(s, lingerMs);
    // A lingering close: FIN after what is queued, then read and discard until the
    // peer's EOF (or lingerMs) before releasing the socket, so that input arriving
    // after our FIN never makes the kernel answer with a reset that throws away
    // the tail of what we sent. The caller is released once our FIN is out; the
    // rest happens in the background, without keeping the process alive.
    return new Promise<void>((resolve) => {
      const linger = setTimeout(() => s.destroy(), lingerMs);
      let finished = s.writableFinished;
      const release = () => {
        clearTimeout(linger);
        s.destroy();
      };
      const maybeRelease = () => {
        if (finished && this.readEnded) release();
      };
      s.once("close", () => {
        clearTimeout(linger);
        resolve();
        // Nothing of this transport stays reachable from the closed socket (see onClose).
        s.off("end", maybeRelease);
        s.off("error", release);
        s.off("finish", onFinish);
      });
      s.once("end", maybeRelease);
      s.once("error", release);
      // What arrives from now on is discarded.
      if (this.direct) stopDirectReads(s, false);
      else {
        if (this.sink) s.off("data", this.sink.onData);
        s.on("data", noop);
      }
      s.resume();
      const onFinish = () => {
        finished = true;
        resolve();
        linger.unref();
        s.unref();
        if (this.rawSocket !== s) this.rawSocket.unref();
        maybeRelease();
      };
      if (finished) onFinish();
      else {
        s.once("finish", onFinish);
        if (!s.writableEnded) s.end();
      }
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  mapError(err: unknown, op: TransportOp): TlsnetError {
    return mapError(err, { op: op === "close" ? "write" : op, peer: this.remoteAddr.toString() });
  }
}

function noop(): void {}

/**
 * Close a socket whose peer has ended: FIN after what is queued, then destroy it. Resolves
 * once our FIN is out (or the socket closed); `lingerMs` bounds a flush that never ends.
 */
function closeEnded(s: Socket, lingerMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    // Every conn a server closes comes here: a shared queue, not a node timer per close.
    const lingers = TimerQueue.of(lingerMs, destroySocket);
    const linger = lingers.arm(s);
    const done = () => {
      lingers.cancel(linger);
      resolve();
      s.destroy(); // a no-op once destroyed
      s.off("close", done);
      s.off("finish", done);
    };
    // `on`, not `once`: each comes at most once, and done() may run twice.
    s.on("close", done);
    s.on("error", destroyThis);
    if (s.writableFinished) done();
    else {
      s.on("finish", done);
      if (!s.writableEnded) s.end();
    }
  });
}

function destroySocket(s: Socket): void {
  s.destroy();
}

function destroyThis(this: Socket): void {
  this.destroy();
}

/**
 * The peer's address of a socket (0.0.0.0:0 when the socket no longer knows it). The socket's
 * own getters cache it, and the native engine relies on that cache once the handle is gone.
 * @internal
 */
export function remoteAddrOf(socket: Socket): SocketAddr {
  return new SocketAddr(
    socket.remoteAddress ?? "0.0.0.0",
    socket.remotePort ?? 0,
    familyOf(socket.remoteFamily),
  );
}

/**
 * Our side's address of a socket (0.0.0.0:0 when the socket no longer knows it).
 * @internal
 */
export function localAddrOf(socket: Socket): SocketAddr {
  return new SocketAddr(
    socket.localAddress ?? "0.0.0.0",
    socket.localPort ?? 0,
    familyOf(socket.localFamily),
  );
}

function familyOf(f: string | undefined): "IPv4" | "IPv6" | undefined {
  return f === "IPv6" ? "IPv6" : f === "IPv4" ? "IPv4" : undefined;
}
