/**
 * The native engine: TLS as a {@link Transport} done by tlsnet's N-API addon
 * (native/) with the OpenSSL inside this Node process, on the TCP socket's
 * file descriptor itself. The handshake state machine is the node engine's
 * (idle → running → done | failed; lazy, shared, sticky on failure), with the
 * same limits, verification and errors. Once ready, the addon decrypts into a
 * slab this module allocates and lends each batch of records as one Buffer
 * view (one JS call per batch, no copy), and encrypts straight from the
 * caller's buffers.
 *
 * Taking the socket over: node:net stops reading it (pause, readStop), hands
 * over what it had buffered, and the addon polls a dup of its fd; node:net's
 * handle (its fd) is then closed, so a conn holds one fd. The node Socket
 * object stays, without a handle, until the TLS conn closes, so its cached
 * addresses and its "close" event keep their meaning.
 * @module
 */
import { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import { isIP, type Socket } from "node:net";
import * as workers from "node:worker_threads";
import { type SocketAddr, unbracket } from "../../addr.ts";
import { abortReason, type OpOptions } from "../../deadline.ts";
import {
  ClosedError,
  ConfigError,
  mapTLSError,
  peerClosedDuringHandshake,
  TLSError,
  type TlsnetError,
} from "../../errors.ts";
import { localAddrOf } from "../../socket-transport.ts";
import { TimerQueue } from "../../timer-queue.ts";
import type { TransportOp } from "../../transport.ts";
import type { TLSConfig } from "../config.ts";
import type { SessionIdentity } from "../sessions.ts";
import { sniSelector } from "../sni.ts";
import { type ConnectionState, finishedState } from "../state.ts";
import {
  loadAddon,
  type NativeAddon,
  type NativeConn,
  type NativeContext,
  type NativeInfo,
  type NativeReceiver,
} from "./addon.ts";
import { HandshakeTransport } from "./handshake.ts";
import { alpnNames, clientContext, serverContexts } from "./native-context.ts";
import { NativeSocket, type NativeSocketHost } from "./native-socket.ts";
import type { TLSTransport } from "./types.ts";

// Events from the addon (native/tlsnet.h).
const EV_HANDSHAKE = 1;
const EV_DATA = 2;
const EV_EOF = 3;
const EV_ERROR = 4;
const EV_DRAIN = 5;
const EV_KEYLOG = 6;
const EV_SNI = 7;
const EV_SESSION = 8;
const EV_FINISHED = 9;
const EV_CLOSE = 10;

const RESOLVED = Promise.resolve();

let addonReady: NativeAddon | undefined;

/** The addon, set up for this module; a ConfigError when it is not available. */
function addon(): NativeAddon {
  if (addonReady) return addonReady;
  const status = loadAddon();
  if (!status.addon) {
    throw new ConfigError(
      `engine native: the native TLS engine is not available: ${status.why}; build it with npm run build:native`,
      { field: "engine" },
    );
  }
  const native = status.addon;
  native.setup(dispatch, () => {
    // Decrypted bytes go into slabs shared by all conns; chunks are views of them. The addon
    // writes into the newest slab after its first chunks are out: a slab moved to a worker
    // (postMessage's transfer list) could be freed there while still written here, so it
    // cannot be moved (a DataCloneError); copy a chunk to send it (docs/api.md).
    const ab = native.allocSlab();
    workers.markAsUntransferable?.(ab); // (a namespace lookup: runtimes without it still load)
    return ab;
  });
  addonReady = native;
  return addonReady;
}

/** Every addon event: fn.call(transport, type, a, b, c). */
function dispatch(this: NativeReceiver, type: number, a: unknown, b: unknown, c: unknown): void {
  this.onNative(type, a, b, c);
}

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

export class NativeTLSTransport extends HandshakeTransport implements TLSTransport {
  private handle: NativeConn | undefined;
  /** The addon closed the conn (fd and SSL released). */
  private handleClosed = false;
  private wantPaused = false;
  private queued = 0;
  private peerEnded = false;
  /** The addon reported a fatal error (EV_CLOSE follows). */
  private failed = false;
  private finished = false;
  /** Lingering close: drop data, wait for the peer's end. */
  private discarding = false;
  /** The running handshake's waiter. */
  private hs: Waiter | undefined;
  private ending: Waiter[] = [];
  private closeWaiters: Array<() => void> = [];
  private onPeerEnd: (() => void) | undefined;
  private onFinished: (() => void) | undefined;
  /** Client: a session ticket came on this conn. */
  private gotTicket = false;
  /** close() waits for a ticket (waitForTicket): the ticket, the peer's end or the close ends it. */
  private onTicket: (() => void) | undefined;
  /** Server with several certificates: the contexts to pick from by SNI. */
  private sni:
    | { contexts: NativeContext[]; select: (name: string | undefined) => number }
    | undefined;
  /** The TCP socket's local address where a PROXY header gave the conn another one. */
  private tcpLocal: SocketAddr | undefined;
  /** Client: the identity this handshake verifies, stored with the sessions it yields. */
  private readonly identity: SessionIdentity = { chain: [], verified: false };

  /** The node socket under the conn (it carries no bytes once the handshake starts). */
  get socket(): Socket {
    return this.rawSocket;
  }
  protected override handshakeDone(): void {
    if (!this.wantPaused) this.handle?.readStart();
  }

  protected override abandon(): void {
    this.destroy();
  }

  /** One handshake run: take the socket over, handshake in the addon, verify, run the hook. */
  protected override async run(opts: OpOptions | undefined): Promise<ConnectionState> {
    const cfg = this.config(); // armLimit makes it the run's config before the addon starts
    const isClient = this.init.role === "client";
    if (this.rawSocket.destroyed) throw peerClosedDuringHandshake(this.peerName);
    const native = addon();
    let ctx: NativeContext;
    let session: Buffer | undefined;
    if (isClient) {
      ctx = clientContext(native, cfg);
      const { sessionKey: key, sessions } = this.init;
      this.offered = key && sessions ? sessions.get(key) : undefined;
      session = this.offered?.session;
    } else {
      const contexts = serverContexts(native, cfg);
      ctx = contexts[0]!;
      if (contexts.length > 1) this.sni = { contexts, select: sniSelector(cfg.identities) };
    }
    const taken = takeOver(this.rawSocket);
    if (!taken) throw peerClosedDuringHandshake(this.peerName);
    try {
      this.handle = new native.Conn(
        taken.fd,
        ctx,
        !isClient,
        this,
        taken.pre,
        isClient ? (this.init.serverName ?? null) : null,
        session,
        this.sni !== undefined,
      );
    } catch (err) {
      throw new TLSError(
        `TLS handshake with ${this.peerName} failed: the native engine could not take the socket over (${(err as Error).message})`,
        { reason: (err as { code?: string }).code, cause: err },
      );
    }
    // node:net forgets the TCP socket's local address with its handle, and toSocket()'s Duplex
    // reports it. It is this conn's own unless a PROXY header named another (then one
    // getsockname, before the handle goes).
    if (this.init.proxy) this.tcpLocal = localAddrOf(this.rawSocket);
    releaseFd(this.rawSocket);
    // Whoever destroys the node socket underneath (conn.socket) ends the connection.
    this.rawSocket.once("close", () => {
      if (!this.handleClosed) this.handle?.close();
    });
    await this.waitHandshake(cfg, opts);
    const info = this.handle.info();
    const resumed = info.reused && (!isClient || this.offered !== undefined);
    const verified = isClient
      ? resumed
        ? this.offered!.identity.verified && cfg.verifyPeer
        : this.verifyServer(info, cfg)
      : this.clientVerdict(
          cfg,
          () => leafOf(info),
          () => info.verifyError,
        );
    const chain = isClient && resumed ? this.offered!.identity.chain : info.chain;
    if (isClient && !resumed) {
      this.identity.chain = chain;
      this.identity.verified = verified;
    }
    const serverName = isClient ? (this.init.serverName ?? null) : info.servername;
    const state = finishedState(
      {
        version: info.version,
        cipherSuite: info.cipher,
        alpnProtocol: info.alpn,
        serverName,
        resumed: info.reused,
        verified,
      },
      chain,
    );
    return this.accepted(cfg, state);
  }

  /** Resolve on EV_HANDSHAKE; reject on error, peer close, timeout, abort or close(). */
  private waitHandshake(cfg: TLSConfig, opts: OpOptions | undefined): Promise<void> {
    const signal = opts?.signal;
    return new Promise<void>((resolve, reject) => {
      const done = (err?: unknown) => {
        this.disarmLimit();
        signal?.removeEventListener("abort", onAbort);
        this.hs = undefined;
        this.abortRun = undefined;
        if (err === undefined) resolve();
        else reject(err);
      };
      const onAbort = () => done(abortReason(signal!));
      this.hs = { resolve: () => done(), reject: done };
      this.abortRun = done;
      signal?.addEventListener("abort", onAbort, { once: true });
      this.armLimit(cfg, opts);
      this.handle!.start();
    });
  }

  /** Client side: chain and host name, unless verifyPeer is off. */
  private verifyServer(info: NativeInfo, cfg: TLSConfig): boolean {
    if (!cfg.verifyPeer) return false;
    const name = this.init.verifyName;
    let reason = info.verifyError;
    if (reason === null && name !== undefined) {
      const host = unbracket(name);
      if (!this.handle!.checkHost(host, isIP(host) !== 0)) reason = "ERR_TLS_CERT_ALTNAME_INVALID";
    }
    if (reason === null) return true;
    throw this.certificateFailure(reason, leafOf(info));
  }

  // ---------------------------------------------------------------- addon events

  /** Internal: an event from the addon (see native/tlsnet.h). */
  onNative(type: number, a: unknown, b: unknown, c: unknown): void {
    switch (type) {
      case EV_DATA:
        if (!this.discarding)
          this.sink?.onData(Buffer.from(a as ArrayBuffer, b as number, c as number));
        return;
      case EV_DRAIN:
        this.queued = 0;
        this.sink?.onDrain();
        return;
      case EV_HANDSHAKE:
        this.hs?.resolve();
        return;
      case EV_EOF:
        this.peerEnded = true;
        if (this.hs) this.hs.reject(peerClosedDuringHandshake(this.peerName));
        else if (!this.discarding) this.sink?.onEnd();
        this.onTicket?.();
        this.onPeerEnd?.();
        return;
      case EV_ERROR:
        this.onError(a as string, b as string, c as string);
        return;
      case EV_FINISHED:
        this.finished = true;
        for (const w of this.ending.splice(0)) w.resolve();
        this.onFinished?.();
        return;
      case EV_CLOSE:
        this.onClosed();
        return;
      case EV_KEYLOG: {
        const keyLog = this.runConfig?.keyLog;
        if (keyLog) for (const line of (a as string).split("\n")) if (line) keyLog(line);
        return;
      }
      case EV_SNI: {
        const sni = this.sni;
        if (sni) this.handle?.setContext(sni.contexts[sni.select(a as string)]!);
        return;
      }
      case EV_SESSION:
        this.onSession(a as Buffer);
        return;
    }
  }

  private onError(kind: string, code: string, text: string): void {
    this.failed = true;
    const err = Object.assign(new Error(text), { code, reason: text, library: "native" });
    if (this.hs) {
      const peer = this.peerName;
      this.hs.reject(
        kind === "eof"
          ? peerClosedDuringHandshake(peer, err)
          : this.alpnFailure(
              mapTLSError(err, { op: "handshake", peer, role: this.init.role }),
              this.runConfig?.alpnProtocols,
              alpnNames(this.handle?.offeredAlpn()),
            ),
      );
      return;
    }
    for (const w of this.ending.splice(0)) w.reject(err);
    this.sink?.onError(err);
  }

  private onClosed(): void {
    this.handleClosed = true;
    this.onTicket?.();
    this.rawSocket.destroy();
    this.hs?.reject(peerClosedDuringHandshake(this.peerName));
    if (this.ending.length > 0) {
      // Only when someone waits: an error (its stack) per closed conn costs as much as a
      // good part of the handshake's JavaScript.
      const closed = new ClosedError(`connection to ${this.peerName} is closed`);
      for (const w of this.ending.splice(0)) w.reject(closed);
    }
    this.sink?.onClose();
    for (const fn of this.closeWaiters.splice(0)) fn();
  }

  private onSession(session: Buffer): void {
    this.gotTicket = true;
    this.onTicket?.();
    const { sessionKey: key, sessions } = this.init;
    if (!key || !sessions) return;
    // A resumed conn hands on the identity of the full handshake it came from.
    const identity = this.result?.resumed && this.offered ? this.offered.identity : this.identity;
    sessions.set(key, { session, identity });
  }

  // ---------------------------------------------------------------- Transport

  write(data: string | Uint8Array): boolean {
    const h = this.handle;
    if (!h) return true;
    this.queued = h.write(typeof data === "string" ? Buffer.from(data, "utf8") : data);
    return this.queued === 0;
  }

  writev(parts: ReadonlyArray<string | Uint8Array>): boolean {
    const h = this.handle;
    if (!h) return true;
    this.queued = h.writev(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "utf8") : p)));
    return this.queued === 0;
  }

  get queuedBytes(): number {
    return this.queued;
  }

  get destroyed(): boolean {
    return this.handleClosed || (this.handle === undefined && this.rawSocket.destroyed);
  }

  end(): Promise<void> {
    const h = this.handle;
    if (!h || this.finished) return RESOLVED;
    if (this.handleClosed)
      return Promise.reject(new ClosedError(`connection to ${this.peerName} is closed`));
    return new Promise<void>((resolve, reject) => {
      this.ending.push({ resolve, reject });
      h.end();
    });
  }

  pause(): void {
    this.wantPaused = true;
    if (this.ready) this.handle?.readStop();
  }

  resume(): void {
    this.wantPaused = false;
    if (this.ready) this.handle?.readStart();
  }

  close(lingerMs: number, flush: boolean): Promise<void> {
    this.closed = true;
    const h = this.handle;
    if (this.handleClosed || !h) {
      this.abortRun?.(
        new ClosedError(`connection to ${this.peerName} was closed during the handshake`),
      );
      return this.closeRaw();
    }
    if (this.phase !== "done") {
      this.abortRun?.(
        new ClosedError(`connection to ${this.peerName} was closed during the handshake`),
      );
      return this.closedPromise(() => h.close());
    }
    if (!flush) return this.closedPromise(() => h.close());
    // A lingering close, as SocketTransport's: close_notify and FIN after what is queued,
    // then read and discard until the peer's end (or lingerMs) before releasing the
    // socket, so that input arriving after our FIN never turns into a reset that
    // throws away the tail of what we sent. The caller is released once our FIN is out.
    return new Promise<void>((resolve) => {
      // The bound on the linger waits in a queue shared by every close of this length: no
      // node timer per close. Its timer does not hold the process; the conn's handle does,
      // until our FIN is out.
      const lingers = TimerQueue.of(lingerMs, closeHandle);
      const linger = lingers.arm(h);
      const release = () => {
        if (this.finished && this.peerEnded) h.close();
      };
      this.closeWaiters.push(() => {
        lingers.cancel(linger);
        resolve();
      });
      this.onPeerEnd = release;
      this.onFinished = () => {
        resolve();
        h.unref();
        release();
      };
      this.discarding = true;
      h.discard();
      const end = () => {
        if (this.finished) this.onFinished?.();
        else if (!this.handleClosed) h.end();
      };
      // Our close_notify would make OpenSSL drop a ticket still on its way: read it first.
      // It reads on (discarding) meanwhile: the ticket, the peer's end or the close ends the wait.
      if (!this.peerEnded && this.ticketPending(this.gotTicket)) {
        void this.waitForTicket((done) => {
          this.onTicket = done;
          return () => {
            this.onTicket = undefined;
          };
        }).then(end);
      } else end();
    });
  }

  private closedPromise(close: () => void): Promise<void> {
    return new Promise<void>((resolve) => {
      this.closeWaiters.push(resolve);
      close();
    });
  }

  private closeRaw(): Promise<void> {
    const raw = this.rawSocket;
    if (raw.destroyed && (raw.closed ?? true)) return RESOLVED;
    return new Promise<void>((resolve) => {
      raw.once("close", () => resolve());
      raw.destroy();
    });
  }

  /**
   * toSocket(): a Duplex standing in for the TLSSocket (native-socket.ts) takes the
   * sink over; the conn's reads stop until its new owner reads.
   */
  handOff(): Socket {
    const h = this.handle;
    if (!this.ready || !h || this.handleClosed || this.failed) {
      throw new ClosedError(`connection to ${this.peerName} is closed`);
    }
    const host: NativeSocketHost = {
      rawSocket: this.rawSocket,
      isClosed: () => this.destroyed,
      peerEnded: this.peerEnded,
      peerName: this.peerName,
      state: () => this.state(),
      write: (data) => this.write(data),
      writev: (parts) => this.writev(parts),
      end: () => this.end(),
      pause: () => this.pause(),
      resume: () => this.resume(),
      destroy: () => this.destroy(),
      unref: () => h.unref(),
      ref: () => h.ref(),
      tcpLocal: this.tcpLocal ?? this.localAddr,
      setNoDelay: (on) => h.setNoDelay(on),
      setKeepAlive: (on, idleSeconds) => h.setKeepAlive(on, idleSeconds),
      attach: (sink) => {
        this.sink = sink;
      },
    };
    return new NativeSocket(host) as unknown as Socket;
  }

  destroy(): void {
    if (this.handle && !this.handleClosed) this.handle.close();
    else this.rawSocket.destroy();
  }

  mapError(err: unknown, op: TransportOp): TlsnetError {
    const phase = this.phase === "done" ? (op === "close" ? "write" : op) : "handshake";
    return mapTLSError(err, { op: phase, peer: this.peerName, role: this.init.role });
  }
}

