/**
 * Many HTTPS requests at once from plain sequential code: each request is an
 * ordinary async function; Promise.all runs fifty of them concurrently.
 * (A local server stands in for the internet.) Run: npx tsx examples/concurrent-https.ts
 */
import { tls } from "tlsnet";
import { createCA } from "tlsnet/certs";

const ca = await createCA();
const server = await tls.listen({
  addr: "127.0.0.1:0",
  certs: [await ca.issue({ names: ["localhost"] })],
  handler: async (conn) => {
    const path = (await conn.readLine())?.split(" ")[1] ?? "/";
    while ((await conn.readLine()) !== "") {} // skip the headers
    const body = `you asked for ${path}\n`;
    await conn.write(
      `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
  },
});

// Sessions resume across requests: one config, one session cache.
const config = tls.config({ ca: ca.cert, alpnProtocols: ["http/1.1"] });

async function get(path: string): Promise<string> {
  const conn = await tls.connect(`localhost:${server.addr.port}`, config, { timeout: 5000 });
  try {
    await conn.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    const status = await conn.readLine();
    let length = 0;
    for (let h = await conn.readLine(); h; h = await conn.readLine()) {
      const [name, value] = h.split(/:\s*/);
      if (name?.toLowerCase() === "content-length") length = Number(value);
    }
    return `${status} ${(await conn.readExactly(length)).toString().trim()}`;
  } finally {
    await conn.close();
  }
}

const t0 = performance.now();
const results = await Promise.all(Array.from({ length: 50 }, (_, i) => get(`/item/${i}`)));
console.log(
  results.slice(0, 3).join("\n"),
  `\n... ${results.length} responses in ${(performance.now() - t0).toFixed(0)} ms`,
);
await server.close();
