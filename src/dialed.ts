/**
 * The host each dialed conn was asked for (internal), so that a STARTTLS
 * upgrade of a `tcp.connect` conn verifies the name the caller dialed.
 * @module
 */
import type { Conn } from "./conn.ts";

const hosts = new WeakMap<Conn, string>();

/**
 * Remember the host `conn` was dialed with (tcp.connect does).
 * @internal
 */
export function rememberDialHost(conn: Conn, host: string): void {
  hosts.set(conn, host);
}

/**
 * The host name or address `conn` was dialed with, if tcp.connect made it.
 * @internal
 */
export function dialHostOf(conn: Conn): string | undefined {
  return hosts.get(conn);
}
