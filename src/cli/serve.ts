/**
 * `tlsnet serve`: a TLS echo or minimal HTTP/1.1 server, with a generated dev
 * certificate when none is given, one log line per connection, reload on
 * SIGHUP (and file change with --watch), graceful stop on Ctrl-C / SIGTERM.
 *
 * It listens with tcp.listen and upgrades each connection with tls.server (the
 * STARTTLS path), after a look at the first bytes: in http mode a plain
 * `http://` request gets a 400 that says to use https://, not silence.
 * @module
 */
import { Buffer } from "node:buffer";
import { parseAddress } from "../addr.ts";
import type { Conn, TLSConn } from "../index.ts";
import { type Command, out, paint, parseFlags, UsageError } from "./common.ts";
import { dataDir } from "./devcerts.ts";
import { FRONTEND_FLAGS, FRONTEND_HELP, frontend, logConn, stamp } from "./frontend.ts";
import { serveHTTP } from "./http-server.ts";

const usage =
  "tlsnet serve [--addr 127.0.0.1:8443] [--cert F --key F]... [--alpn h2,http/1.1] [--mode echo|http] [--client-auth MODE --client-ca F] [--watch] [--grace 10s]";

const help = `${usage}

Serve TLS on --addr: echo every byte back (--mode echo, the default) or answer
HTTP/1.1 GETs with a small text page (--mode http, for curl and browsers).

Without --cert/--key, a dev CA and a certificate for localhost, 127.0.0.1 and
::1 are generated once under ${dataDir()}
(set TLSNET_HOME to use another directory) and reused afterwards.

Options:
  --addr HOST:PORT      where to listen (default 127.0.0.1:8443; port 0 picks a free one)
  --mode echo|http      what to do with each connection (default echo; in http mode
                        --alpn defaults to http/1.1)
${FRONTEND_HELP}
  -h, --help            this help

Signals: SIGHUP reloads the certificates (and --ticket-keys); Ctrl-C / SIGTERM stop
accepting, give open connections the --grace period (10 s) to finish, close the
rest and say how many. Run from an npm script (npm start), the server also stops
when npm does.

Example:
  tlsnet serve --addr 127.0.0.1:8443 --mode http
  curl --cacert ${dataDir()}/ca.pem https://127.0.0.1:8443/hello`;

const MODES = ["echo", "http"] as const;

export const command: Command = { usage, help, run };

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    addr: { type: "string", default: "127.0.0.1:8443" },
    mode: { type: "string", default: "echo" },
    ...FRONTEND_FLAGS,
  });
  if (values.help) {
    out(help);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  try {
    parseAddress(values.addr, true);
  } catch (e) {
    throw new UsageError(`--addr: ${(e as Error).message}`);
  }
  const mode = values.mode as (typeof MODES)[number];
  if (!MODES.includes(mode)) throw new UsageError(`--mode must be echo or http, got '${mode}'`);
  const c = paint(process.stdout);
  const fe = await frontend(values, c, { alpn: mode === "http" ? ["http/1.1"] : undefined });
  const alpn = fe.alpn;

  const handle = async (conn: TLSConn) => {
    const t0 = performance.now();
    let failure: unknown;
    try {
      if (mode === "http") await serveHTTP(conn);
      else await conn.copyTo(conn); // echo until the client half-closes, then half-close back
    } catch (e) {
      failure = e;
    } finally {
      logConn(conn, performance.now() - t0, failure);
    }
  };
  // In http mode, a plain http:// request on the TLS port gets a 400 that says to use https://.
  const plain = async (raw: Conn): Promise<boolean> => {
    if (mode !== "http") return false;
    const seen = await raw.peek(raw.unreadBytes);
    if (!/^[A-Z]{3,10} \S/.test(seen.toString("latin1"))) return false;
    const first = (await raw.read(raw.unreadBytes))!;
    await plainHTTP(raw, first, raw.localAddr.port);
    out(`${stamp()} ${raw.remoteAddr} plain HTTP on the TLS port: answered 400, use https://`);
    return true;
  };
  const listener = await fe.listen(values.addr, handle, plain);

  // The banner goes out in one write, so whoever reads it (a test, a script) sees it whole.
  const banner = [
    `listening on ${c.bold(`https://${listener.addr}`)} (${mode}${alpn ? `, ALPN ${alpn.join(",")}` : ""})`,
    ...fe.banner(listener, mode === "http"),
  ];
  if (alpn?.includes("h2") && mode === "http") {
    const note = "note: --mode http speaks HTTP/1.1 only; clients that pick h2 will fail";
    banner.splice(1 + fe.pairs.length, 0, c.yellow(note));
  }
  const unwatch = fe.reloads();
  out(banner.join("\n"));
  return fe.drain(listener, unwatch);
}

/** A plain HTTP request on the TLS port: read its head (bounded) and answer 400. */
async function plainHTTP(raw: Conn, first: Buffer, port: number): Promise<void> {
  let head = first;
  try {
    while (!head.includes("\r\n\r\n") && head.length < 8192) {
      const more = await raw.read(8192, { timeout: 2000 });
      if (more === null) break;
      head = Buffer.concat([head, more]);
    }
  } catch {
    // answer what we have
  }
  const text = head.toString("latin1");
  const target = /^[A-Z]+ (\/\S*)/.exec(text)?.[1] ?? "/";
  const hostHeader = /\r\nhost:[ \t]*([A-Za-z0-9.:[\]-]+)/i.exec(text)?.[1];
  const host = hostHeader?.replace(/:\d+$/, "") ?? "localhost";
  const url = `https://${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}${target}`;
  const body = `This is an HTTPS server: use ${url}\n`;
  try {
    await raw.write(
      "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n" +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      { timeout: 2000 },
    );
    await raw.closeWrite();
  } catch {
    // the client went away: nothing to answer
  }
}
