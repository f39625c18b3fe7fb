/**
 * Library errors in the command line's terms. tlsnet's own messages speak API ("pass the issuing
 * CA in ca/caFile", "raise timeout/deadline"); here each error is worded again from its fields
 * (ConfigError.field, CertificateError.reason/host/subject, TLSError.reason,
 * DeadlineExceededError.op, DialError.host/port/errors), with the flags that fix it.
 * @module
 */
import { describeSystemError } from "../errors.ts";
import {
  CertificateError,
  ConfigError,
  ConnectionResetError,
  DeadlineExceededError,
  DialError,
  HandshakeTimeoutError,
  ListenError,
  type PeerCertificate,
  TLSError,
  TlsnetError,
} from "../index.ts";
import { CliError, cliName } from "./common.ts";

/** What a command knows that the error does not. */
export interface Context {
  /** Our side: connect and fetch are clients, serve is the server. */
  role: "client" | "server";
  /** Who we talked to ("localhost:8443"), for client-side messages. */
  target?: string | undefined;
  /**
   * Library option names, as ConfigError.field gives them (or their leading part), mapped to
   * what sets them in this command: { caFile: "--ca", "certFile/keyFile.key": "--key F" }.
   */
  fields?: Record<string, string> | undefined;
  /** The command's --timeout, in ms. */
  timeout?: number | undefined;
  /** connect: which phase failed, when it is known. */
  phase?: "tcp" | "tls" | undefined;
  /** The client certificate file we presented (connect --cert). */
  clientCert?: string | undefined;
  /** serve: the --client-auth mode. */
  clientAuth?: string | undefined;
  /** serve: the CA file clients must trust (the dev CA), if we know it. */
  caFile?: string | undefined;
  /** The peer's certificate as seen without verification: its names, dates and issuer. */
  peer?: PeerCertificate | undefined;
}

/** One line saying what failed and what to do, and sometimes a second one with a hint. */
export interface Explained {
  message: string;
  hint?: string | undefined;
}

/** Word `e` for this command. */
export function explain(e: unknown, ctx: Context): Explained {
  if (e instanceof CliError) return { message: e.message };
  if (e instanceof CertificateError) return certificate(e, ctx);
  if (e instanceof HandshakeTimeoutError || e instanceof DeadlineExceededError) {
    return timeout(e, ctx);
  }
  if (e instanceof TLSError) return tlsError(e, ctx);
  if (e instanceof DialError) return { message: dialMessage(e) };
  if (e instanceof ConfigError) return { message: configMessage(e, ctx.fields) };
  if (e instanceof ListenError) {
    return {
      message: e.message,
      hint: `hint: pick another address with ${ctx.fields?.addr ?? "--addr"} (port 0 picks a free one)`,
    };
  }
  if (e instanceof TlsnetError) return { message: e.message };
  return { message: systemMessage(e) };
}

/** Everything TLSNET_DEBUG=1 adds: stacks, the cause chain, each dial attempt, reason codes. */
export function debugLines(e: unknown): string[] {
  const lines: string[] = [];
  let cur: unknown = e;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 8; depth++) {
    const prefix = depth === 0 ? "" : "caused by: ";
    if (!(cur instanceof Error)) {
      lines.push(`${prefix}${String(cur)}`);
      break;
    }
    lines.push(`${prefix}${cur.stack ?? `${cur.name}: ${cur.message}`}`);
    const fields = Object.entries(cur)
      .filter(([k, v]) => k !== "errors" && k !== "cause" && (typeof v !== "object" || v === null))
      .map(([k, v]) => `${k}=${JSON.stringify(v)}`);
    if (fields.length > 0) lines.push(`  fields: ${fields.join(" ")}`);
    if (cur instanceof DialError) {
      for (const a of cur.errors) lines.push(`  attempt: ${a.message}`);
    }
    if (cur instanceof AggregateError) {
      for (const a of cur.errors) lines.push(`  error: ${a instanceof Error ? a.message : a}`);
    }
    cur = cur.cause;
  }
  return lines;
}

// ---------------------------------------------------------------- certificates

const UNKNOWN_AUTHORITY = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
]);
const NAME_MISMATCH = new Set(["ERR_TLS_CERT_ALTNAME_INVALID", "HOSTNAME_MISMATCH"]);

