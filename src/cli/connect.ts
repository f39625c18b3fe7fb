/**
 * `tlsnet connect`: dial, handshake, print what was negotiated and who the
 * peer is, then pipe stdin to the connection and the connection to stdout.
 * The summary goes to stderr (or one JSON line to stdout with --json), so
 * stdout carries only the peer's bytes.
 * @module
 */
import type { Buffer } from "node:buffer";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { parseAddress } from "../addr.ts";
import {
  CertificateError,
  ConfigError,
  type ConnectionState,
  type PeerCertificate,
  type TLSConn,
  TLSError,
  type TLSOptions,
  TlsnetError,
  tcp,
  tls,
} from "../index.ts";
import {
  type Command,
  day,
  daysLeft,
  err,
  intFlag,
  listFlag,
  ms,
  out,
  paint,
  parseFlags,
  UsageError,
} from "./common.ts";
import { type Context, clientCertReasons, debugLines, explain, isPeerAbort } from "./explain.ts";

const usage =
  "tlsnet connect HOST:PORT [--servername N] [--ca F] [--insecure] [--alpn LIST] [--cert F --key F] [--json] [--timeout MS]";

const help = `${usage}

Connect with TLS, print the handshake summary (version, cipher, ALPN, SNI,
resumption, the certificate chain, the verification result, DNS/TCP/TLS
timings) on stderr, then copy stdin to the server and the server's bytes to
stdout until the server ends the stream. At the end of stdin, tlsnet sends
close_notify and keeps reading.

Options:
  --servername N    SNI and the name to verify (default: HOST, none for IP addresses)
  --ca F            trust the CAs in this PEM file instead of Node's bundled roots
  --insecure        do not verify the certificate (for looking at a broken one)
  --alpn LIST       offer these ALPN protocols, e.g. h2,http/1.1
  --cert F --key F  present this client certificate (mTLS)
  --json            print the summary as one JSON line on stdout, then the data
  --timeout MS      for DNS + TCP + TLS together (default 10000)
  -h, --help        this help

Exit status: 0 when the server ended the stream, 1 on any failure
(a certificate that fails verification prints why, e.g. CERT_HAS_EXPIRED).

Example:
  echo hello | tlsnet connect 127.0.0.1:8443 --ca ~/.local/share/tlsnet/ca.pem
  tlsnet connect example.com:443 --alpn h2,http/1.1 </dev/null`;

export const command: Command = { usage, help, run };

