/**
 * Mutual TLS: the server requires and verifies a client certificate; the handler
 * sees who the client is. Run: npx tsx examples/mtls.ts
 */
import { tls } from "tlsnet";
import { createCA } from "tlsnet/certs";

const ca = await createCA();
const server = await tls.listen({
  addr: "127.0.0.1:0",
  certs: [await ca.issue({ names: ["localhost"] })],
  clientAuth: "require-and-verify",
  clientCa: ca.cert,
  handler: async (conn) => {
    const who = conn.peerCertificate()?.subject;
    await conn.write(`hello ${who}, verified=${conn.state().verified}\n`);
  },
  onError: (err, { remoteAddr }) => console.log(`refused ${remoteAddr}: ${err.message}`),
});
const addr = `localhost:${server.addr.port}`;

const alice = await ca.issue({ names: ["alice"], client: true });
const conn = await tls.connect(addr, { ca: ca.cert, certs: [alice] });
console.log(await conn.readLine());
await conn.close();

// Without a certificate the server refuses; under TLS 1.3 the client learns on its first read.
const anonymous = await tls.connect(addr, { ca: ca.cert });
console.log(await anonymous.readLine().catch((err: Error) => `client: ${err.message}`));
await anonymous.close();
await server.close();
