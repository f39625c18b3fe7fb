/**
 * Plain TCP: `tcp.connect` and `tcp.listen`, both giving {@link Conn}s.
 *
 * @example
 * ```ts
 * import { tcp } from "tlsnet";
 * const ln = await tcp.listen({
 *   addr: "127.0.0.1:7000",
 *   handler: async (conn) => { for await (const chunk of conn) await conn.write(chunk) },
 * });
 * const conn = await tcp.connect(ln.addr.toString());
 * ```
 * @module
 */
import type { Socket } from "node:net";
import type { Address, SocketAddr } from "./addr.ts";
import { Conn } from "./conn.ts";
import { dialChannel, traced } from "./diagnostics.ts";
import { type DialOptions, dial } from "./dial.ts";
import { rememberDialHost } from "./dialed.ts";
import { Listener, type ListenOptions } from "./listener.ts";
import type { ProxyHeader } from "./proxy.ts";
import { SocketTransport } from "./socket-transport.ts";

/** Options of {@link tcp.listen}: the {@link ListenOptions} with plain {@link Conn}s. */
export type TCPListenOptions = ListenOptions<Conn>;

const plain = {
  wrap: (socket: Socket, proxy: ProxyHeader | null, localAddr: SocketAddr | undefined) =>
    new Conn(
      proxy || localAddr
        ? new SocketTransport(socket, socket, localAddr && { localAddr }, proxy)
        : socket,
    ),
};

/**
 * Connect over TCP. A host name is resolved and its addresses are raced RFC 8305 style
 * (Happy Eyeballs: alternating families, staggered by `fallbackDelay`); the first to connect
 * wins. TCP_NODELAY is on by default.
 *
 * Rejects with {@link DialError} (resolution or every attempt failed; `errors` holds each),
 * {@link DeadlineExceededError} (op "connect", from `timeout` or `deadline`), or
 * `signal.reason`, or {@link ConfigError} (before any I/O) for a malformed address or
 * invalid options.
 *
 * @param address Where to connect: `"example.com:80"`, `"[::1]:7000"`, `{ host, port }`.
 * @param opts Dial options. Default: `{}` (no timeout).
 *
 * @example
 * ```ts
 * const conn = await tcp.connect("db.internal:5432", { timeout: 3000, keepAlive: 60_000 });
 * ```
 */
export function connect(address: Address, opts: DialOptions = {}): Promise<Conn> {
  return traced(
    dialChannel,
    () => ({ address, transport: "tcp" }),
    async () => {
      const { socket, host } = await dial(address, opts);
      const conn = new Conn(socket);
      rememberDialHost(conn, host);
      return conn;
    },
  );
}

/**
 * Listen for TCP connections. Take conns with `accept()` or `for await`, or give a
 * `handler` and the listener runs its own accept loop.
 *
 * Rejects with {@link ListenError} when the bind fails (address in use, permission) and
 * {@link ConfigError} for a malformed address or invalid options.
 *
 * @example
 * ```ts
 * const ln = await tcp.listen({
 *   addr: "127.0.0.1:0",
 *   handler: async (conn) => {
 *     for await (const line of conn.lines({ maxBytes: 4096 })) await conn.write(`${line}\n`);
 *   },
 * });
 * console.log(`listening on ${ln.addr}`);
 * ```
 */
export function listen(opts: TCPListenOptions): Promise<Listener<Conn>> {
  return Listener.open(opts, plain);
}