/** Milliseconds spent in each phase. */
export interface Timings {
  dns: number;
  tcp: number;
  tls: number;
}

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    servername: { type: "string" },
    ca: { type: "string" },
    insecure: { type: "boolean", default: false },
    alpn: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
    json: { type: "boolean", default: false },
    timeout: { type: "string" },
  });
  if (values.help) {
    out(help);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length === 0 ? "missing HOST:PORT" : "give one HOST:PORT");
  }
  const target = positionals[0]!;
  let host: string;
  try {
    const parsed = parseAddress(target);
    host = parsed.host!;
  } catch (e) {
    throw new UsageError(e instanceof ConfigError ? e.message : `bad address '${target}'`);
  }
  if ((values.cert === undefined) !== (values.key === undefined)) {
    throw new UsageError("--cert and --key go together");
  }
  if (values.insecure && values.ca !== undefined) {
    throw new UsageError("--insecure turns verification off; --ca would have no effect");
  }
  const timeout = intFlag(values.timeout, "timeout", 10_000, 1);
  const alpn = listFlag(values.alpn);
  const serverName =
    values.servername ?? (isIP(host.replace(/^\[|\]$/g, "")) ? undefined : host.replace(/\.$/, ""));

  // How this command sets the options the library may complain about.
  const ctx: Context = {
    role: "client",
    target,
    timeout,
    clientCert: values.cert,
    fields: {
      caFile: "--ca",
      "certFile/keyFile": "--cert/--key",
      "certFile/keyFile.cert": `--cert ${values.cert}`,
      "certFile/keyFile.key": `--key ${values.key}`,
      certFile: "--cert",
      keyFile: "--key",
      serverName: "--servername",
      alpnProtocols: "--alpn",
    },
  };
  const options: TLSOptions = {
    ...(serverName ? { serverName } : {}),
    ...(values.ca ? { caFile: values.ca } : {}),
    ...(values.insecure ? { verifyPeer: false } : {}),
    ...(alpn ? { alpnProtocols: alpn } : {}),
    ...(values.cert ? { certFile: values.cert, keyFile: values.key } : {}),
  };

  // Dial and handshake separately (the STARTTLS path), timing each phase.
  const timings: Timings = { dns: 0, tcp: 0, tls: 0 };
  const started = performance.now();
  let conn: TLSConn;
  try {
    // Validated before dialing: a bad --ca or --cert file fails without touching the network.
    const config = tls.config(options);
    ctx.phase = "tcp";
    const tcpConn = await tcp.connect(target, {
      timeout,
      resolver: async (name) => {
        const t = performance.now();
        const addrs = await lookup(name, { all: true, verbatim: true });
        timings.dns = performance.now() - t;
        return addrs.map((a) => a.address);
      },
    });
    timings.tcp = performance.now() - started - timings.dns;
    ctx.phase = "tls";
    conn = tls.client(tcpConn, config);
    const t = performance.now();
    try {
      // Whole milliseconds: what is left of --timeout after DNS and TCP.
      await conn.handshake({ timeout: Math.max(1, Math.ceil(timeout - (t - started))) });
    } finally {
      if (!conn.state().handshakeComplete) await conn.close();
    }
    timings.tls = performance.now() - t;
  } catch (e) {
    if (e instanceof CertificateError) {
      // A second look without verification names what the certificate does cover.
      const left = Math.max(1000, timeout - (performance.now() - started));
      ctx.peer = await lookAt(target, options, Math.min(left, 5000));
    }
    return failed(e, ctx, values.json);
  }

  const state = conn.state();
  if (values.json) {
    out(JSON.stringify(summaryJSON(target, conn, state, timings)));
  } else {
    printSummary(target, conn, state, timings, alpn, values.insecure);
  }
  return pipe(conn, ctx);
}

/** The server's certificate, fetched with verification off; undefined if that fails too. */
async function lookAt(
  target: string,
  options: TLSOptions,
  timeout: number,
): Promise<PeerCertificate | undefined> {
  try {
    const conn = await tls.connect(target, { ...options, verifyPeer: false, timeout });
    const peer = conn.peerCertificate() ?? undefined;
    await conn.close();
    return peer;
  } catch {
    return undefined;
  }
}

/** How soon after the handshake a reset or close reads as "the server rejected us". */
const REJECT_WINDOW_MS = 2000;

/** stdin → conn (then close_notify), conn → stdout; done when the peer ends. */
async function pipe(conn: TLSConn, ctx: Context): Promise<number> {
  const handshook = performance.now();
  let received = 0;
  let sendError: unknown;
  void (async () => {
    for await (const chunk of process.stdin) await conn.write(chunk as Buffer);
    await conn.closeWrite();
  })().catch((e) => {
    sendError = e;
  });
  // Nothing came back and the server ended it at once: most likely our certificate (or none).
  const rejectedUs = () => received === 0 && performance.now() - handshook < REJECT_WINDOW_MS;
  try {
    for await (const chunk of conn) {
      received += chunk.length;
      if (!process.stdout.write(chunk)) {
        await new Promise((r) => process.stdout.once("drain", r));
      }
    }
  } catch (e) {
    const x = explain(e, ctx);
    err(`tlsnet connect: ${x.message}`);
    if (x.hint) err(x.hint);
    else if (isPeerAbort(e) && rejectedUs()) err(rejectionHint(ctx));
    debug(e);
    await conn.close();
    return 1;
  }
  if (rejectedUs() && ctx.clientCert !== undefined) {
    err(
      `note: the server closed the connection right after the handshake without sending anything`,
    );
    err(rejectionHint(ctx));
  }
  await conn.close();
  // A write that failed because the peer had already finished is not worth reporting.
  if (sendError !== undefined && !(sendError instanceof TlsnetError)) {
    err(`tlsnet connect: reading stdin failed: ${(sendError as Error).message}`);
    return 1;
  }
  return 0;
}

