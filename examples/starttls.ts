/**
 * STARTTLS: a plain line protocol that upgrades to TLS in the middle of the conn,
 * the way SMTP, IMAP and XMPP do. Run: npx tsx examples/starttls.ts
 */
import { tcp, tls } from "tlsnet";
import { createCA } from "tlsnet/certs";

const ca = await createCA();
const leaf = await ca.issue({ names: ["localhost"] });

const server = await tcp.listen({
  addr: "127.0.0.1:0",
  handler: async (plain) => {
    await plain.write("220 ready\r\n");
    if ((await plain.readLine()) !== "STARTTLS") return;
    await plain.write("220 go ahead\r\n");
    const conn = tls.server(plain, { certs: [leaf] }); // the handshake runs on first use
    const line = await conn.readLine();
    await conn.write(`250 got "${line}" over ${conn.state().version}\r\n`);
  },
});

const plain = await tcp.connect(`localhost:${server.addr.port}`);
console.log(await plain.readLine());
await plain.write("STARTTLS\r\n");
console.log(await plain.readLine());
const conn = tls.client(plain, { ca: ca.cert }); // verifies "localhost", the dialed name
await conn.write("secret\r\n");
console.log(await conn.readLine());
await conn.close();
await server.close();