function certificate(e: CertificateError, ctx: Context): Explained {
  const reason = e.reason ?? "CERT_REJECTED";
  const server = ctx.role === "server";
  const peer = ctx.peer;
  const who = server
    ? `client certificate${e.subject ? ` (subject ${e.subject})` : ""}`
    : `certificate for '${e.host ?? ctx.target ?? "?"}'${e.subject ? ` (subject ${e.subject}${peer ? `, issuer ${peer.issuer}` : ""})` : ""}`;
  const day = (d: Date) => d.toISOString().slice(0, 10);
  let what: string;
  let fix: string;
  if (UNKNOWN_AUTHORITY.has(reason)) {
    what =
      reason === "SELF_SIGNED_CERT_IN_CHAIN"
        ? "chains to a self-signed root that is not trusted"
        : reason === "DEPTH_ZERO_SELF_SIGNED_CERT"
          ? "is self-signed and not trusted"
          : "is signed by an unknown authority (an untrusted CA, or a missing intermediate)";
    fix = server
      ? "pass the CA that issued it with --client-ca FILE, or have the client send its full chain"
      : reason === "DEPTH_ZERO_SELF_SIGNED_CERT"
        ? "trust it with --ca FILE (the certificate itself)"
        : "pass the CA that issued it with --ca FILE, or have the server send its full chain";
  } else if (reason === "CERT_HAS_EXPIRED") {
    what = `has expired${peer ? ` (notAfter ${day(peer.validTo)})` : ""}`;
    fix = `the ${server ? "client" : "server"} needs a renewed certificate (or fix this machine's clock)`;
  } else if (reason === "CERT_NOT_YET_VALID") {
    what = `is not yet valid${peer ? ` (notBefore ${day(peer.validFrom)})` : ""}`;
    fix = `check this machine's clock, or give the ${server ? "client" : "server"} a current certificate`;
  } else if (NAME_MISMATCH.has(reason)) {
    const sans = peer?.subjectAltNames ?? [];
    what = `does not cover the name '${e.host ?? "?"}'${
      peer ? ` (it covers ${sans.length > 0 ? sans.join(", ") : "no names: it has no SAN"})` : ""
    }`;
    fix = "connect with a name it covers, or check another name with --servername NAME";
  } else if (reason === "INVALID_PURPOSE") {
    what = server
      ? "is not for client authentication: its extended key usage lacks clientAuth"
      : "is not for a TLS server: its extended key usage lacks serverAuth";
    fix = server
      ? `the client needs a certificate made for clients: ${cliName()} cert NAME --client`
      : `the server needs a server certificate, e.g. from ${cliName()} cert NAME`;
  } else {
    what = `failed verification (${reason})`;
    fix = server ? "check the client's certificate" : "check the server's certificate";
  }
  return {
    message: `${who} ${what}; ${fix} [${reason}]`,
    hint: server
      ? undefined
      : "hint: --insecure connects without verifying, to look at the certificate",
  };
}

// ---------------------------------------------------------------- TLS alerts and failures

/** Alerts a server sends about the client's certificate, and what each one says ("" = not sure). */
function clientCertAlerts(): Array<[string, string]> {
  return [
    [
      "ALERT_UNKNOWN_CA",
      "it does not trust the CA that signed it (its client CA list must hold it)",
    ],
    ["ALERT_CERTIFICATE_EXPIRED", "it says the certificate has expired"],
    ["ALERT_CERTIFICATE_REVOKED", "it says the certificate has been revoked"],
    [
      "ALERT_UNSUPPORTED_CERTIFICATE",
      `it is not usable for client authentication (make one with ${cliName()} cert NAME --client)`,
    ],
    ["ALERT_BAD_CERTIFICATE", ""],
    ["ALERT_CERTIFICATE_UNKNOWN", ""],
    ["ALERT_ACCESS_DENIED", ""],
  ];
}

/** Why a server may reject a client certificate, for hints that cannot tell which. */
export function clientCertReasons(): string {
  return (
    "it may not be signed by a CA the server trusts, may lack the clientAuth extended key usage " +
    `(make one with ${cliName()} cert NAME --client), or may have expired`
  );
}

function tlsError(e: TLSError, ctx: Context): Explained {
  const reason = e.reason ?? "";
  const tag = reason ? ` [${reason}]` : "";
  const at = ctx.target ? ` at ${ctx.target}` : "";
  if (ctx.role === "server") {
    if (reason.includes("PEER_DID_NOT_RETURN_A_CERTIFICATE")) {
      return {
        message: `the client sent no certificate${ctx.clientAuth ? ` (--client-auth ${ctx.clientAuth} requires one)` : ""}${tag}`,
      };
    }
    if (reason.includes("ALERT_UNKNOWN_CA")) {
      return {
        message: `the client does not trust the CA that signed our certificate; give it that CA${ctx.caFile ? ` (${ctx.caFile})` : ""}${tag}`,
      };
    }
    return { message: e.message };
  }
  if (reason.includes("CERTIFICATE_REQUIRED") || reason.includes("PEER_DID_NOT_RETURN")) {
    return {
      message: `the server${at} requires a client certificate; pass one with --cert FILE --key FILE${tag}`,
    };
  }
  if (ctx.clientCert !== undefined) {
    const alert = clientCertAlerts().find(([suffix]) => reason.endsWith(suffix));
    if (alert) {
      const why = alert[1] || clientCertReasons();
      return {
        message: `the server${at} rejected our client certificate (${ctx.clientCert}): ${why}${tag}`,
      };
    }
  }
  if (reason.endsWith("ALERT_HANDSHAKE_FAILURE")) {
    return {
      message:
        `the server${at} aborted the handshake: it may require a client certificate ` +
        `(--cert FILE --key FILE), or share no cipher, TLS version or signature algorithm with us${tag}`,
    };
  }
  if (reason.endsWith("ALERT_PROTOCOL_VERSION") || reason === "ERR_SSL_UNSUPPORTED_PROTOCOL") {
    return {
      message: `the server${at} refused our TLS versions (tlsnet speaks TLS 1.2 and 1.3, nothing older)${tag}`,
    };
  }
  if (reason.includes("NO_APPLICATION_PROTOCOL")) {
    return {
      message: e.message,
      hint:
        ctx.fields?.alpnProtocols !== undefined
          ? "hint: offer other protocols with --alpn, or leave --alpn out"
          : undefined,
    };
  }
  return { message: e.message };
}

