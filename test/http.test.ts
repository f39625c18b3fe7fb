/**
 * HTTP stacks on tlsnet, both directions, over real loopback TLS:
 * - clients: node:http(s) `createConnection`, node:http2 `createConnection`, undici's
 *   Client `connect`, each over a tlsnet conn handed over with `toSocket()`;
 * - servers: node:http and node:http2 serving conns from a tlsnet listener, ALPN
 *   choosing h2 or http/1.1 per connection, with curl (--http2 / --http1.1) and
 *   Node's http2 client as the peers.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import { test } from "node:test";
import { promisify } from "node:util";
import { Client } from "undici";
import { ClosedError, StateError, type TLSConn, type TLSListener, tls } from "../src/index.ts";
import { pki } from "./helpers/tls.ts";
import { withTimeout } from "./helpers/util.ts";

const run = promisify(execFile);

/** A tlsnet listener whose conns go to node:http or node:http2 by ALPN. */
async function httpOverTlsnet(t: { after: (fn: () => unknown) => void }): Promise<{
  ln: TLSListener;
  h1: http.Server;
  h2: http2.Http2Server;
}> {
  const { leaf } = await pki();
  const reply =
    (proto: string) =>
    (
      req: http.IncomingMessage | http2.Http2ServerRequest,
      res: http.ServerResponse | http2.Http2ServerResponse,
    ) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => (body += c));
      req.on("end", () => res.end(`${proto} ${req.method} ${req.url} ${body}`));
    };
  const h1 = http.createServer(reply("h1") as http.RequestListener);
  const h2 = http2.createServer(
    reply("h2") as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  const serve = (server: http.Server | http2.Http2Server) => async (conn: TLSConn) => {
    const socket = conn.toSocket();
    server.emit("connection", socket);
    await once(socket, "close"); // the handler (and graceful drain) lasts as long as the HTTP conn
  };
  const ln = await tls.listen({
    addr: "127.0.0.1:0",
    certs: [leaf],
    alpnHandlers: { h2: serve(h2), "http/1.1": serve(h1) },
  });
  t.after(async () => {
    h1.closeAllConnections();
    await ln.close();
  });
  return { ln, h1, h2 };
}

test("node:https.request over a tlsnet conn (createConnection + toSocket)", async (t) => {
  const { ca } = await pki();
  const { ln } = await httpOverTlsnet(t);
  const conn = await tls.connect(`localhost:${ln.addr.port}`, {
    ca: ca.cert,
    alpnProtocols: ["http/1.1"],
    timeout: 5000,
  });
  await conn.write(""); // a no-op write: the conn is usable, then handed over
  const body = await withTimeout(
    new Promise<string>((resolve, reject) => {
      const req = http.request(
        { host: "localhost", path: "/x", method: "POST", createConnection: () => conn.toSocket() },
        (res) => {
          let b = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (b += c));
          res.on("end", () => resolve(b));
        },
      );
      req.on("error", reject);
      req.end("hi");
    }),
    5000,
    "https.request",
  );
  assert.equal(body, "h1 POST /x hi");
  const after = await conn.read().catch((e: unknown) => e);
  assert.ok(after instanceof ClosedError, "the conn is given away");
  assert.match((after as Error).message, /toSocket/);
});

test("node:http2.connect over a tlsnet conn (h2 by ALPN)", async (t) => {
  const { ca } = await pki();
  const { ln } = await httpOverTlsnet(t);
  const conn = await tls.connect(`localhost:${ln.addr.port}`, {
    ca: ca.cert,
    alpnProtocols: ["h2"],
    timeout: 5000,
  });
  assert.equal(conn.alpnProtocol, "h2");
  const session = http2.connect(`https://localhost:${ln.addr.port}`, {
    createConnection: () => conn.toSocket(),
  });
  t.after(() => session.destroy());
  const body = await withTimeout(
    new Promise<string>((resolve, reject) => {
      const req = session.request({ ":path": "/h2", ":method": "GET" });
      let b = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => (b += c));
      req.on("end", () => resolve(b));
      req.on("error", reject);
      req.end();
    }),
    5000,
    "http2 request",
  );
  assert.equal(body, "h2 GET /h2 ");
  session.close();
});

test("undici Client with a tlsnet connect function, keep-alive over one conn", async (t) => {
  const { ca } = await pki();
  const { ln } = await httpOverTlsnet(t);
  let dials = 0;
  const client = new Client(`https://localhost:${ln.addr.port}`, {
    connect: (opts, callback) => {
      dials++;
      tls
        .connect(`${opts.hostname}:${opts.port}`, {
          ca: ca.cert,
          alpnProtocols: ["http/1.1"],
          timeout: 5000,
        })
        .then(
          (conn) => callback(null, conn.toSocket()),
          (err: Error) => callback(err, null),
        );
    },
  });
  t.after(() => client.close());
  for (const path of ["/a", "/b", "/c"]) {
    const res = await withTimeout(client.request({ path, method: "GET" }), 5000, `undici ${path}`);
    assert.equal(await res.body.text(), `h1 GET ${path} `);
  }
  assert.equal(dials, 1, "keep-alive: one tlsnet conn served all three requests");
});

test("a tlsnet listener serves HTTP/2 and HTTP/1.1 to curl, chosen by ALPN", async (t) => {
  const { ca } = await pki();
  const { ln } = await httpOverTlsnet(t);
  const caFile = `${process.env.TMPDIR ?? "/tmp"}/tlsnet-http-ca-${process.pid}.pem`;
  const { writeFileSync, rmSync } = await import("node:fs");
  writeFileSync(caFile, ca.cert);
  t.after(() => rmSync(caFile, { force: true }));
  const curl = async (flag: string) => {
    try {
      const { stdout } = await run(
        "curl",
        [
          "-sS",
          flag,
          "--cacert",
          caFile,
          "-w",
          " %{http_version}",
          `https://localhost:${ln.addr.port}/c`,
        ],
        { timeout: 10_000 },
      );
      return stdout;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
  };
  const h2 = await curl("--http2");
  if (h2 === null) {
    t.skip("curl is not installed (.ci/run installs it)");
    return;
  }
  assert.equal(h2, "h2 GET /c  2");
  assert.equal(await curl("--http1.1"), "h1 GET /c  1.1");
});

test("toSocket() before a lazy handshake, or with a read pending, is a StateError", async (t) => {
  const { ca, leaf } = await pki();
  const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
  t.after(() => ln.close());
  const client = tls.connect(`localhost:${ln.addr.port}`, { ca: ca.cert, timeout: 5000 });
  const server = await ln.accept({ timeout: 5000 });
  t.after(() => server.close());
  assert.throws(() => server.toSocket(), StateError);
  await server.handshake({ timeout: 5000 });
  const c = await client;
  t.after(() => c.close());
  const pending = server.read();
  assert.throws(() => server.toSocket(), StateError);
  await c.write("x");
  assert.equal((await pending)?.toString(), "x");
  // Buffered bytes go back into the socket in order.
  await c.write("buffered");
  await withTimeout(
    (async () => {
      while (server.unreadBytes < 8) await new Promise((r) => setTimeout(r, 5));
    })(),
    3000,
    "bytes buffered",
  );
  const socket = server.toSocket();
  const [chunk] = (await once(socket, "data")) as [Buffer];
  assert.equal(chunk.toString(), "buffered");
  socket.destroy();
});
