/**
 * Benchmark server, one per (implementation, transport, mode), started by
 * bench/run.ts in its own process.
 *
 *   node --import tsx bench/server.ts <tlsnet|tlsnet-await|node|node-await> <tls|tcp> <discard|source|echo|hold>
 *
 * Started by bench/run.ts with an IPC channel, or by bench/servers.ts without
 * one (then it prints {"port":N} on stdout and exits when stdin closes; under
 * --expose-gc, SIGUSR2 collects garbage and prints its memory as a line).
 *
 * Modes, the same wire behaviour for both implementations:
 * - discard: read to EOF, answer the byte count as a decimal line, close.
 * - source:  read an 8-byte big-endian count, send that many bytes in 256 KiB
 *            writes, half-close, wait for the client's EOF.
 * - echo:    echo everything (ping-pong).
 * - hold:    keep the connection until the client ends it (handshakes, idle memory).
 *
 * The tlsnet side is written the way the API docs show (handler + await; echo is
 * `conn.copyTo(conn)`, as Go's is `io.Copy(c, c)`); the node side the idiomatic event way
 * (`socket.pipe(socket)`, 'data'/'end', write + 'drain'). Two variants show what the await
 * style itself costs: "tlsnet-await" echoes with `for await` + `await conn.write`, and
 * "node-await" is node:tls written that way (`for await` over the socket).
 * @module
 */
import { once } from "node:events";
import * as net from "node:net";
import * as nodeTls from "node:tls";
import type { Conn } from "../src/index.ts";
import {
  cpuNow,
  dieOnError,
  type Impl,
  loadCerts,
  loadLib,
  memoryNow,
  type ParentMessage,
  patternBuffer,
  type ServerMode,
  send,
  type Transport,
  WRITE_SIZE,
} from "./common.ts";

/**
 * "node-await": node:tls again, read with `for await` as an await API is used (no pipe);
 * "tlsnet-await": tlsnet with its echo written as that loop rather than copyTo().
 */
type ServerImpl = Impl | "node-await" | "tlsnet-await";
const [impl, transport, mode] = process.argv.slice(2) as [ServerImpl, Transport, ServerMode];
dieOnError(`server ${impl}/${transport}/${mode}`);

const certs = loadCerts();
const { tcp, tls } = await loadLib();
const block = patternBuffer(WRITE_SIZE, 7);

// ---------------------------------------------------------------- tlsnet

async function tlsnetHandler(conn: Conn): Promise<void> {
  switch (mode) {
    case "discard": {
      let n = 0;
      for await (const chunk of conn) n += chunk.length;
      await conn.write(`${n}\n`);
      return;
    }
    case "source": {
      const header = await conn.readExactly(8);
      let left = Number(header.readBigUInt64BE(0));
      while (left > 0) {
        const part = left >= block.length ? block : block.subarray(0, left);
        await conn.write(part);
        left -= part.length;
      }
      await conn.closeWrite();
      while ((await conn.read()) !== null) {}
      return;
    }
    case "echo": {
      if (impl === "tlsnet-await") {
        for await (const chunk of conn) await conn.write(chunk);
        return;
      }
      // What node's `socket.pipe(socket)` and Go's io.Copy do: every chunk back as it comes.
      await conn.copyTo(conn);
      return;
    }
    case "hold": {
      while ((await conn.read()) !== null) {}
      return;
    }
  }
}

async function startTlsnet(): Promise<{ port: number; close: () => Promise<void> }> {
  const onError = () => {}; // resets at the end of a round are expected
  let ln: { addr: { port: number }; close(): Promise<void> };
  if (transport === "tls") {
    ln = await tls.listen({
      addr: "127.0.0.1:0",
      certs: [{ cert: certs.cert, key: certs.key }],
      handler: tlsnetHandler,
      onError,
      backlog: 4096,
    });
  } else {
    ln = await tcp.listen({ addr: "127.0.0.1:0", handler: tlsnetHandler, onError, backlog: 4096 });
  }
  return { port: ln.addr.port, close: () => ln.close() };
}

// ---------------------------------------------------------------- node