// ---------------------------------------------------------------- timeouts, dialing, options

function timeout(e: DeadlineExceededError | HandshakeTimeoutError, ctx: Context): Explained {
  const t = ctx.target ?? "the server";
  if (ctx.timeout === undefined || ctx.role === "server") return { message: e.message };
  const within = `within --timeout ${ctx.timeout} ms`;
  const op = e instanceof DeadlineExceededError ? e.op : "connect";
  if (op === "read") {
    return { message: `no response from ${t} ${within}; raise --timeout for a slow server` };
  }
  if (op === "write") {
    return { message: `could not send to ${t} ${within} (it is not reading); raise --timeout` };
  }
  if (ctx.phase === "tcp") {
    return {
      message: `could not connect to ${t} ${within}; check the address and any firewall, or raise --timeout`,
    };
  }
  if (ctx.phase === "tls" || e instanceof HandshakeTimeoutError) {
    return {
      message: `no TLS handshake from ${t} ${within}; is it a TLS port? (raise --timeout for a slow server)`,
    };
  }
  return {
    message: `no TLS connection to ${t} ${within} (TCP connect and handshake); check the address and that it speaks TLS there, or raise --timeout`,
  };
}

/** "could not connect to localhost:9444 (127.0.0.1): connection refused: ...", each address once. */
function dialMessage(e: DialError): string {
  if (e.errors.length === 0) return e.message; // resolution failed: no attempt to list
  const hostPort = e.host.includes(":") ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
  const why = (a: Error) =>
    describeSystemError(a.cause) ?? (a.cause as Error)?.message ?? a.message;
  const addr = (a: Error) => (a as Error & { address?: string }).address;
  if (e.errors.length === 1) {
    const a = e.errors[0]!;
    const ip = addr(a);
    return `could not connect to ${hostPort}${ip && ip !== e.host ? ` (${ip})` : ""}: ${why(a)}`;
  }
  return `could not connect to ${hostPort}: ${e.errors.map((a) => `${addr(a) ?? "?"}: ${why(a)}`).join("; ")}`;
}

/**
 * A ConfigError with the option named as this command sets it: the field's longest known leading
 * part, where the message begins with it, becomes the flag or file ("certFile/keyFile.key is not
 * PEM" → "--key F is not PEM"); otherwise the flag goes in front.
 */
function configMessage(e: ConfigError, fields: Record<string, string> | undefined): string {
  const field = e.field;
  if (field === undefined || fields === undefined) return e.message;
  const boundary = (s: string, n: number) => n === s.length || " .[(:".includes(s[n]!);
  const keys = Object.keys(fields)
    .filter((k) => field.startsWith(k) && boundary(field, k.length))
    .sort((a, b) => b.length - a.length);
  for (const k of keys) {
    if (e.message.startsWith(k) && boundary(e.message, k.length)) {
      return fields[k] + e.message.slice(k.length);
    }
  }
  return keys.length > 0 ? `${fields[keys[0]!]}: ${e.message}` : e.message;
}

/** A raw Node error that got this far: what and where, without its stack. */
function systemMessage(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const n = e as NodeJS.ErrnoException;
  if (n.syscall && n.code && n.path) {
    const why: Record<string, string> = {
      ENOENT: "no such file or directory",
      EACCES: "permission denied",
      EPERM: "operation not permitted",
      EEXIST: "it already exists",
      ENOTDIR: "a part of the path is not a directory",
      EISDIR: "it is a directory",
      EROFS: "read-only file system",
    };
    return `cannot ${n.syscall} ${n.path}: ${why[n.code] ?? n.code}`;
  }
  if (n.syscall && n.code) return `${n.syscall} failed: ${describeSystemError(n) ?? n.code}`;
  return e.message;
}

/** A reset or an unexplained close: after a handshake, worth the client-certificate hint. */
export function isPeerAbort(e: unknown): boolean {
  if (e instanceof ConnectionResetError) return true;
  if (!(e instanceof TLSError) || e instanceof CertificateError) return false;
  const reason = e.reason ?? "";
  return reason === "" || reason === "ECONNRESET" || reason.includes("UNEXPECTED_EOF");
}