/** The hint for a reset or close right after the handshake. */
function rejectionHint(ctx: Context): string {
  return ctx.clientCert !== undefined
    ? `hint: the server probably rejected our client certificate (${ctx.clientCert}): ${clientCertReasons()}`
    : "hint: the server closed the connection right after the handshake; if it requires a client certificate, pass one with --cert FILE --key FILE";
}

/** Report a failed connect: one line on stderr, and a JSON object on stdout with --json. */
function failed(e: unknown, ctx: Context, json: boolean): number {
  const x = explain(e, ctx);
  if (json) {
    out(
      JSON.stringify({
        target: ctx.target,
        ok: false,
        error: x.message,
        code: e instanceof TlsnetError ? e.code : undefined,
        reason: e instanceof TLSError ? e.reason : undefined,
        ...(ctx.peer ? { subjectAltNames: ctx.peer.subjectAltNames } : {}),
      }),
    );
  }
  err(`tlsnet connect: ${x.message}`);
  if (x.hint) err(x.hint);
  debug(e);
  return 1;
}

/** TLSNET_DEBUG=1: the stack, causes and attempts behind a failure. */
function debug(e: unknown): void {
  if (process.env.TLSNET_DEBUG) for (const line of debugLines(e)) err(line);
}

function summaryJSON(target: string, conn: TLSConn, s: ConnectionState, t: Timings) {
  const round = (n: number) => Math.round(n * 100) / 100;
  return {
    target,
    address: conn.remoteAddr.toString(),
    version: s.version,
    cipherSuite: s.cipherSuite,
    alpnProtocol: s.alpnProtocol,
    serverName: s.serverName,
    resumed: s.resumed,
    verified: s.verified,
    chain: s.peerCertificates.map((c) => ({
      subject: c.subject,
      issuer: c.issuer,
      subjectAltNames: c.subjectAltNames,
      validFrom: c.validFrom.toISOString(),
      validTo: c.validTo.toISOString(),
      serialNumber: c.serialNumber,
      fingerprint256: c.fingerprint256,
    })),
    timings: { dns: round(t.dns), tcp: round(t.tcp), tls: round(t.tls) },
  };
}

function printSummary(
  target: string,
  conn: TLSConn,
  s: ConnectionState,
  t: Timings,
  offered: string[] | undefined,
  insecure: boolean,
): void {
  const c = paint(process.stderr);
  const row = (k: string, v: string) => err(`  ${c.dim(k.padEnd(9))} ${v}`);
  err(`${c.bold("connected")} to ${target} (${conn.remoteAddr})`);
  row("tls", `${s.version ?? "?"}  ${s.cipherSuite ?? "?"}`);
  row(
    "alpn",
    `${s.alpnProtocol ?? "none"}${offered ? c.dim(` (offered ${offered.join(",")})`) : ""}`,
  );
  row("sni", s.serverName ?? c.dim("none (IP address)"));
  row("resumed", s.resumed ? "yes" : "no");
  row(
    "verified",
    s.verified
      ? c.green("yes: chain and name check out")
      : insecure
        ? c.yellow("NOT CHECKED (--insecure)")
        : c.red("no"),
  );
  err(`  ${c.dim("chain")}${s.peerCertificates.length === 0 ? "     none" : ""}`);
  s.peerCertificates.forEach((cert, i) => {
    const left = daysLeft(cert.validTo);
    const expiry =
      left < 0
        ? c.red(`EXPIRED ${day(cert.validTo)}`)
        : `until ${day(cert.validTo)} (${left} days)${left < 14 ? c.yellow(" soon") : ""}`;
    err(`    ${i} ${c.cyan(cert.subject)}`);
    if (cert.subjectAltNames.length > 0) err(`      san    ${cert.subjectAltNames.join(", ")}`);
    err(`      valid  ${expiry}`);
    err(`      issuer ${cert.issuer}`);
  });
  row("timings", `dns ${ms(t.dns)} · tcp ${ms(t.tcp)} · tls ${ms(t.tls)}`);
}
