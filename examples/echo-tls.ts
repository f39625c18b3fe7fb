/**
 * The README example: a TLS line-echo server and a verified client, with a dev CA.
 * Run: npx tsx examples/echo-tls.ts
 */
import { tls } from "tlsnet";
import { createCA } from "tlsnet/certs";

const ca = await createCA();
const server = await tls.listen({
  addr: "127.0.0.1:0",
  certs: [await ca.issue({ names: ["localhost"] })],
  handler: async (conn) => {
    for (let line = await conn.readLine(); line !== null; line = await conn.readLine()) {
      await conn.write(`echo: ${line}\n`);
    }
  },
});
const conn = await tls.connect(`localhost:${server.addr.port}`, { ca: ca.cert, timeout: 5000 });
await conn.write("hello\n");
console.log(await conn.readLine(), conn.state().version); // "echo: hello" "TLSv1.3"
await conn.close();
await server.close();
