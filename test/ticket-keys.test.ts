/**
 * Ticket keys for a fleet: `ticketKeys` as a list (the first encrypts; on the
 * node engine only the first is in force), validation, and rotation by
 * `listener.reload({ ticketKeys })` without a restart, and which resumptions bring a fresh
 * ticket (only those under a key that is no longer first, as node:tls). Real listeners on
 * loopback; the client's session cache is per server name ("localhost"), so a
 * ticket from one listener is offered to the next.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import * as nodeTls from "node:tls";
import { ConfigError, type TLSListener, tls } from "../src/index.ts";
import { echoServer, hostPort, pki, resumedOn } from "./helpers/tls.ts";

const nodeEngine = tls.backend().engine === "node";

describe("ticketKeys as a list", () => {
  test("wrong sizes, an empty list and non-Buffers are ConfigErrors naming the entry", () => {
    const bad: Array<[unknown, RegExp]> = [
      [[], /at least one/],
      [
        [randomBytes(48), randomBytes(32)],
        /ticketKeys\[1\] must be a Buffer of exactly 48 bytes.*got 32 bytes/,
      ],
      [[randomBytes(48), "key"], /ticketKeys\[1\].*got string/],
      [randomBytes(80), /^ticketKeys must be a Buffer of exactly 48 bytes.*got 80 bytes/],
    ];
    for (const [ticketKeys, re] of bad) {
      assert.throws(
        () => tls.config({ ticketKeys: ticketKeys as Buffer[] }),
        (e: unknown) =>
          e instanceof ConfigError && re.test(e.message) && /ticketKeys/.test(e.field ?? ""),
        String(re),
      );
    }
    const keys = [randomBytes(48), randomBytes(48)];
    const cfg = tls.config({ ticketKeys: keys });
    assert.equal(cfg.ticketKeys?.length, 2);
    keys[0]!.fill(0); // the config keeps its own copies
    assert.notDeepEqual(cfg.ticketKeys?.[0], keys[0]);
  });

  for (const maxVersion of ["TLSv1.3", "TLSv1.2"] as const) {
    test(`${maxVersion}: the first key encrypts: a ticket from [K1, K2] resumes where K1 is first`, async (t) => {
      const { ca, leaf } = await pki();
      const [k1, k2] = [randomBytes(48), randomBytes(48)];
      const a = await echoServer({ certs: [leaf], ticketKeys: [k1, k2], maxVersion });
      t.after(() => a.close());
      const b = await echoServer({ certs: [leaf], ticketKeys: [k1], maxVersion });
      t.after(() => b.close());
      const c = await echoServer({ certs: [leaf], ticketKeys: [k2, k1], maxVersion });
      t.after(() => c.close());
      const cfg = tls.config({ ca: ca.cert, maxVersion });
      assert.equal(await resumedOn(hostPort(a), cfg), false, "first contact: a full handshake");
      assert.equal(
        await resumedOn(hostPort(b), cfg),
        true,
        "b encrypts and decrypts with K1, as a does",
      );
      // c lists K1 second. A native engine decrypts with every listed key; node:tls
      // holds only the first, so a K1 ticket costs a full handshake there.
      assert.equal(await resumedOn(hostPort(c), cfg), !nodeEngine, "c has K1 only second");
    });
  }
});

describe("rotation with reload({ ticketKeys })", () => {
  test("new tickets use the new first key at once; established conns go on", async (t) => {
    const { ca, leaf } = await pki();
    const [k1, k2] = [randomBytes(48), randomBytes(48)];
    const ln = await echoServer({ certs: [leaf], ticketKeys: [k1] });
    t.after(() => ln.close());
    const peer = await echoServer({ certs: [leaf], ticketKeys: [k2] }); // another machine, already rotated
    t.after(() => peer.close());
    const cfg = tls.config({ ca: ca.cert });

    const open = await tls.connect(hostPort(ln), cfg, { timeout: 5000 });
    t.after(() => open.close());
    await open.write("before ");
    assert.equal((await open.readExactly(7, { timeout: 5000 })).toString(), "before ");
    assert.equal(
      await resumedOn(hostPort(ln), cfg),
      true,
      "the K1 ticket from the open conn resumes",
    );

    await ln.reload({ ticketKeys: [k2, k1] });
    // The ticket in the client's cache is a K1 ticket: on node, K1 is no longer in force.
    assert.equal(await resumedOn(hostPort(ln), cfg), !nodeEngine, "old ticket after the rotation");
    // That handshake got a ticket under K2, which the other K2 server accepts.
    assert.equal(await resumedOn(hostPort(peer), cfg), true, "the new ticket is encrypted with K2");
    assert.equal(
      await resumedOn(hostPort(ln), cfg),
      true,
      "and the rotated listener resumes it too",
    );

    await open.write("after");
    assert.equal((await open.readExactly(5, { timeout: 5000 })).toString(), "after");
  });

  test("a bad key list in reload is refused and the old keys stay in force", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await echoServer({ certs: [leaf], ticketKeys: [randomBytes(48)] });
    t.after(() => ln.close());
    const cfg = tls.config({ ca: ca.cert });
    await resumedOn(hostPort(ln), cfg);
    await assert.rejects(
      ln.reload({ ticketKeys: [randomBytes(48), Buffer.alloc(47)] }),
      (e: unknown) => e instanceof ConfigError && /ticketKeys\[1\]/.test(e.message),
    );
    assert.equal(await resumedOn(hostPort(ln), cfg), true, "tickets of the old key still resume");
  });
});

describe("tickets on a TLS 1.3 resumption", () => {
  /** Resume with a node:tls client; how many tickets the resumed conn brought. */
  async function ticketsOnResume(first: TLSListener, second: TLSListener): Promise<number> {
    const { ca } = await pki();
    const connect = (ln: TLSListener, session?: Buffer) =>
      new Promise<{ tickets: Buffer[]; reused: boolean }>((resolve, reject) => {
        const tickets: Buffer[] = [];
        const s = nodeTls.connect({
          host: "127.0.0.1",
          port: ln.addr.port,
          servername: "localhost",
          ca: ca.cert,
          ...(session ? { session } : {}),
        });
        s.on("session", (t: Buffer) => tickets.push(t));
        s.on("error", reject);
        // One echo: the server's tickets come right after its Finished, before the echo.
        s.once("secureConnect", () => s.write("x"));
        s.once("data", () => {
          resolve({ tickets, reused: s.isSessionReused() });
          s.destroy();
        });
      });
    const full = await connect(first);
    assert.ok(full.tickets.length > 0, "the full handshake brought tickets");
    const again = await connect(second, full.tickets.at(-1));
    assert.equal(again.reused, true, "the second conn resumed");
    return again.tickets.length;
  }

  test("no new ticket while the ticket's key is still first, default keys included (as node:tls)", async (t) => {
    const { leaf } = await pki();
    const plain = await echoServer({ certs: [leaf] });
    t.after(() => plain.close());
    assert.equal(await ticketsOnResume(plain, plain), 0, "default ticket keys");
    const k1 = randomBytes(48);
    const keyed = await echoServer({ certs: [leaf], ticketKeys: [k1, randomBytes(48)] });
    t.after(() => keyed.close());
    assert.equal(await ticketsOnResume(keyed, keyed), 0, "ticketKeys [K1, K2]");
  });

  test("a fresh ticket when the ticket's key is listed but no longer first (native engine)", {
    skip: nodeEngine
      ? "node:tls holds only the first key: such a ticket is a full handshake"
      : false,
  }, async (t) => {
    const { leaf } = await pki();
    const [k1, k2] = [randomBytes(48), randomBytes(48)];
    const old = await echoServer({ certs: [leaf], ticketKeys: [k1] });
    t.after(() => old.close());
    const rotated = await echoServer({ certs: [leaf], ticketKeys: [k2, k1] });
    t.after(() => rotated.close());
    assert.equal(await ticketsOnResume(old, rotated), 1, "the client moves to K2");
  });
});
