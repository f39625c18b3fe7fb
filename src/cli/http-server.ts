/**
 * The minimal HTTP/1.1 responder of `tlsnet serve --mode http`: enough for
 * curl and browsers to show that TLS works. Every request gets 200 and a short
 * text/plain page naming the TLS version and the path; keep-alive until the
 * client says `Connection: close` or goes quiet.
 * @module
 */
import { Buffer } from "node:buffer";
import { DeadlineExceededError, LimitExceededError, type TLSConn } from "../index.ts";

const MAX_LINE = 8 * 1024;
const MAX_HEADERS = 100;
const MAX_BODY = 1024 * 1024;
const IDLE_MS = 30_000;

/** Serve requests on `conn` until it closes. */
export async function serveHTTP(conn: TLSConn): Promise<void> {
  const read = () => conn.readLine({ maxBytes: MAX_LINE, timeout: IDLE_MS });
  const send = async (status: string, headers: Record<string, string>, body: string) => {
    const head = [`HTTP/1.1 ${status}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
    const text = `${head.join("\r\n")}\r\n\r\n${body}`;
    await conn.write(text);
  };
  const fail = (status: string, why: string) =>
    send(
      status,
      { "Content-Type": "text/plain", "Content-Length": `${why.length + 1}`, Connection: "close" },
      `${why}\n`,
    );

  for (;;) {
    let requestLine: string | null;
    try {
      requestLine = await read();
      while (requestLine === "") requestLine = await read(); // stray CRLF between requests
    } catch (e) {
      if (e instanceof DeadlineExceededError) return; // idle keep-alive connection
      if (e instanceof LimitExceededError) return fail("414 URI Too Long", "request line too long");
      throw e;
    }
    if (requestLine === null) return;
    const m = /^([A-Z]+) (\S+) HTTP\/1\.([01])$/.exec(requestLine);
    if (!m) return fail("400 Bad Request", "not an HTTP/1.x request line");
    const [, method, target, minor] = m as unknown as [string, string, string, string];

    const headers = new Map<string, string>();
    for (;;) {
      let line: string | null;
      try {
        line = await read();
      } catch (e) {
        if (e instanceof LimitExceededError)
          return fail("431 Request Header Fields Too Large", "header too long");
        throw e;
      }
      if (line === null) return; // client went away mid-request
      if (line === "") break;
      if (headers.size >= MAX_HEADERS)
        return fail("431 Request Header Fields Too Large", "too many headers");
      const colon = line.indexOf(":");
      if (colon <= 0) return fail("400 Bad Request", "malformed header line");
      headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }

    // Read and drop a request body so the next request starts in the right place.
    if (headers.has("transfer-encoding"))
      return fail("501 Not Implemented", "chunked request bodies are not supported");
    const length = Number(headers.get("content-length") ?? "0");
    if (!Number.isInteger(length) || length < 0)
      return fail("400 Bad Request", "bad Content-Length");
    if (length > MAX_BODY) return fail("413 Content Too Large", "request body over 1 MiB");
    if (length > 0) await conn.readExactly(length, { timeout: IDLE_MS });

    const connection = (headers.get("connection") ?? "").toLowerCase();
    const close =
      connection.includes("close") || (minor === "0" && !connection.includes("keep-alive"));
    const s = conn.state();
    const body =
      `hello from tlsnet\n` +
      `tls: ${s.version} ${s.cipherSuite}\n` +
      `alpn: ${s.alpnProtocol ?? "-"}\n` +
      `sni: ${s.serverName ?? "-"}\n` +
      `method: ${method}\n` +
      `path: ${target}\n`;
    await send(
      "200 OK",
      {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": String(Buffer.byteLength(body)),
        Connection: close ? "close" : "keep-alive",
        Server: "tlsnet",
      },
      method === "HEAD" ? "" : body,
    );
    if (close) {
      await conn.closeWrite();
      return;
    }
  }
}
