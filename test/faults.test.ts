/**
 * Faults on established connections, TCP and TLS: a reset mid-transfer, a peer
 * that vanishes without close_notify, writes to a closed peer, and close()
 * racing a pending read and write. Every case must end in a typed error (or a
 * documented EOF), never a hang or a crash.
 */
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, describe, test } from "node:test";
import {
  ClosedError,
  type Conn,
  ConnectionResetError,
  TLSConn,
  TLSError,
  TlsnetError,
  UnexpectedEOFError,
} from "../src/index.ts";
import { tcpPair } from "./helpers/pair.ts";
import { tlsPair } from "./helpers/tls.ts";
import { failOnUnhandledRejections, sleep, timed } from "./helpers/util.ts";

failOnUnhandledRejections(after);

type Kind = "tcp" | "tls";
const KINDS: Kind[] = ["tcp", "tls"];
const MiB = 1024 * 1024;

/** A connected client/server pair over loopback (TLS: both handshaken). */
function connPair(kind: Kind): Promise<{ client: Conn; server: Conn; close: () => Promise<void> }> {
  return kind === "tcp" ? tcpPair() : tlsPair();
}

/** The TCP socket under a conn (under TLS too). */
function tcpSocketOf(conn: Conn): Socket {
  return conn instanceof TLSConn ? conn.netConn.socket : conn.socket;
}

function isReset(err: unknown): boolean {
  return (
    err instanceof ConnectionResetError || (err instanceof TLSError && err.reason === "ECONNRESET")
  );
}

function show(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const reason = err instanceof TLSError && err.reason ? ` [${err.reason}]` : "";
  return `${err.name}${reason}: ${err.message}`;
}

/** Write `total` bytes in 1 MiB writes. */
async function pump(conn: Conn, total: number): Promise<void> {
  const chunk = Buffer.alloc(MiB, 0x5a);
  for (let sent = 0; sent < total; sent += MiB) await conn.write(chunk);
}

/** Read until at least `n` bytes arrived (or EOF). */
async function drain(conn: Conn, n: number): Promise<number> {
  let got = 0;
  while (got < n) {
    const b = await conn.read(256 * 1024);
    if (b === null) break;
    got += b.length;
  }
  return got;
}

describe("(a) the peer resets during a 64 MiB transfer", () => {
  for (const kind of KINDS) {
    test(`${kind}: receiver resets (RST) after 8 MiB; the sender's pending write and read reject`, {
      timeout: 20_000,
    }, async (t) => {
      const { client, server, close } = await connPair(kind);
      try {
        const writing = pump(client, 64 * MiB);
        const reading = client.read();
        writing.catch(() => {});
        reading.catch(() => {});
        const got = await drain(server, 8 * MiB);
        assert.ok(got >= 8 * MiB, "the transfer was under way");
        tcpSocketOf(server).resetAndDestroy();
        const w = await timed(writing, 5000, "pending write after RST");
        const r = await timed(reading, 5000, "pending read after RST");
        t.diagnostic(`${kind} sender: write → ${show(w.error)} (${Math.round(w.ms)} ms)`);
        t.diagnostic(`${kind} sender: read → ${show(r.error)}`);
        assert.ok(
          w.error instanceof TlsnetError,
          `write rejects with a TlsnetError: ${show(w.error)}`,
        );
        assert.ok(isReset(w.error), `write: ConnectionResetError, got ${show(w.error)}`);
        assert.ok(
          r.error instanceof TlsnetError,
          `read rejects with a TlsnetError: ${show(r.value)}`,
        );
        assert.ok(isReset(r.error), `read: ConnectionResetError, got ${show(r.error)}`);
        assert.equal(client.isOpen, false, "a reset conn is not open");
        const later = await timed(client.write("x"));
        assert.ok(isReset(later.error), `later writes keep failing: ${show(later.error)}`);
      } finally {
        await close();
      }
    });

    test(`${kind}: the sender's peer resets while the sender writes 64 MiB; sender-side server ops reject`, {
      timeout: 20_000,
    }, async (t) => {
      const { client, server, close } = await connPair(kind);
      try {
        // The server sends; the client reads 8 MiB, then resets.
        const writing = pump(server, 64 * MiB);
        const reading = server.read();
        writing.catch(() => {});
        reading.catch(() => {});
        await drain(client, 8 * MiB);
        tcpSocketOf(client).resetAndDestroy();
        const w = await timed(writing, 5000, "server's pending write after RST");
        const r = await timed(reading, 5000, "server's pending read after RST");
        t.diagnostic(`${kind} server: write → ${show(w.error)}; read → ${show(r.error)}`);
        assert.ok(isReset(w.error), `write: ConnectionResetError, got ${show(w.error)}`);
        assert.ok(isReset(r.error), `read: ConnectionResetError, got ${show(r.error)}`);
      } finally {
        await close();
      }
    });
  }
});

