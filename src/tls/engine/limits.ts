/**
 * The limits on one handshake run, shared by the engines: the config's
 * handshake timeout, what is left of the dial's deadline (clients), and the
 * timeout of the call that started it; the earliest wins, with its own error.
 * @module
 */
import type { SocketAddr } from "../../addr.ts";
import type { OpOptions } from "../../deadline.ts";
import { NEVER } from "../../deadline.ts";
import {
  ClosedError,
  DeadlineExceededError,
  HandshakeTimeoutError,
  type TlsnetError,
} from "../../errors.ts";
import type { TLSConfig } from "../config.ts";

/** The earliest limit on a handshake run: [monotonic expiry, the error it gives]. */
export function handshakeLimit(
  role: "client" | "server",
  cfg: TLSConfig,
  /** The peer, for messages: a SocketAddr is formatted only when an error is made. */
  peer: string | SocketAddr,
  dialExpiry: number | undefined,
  opts: OpOptions | undefined,
): [number, () => TlsnetError] {
  // Every handshake asks this: no array, no sort. On a tie the earlier limit below wins.
  const isClient = role === "client";
  const hsTimeout = isClient ? cfg.clientHandshakeTimeout : cfg.handshakeTimeout;
  const callTimeout = opts?.timeout;
  const now = hsTimeout > 0 || callTimeout !== undefined ? performance.now() : 0;
  let expiry = NEVER;
  let which: "handshake" | "dial" | "call" | undefined;
  if (hsTimeout > 0) {
    expiry = now + hsTimeout;
    which = "handshake";
  }
  if (dialExpiry !== undefined && dialExpiry < expiry) {
    expiry = dialExpiry;
    which = "dial";
  }
  if (callTimeout !== undefined && now + callTimeout < expiry) {
    expiry = now + callTimeout;
    which = "call";
  }
  switch (which) {
    case "handshake":
      return [
        expiry,
        () =>
          new HandshakeTimeoutError(
            `TLS handshake with ${peer} did not finish within ${hsTimeout} ms` +
              (isClient
                ? "; is the server up and speaking TLS? (raise handshakeTimeout if it is slow)"
                : "; the client stalled or does not speak TLS"),
            { timeout: hsTimeout },
          ),
      ];
    case "dial":
      return [
        expiry,
        () =>
          new DeadlineExceededError(
            "connect",
            `connect to ${peer} timed out during the TLS handshake; raise timeout/deadline or check the server`,
          ),
      ];
    case "call":
      return [expiry, () => callTimeoutError(peer, callTimeout!)];
    default:
      return [NEVER, () => new ClosedError()];
  }
}

/** The error of a handshake call's own timeout. */
export function callTimeoutError(peer: string | SocketAddr, ms: number): HandshakeTimeoutError {
  return new HandshakeTimeoutError(
    `TLS handshake with ${peer} did not finish within the ${Math.round(ms)} ms given to this call`,
    { timeout: ms },
  );
}
