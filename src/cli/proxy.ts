/**
 * `tlsnet proxy`: a TLS-terminating proxy in front of a plaintext TCP service
 * (what stunnel, hitch and ghostunnel do). TLS in with `serve`'s certificate,
 * client-auth, reload and drain flags; plain TCP out, optionally led by a
 * PROXY protocol header naming the client; bytes copied both ways with
 * backpressure and half-close.
 * @module
 */
import { Buffer } from "node:buffer";
import { parseAddress } from "../addr.ts";
import { type Conn, type TLSConn, tcp } from "../index.ts";
import type { ProxyHeaderInit } from "../proxy.ts";
import { type Command, out, paint, parseFlags, UsageError } from "./common.ts";
import { dataDir } from "./devcerts.ts";
import { durationFlag, FRONTEND_FLAGS, FRONTEND_HELP, frontend, logConn } from "./frontend.ts";

const usage =
  "tlsnet proxy --to HOST:PORT [--listen 127.0.0.1:8443] [--cert F --key F]... [--client-auth MODE --client-ca F] [--proxy-protocol-out v1|v2] [--proxy-protocol-in] [--alpn LIST] [--watch] [--grace 10s]";

const help = `${usage}

Terminate TLS on --listen and forward each connection's bytes to the plaintext
service at --to, both ways, with backpressure and half-close. One log line per
connection. Without --cert/--key, a dev certificate for localhost is generated
under ${dataDir()} (as for 'tlsnet serve').

Options:
  --listen HOST:PORT        where to accept TLS (default 127.0.0.1:8443; port 0 picks one)
  --to HOST:PORT            the plaintext backend (required)
  --proxy-protocol-out v1|v2
                            start each backend connection with a PROXY header naming the
                            client (v2 also carries ALPN, SNI and TLS details as TLVs)
  --connect-timeout DURATION
                            how long a backend connect may take (default 5s)
${FRONTEND_HELP}
  -h, --help                this help

Signals: SIGHUP reloads the certificates (and --ticket-keys); SIGTERM / Ctrl-C stop
accepting, give open connections the --grace period to finish, then close the rest.

Example:
  tlsnet proxy --listen :8443 --to 127.0.0.1:8080 --proxy-protocol-out v2 \\
    --cert site.pem --key site-key.pem --client-auth require-and-verify --client-ca clients.pem`;

export const command: Command = { usage, help, run };

/** v2 TLV types (HAProxy's proxy-protocol.txt, 2.2). */
const PP2_TYPE_ALPN = 0x01;
const PP2_TYPE_AUTHORITY = 0x02;
const PP2_TYPE_SSL = 0x20;
const PP2_SUBTYPE_SSL_VERSION = 0x21;
const PP2_SUBTYPE_SSL_CN = 0x22;
const PP2_SUBTYPE_SSL_CIPHER = 0x23;
const PP2_CLIENT_SSL = 0x01;
const PP2_CLIENT_CERT_CONN = 0x02;

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    listen: { type: "string", default: "127.0.0.1:8443" },
    to: { type: "string" },
    "proxy-protocol-out": { type: "string" },
    "connect-timeout": { type: "string" },
    ...FRONTEND_FLAGS,
  });
  if (values.help) {
    out(help);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  if (values.to === undefined) throw new UsageError("--to HOST:PORT (the backend) is required");
  try {
    parseAddress(values.listen, true);
  } catch (e) {
    throw new UsageError(`--listen: ${(e as Error).message}`);
  }
  try {
    parseAddress(values.to);
  } catch (e) {
    throw new UsageError(`--to: ${(e as Error).message}`);
  }
  const ppOut = values["proxy-protocol-out"];
  if (ppOut !== undefined && ppOut !== "v1" && ppOut !== "v2") {
    throw new UsageError(`--proxy-protocol-out must be v1 or v2, got '${ppOut}'`);
  }
  const connectTimeout = durationFlag(values["connect-timeout"], "connect-timeout", 5000);
  const to = values.to;
  const c = paint(process.stdout);
  const fe = await frontend(values, c);

  const handle = async (conn: TLSConn) => {
    const t0 = performance.now();
    let failure: unknown;
    try {
      const proxyHeader = ppOut ? headerFor(conn, ppOut === "v1" ? 1 : 2) : undefined;
      let backend: Conn;
      try {
        backend = await tcp.connect(to, {
          timeout: connectTimeout,
          ...(proxyHeader ? { proxyHeader } : {}),
        });
      } catch (e) {
        throw new Error(`backend ${to}: ${(e as Error).message}`, { cause: e });
      }
      await splice(conn, backend);
    } catch (e) {
      failure = e;
    } finally {
      logConn(conn, performance.now() - t0, failure, [`to=${to}`]);
    }
  };

  const listener = await fe.listen(values.listen, handle);
  const extras = [
    ...(fe.alpn ? [`ALPN ${fe.alpn.join(",")}`] : []),
    ...(ppOut ? [`PROXY ${ppOut} to the backend`] : []),
    ...(values["proxy-protocol-in"] ? ["PROXY header expected"] : []),
  ];
  out(
    [
      `listening on ${c.bold(`https://${listener.addr}`)}, forwarding to ${to}` +
        (extras.length ? ` (${extras.join("; ")})` : ""),
      ...fe.banner(listener),
    ].join("\n"),
  );
  return fe.drain(listener, fe.reloads());
}

