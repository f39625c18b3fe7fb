/**
 * `tlsnet connect`: dial, handshake, print what was negotiated and who the
 * peer is, then pipe stdin to the connection and the connection to stdout.
 * The summary goes to stderr (or one JSON line to stdout with --json), so
 * stdout carries only the peer's bytes.
 * @module
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { parseAddress } from "../addr.ts";
import {
  CertificateError,
  ConfigError,
  type ConnectionState,
  DeadlineExceededError,
  type TLSConn,
  TLSError,
  TlsnetError,
  tcp,
  tls,
} from "../index.ts";
import {
  type Command,
  day,
  daysLeft,
  err,
  flagNames,
  intFlag,
  listFlag,
  ms,
  out,
  paint,
  parseFlags,
  UsageError,
} from "./common.ts";

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

  // Dial and handshake separately (the STARTTLS path), timing each phase.
  const timings: Timings = { dns: 0, tcp: 0, tls: 0 };
  let conn: TLSConn;
  try {
    // Validated before dialing: a bad --ca or --cert file fails without touching the network.
    const config = tls.config({
      ...(serverName ? { serverName } : {}),
      ...(values.ca ? { caFile: values.ca } : {}),
      ...(values.insecure ? { verifyPeer: false } : {}),
      ...(alpn ? { alpnProtocols: alpn } : {}),
      ...(values.cert ? { certFile: values.cert, keyFile: values.key } : {}),
    });
    const started = performance.now();
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
    conn = tls.client(tcpConn, config);
    const t = performance.now();
    const left = Math.max(1, timeout - (t - started));
    try {
      await conn.handshake({ timeout: left });
    } catch (e) {
      await conn.close();
      if (e instanceof DeadlineExceededError) {
        throw new DeadlineExceededError(
          "connect",
          `no TLS handshake from ${target} within --timeout ${timeout} ms; is it a TLS port? (raise --timeout for a slow server)`,
          { cause: e },
        );
      }
      throw e;
    }
    timings.tls = performance.now() - t;
  } catch (e) {
    return failed(e, target, values.json);
  }

  const state = conn.state();
  if (values.json) {
    out(JSON.stringify(summaryJSON(target, conn, state, timings)));
  } else {
    printSummary(target, conn, state, timings, alpn, values.insecure);
  }
  return pipe(conn);
}

/** stdin → conn (then close_notify), conn → stdout; done when the peer ends. */
async function pipe(conn: TLSConn): Promise<number> {
  let sendError: unknown;
  void (async () => {
    for await (const chunk of process.stdin) await conn.write(chunk as Buffer);
    await conn.closeWrite();
  })().catch((e) => {
    sendError = e;
  });
  try {
    for await (const chunk of conn) {
      if (!process.stdout.write(chunk)) {
        await new Promise((r) => process.stdout.once("drain", r));
      }
    }
  } catch (e) {
    err(`tlsnet connect: ${(e as Error).message}`);
    const hint = hintFor(e);
    if (hint) err(hint);
    await conn.close();
    return 1;
  }
  await conn.close();
  // A write that failed because the peer had already finished is not worth reporting.
  if (sendError !== undefined && !(sendError instanceof TlsnetError)) {
    err(`tlsnet connect: reading stdin failed: ${(sendError as Error).message}`);
    return 1;
  }
  return 0;
}

/** Report a failed connect: one line on stderr, and a JSON object on stdout with --json. */
function failed(e: unknown, target: string, json: boolean): number {
  const error = e instanceof Error ? e : new Error(String(e));
  if (json) {
    out(
      JSON.stringify({
        target,
        ok: false,
        error: error.message,
        code: error instanceof TlsnetError ? error.code : undefined,
        reason: error instanceof TLSError ? error.reason : undefined,
      }),
    );
  }
  err(`tlsnet connect: ${flagNames(error.message)}`);
  const hint = hintFor(error);
  if (hint) err(hint);
  return 1;
}

/** The flag that fixes a failure, in this command's terms (the library's message speaks API). */
function hintFor(e: unknown): string | undefined {
  if (e instanceof CertificateError) {
    const fix =
      e.reason === "ERR_TLS_CERT_ALTNAME_INVALID"
        ? "--servername NAME to check another name"
        : e.reason === "CERT_HAS_EXPIRED" || e.reason === "CERT_NOT_YET_VALID"
          ? "a renewed certificate on the server"
          : "--ca F with the CA that issued it";
    return `reason: ${e.reason ?? "unknown"}; fix: ${fix} (or --insecure to look at the certificate anyway)`;
  }
  const reason = e instanceof TLSError ? (e.reason ?? "") : "";
  if (reason.includes("CERTIFICATE_REQUIRED"))
    return "hint: pass a client certificate with --cert F --key F";
  if (reason.includes("APPLICATION_PROTOCOL") || /ALPN/.test(String((e as Error).message))) {
    return "hint: offer other protocols with --alpn, or leave --alpn out";
  }
  return undefined;
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