/**
 * Stop node:net from reading the socket and take what it had buffered (a
 * ClientHello unshifted by STARTTLS, bytes after a PROXY header). Reading the
 * buffer may restart the handle's reading: stop it after, within this turn,
 * before the loop polls again.
 */
function takeOver(raw: Socket): { fd: number; pre: Buffer | undefined } | undefined {
  type Handle = { fd?: number; reading?: boolean; readStop?: () => number };
  const handle = (raw as unknown as { _handle?: Handle | null })._handle;
  if (!handle || typeof handle.fd !== "number" || handle.fd < 0 || raw.destroyed) return undefined;
  raw.pause();
  const chunks: Buffer[] = [];
  while (raw.readableLength > 0) {
    const chunk = raw.read() as Buffer | null;
    if (chunk === null) break;
    chunks.push(chunk);
  }
  handle.readStop?.();
  handle.reading = false;
  const pre =
    chunks.length === 0 ? undefined : chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
  return { fd: handle.fd, pre };
}

/**
 * Once the addon holds its own dup of the fd: close node:net's handle (and so its fd) without
 * destroying the Socket. One fd per conn instead of two; the Socket keeps its cached addresses,
 * and its destroy() still emits 'close' when the TLS conn ends (what the listener counts, and
 * net.Server's connection count), since node:net closes a handle-less socket without I/O.
 */
function releaseFd(raw: Socket): void {
  // Cache the peer's address first (node:net keeps it once read; its local one it does not).
  void raw.remoteAddress;
  const s = raw as unknown as { _handle?: { close(): void } | null };
  const handle = s._handle;
  if (!handle) return;
  s._handle = null;
  handle.close();
}

/** A lingering close ran out of time. */
function closeHandle(h: NativeConn): void {
  h.close();
}

/** The peer's leaf certificate from a native handshake's chain, if it sent one. */
function leafOf(info: NativeInfo): X509Certificate | undefined {
  const der = info.chain[0];
  return der ? new X509Certificate(der) : undefined;
}
