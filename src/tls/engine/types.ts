/**
 * What TLSConn needs from a TLS engine's transport, beyond {@link Transport}:
 * the handshake (lazy, shared, sticky on failure) and the state it produced.
 * Engines: node (engine/node.ts, node:tls) and native (engine/native.ts).
 * @module
 */
import type { OpOptions } from "../../deadline.ts";
import type { Transport } from "../../transport.ts";
import type { ConnectionState } from "../state.ts";

export interface TLSTransport extends Transport {
  readonly role: "client" | "server";
  /** A snapshot of the connection state; never starts the handshake. */
  state(): ConnectionState;
  /** Run the handshake if it has not run; idempotent (see TLSConn.handshake). */
  handshake(opts?: OpOptions): Promise<ConnectionState>;
}
