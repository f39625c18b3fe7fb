/**
 * Loading the native engine's addon (build/native/tlsnet_native.node, made by
 * `npm run build:native`; TLSNET_NATIVE_ADDON names another file, e.g. the
 * AddressSanitizer build). Loaded once, on first use, and checked: it must run
 * in Node (not Bun or Deno), resolve every symbol it uses now (RTLD_NOW: a
 * symbol this Node does not export fails the load, not a later call), use the
 * OpenSSL 3 of this very process, and pass its self-check (an in-memory TLS
 * 1.3 handshake and a record each way, native/selfcheck.c).
 * @module
 */
import type { Buffer } from "node:buffer";
import { existsSync } from "node:fs";
import { constants } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** An SSL_CTX built by the addon (opaque). */
export type NativeContext = { readonly __nativeContext: unique symbol };

/** What info() reports after a handshake. */
export interface NativeInfo {
  version: string | null;
  cipher: string | null;
  alpn: string | null;
  servername: string | null;
  reused: boolean;
  /** X509_V_ERR_* name without the prefix, or null (verified, or no certificate). */
  verifyError: string | null;
  /** The peer's chain, DER, leaf first: the verified chain when there is one. */
  chain: Buffer[];
}

/** One connection in the addon; events go to the dispatch function given to setup(). */
export interface NativeConn {
  start(): void;
  /** Bytes still queued after this write (0: all handed to the kernel). */
  write(data: Uint8Array): number;
  writev(parts: Uint8Array[]): number;
  end(): void;
  readStart(): void;
  readStop(): void;
  discard(): void;
  close(): void;
  unref(): void;
  ref(): void;
  setNoDelay(on: boolean): void;
  setKeepAlive(on: boolean, idleSeconds: number): void;
  setContext(ctx: NativeContext): void;
  info(): NativeInfo;
  checkHost(name: string, isIp: boolean): boolean;
  offeredAlpn(): Buffer | undefined;
}

export interface NativeContextOptions {
  server: boolean;
  cert?: string | undefined;
  key?: string | undefined;
  passphrase?: string | undefined;
  ca?: string[] | undefined;
  useRoots?: boolean;
  minVersion: number;
  maxVersion: number;
  cipherList: string;
  cipherSuites: string;
  alpn?: Buffer | undefined;
  verify: number;
  sessionIdContext?: string | undefined;
  /** Servers: 48-byte session ticket keys, concatenated; the first encrypts. */
  ticketKeys?: Buffer | undefined;
  keyLog: boolean;
  clientSessions?: boolean;
}

/** What the addon calls events on: the transport given to `new Conn(...)`. */
export interface NativeReceiver {
  onNative(type: number, a: unknown, b: unknown, c: unknown): void;
}

export interface NativeAddon {
  setup(
    dispatch: (this: NativeReceiver, type: number, a: unknown, b: unknown, c: unknown) => void,
    newSlab: () => ArrayBuffer,
  ): void;
  newContext(opts: NativeContextOptions): NativeContext;
  setRoots(pems: readonly string[]): void;
  opensslVersion(): [string, number];
  /** An in-memory TLS 1.3 handshake and a record each way; the suite, or throws. */
  selfCheck(): string;
  /** A slab to decrypt into: reused memory once no chunk of it is alive. */
  allocSlab(): ArrayBuffer;
  /**
   * Diagnostics (scripts/memory-probe.ts): glibc malloc's [in use, free in the
   * arenas, mmapped, arena] bytes; undefined without glibc 2.33+.
   */
  debugMallinfo(): [number, number, number, number] | undefined;
  Conn: new (
    fd: number,
    ctx: NativeContext,
    server: boolean,
    receiver: NativeReceiver,
    pre: Uint8Array | undefined,
    servername: string | null,
    session: Buffer | undefined,
    sni: boolean,
  ) => NativeConn;
}

/** The addon, or why it is not available. */
export type AddonStatus =
  | { addon: NativeAddon; path: string; check: string }
  | { addon?: undefined; why: string };

let status: AddonStatus | undefined;

/** The package's root (a checkout or an installed package), where native/ and build/ are. */
export function packageRoot(): string {
  // src/tls/engine/addon.ts and dist/tls/engine/addon.js are both three levels below the root.
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
}

/** Where `npm run build:native` puts the addon: build/native under the package root. */
export function defaultAddonPath(): string {
  return join(packageRoot(), "build", "native", "tlsnet_native.node");
}

/** Load (once) and check the addon. Never throws. */
export function loadAddon(): AddonStatus {
  status ??= loadFrom(process.env.TLSNET_NATIVE_ADDON || defaultAddonPath());
  return status;
}

/**
 * Load and check the addon at `path` (loadAddon's work, for any file: `tlsnet build-native`
 * checks what it built). Never throws.
 */
export function loadFrom(path: string): AddonStatus {
  const v = process.versions as Record<string, string | undefined>;
  if (v.bun !== undefined || v.deno !== undefined || process.release?.name !== "node") {
    return { why: "the native engine runs on Node.js only" };
  }
  if (!existsSync(path)) {
    return {
      why: `the addon is not built (${path} is missing; npm run build:native in a checkout, tlsnet build-native in a project)`,
    };
  }
  const module = { exports: {} as NativeAddon };
  try {
    process.dlopen(module, path, constants.dlopen.RTLD_NOW);
  } catch (err) {
    return { why: `the addon ${path} does not load: ${(err as Error).message}` };
  }
  const addon = module.exports;
  let check: string;
  try {
    const [text, num] = addon.opensslVersion();
    const running = `${num >>> 28}.${(num >>> 20) & 0xff}.${(num >>> 4) & 0xff}`;
    const node = v.openssl ?? "";
    if (num >>> 28 !== 3 || !node.startsWith(running)) {
      return {
        why: `the addon sees ${text}, but Node reports OpenSSL ${node}; it needs the OpenSSL 3 of this process`,
      };
    }
    check = addon.selfCheck();
  } catch (err) {
    return { why: `the addon's self-check failed: ${(err as Error).message}` };
  }
  return { addon, path, check };
}
