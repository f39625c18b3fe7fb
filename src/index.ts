/**
 * tlsnet: TCP and TLS networking for TypeScript on Node.js, with async/await.
 *
 * @example
 * ```ts
 * import { tcp } from "tlsnet";
 * const conn = await tcp.connect("127.0.0.1:7000", { timeout: 5000 });
 * await conn.write("hello\n");
 * console.log(await conn.readLine());
 * await conn.close();
 * ```
 * @module tlsnet
 */
export { type Address, SocketAddr } from "./addr.ts";
export {
  Conn,
  type CopyOptions,
  type MaxBytesOptions,
  type Transport,
  type TransportSink,
} from "./conn.ts";
export type { DeadlineInput, OpOptions } from "./deadline.ts";
export type { DialOptions } from "./dial.ts";
export {
  CertificateError,
  ClosedError,
  ConfigError,
  ConnectionResetError,
  DeadlineExceededError,
  type DeadlineOp,
  DialError,
  HandshakeTimeoutError,
  LimitExceededError,
  ListenError,
  ProxyProtocolError,
  type ProxyProtocolReason,
  StartTLSInjectionError,
  StateError,
  TLSError,
  TlsnetError,
  UnexpectedEOFError,
} from "./errors.ts";
export { Listener, type ListenerStats, type ListenOptions } from "./listener.ts";
export type {
  ProxyHeader,
  ProxyHeaderInit,
  ProxyProtocolOptions,
  ProxyTLV,
} from "./proxy.ts";
export type { TCPListenOptions } from "./tcp.ts";
export * as tcp from "./tcp.ts";
export type {
  Backend,
  CertEntry,
  ClientAuth,
  ConnectionState,
  EngineName,
  PeerCertificate,
  ReloadOptions,
  TLSListenOptions,
  TLSOptions,
  TLSVersion,
} from "./tls/index.ts";
export * as tls from "./tls/index.ts";
export { TLSConfig, TLSConn, TLSListener } from "./tls/index.ts";
