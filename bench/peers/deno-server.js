/**
 * The Deno peer of the servers benchmark (bench/servers.ts): `Deno.listenTls`
 * and a task per conn with `conn.read` / `conn.write` over one buffer, the
 * plain Deno.Conn API.
 *
 *   deno run --allow-net=127.0.0.1 --allow-read=DIR bench/peers/deno-server.js <sink|echo> CERT.pem KEY.pem
 *
 * Listens on 127.0.0.1 on a free port, prints {"port":N} on stdout, exits when
 * its standard input closes (the benchmark went away).
 *
 * - sink: read to EOF, answer "<n>\n", close.
 * - echo: write back what arrives.
 *
 * Plain JavaScript, so that the project's tsc (Node types) leaves it alone.
 */
/* global Deno */
const [mode, certFile, keyFile] = Deno.args;
if (mode !== "sink" && mode !== "echo") throw new Error(`mode must be sink or echo, not ${mode}`);

async function writeAll(conn, data) {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

async function handle(conn) {
  const buf = new Uint8Array(mode === "sink" ? 256 * 1024 : 16 * 1024);
  try {
    if (mode === "sink") {
      let total = 0;
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        total += n;
      }
      await writeAll(conn, new TextEncoder().encode(`${total}\n`));
    } else {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        await writeAll(conn, buf.subarray(0, n));
      }
    }
  } catch {
    // resets at the end of a run are expected
  } finally {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

const listener = Deno.listenTls({
  hostname: "127.0.0.1",
  port: 0,
  cert: Deno.readTextFileSync(certFile),
  key: Deno.readTextFileSync(keyFile),
});
console.log(JSON.stringify({ port: listener.addr.port }));

const lifetime = setTimeout(() => Deno.exit(0), 30 * 60_000);
(async () => {
  for await (const _ of Deno.stdin.readable) {
    // nothing is sent; the loop ends when stdin closes
  }
  clearTimeout(lifetime);
  Deno.exit(0);
})();

for await (const conn of listener) handle(conn);
