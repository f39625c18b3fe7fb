/**
 * Hostile input for TLS servers: hand-crafted TLS/SSL byte sequences (old
 * protocol versions, oversized and truncated records, alert floods) and a raw
 * node:net probe that sends them and reports how the server ended the
 * connection. Real loopback sockets only.
 */
import net from "node:net";
import { sleep } from "./util.ts";

// ------------------------------------------------------------------ bytes

/** Record content types. */
export const CT = { changeCipherSpec: 20, alert: 21, handshake: 22, applicationData: 23 } as const;

/** Deterministic pseudo-random bytes (xorshift32), so a failing input can be replayed. */
export function prng(seed: number): (n: number) => Buffer {
  let x = seed >>> 0 || 0x9e3779b9;
  return (n: number) => {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      out[i] = x & 0xff;
    }
    return out;
  };
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u24(n: number): Buffer {
  return Buffer.from([(n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

/** One TLS record: type, legacy version, 2-byte length, body. The length may lie (`claimLength`). */
export function record(
  type: number,
  version: number,
  body: Uint8Array,
  claimLength?: number,
): Buffer {
  return Buffer.concat([Buffer.from([type]), u16(version), u16(claimLength ?? body.length), body]);
}

/** One handshake message: type, 3-byte length, body. The length may lie (`claimLength`). */
export function handshakeMessage(type: number, body: Uint8Array, claimLength?: number): Buffer {
  return Buffer.concat([Buffer.from([type]), u24(claimLength ?? body.length), body]);
}

/** One extension: type, 2-byte length, data. */
export function extension(type: number, data: Uint8Array): Buffer {
  return Buffer.concat([u16(type), u16(data.length), data]);
}

export interface HelloOptions {
  /** legacy client_version in the ClientHello body, e.g. 0x0300 (SSLv3), 0x0301 (TLS 1.0), 0x0303. */
  clientVersion: number;
  /** Cipher suite code points. */
  ciphers: number[];
  /** Extensions, already encoded; `undefined` omits the extensions block (SSLv3 style). */
  extensions?: Buffer[] | undefined;
  /** Random bytes of the hello (32); fixed when omitted. */
  random?: Buffer | undefined;
}

/** A ClientHello handshake message (type 1) with the given fields. */
export function clientHelloMessage(opts: HelloOptions): Buffer {
  const random = opts.random ?? prng(0x5eed)(32);
  const suites = Buffer.concat(opts.ciphers.map(u16));
  const parts: Buffer[] = [
    u16(opts.clientVersion),
    random,
    Buffer.from([0]), // session id: empty
    u16(suites.length),
    suites,
    Buffer.from([1, 0]), // compression methods: null
  ];
  if (opts.extensions !== undefined) {
    const ext = Buffer.concat(opts.extensions);
    parts.push(u16(ext.length), ext);
  }
  return handshakeMessage(1, Buffer.concat(parts));
}

/** A ClientHello in one handshake record with record-layer version `recordVersion`. */
export function clientHello(recordVersion: number, opts: HelloOptions): Buffer {
  return record(CT.handshake, recordVersion, clientHelloMessage(opts));
}

/** An SSLv2-format CLIENT-HELLO (2-byte header with the high bit set, msg type 1, version 0x0002). */
export function sslv2ClientHello(): Buffer {
  // SSLv2 cipher specs are 3 bytes: RC4_128_WITH_MD5, RC2_128_CBC_WITH_MD5, DES_192_EDE3_CBC_WITH_MD5.
  const specs = Buffer.from([0x01, 0x00, 0x80, 0x03, 0x00, 0x80, 0x07, 0x00, 0xc0]);
  const challenge = prng(2)(16);
  const body = Buffer.concat([
    Buffer.from([0x01]), // MSG-CLIENT-HELLO
    u16(0x0002), // version: SSL 2.0
    u16(specs.length),
    u16(0), // session id length
    u16(challenge.length),
    specs,
    challenge,
  ]);
  return Buffer.concat([Buffer.from([0x80 | (body.length >> 8), body.length & 0xff]), body]);
}

/** An SSLv3-only ClientHello: record and client_version 0x0300, SSLv3 suites, no extensions. */
export function sslv3ClientHello(): Buffer {
  // AES256-SHA, AES128-SHA, DES-CBC3-SHA, RC4-SHA, TLS_EMPTY_RENEGOTIATION_INFO_SCSV
  return clientHello(0x0300, {
    clientVersion: 0x0300,
    ciphers: [0x0035, 0x002f, 0x000a, 0x0005, 0x00ff],
  });
}

const GROUPS = extension(10, Buffer.from([0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18])); // x25519, P-256, P-384
const POINT_FORMATS = extension(11, Buffer.from([1, 0]));

/** A TLS 1.0-only ClientHello: record and client_version 0x0301, no supported_versions. */
export function tls10ClientHello(): Buffer {
  // ECDHE-RSA-AES256-SHA, ECDHE-ECDSA-AES256-SHA, ECDHE-RSA-AES128-SHA, AES256-SHA, AES128-SHA, SCSV
  return clientHello(0x0301, {
    clientVersion: 0x0301,
    ciphers: [0xc014, 0xc00a, 0xc013, 0x0035, 0x002f, 0x00ff],
    extensions: [GROUPS, POINT_FORMATS],
  });
}

/** A plausible TLS 1.2 ClientHello (SNI localhost, ECDHE-GCM suites): a real hello's first bytes. */
export function tls12ClientHello(): Buffer {
  const host = Buffer.from("localhost");
  const sni = extension(
    0,
    Buffer.concat([u16(host.length + 3), Buffer.from([0]), u16(host.length), host]),
  );
  // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
  const sigalgs = extension(13, Buffer.from([0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]));
  return clientHello(0x0301, {
    clientVersion: 0x0303,
    ciphers: [0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8],
    extensions: [sni, GROUPS, POINT_FORMATS, sigalgs],
  });
}

/**
 * A ClientHello message of about `size` bytes (70 KiB: over the 64 KiB a
 * record length can express), split over plaintext handshake records of at
 * most 16 KiB. Its body is a TLS 1.2 hello whose cipher_suites length is
 * honest but whose padding runs past what the length fields describe.
 */
export function oversizedHelloRecords(size = 70 * 1024): Buffer {
  const hello = clientHelloMessage({
    clientVersion: 0x0303,
    ciphers: [0xc02b, 0xc02f],
    extensions: [GROUPS, POINT_FORMATS],
  });
  const body = Buffer.concat([hello.subarray(4), Buffer.alloc(size - hello.length)]);
  const message = handshakeMessage(1, body);
  const records: Buffer[] = [];
  for (let off = 0; off < message.length; off += 16384) {
    records.push(record(CT.handshake, 0x0301, message.subarray(off, off + 16384)));
  }
  return Buffer.concat(records);
}

/** A handshake record header that claims 65535 bytes (beyond the 16 KiB + 2 KiB a record may hold), and 1 KiB of body. */
export function hugeRecordHeader(): Buffer {
  return record(CT.handshake, 0x0301, Buffer.alloc(1024, 0x41), 0xffff);
}

/** A ClientHello whose handshake header claims 16 MiB - 1, in a normal-sized first record. */
export function hugeHandshakeLength(): Buffer {
  const hello = clientHelloMessage({ clientVersion: 0x0303, ciphers: [0xc02b, 0xc02f] });
  const lying = Buffer.concat([hello.subarray(0, 1), u24(0xffffff), hello.subarray(4)]);
  return record(CT.handshake, 0x0301, lying);
}

/** `count` plaintext warning-level alert records (user_canceled), as one byte string. */
export function alertFlood(count: number, level = 1, description = 90): Buffer {
  const one = record(CT.alert, 0x0303, Buffer.from([level, description]));
  return Buffer.concat(Array.from({ length: count }, () => one));
}

// ------------------------------------------------------------------ reading what the server sent

const ALERTS: Record<number, string> = {
  0: "close_notify",
  10: "unexpected_message",
  20: "bad_record_mac",
  22: "record_overflow",
  40: "handshake_failure",
  47: "illegal_parameter",
  50: "decode_error",
  51: "decrypt_error",
  70: "protocol_version",
  71: "insufficient_security",
  80: "internal_error",
  86: "inappropriate_fallback",
  90: "user_canceled",
  109: "missing_extension",
  110: "unsupported_extension",
  112: "unrecognized_name",
  120: "no_application_protocol",
};

/** A short description of the TLS records in `buf`: "alert fatal protocol_version", "handshake 90 B"... */
export function describeRecords(buf: Buffer): string {
  const out: string[] = [];
  let off = 0;
  while (off + 5 <= buf.length) {
    const type = buf[off]!;
    const len = buf.readUInt16BE(off + 3);
    const body = buf.subarray(off + 5, off + 5 + len);
    if (type === CT.alert && body.length === 2) {
      const level = body[0] === 2 ? "fatal" : body[0] === 1 ? "warning" : `level ${body[0]}`;
      out.push(`alert ${level} ${ALERTS[body[1]!] ?? `#${body[1]}`}`);
    } else {
      const names: Record<number, string> = {
        20: "ccs",
        21: "alert",
        22: "handshake",
        23: "appdata",
      };
      out.push(`${names[type] ?? `type ${type}`} ${len} B`);
    }
    off += 5 + len;
  }
  if (off < buf.length) out.push(`${buf.length - off} trailing B`);
  return out.length ? out.join(", ") : "nothing";
}

// ------------------------------------------------------------------ raw probe

export interface ProbeResult {
  /** How the connection ended from the client's point of view. */
  ended: "eof" | "reset" | "error" | "timeout";
  /** ms from the end of sending (or from connect, for drip senders) to close. */
  ms: number;
  /** ms from connect to close. */
  totalMs: number;
  /** Everything the server sent. */
  received: Buffer;
  /** The client's local port: the server's remoteAddr.port for this conn. */
  localPort: number;
  /** Socket error code on the client, if any. */
  errorCode?: string | undefined;
}

export interface ProbeOptions {
  /** Give up (and destroy) after this many ms from connect. */
  timeout: number;
  /** Half-close (FIN) after sending. */
  end?: boolean | undefined;
  /** Called once connected, with the port, before sending. */
  onConnect?: ((localPort: number) => void) | undefined;
}

/**
 * Connect a raw TCP socket, run `send` on it (writes, drips...), and report
 * how and when the server closed. Never rejects: socket errors are results.
 */
export function probe(
  port: number,
  send: Buffer | ((sock: net.Socket) => Promise<void>),
  opts: ProbeOptions,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let sentAt: number | undefined;
    let ended: ProbeResult["ended"] | undefined;
    let errorCode: string | undefined;
    let localPort = 0;
    const parts: Buffer[] = [];
    const sock = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      ended ??= "timeout";
      sock.destroy();
    }, opts.timeout);
    sock.on("data", (d: Buffer) => parts.push(d));
    sock.on("end", () => {
      ended ??= "eof";
      sock.destroy();
    });
    sock.on("error", (err: Error & { code?: string }) => {
      errorCode = err.code;
      ended ??= err.code === "ECONNRESET" || err.code === "EPIPE" ? "reset" : "error";
    });
    sock.on("close", () => {
      clearTimeout(timer);
      const now = performance.now();
      resolve({
        ended: ended ?? "eof",
        ms: now - (sentAt ?? t0),
        totalMs: now - t0,
        received: Buffer.concat(parts),
        localPort,
        errorCode,
      });
    });
    sock.on("connect", () => {
      localPort = sock.localPort ?? 0;
      opts.onConnect?.(localPort);
      const run =
        typeof send === "function"
          ? send(sock)
          : new Promise<void>((res) => {
              sock.write(send, () => res());
            });
      run.then(
        () => {
          sentAt = performance.now();
          if (opts.end && !sock.destroyed) sock.end();
        },
        () => {
          sentAt = performance.now();
        },
      );
    });
  });
}

/** A sender that writes `bytes` one byte every `intervalMs` until they run out or the socket closes. */
export function drip(bytes: Buffer, intervalMs: number): (sock: net.Socket) => Promise<void> {
  return (sock) =>
    new Promise<void>((resolve) => {
      let i = 0;
      const tick = () => {
        if (sock.destroyed || i >= bytes.length) {
          clearInterval(timer);
          resolve();
          return;
        }
        sock.write(bytes.subarray(i, i + 1));
        i++;
      };
      const timer = setInterval(tick, intervalMs);
      sock.once("close", () => {
        clearInterval(timer);
        resolve();
      });
      tick();
    });
}

/** Write `chunks` in order, waiting for each to be flushed (so they go out as separate segments). */
export function inPieces(chunks: Buffer[], gapMs = 0): (sock: net.Socket) => Promise<void> {
  return async (sock) => {
    for (const c of chunks) {
      if (sock.destroyed) return;
      await new Promise<void>((res) => sock.write(c, () => res()));
      if (gapMs > 0) await sleep(gapMs);
    }
  };
}
