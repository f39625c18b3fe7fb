/**
 * node:diagnostics_channel publishers, the way undici publishes its own: what
 * APM and OpenTelemetry instrumentations subscribe to. Nothing is built or
 * published unless someone subscribes.
 *
 * | name | kind | context |
 * |---|---|---|
 * | `tlsnet:dial` | TracingChannel | `{ address, transport: "tcp" \| "tls" }`; `result` is the Conn |
 * | `tlsnet:handshake` | TracingChannel | `{ role, remoteAddr, serverName }`; `result` is the ConnectionState |
 * | `tlsnet:accept` | TracingChannel | `{ localAddr, remoteAddr }`; from the TCP accept to the conn handed to the app (TLS handler mode: the handshake included) |
 * | `tlsnet:close` | channel | `{ conn }` when a conn is closed, by the app or its peer |
 * | `tlsnet:error` | channel | `{ error, remoteAddr }` for a conn's transport failure or a listener's onError report |
 *
 * @example
 * ```ts
 * import diagnostics from "node:diagnostics_channel";
 * const started = new WeakMap<object, number>();
 * diagnostics.tracingChannel("tlsnet:handshake").subscribe({
 *   start: (ctx) => started.set(ctx, performance.now()),
 *   asyncEnd: (ctx) => console.log("handshake", performance.now() - started.get(ctx)!, "ms"),
 *   error: (ctx) => console.log("handshake failed", ctx.error),
 *   end() {}, asyncStart() {},
 * });
 * ```
 * @module
 */
import {
  type Channel,
  channel,
  type TracingChannel,
  tracingChannel,
} from "node:diagnostics_channel";

// biome-ignore lint/suspicious/noExplicitAny: the channels carry plain context objects
type Ctx = any;

export const dialChannel: TracingChannel<unknown, Ctx> = tracingChannel("tlsnet:dial");
export const handshakeChannel: TracingChannel<unknown, Ctx> = tracingChannel("tlsnet:handshake");
export const acceptChannel: TracingChannel<unknown, Ctx> = tracingChannel("tlsnet:accept");
export const closeChannel: Channel = channel("tlsnet:close");
export const errorChannel: Channel = channel("tlsnet:error");

/** Run `fn` traced on `ch` when anyone listens; else just run it. `context` is built lazily. */
export function traced<T>(
  ch: TracingChannel<unknown, Ctx>,
  context: () => object,
  fn: () => Promise<T>,
): Promise<T> {
  if (!(ch as { hasSubscribers?: boolean }).hasSubscribers) return fn();
  return ch.tracePromise(fn, context());
}

/** Publish on a plain channel when anyone listens; `message` is built lazily. */
export function publish(ch: Channel, message: () => object): void {
  if (ch.hasSubscribers) ch.publish(message());
}
