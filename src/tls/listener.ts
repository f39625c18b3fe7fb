/**
 * TLS listener: accepted TCP sockets become lazy TLSConns; with a handler the
 * listener handshakes first and hands over only conns whose handshake
 * succeeded (dispatching by ALPN with `alpnHandlers`). `reload` swaps the
 * whole TLS config atomically for new handshakes; `watch` reloads on file change.
 * @module
 */
import { type FSWatcher, watch as fsWatch } from "node:fs";
import type { Server, Socket } from "node:net";
import { basename, dirname, resolve as resolvePath } from "node:path";
import { asError, ConfigError } from "../errors.ts";
import { bindServer, type ConnFactory, Listener, type ListenOptions } from "../listener.ts";
import { TLSConfig, type TLSOptions, tlsOptionsOf } from "./config.ts";
import { TLSConn } from "./conn.ts";
import { tlsTransport } from "./engine/index.ts";

/**
 * Options of {@link tls.listen}: the server's {@link TLSOptions} (a certificate is required:
 * `certs`, or `certFile` and `keyFile`), the {@link ListenOptions}, and `alpnHandlers`.
 */
export type TLSListenOptions = TLSOptions &
  ListenOptions<TLSConn> & {
    /**
     * A handler per negotiated ALPN protocol; the first one also takes clients without ALPN.
     * Without `alpnProtocols`, the server offers the handlers' names, in order. A negotiated
     * protocol without an entry also goes to the first handler. Takes the place of `handler`,
     * which is not called when `alpnHandlers` is given.
     *
     * @example
     * ```ts
     * await tls.listen({ addr: ":443", certs, alpnHandlers: { h2: onH2, "http/1.1": onH1 } });
     * ```
     */
    alpnHandlers?: Record<string, (conn: TLSConn) => void | Promise<void>> | undefined;
  };

/**
 * What {@link TLSListener.reload} may change: the identity (`certs` or `certFile`/`keyFile`,
 * which replace the old one), `clientCa`/`clientCaFile` (replacing the old ones), `clientAuth`,
 * `ciphers`, `alpnProtocols` and `ticketKeys`. Fields left out keep their values.
 */
export type ReloadOptions = Partial<
  Pick<
    TLSOptions,
    | "certs"
    | "certFile"
    | "keyFile"
    | "ciphers"
    | "alpnProtocols"
    | "clientCa"
    | "clientCaFile"
    | "clientAuth"
    | "ticketKeys"
  >
>;

const LISTEN_KEYS = new Set([
  "addr",
  "backlog",
  "reusePort",
  "handler",
  "onError",
  "maxConnections",
  "noDelay",
  "alpnHandlers",
  "proxyProtocol",
]);

/**
 * A listener of {@link TLSConn}s with hot reload: {@link TLSListener.reload} swaps the TLS
 * config for new handshakes, {@link TLSListener.watch} does it when the certificate files
 * change. Made by {@link tls.listen}.
 */
export class TLSListener extends Listener<TLSConn> {
  private readonly ref: { config: TLSConfig; options: TLSOptions };
  private readonly watchers = new Set<() => void>();

  /** Use tls.listen(). */
  protected constructor(
    server: Server,
    opts: TLSListenOptions,
    ref: { config: TLSConfig; options: TLSOptions },
    onFailure: { count?: () => void },
  ) {
    const handlers = opts.alpnHandlers;
    const fallback = handlers ? Object.values(handlers)[0] : undefined;
    // Made once per listener, shared by every conn's transport.
    const config = () => ref.config;
    const onHandshakeFailure = () => onFailure.count?.();
    super(server, { ...opts, handler: opts.handler ?? fallback }, {
      wrap: (socket: Socket, proxy, localAddr) =>
        new TLSConn(
          tlsTransport(socket, { role: "server", config, onHandshakeFailure, proxy, localAddr }),
        ),
      prepare: (conn) => conn.handshake(),
      pick: handlers
        ? (conn) => (conn.alpnProtocol ? handlers[conn.alpnProtocol] : undefined) ?? fallback
        : undefined,
    } satisfies ConnFactory<TLSConn>);
    this.ref = ref;
    onFailure.count = () => this.countHandshakeFailure();
  }

  /**
   * Validate the TLS options, bind, and listen.
   * @internal
   */
  static async listen(opts: TLSListenOptions): Promise<TLSListener> {
    if (typeof opts !== "object" || opts === null) {
      throw new ConfigError("tls.listen needs options: { addr, certs | certFile/keyFile, ... }");
    }
    const tlsOptions = tlsOptionsOf(opts, LISTEN_KEYS);
    if (opts.alpnHandlers !== undefined) {
      checkAlpnHandlers(opts.alpnHandlers, tlsOptions);
      if (opts.handler !== undefined) {
        throw new ConfigError(
          "give handler or alpnHandlers, not both: with alpnHandlers, the first entry takes clients that offer no ALPN",
          { field: "handler" },
        );
      }
    }
    const config = buildServerConfig(tlsOptions);
    const server = await bindServer(opts);
    return new TLSListener(server, opts, { config, options: tlsOptions }, {});
  }

