/**
 * The Bun peer of the servers benchmark (bench/servers.ts): `Bun.listen` with
 * TLS, one set of handlers for all sockets, the way Bun's TCP docs show.
 *
 *   bun bench/peers/bun-server.js <sink|echo> CERT.pem KEY.pem
 *
 * Listens on 127.0.0.1 on a free port, prints {"port":N} on stdout, exits when
 * its standard input closes (the benchmark went away).
 *
 * - sink: count what arrives, answer "<n>\n" after the client's EOF, close.
 * - echo: write back what arrives; what the socket did not take waits for drain.
 *
 * Plain JavaScript, so that the project's tsc (Node types) leaves it alone.
 */
/* global Bun */
const [mode, certFile, keyFile] = process.argv.slice(2);
if (mode !== "sink" && mode !== "echo") throw new Error(`mode must be sink or echo, not ${mode}`);

/** Write what the socket takes; keep the rest for drain. */
function send(socket, data) {
  if (socket.data.pending) {
    socket.data.pending = Buffer.concat([socket.data.pending, data]);
    return;
  }
  const n = socket.write(data);
  if (n < data.length) socket.data.pending = data.subarray(Math.max(0, n));
}

const listener = Bun.listen({
  hostname: "127.0.0.1",
  port: 0,
  allowHalfOpen: true, // the sink answers after the client's EOF
  tls: { cert: Bun.file(certFile), key: Bun.file(keyFile) },
  socket: {
    open(socket) {
      socket.data = { n: 0, pending: null };
    },
    data(socket, data) {
      if (mode === "sink") socket.data.n += data.length;
      else send(socket, data);
    },
    drain(socket) {
      const p = socket.data.pending;
      if (!p) return;
      socket.data.pending = null;
      send(socket, p);
    },
    end(socket) {
      if (mode === "sink") socket.end(`${socket.data.n}\n`);
      else socket.end();
    },
    error() {},
  },
});

process.stdout.write(`${JSON.stringify({ port: listener.port })}\n`);
const lifetime = setTimeout(() => process.exit(0), 30 * 60_000);
for await (const _ of Bun.stdin.stream()) {
  // nothing is sent; the loop ends when stdin closes
}
clearTimeout(lifetime);
process.exit(0);
