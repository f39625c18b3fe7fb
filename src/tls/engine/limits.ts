/**
 * The limits on one handshake run, shared by the engines: the config's
 * handshake timeout, what is left of the dial's deadline (clients), and the
 * timeout of the call that started it; the earliest wins, with its own error.
 * @module
 */
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
  peer: string,
  dialExpiry: number | undefined,
  opts: OpOptions | undefined,
): [number, () => TlsnetError] {
  const isClient = role === "client";
  const limits: Array<[number, () => TlsnetError]> = [];
  const hsTimeout = isClient ? cfg.clientHandshakeTimeout : cfg.handshakeTimeout;
  if (hsTimeout > 0) {
    limits.push([
      performance.now() + hsTimeout,
      () =>
        new HandshakeTimeoutError(
          `TLS handshake with ${peer} did not finish within ${hsTimeout} ms` +
            (isClient
              ? "; is the server up and speaking TLS? (raise handshakeTimeout if it is slow)"
              : "; the client stalled or does not speak TLS"),
          { timeout: hsTimeout },
        ),
    ]);
  }
  if (dialExpiry !== undefined && dialExpiry !== NEVER) {
    limits.push([
      dialExpiry,
      () =>
        new DeadlineExceededError(
          "connect",
          `connect to ${peer} timed out during the TLS handshake; raise timeout/deadline or check the server`,
        ),
    ]);
  }
  const callTimeout = opts?.timeout;
  if (callTimeout !== undefined) {
    limits.push([performance.now() + callTimeout, () => callTimeoutError(peer, callTimeout)]);
  }
  limits.sort((a, b) => a[0] - b[0]);
  return limits[0] ?? [NEVER, () => new ClosedError()];
}

/** The error of a handshake call's own timeout. */
export function callTimeoutError(peer: string, ms: number): HandshakeTimeoutError {
  return new HandshakeTimeoutError(
    `TLS handshake with ${peer} did not finish within the ${Math.round(ms)} ms given to this call`,
    { timeout: ms },
  );
}
