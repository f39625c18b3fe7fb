/** Certificates and TLS listeners for tests, generated at test time with tlsnet/certs. */

import assert from "node:assert/strict";
import { type CA, createCA } from "../../src/certs/index.ts";
import {
  type TLSConfig,
  type TLSConn,
  type TLSListener,
  type TLSListenOptions,
  tls,
} from "../../src/index.ts";

export interface TestPKI {
  ca: CA;
  /** localhost + 127.0.0.1 + ::1, signed by `ca`. */
  leaf: { cert: string; key: string; chain: string };
}

let shared: Promise<TestPKI> | undefined;

/** One CA and localhost leaf per test process (generation takes milliseconds, but adds up). */
export function pki(): Promise<TestPKI> {
  shared ??= (async () => {
    const ca = await createCA();
    const leaf = await ca.issue({ names: ["localhost", "127.0.0.1", "::1"] });
    return { ca, leaf };
  })();
  return shared;
}

/** An echo server: every conn gets its bytes back, then a half-close at EOF. */
export async function echoServer(
  opts: Partial<TLSListenOptions> & { certs: TLSListenOptions["certs"] },
): Promise<TLSListener> {
  return tls.listen({
    addr: "127.0.0.1:0",
    handler: async (conn: TLSConn) => {
      for await (const chunk of conn) await conn.write(chunk);
      await conn.closeWrite();
    },
    ...opts,
  } as TLSListenOptions);
}

/**
 * Whether a conn to `address` with `cfg` resumes a session: connect, have one byte echoed (TLS
 * 1.3 tickets arrive after the handshake, with the data), close. The server must echo.
 */
export async function resumedOn(address: string, cfg: TLSConfig): Promise<boolean> {
  const conn = await tls.connect(address, cfg, { timeout: 5000 });
  try {
    await conn.write("x");
    assert.equal((await conn.readExactly(1, { timeout: 5000 })).toString(), "x");
    return conn.state().resumed;
  } finally {
    await conn.close();
  }
}

/** `localhost:PORT` for a listener. */
export function hostPort(ln: TLSListener, host = "localhost"): string {
  return `${host}:${ln.addr.port}`;
}

/** A handshaken TLS client conn and the server-side conn it is connected to (localhost cert). */
export async function tlsPair(): Promise<{
  client: TLSConn;
  server: TLSConn;
  close: () => Promise<void>;
}> {
  const { ca, leaf } = await pki();
  const ln = await tls.listen({ addr: "127.0.0.1:0", certs: [leaf] });
  const [client, server] = await Promise.all([
    tls.connect(hostPort(ln), { ca: ca.cert, timeout: 5000 }),
    ln.accept().then(async (c) => {
      await c.handshake({ timeout: 5000 });
      return c;
    }),
  ]);
  await ln.close();
  return {
    client,
    server,
    close: async () => {
      await Promise.all([client.close(), server.close()]);
    },
  };
}
