/**
 * The TLS transport for a socket, on the engine its config chose
 * (engine/choice.ts): node:tls (engine/node.ts) or the native addon
 * (engine/native.ts).
 * @module
 */
import type { Socket } from "node:net";
import { NativeTLSTransport } from "./native.ts";
import { NodeTLSTransport, type TLSInit } from "./node.ts";
import type { TLSTransport } from "./types.ts";

export function tlsTransport(socket: Socket, init: TLSInit): TLSTransport {
  const cfg = typeof init.config === "function" ? init.config() : init.config;
  return cfg.engine === "native"
    ? new NativeTLSTransport(socket, init)
    : new NodeTLSTransport(socket, init);
}