describe("(b) the peer closes without close_notify (TCP socket destroyed)", () => {
  for (const kind of KINDS) {
    test(`${kind}: the reader gets EOF (read → null), then readExactly → UnexpectedEOFError`, {
      timeout: 10_000,
    }, async (t) => {
      const { client, server, close } = await connPair(kind);
      try {
        // A round trip both ways first: everything the server sent (TLS 1.3 session
        // tickets included) has been read by the client, so its close is a plain FIN.
        await client.write("ping");
        assert.equal((await server.readExactly(4, { timeout: 5000 })).toString(), "ping");
        await server.write("pong");
        assert.equal((await client.readExactly(4, { timeout: 5000 })).toString(), "pong");
        const reading = server.read();
        reading.catch(() => {});
        tcpSocketOf(client).destroy(); // FIN without a TLS close_notify
        const r = await timed(reading, 5000, "read after the peer vanished");
        t.diagnostic(`${kind}: read → ${r.error === undefined ? String(r.value) : show(r.error)}`);
        assert.equal(r.error, undefined, `no error: ${show(r.error)}`);
        assert.equal(r.value, null, "a TCP FIN without close_notify reads as EOF");
        assert.equal(await server.read(), null, "EOF is sticky");
        const exact = await timed(server.readExactly(1));
        t.diagnostic(`${kind}: readExactly(1) → ${show(exact.error)}`);
        assert.ok(exact.error instanceof UnexpectedEOFError, show(exact.error));
        // The side whose socket was destroyed underneath: its own reads end too.
        const own = await timed(client.read(), 3000, "read on the destroyed side");
        t.diagnostic(
          `${kind}: the destroyed side reads → ${own.error === undefined ? String(own.value) : show(own.error)}`,
        );
        assert.ok(own.value === null || own.error instanceof TlsnetError);
      } finally {
        await close();
      }
    });

    test(`${kind}: destroyed with unread bytes (kernel sends RST) → ConnectionResetError`, {
      timeout: 10_000,
    }, async (t) => {
      const { client, server, close } = await connPair(kind);
      try {
        client.limit(1); // stop reading from the socket after the first chunk
        await server.write(Buffer.alloc(256 * 1024, 3));
        await sleep(100);
        const reading = server.read();
        reading.catch(() => {});
        tcpSocketOf(client).destroy();
        const r = await timed(reading, 5000, "read after the peer vanished with unread data");
        t.diagnostic(`${kind}: read → ${r.error === undefined ? String(r.value) : show(r.error)}`);
        assert.ok(
          isReset(r.error),
          `ConnectionResetError, got ${r.error === undefined ? String(r.value) : show(r.error)}`,
        );
      } finally {
        await close();
      }
    });
  }
});

describe("(c) a write to a peer that closed", () => {
  for (const kind of KINDS) {
    for (const how of ["close()", "TCP destroy"] as const) {
      test(`${kind}: peer ${how}; writes end in a typed error, no crash`, {
        timeout: 10_000,
      }, async (t) => {
        const { client, server, close } = await connPair(kind);
        try {
          if (how === "close()") await server.close();
          else tcpSocketOf(server).destroy();
          await sleep(50);
          const chunk = Buffer.alloc(64 * 1024, 1);
          let writes = 0;
          const result = await timed(
            (async () => {
              for (;;) {
                await client.write(chunk);
                writes++;
                await sleep(5);
              }
            })(),
            5000,
            "writes to a closed peer",
          );
          t.diagnostic(
            `${kind}, peer ${how}: ${writes} writes accepted, then ${show(result.error)}`,
          );
          assert.ok(
            result.error instanceof ConnectionResetError || result.error instanceof ClosedError,
            `ConnectionResetError or ClosedError, got ${show(result.error)}`,
          );
        } finally {
          await close();
        }
      });
    }
  }
});

describe("(d) close() from another task during a pending read and a pending write", () => {
  for (const kind of KINDS) {
    test(`${kind}: both reject with ClosedError promptly`, { timeout: 10_000 }, async (t) => {
      const { client, server, close } = await connPair(kind);
      try {
        // The server never reads past its 4 MiB buffering limit: 64 MiB cannot be accepted.
        const writing = client.write(Buffer.alloc(64 * MiB, 2));
        const reading = client.read();
        writing.catch(() => {});
        reading.catch(() => {});
        await sleep(300);
        assert.ok(client.unsentBytes > 0, "the write is pending under backpressure");
        const t0 = performance.now();
        const closing = client.close();
        const [w, r] = await Promise.all([
          timed(writing, 2000, "pending write after close()"),
          timed(reading, 2000, "pending read after close()"),
        ]);
        const settled = performance.now() - t0;
        t.diagnostic(
          `${kind}: write → ${show(w.error)}; read → ${show(r.error)}; both within ${settled.toFixed(1)} ms`,
        );
        assert.ok(w.error instanceof ClosedError, `write: ClosedError, got ${show(w.error)}`);
        assert.ok(r.error instanceof ClosedError, `read: ClosedError, got ${show(r.error)}`);
        assert.ok(settled < 500, `prompt: ${settled} ms`);
        const c = await timed(closing, 5000, "close() itself");
        t.diagnostic(
          `${kind}: close() resolved after ${Math.round(c.ms)} ms (unflushed data: linger)`,
        );
        const after = await timed(client.read());
        assert.ok(after.error instanceof ClosedError, "reads after close reject with ClosedError");
        const rest = await timed(drain(server, Number.MAX_SAFE_INTEGER), 5000, "peer sees the end");
        t.diagnostic(
          `${kind}: the peer read ${rest.value ?? 0} bytes, then ${rest.error === undefined ? "EOF" : show(rest.error)}`,
        );
        // The peer sees the end: EOF after part of the cut-off 64 MiB write (read → null),
        // or a reset if the linger timer cut the flush short; never an untyped error.
        if (rest.error === undefined) {
          const got = rest.value ?? 0;
          assert.ok(got > 0 && got < 64 * MiB, `peer read part of the aborted write: ${got} bytes`);
        } else {
          assert.ok(
            isReset(rest.error),
            `peer: EOF or ConnectionResetError, got ${show(rest.error)}`,
          );
        }
      } finally {
        await close();
      }
    });
  }
});
