/** A connected pair of tlsnet Conns over real loopback TCP, and small test utilities. */
import { createHash } from "node:crypto";
import { type Conn, tcp } from "../../src/index.ts";

/** A client Conn and the server-side Conn it is connected to. Close with `close()`. */
export async function tcpPair(): Promise<{
  client: Conn;
  server: Conn;
  close: () => Promise<void>;
}> {
  const ln = await tcp.listen({ addr: "127.0.0.1:0" });
  const [client, server] = await Promise.all([tcp.connect(ln.addr.toString()), ln.accept()]);
  await ln.close();
  return {
    client,
    server,
    close: async () => {
      await Promise.all([client.close(), server.close()]);
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function sha256(...parts: Uint8Array[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

/** Resolves with how many ms `p` took to settle, and its outcome. */
export async function timed<T>(p: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const t0 = performance.now();
  try {
    const value = await p;
    return { ms: performance.now() - t0, value };
  } catch (error) {
    return { ms: performance.now() - t0, error };
  }
}

/** Fail the file's run if any promise rejection goes unhandled (checked in an `after` hook). */
export function failOnUnhandledRejections(after: (fn: () => void) => void): void {
  const unhandled: unknown[] = [];
  process.on("unhandledRejection", (err) => {
    unhandled.push(err);
  });
  after(() => {
    if (unhandled.length > 0) {
      throw new Error(`unhandled rejections: ${unhandled.map(String).join("; ")}`);
    }
  });
}
