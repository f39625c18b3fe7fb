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
import type { Address } from "./addr.ts";
import { Conn } from "./conn.ts";
import { dialChannel, traced } from "./diagnostics.ts";
import { type DialOptions, dial } from "./dial.ts";
import { rememberDialHost } from "./dialed.ts";
import { Listener, type ListenOptions } from "./listener.ts";
import type { ProxyHeader } from "./proxy.ts";
import { SocketTransport } from "./socket-transport.ts";

/** Options of tcp.listen. */
export type TCPListenOptions = ListenOptions<Conn>;

const plain = {
  wrap: (socket: Socket, proxy: ProxyHeader | null) =>
    new Conn(proxy ? new SocketTransport(socket, socket, undefined, undefined, proxy) : socket),
};

/** Connect over TCP (Happy Eyeballs across the host's addresses). */
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

/** Listen for TCP connections. */
export function listen(opts: TCPListenOptions): Promise<Listener<Conn>> {
  return Listener.open(opts, plain);
}