/**
 * Copy both ways until both directions have ended: each side's EOF becomes a
 * half-close of the other (TLS: close_notify). The first failure closes both
 * conns and is thrown; the backend conn is always closed on return.
 */
async function splice(client: TLSConn, backend: Conn) {
  let first: unknown;
  const failFast = (p: Promise<unknown>) =>
    p.catch(async (e: unknown) => {
      first ??= e;
      await Promise.all([client.close(), backend.close()]);
    });
  try {
    await Promise.all([failFast(client.copyTo(backend)), failFast(backend.copyTo(client))]);
  } finally {
    await backend.close();
  }
  if (first !== undefined) throw first;
}

/** The PROXY header for a client conn; v2 adds ALPN, SNI and TLS details as TLVs. */
function headerFor(conn: TLSConn, version: 1 | 2): ProxyHeaderInit {
  const header: ProxyHeaderInit = {
    version,
    source: conn.remoteAddr,
    destination: conn.localAddr,
  };
  if (version === 1) return header;
  const s = conn.state();
  const tlvs: Array<{ type: number; value: Uint8Array }> = [];
  if (s.alpnProtocol) tlvs.push({ type: PP2_TYPE_ALPN, value: Buffer.from(s.alpnProtocol) });
  if (s.serverName) tlvs.push({ type: PP2_TYPE_AUTHORITY, value: Buffer.from(s.serverName) });
  const peer = conn.peerCertificate();
  const subs: Buffer[] = [];
  const sub = (type: number, text: string) => {
    const v = Buffer.from(text);
    const head = Buffer.from([type, 0, 0]);
    head.writeUInt16BE(v.length, 1);
    subs.push(head, v);
  };
  if (s.version) sub(PP2_SUBTYPE_SSL_VERSION, s.version);
  if (s.cipherSuite) sub(PP2_SUBTYPE_SSL_CIPHER, s.cipherSuite);
  const cn = peer ? /(?:^|, )CN=([^,]+)/.exec(peer.subject)?.[1] : undefined;
  if (cn) sub(PP2_SUBTYPE_SSL_CN, cn);
  const ssl = Buffer.alloc(5);
  ssl[0] = PP2_CLIENT_SSL | (peer ? PP2_CLIENT_CERT_CONN : 0);
  ssl.writeUInt32BE(peer && s.verified ? 0 : 1, 1); // 0: a certificate was presented and verified
  tlvs.push({ type: PP2_TYPE_SSL, value: Buffer.concat([ssl, ...subs]) });
  return { ...header, tlvs };
}
