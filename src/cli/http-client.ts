/**
 * One HTTPS/1.1 GET over a tlsnet connection, for `tlsnet fetch`: status line
 * and headers by readLine with a size cap, the body by Content-Length, chunked
 * transfer-encoding, or until EOF. Redirects are not followed.
 * @module
 */
import type { Buffer } from "node:buffer";
import { LimitExceededError, type TLSConn, UnexpectedEOFError } from "../index.ts";
import { CliError } from "./common.ts";

const MAX_LINE = 16 * 1024;
const MAX_HEADERS = 200;
const PIECE = 64 * 1024;

/** What came back. */
export interface Response {
  status: number;
  reason: string;
  headers: Map<string, string>;
  bytes: number;
}

/** Send a GET for `url` on `conn` and stream the body to `sink`. */
export async function get(
  conn: TLSConn,
  url: URL,
  sink: (chunk: Buffer) => Promise<void> | void,
  opts: { timeout: number },
): Promise<Response> {
  const o = { timeout: opts.timeout };
  await conn.write(
    `GET ${url.pathname}${url.search} HTTP/1.1\r\n` +
      `Host: ${url.host}\r\n` +
      "User-Agent: tlsnet-fetch\r\n" +
      "Accept: */*\r\n" +
      "Connection: close\r\n\r\n",
    o,
  );
  let head = await readHead(conn, o);
  while (head.status >= 100 && head.status < 200) head = await readHead(conn, o); // 100 Continue etc.

  const res: Response = { ...head, bytes: 0 };
  const take = async (chunk: Buffer) => {
    res.bytes += chunk.length;
    await sink(chunk);
  };
  const te = (head.headers.get("transfer-encoding") ?? "").toLowerCase();
  const cl = head.headers.get("content-length");
  if (head.status === 204 || head.status === 304) return res;
  if (te.split(",").some((t) => t.trim() === "chunked")) {
    await readChunked(conn, take, o);
  } else if (cl !== undefined) {
    const n = Number(cl);
    if (!/^\d+$/.test(cl.trim())) throw new Error(`bad Content-Length '${cl}' from ${url.host}`);
    await readLength(conn, n, take, o);
  } else {
    for (;;) {
      const chunk = await conn.read(PIECE, o);
      if (chunk === null) break;
      await take(chunk);
    }
  }
  return res;
}

async function readHead(conn: TLSConn, o: { timeout: number }) {
  const statusLine = await lineOf(conn, o, MAX_LINE, "status line");
  if (statusLine === null) throw new Error("the server closed the connection without a response");
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!m) throw new Error(`not an HTTP/1.x response: ${JSON.stringify(statusLine.slice(0, 60))}`);
  const headers = new Map<string, string>();
  for (let i = 0; ; i++) {
    const line = await lineOf(conn, o, MAX_LINE, "header line");
    if (line === null) throw new Error("the response ended inside its headers");
    if (line === "") break;
    if (i >= MAX_HEADERS) throw new Error(`more than ${MAX_HEADERS} response headers`);
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`malformed header line ${JSON.stringify(line.slice(0, 60))}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prev = headers.get(name);
    headers.set(name, prev === undefined ? value : `${prev}, ${value}`);
  }
  return { status: Number(m[1]), reason: m[2] ?? "", headers };
}

/** Exactly `n` bytes, in pieces as they arrive. */
async function readLength(
  conn: TLSConn,
  n: number,
  take: (b: Buffer) => Promise<void>,
  o: { timeout: number },
): Promise<void> {
  let left = n;
  while (left > 0) {
    const chunk = await conn.read(Math.min(left, PIECE), o);
    if (chunk === null) {
      throw new UnexpectedEOFError(`body ended after ${n - left} of ${n} bytes (Content-Length)`, {
        partial: n - left,
      });
    }
    left -= chunk.length;
    await take(chunk);
  }
}

/** RFC 9112 §7.1: hex size line (extensions ignored), data, CRLF; size 0 ends, trailers follow. */
async function readChunked(
  conn: TLSConn,
  take: (b: Buffer) => Promise<void>,
  o: { timeout: number },
): Promise<void> {
  for (;;) {
    const line = await lineOf(conn, o, 4096, "chunk size line");
    if (line === null) throw new Error("chunked body ended before its last chunk");
    const hex = line.split(";")[0]!.trim();
    if (!/^[0-9a-fA-F]{1,8}$/.test(hex)) {
      throw new Error(`bad chunk size line ${JSON.stringify(line.slice(0, 40))}`);
    }
    const size = Number.parseInt(hex, 16);
    if (size === 0) break;
    for (let left = size; left > 0; ) {
      const piece = await conn.readExactly(Math.min(left, PIECE), o);
      left -= piece.length;
      await take(piece);
    }
    const crlf = await conn.readExactly(2, o);
    if (crlf[0] !== 0x0d || crlf[1] !== 0x0a) throw new Error("chunk not followed by CRLF");
  }
  // Trailers, up to the blank line.
  for (let i = 0; i <= MAX_HEADERS; i++) {
    const line = await lineOf(conn, o, MAX_LINE, "trailer line");
    if (line === null || line === "") return;
  }
  throw new Error(`more than ${MAX_HEADERS} trailer lines`);
}

/** One line of the response, capped: a longer one is the server's fault, said so. */
async function lineOf(
  conn: TLSConn,
  o: { timeout: number },
  max: number,
  what: string,
): Promise<string | null> {
  try {
    return await conn.readLine({ ...o, maxBytes: max });
  } catch (e) {
    if (e instanceof LimitExceededError) {
      throw new CliError(
        `the response's ${what} is longer than ${max} bytes; is this an HTTP server?`,
      );
    }
    throw e;
  }
}