  /** The TLS config in force for new handshakes (the latest one {@link TLSListener.reload} set). */
  get config(): TLSConfig {
    return this.ref.config;
  }

  /**
   * Validate a changed config in full and swap it in for new handshakes.
   * On error it throws ConfigError and the old config stays in force;
   * established conns are never touched.
   *
   * @example
   * ```ts
   * process.on("SIGHUP", () => {
   *   ln.reload({ certFile: "server.pem", keyFile: "server-key.pem" }).catch(console.error);
   * });
   * ```
   */
  async reload(opts: ReloadOptions): Promise<void> {
    const next: TLSOptions = { ...this.ref.options };
    if (opts.certs !== undefined || opts.certFile !== undefined || opts.keyFile !== undefined) {
      // A new identity replaces the old one rather than adding to it.
      delete next.certs;
      delete next.certFile;
      delete next.keyFile;
    }
    if (opts.clientCa !== undefined || opts.clientCaFile !== undefined) {
      delete next.clientCa;
      delete next.clientCaFile;
    }
    for (const [k, v] of Object.entries(opts)) {
      if (v !== undefined) (next as Record<string, unknown>)[k] = v;
    }
    const config = buildServerConfig(next);
    this.ref.config = config;
    this.ref.options = next;
  }

  /**
   * Reload from certFile/keyFile when they change (atomic renames included),
   * debounced. A bad new file keeps the old certificates and goes to onError.
   * Returns a function that stops watching; closing the listener stops it too.
   *
   * Throws {@link ConfigError} when the listener has no certFile/keyFile or clientCaFile.
   *
   * @param opts `debounce`: milliseconds to wait after the last change before reloading
   * (default 200).
   */
  watch(opts?: { debounce?: number }): () => void {
    const { certFile, keyFile, clientCaFile } = this.ref.options;
    const files = [certFile, keyFile, clientCaFile]
      .filter((f): f is string => !!f)
      .map((f) => resolvePath(f));
    if (files.length === 0) {
      throw new ConfigError("watch() needs certFile/keyFile (or clientCaFile) to watch", {
        field: "certFile",
      });
    }
    const debounce = opts?.debounce ?? 200;
    const names = new Set(files.map((f) => basename(f)));
    let timer: NodeJS.Timeout | undefined;
    const fire = () => {
      timer = undefined;
      const o = this.ref.options;
      this.reload({
        ...(o.certFile ? { certFile: o.certFile, keyFile: o.keyFile } : {}),
        ...(o.clientCaFile ? { clientCaFile: o.clientCaFile } : {}),
      }).catch((err) => this.report(asError(err), undefined));
    };
    // Watch the directories: certbot-style renames replace the file's inode.
    const watchers: FSWatcher[] = [...new Set(files.map((f) => dirname(f)))].map((dir) =>
      fsWatch(dir, { persistent: false }, (_event, name) => {
        if (name !== null && !names.has(String(name))) return;
        clearTimeout(timer);
        timer = setTimeout(fire, debounce);
      }),
    );
    const stop = () => {
      clearTimeout(timer);
      for (const w of watchers) w.close();
      this.watchers.delete(stop);
    };
    this.watchers.add(stop);
    return stop;
  }

  /** As {@link Listener.close}; also stops every {@link TLSListener.watch}. */
  override close(opts?: { graceful?: number }): Promise<void> {
    for (const stop of [...this.watchers]) stop();
    return super.close(opts);
  }
}

function buildServerConfig(opts: TLSOptions): TLSConfig {
  const config = new TLSConfig(opts);
  config.serverContexts(); // builds the contexts now: a bad key or cipher fails here, not later
  return config;
}

function checkAlpnHandlers(handlers: unknown, tlsOptions: TLSOptions): void {
  if (typeof handlers !== "object" || handlers === null || Object.keys(handlers).length === 0) {
    throw new ConfigError("alpnHandlers must map protocol names to handlers, e.g. { h2: fn }", {
      field: "alpnHandlers",
    });
  }
  for (const [name, fn] of Object.entries(handlers)) {
    if (typeof fn !== "function") {
      throw new ConfigError(`alpnHandlers[${JSON.stringify(name)}] must be a function`, {
        field: "alpnHandlers",
      });
    }
  }
  // The protocols offered default to the handlers' names, in order.
  tlsOptions.alpnProtocols ??= Object.keys(handlers);
}