function nodeHandler(socket: net.Socket): void {
  socket.on("error", () => {});
  switch (mode) {
    case "discard": {
      let n = 0;
      socket.on("data", (chunk: Buffer) => {
        n += chunk.length;
      });
      socket.on("end", () => socket.end(`${n}\n`));
      return;
    }
    case "source": {
      let header = Buffer.alloc(0);
      const onHeader = (chunk: Buffer) => {
        header = Buffer.concat([header, chunk]);
        if (header.length < 8) return;
        socket.off("data", onHeader);
        socket.on("data", () => {});
        let left = Number(header.readBigUInt64BE(0));
        const pump = () => {
          while (left > 0) {
            const part = left >= block.length ? block : block.subarray(0, left);
            left -= part.length;
            if (!socket.write(part)) {
              socket.once("drain", pump);
              return;
            }
          }
          socket.end();
        };
        pump();
      };
      socket.on("data", onHeader);
      return;
    }
    case "echo":
      socket.pipe(socket);
      return;
    case "hold":
      socket.resume();
      socket.on("end", () => socket.end());
      return;
  }
}

/**
 * The node side written with await, the shape of tlsnet's handler: node:tls's own async
 * iterator (the stream stays open after it ends, so that the answer can follow) and a write
 * that waits for "drain" only when node asks to. What async/await costs on node:tls itself.
 */
async function nodeAwaitHandler(socket: net.Socket): Promise<void> {
  socket.on("error", () => {});
  const chunks = (): AsyncIterable<Buffer> => socket.iterator({ destroyOnReturn: false });
  const write = async (b: Buffer) => {
    if (!socket.write(b)) await once(socket, "drain");
  };
  try {
    switch (mode) {
      case "discard": {
        let n = 0;
        for await (const chunk of chunks()) n += chunk.length;
        socket.end(`${n}\n`);
        return;
      }
      case "source": {
        const it = chunks()[Symbol.asyncIterator]();
        let header = Buffer.alloc(0);
        while (header.length < 8) {
          const { value, done } = await it.next();
          if (done) return;
          header = Buffer.concat([header, value]);
        }
        let left = Number(header.readBigUInt64BE(0));
        while (left > 0) {
          const part = left >= block.length ? block : block.subarray(0, left);
          left -= part.length;
          await write(part);
        }
        socket.end();
        while (!(await it.next()).done) {}
        return;
      }
      case "echo":
        for await (const chunk of chunks()) await write(chunk);
        socket.end();
        return;
      case "hold":
        for await (const _ of chunks()) {
        }
        socket.end();
        return;
    }
  } catch {
    socket.destroy(); // a reset: the iterator throws
  }
}

async function startNode(): Promise<{ port: number; close: () => Promise<void> }> {
  // allowHalfOpen: the discard server answers after the client's EOF.
  const handler = impl === "node-await" ? (s: net.Socket) => void nodeAwaitHandler(s) : nodeHandler;
  const server =
    transport === "tls"
      ? nodeTls.createServer({ cert: certs.cert, key: certs.key, allowHalfOpen: true }, handler)
      : net.createServer({ allowHalfOpen: true }, handler);
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0, backlog: 4096 }, () => resolve());
  });
  const addr = server.address() as net.AddressInfo;
  return {
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        setTimeout(resolve, 200).unref();
      }),
  };
}

// ---------------------------------------------------------------- control

const srv = impl.startsWith("tlsnet") ? await startTlsnet() : await startNode();
if (!process.send) {
  // Started without an IPC channel (bench/servers.ts, any Node binary): say the
  // port on stdout, and exit when stdin closes (the benchmark went away).
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("error", () => process.exit(0));
  process.stdin.resume();
  process.stdout.write(`${JSON.stringify({ port: srv.port })}\n`);
  setTimeout(() => process.exit(0), 30 * 60_000).unref();
  // Under --expose-gc (the servers benchmark's memory workload): on SIGUSR2,
  // collect garbage and print process.memoryUsage() as a {"type":"memory"} line.
  if ((globalThis as { gc?: () => void }).gc) {
    process.on("SIGUSR2", () => {
      void memoryNow().then((m) => process.stdout.write(`${JSON.stringify(m)}\n`));
    });
  }
} else {
  process.on("message", (raw: ParentMessage) => {
    void (async () => {
      if (raw.type === "memory") {
        await send(await memoryNow());
      } else if (raw.type === "cpu") {
        await send(cpuNow());
      } else if (raw.type === "exit") {
        await Promise.race([srv.close(), new Promise((r) => setTimeout(r, 500))]);
        process.exit(0); // also writes a --cpu-prof profile
      }
    })();
  });
  await send({ type: "ready", port: srv.port });
}
