/** Server features: client-auth modes, reload and watch, ALPN handlers, graceful close, resumption. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { createCA } from "../src/certs/index.ts";
import {
  type ClientAuth,
  ConfigError,
  DialError,
  TLSError,
  type TlsnetError,
  tls,
} from "../src/index.ts";
import { echoServer, hostPort, pki, resumedOn } from "./helpers/tls.ts";
import { poll, sleep, until } from "./helpers/util.ts";

describe("client authentication (Go's five modes)", async () => {
  const { ca, leaf } = await pki();
  const stranger = await createCA();
  const clientCerts = {
    none: undefined,
    unknown: await stranger.issue({ names: ["client.test"], client: true }),
    trusted: await ca.issue({ names: ["client.test"], client: true }),
  };
  // Go's semantics: which client certificates each mode accepts.
  const accepts: Record<ClientAuth, Record<keyof typeof clientCerts, boolean>> = {
    none: { none: true, unknown: true, trusted: true },
    request: { none: true, unknown: true, trusted: true },
    "require-any": { none: false, unknown: true, trusted: true },
    "verify-if-given": { none: true, unknown: false, trusted: true },
    "require-and-verify": { none: false, unknown: false, trusted: true },
  };
  for (const maxVersion of ["TLSv1.3", "TLSv1.2"] as const) {
    for (const [mode, row] of Object.entries(accepts) as Array<
      [ClientAuth, (typeof accepts)[ClientAuth]]
    >) {
      for (const [kind, ok] of Object.entries(row) as Array<[keyof typeof clientCerts, boolean]>) {
        test(`${maxVersion} ${mode}, client cert ${kind}: ${ok ? "accepted" : "rejected"}`, async (t) => {
          const errors: TlsnetError[] = [];
          const seen: Array<{ verified: boolean; peer: string | undefined }> = [];
          const ln = await tls.listen({
            addr: "127.0.0.1:0",
            certs: [leaf],
            clientAuth: mode,
            clientCa: ca.cert,
            maxVersion,
            onError: (e) => errors.push(e as TlsnetError),
            handler: async (conn) => {
              const s = conn.state();
              seen.push({ verified: s.verified, peer: s.peerCertificates[0]?.subject });
              await conn.write("welcome\n");
              await conn.readAll();
            },
          });
          t.after(() => ln.close()); // also when an assertion fails, so the process can exit
          const cert = clientCerts[kind];
          const outcome = await (async () => {
            const conn = await tls.connect(hostPort(ln), {
              ca: ca.cert,
              ...(cert ? { certs: [cert] } : {}),
            });
            try {
              return await conn.readLine({ timeout: 5000 }); // TLS 1.3: a rejection shows up here
            } finally {
              await conn.close();
            }
          })().catch((e: unknown) => e);
          if (ok) {
            assert.equal(outcome, "welcome", String(outcome));
            await until(() => seen.length > 0, "the handler to see the conn", 3000);
            const sentCert = cert !== undefined && mode !== "none";
            assert.equal(seen[0]?.peer, sentCert ? "CN=client.test, O=tlsnet" : undefined);
            const verified =
              kind === "trusted" && (mode === "verify-if-given" || mode === "require-and-verify");
            assert.equal(seen[0]?.verified, verified);
          } else {
            assert.ok(outcome !== "welcome", "the client must not be served");
            await until(() => errors.length > 0, "onError", 3000);
            const why = errors[0]?.message ?? "";
            if (kind === "none") {
              assert.match(why, /did not provide a certificate|certificate/i, why);
              // The client is told why, at the handshake or its first read.
              assert.ok(outcome instanceof TLSError, String(outcome));
              assert.match((outcome as TLSError).message, /requires? a client certificate/);
            } else {
              assert.match(why, /client certificate .* signed by an unknown authority/, why);
            }
            assert.equal(seen.length, 0);
            assert.equal(ln.stats().handshakeFailures, 1);
          }
        });
      }
    }
  }
});

describe("reload and watch", () => {
  test("reload: old conns keep working, new handshakes get the new cert, a bad reload changes nothing", async (t) => {
    const ca = await createCA();
    const first = await ca.issue({ names: ["localhost"], commonName: "first" });
    const second = await ca.issue({ names: ["localhost"], commonName: "second" });
    const ln = await echoServer({ certs: [first] });
    t.after(() => ln.close());
    const cfg = tls.config({ ca: ca.cert, sessionCache: false });
    const old = await tls.connect(hostPort(ln), cfg);
    t.after(() => old.close());
    assert.match(old.peerCertificate()?.subject ?? "", /CN=first/);

    await ln.reload({ certs: [second] });
    await old.write("still here");
    assert.equal((await old.readExactly(10)).toString(), "still here");
    const fresh = await tls.connect(hostPort(ln), cfg);
    t.after(() => fresh.close());
    assert.match(fresh.peerCertificate()?.subject ?? "", /CN=second/);
    await fresh.close();

    await assert.rejects(
      ln.reload({ certs: [{ cert: first.cert, key: second.key }] }),
      ConfigError,
    );
    const after = await tls.connect(hostPort(ln), cfg);
    t.after(() => after.close());
    assert.match(after.peerCertificate()?.subject ?? "", /CN=second/, "old config still in force");
    await after.close();
    await old.close();
    await ln.close();
  });

  test("watch: a certificate replaced by rename is picked up; a broken file keeps the old one", async (t) => {
    const ca = await createCA();
    const dir = await mkdtemp(join(tmpdir(), "tlsnet-watch-"));
    const errors: Error[] = [];
    try {
      const certFile = join(dir, "cert.pem");
      const keyFile = join(dir, "key.pem");
      const v1 = await ca.issue({ names: ["localhost"], commonName: "v1" });
      await writeFile(certFile, v1.cert);
      await writeFile(keyFile, v1.key);
      const ln = await echoServer({
        certs: undefined,
        certFile,
        keyFile,
        onError: (e) => errors.push(e),
      });
      t.after(() => ln.close());
      const stop = ln.watch({ debounce: 100 });
      const subject = async () => {
        const c = await tls.connect(hostPort(ln), { ca: ca.cert, sessionCache: false });
        t.after(() => c.close());
        const s = c.peerCertificate()?.subject ?? "";
        await c.close();
        return s;
      };
      assert.match(await subject(), /CN=v1/);
      // certbot style: write new files aside, then rename over the old ones.
      const v2 = await ca.issue({ names: ["localhost"], commonName: "v2" });
      await writeFile(join(dir, "cert.pem.new"), v2.cert);
      await writeFile(join(dir, "key.pem.new"), v2.key);
      await rename(join(dir, "key.pem.new"), keyFile);
      await rename(join(dir, "cert.pem.new"), certFile);
      let s = "";
      for (let i = 0; i < 60 && !/CN=v2/.test(s); i++) {
        await sleep(50);
        s = await subject();
      }
      assert.match(s, /CN=v2/);
      // A half-written certificate: the old one stays and onError hears about it.
      await writeFile(certFile, "-----BEGIN CERTIFICATE-----\ngarbage\n");
      await until(() => errors.length > 0, "onError for the half-written certificate", 3000);
      assert.ok(errors[0] instanceof ConfigError, String(errors[0]));
      assert.match(await subject(), /CN=v2/);
      stop();
      await ln.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("ALPN handlers", () => {
  test("handler and alpnHandlers together are a ConfigError (handler would never run)", async () => {
    const { leaf } = await pki();
    await assert.rejects(
      tls.listen({
        addr: "127.0.0.1:0",
        certs: [leaf],
        handler: () => {},
        alpnHandlers: { h2: () => {} },
      }),
      (e: unknown) =>
        e instanceof ConfigError && e.field === "handler" && /not both/.test(e.message),
    );
  });

  test("each conn goes to the handler of its protocol; no ALPN goes to the first", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await tls.listen({
      addr: "127.0.0.1:0",
      certs: [leaf],
      alpnHandlers: {
        h2: async (c) => c.write(`h2 handler saw ${c.alpnProtocol}`),
        "http/1.1": async (c) => c.write(`http/1.1 handler saw ${c.alpnProtocol}`),
        throws: async () => {
          throw new Error("boom");
        },
      },
      onError: () => {},
    });
    t.after(() => ln.close());
    const ask = async (alpn: string[] | undefined) => {
      const c = await tls.connect(hostPort(ln), {
        ca: ca.cert,
        ...(alpn ? { alpnProtocols: alpn } : {}),
      });
      t.after(() => c.close());
      const text = (await c.readAll()).toString();
      await c.close();
      return text;
    };
    assert.equal(await ask(["h2"]), "h2 handler saw h2");
    assert.equal(await ask(["http/1.1"]), "http/1.1 handler saw http/1.1");
    assert.equal(await ask(undefined), "h2 handler saw null");
    assert.equal(await ask(["throws"]), "", "a throwing handler closes only its conn");
    assert.equal(await ask(["h2"]), "h2 handler saw h2");
    await ln.close();
  });
});

describe("graceful close", () => {
  test("finishing handlers complete, stuck ones are closed at the deadline, new conns are refused", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await tls.listen({
      addr: "127.0.0.1:0",
      certs: [leaf],
      handler: async (conn) => {
        const mode = await conn.readLine();
        if (mode === "quick") {
          await sleep(100);
          await conn.write("finished\n");
        } else {
          await conn.readAll(); // never finishes on its own
        }
      },
    });
    t.after(() => ln.close());
    const quick = await tls.connect(hostPort(ln), { ca: ca.cert });
    t.after(() => quick.close());
    const stuck = await tls.connect(hostPort(ln), { ca: ca.cert });
    t.after(() => stuck.close());
    await quick.write("quick\n");
    await stuck.write("stuck\n");
    await until(() => ln.stats().active === 2, "two active conns", 3000);
    await sleep(20);
    const t0 = performance.now();
    const closing = ln.close({ graceful: 1000 });
    await sleep(50);
    const refused = await tls.connect(hostPort(ln), { ca: ca.cert, timeout: 2000 }).catch((e) => e);
    assert.ok(refused instanceof DialError, String(refused));
    assert.equal(await quick.readLine(), "finished");
    assert.equal(await stuck.read(64, { timeout: 5000 }), null, "closed at the deadline");
    await closing;
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 900 && elapsed < 4000, `closed after ${elapsed} ms`);
    await until(() => ln.stats().active === 0, "active back to 0", 3000);
    assert.equal(ln.stats().active, 0);
    await quick.close();
    await stuck.close();
  });
});

describe("session resumption", () => {
  for (const maxVersion of ["TLSv1.3", "TLSv1.2"] as const) {
    test(`${maxVersion}: the second connect resumes; across listeners only with shared ticketKeys`, async (t) => {
      const { ca, leaf } = await pki();
      const keys = randomBytes(48);
      const a = await echoServer({ certs: [leaf], ticketKeys: keys, maxVersion });
      t.after(() => a.close());
      const b = await echoServer({ certs: [leaf], ticketKeys: keys, maxVersion });
      t.after(() => b.close());
      const c = await echoServer({ certs: [leaf], ticketKeys: randomBytes(48), maxVersion });
      t.after(() => c.close());
      const resumed = (ln: typeof a, cfg: ReturnType<typeof tls.config>) =>
        resumedOn(hostPort(ln), cfg);
      const cfg = tls.config({ ca: ca.cert, maxVersion });
      assert.equal(await resumed(a, cfg), false);
      assert.equal(await resumed(a, cfg), true);
      assert.equal(await resumed(b, cfg), true, "b shares a's ticket keys");
      assert.equal(await resumed(c, cfg), false, "c has its own keys");
      const noCache = tls.config({ ca: ca.cert, maxVersion, sessionCache: false });
      assert.equal(await resumed(a, noCache), false);
      await Promise.all([a.close(), b.close(), c.close()]);
    });

    // OpenSSL resumes a verified client's session only under a session id context, which the
    // server sets through createSecureContext's documented `sessionIdContext` option.
    test(`${maxVersion}: a verified client certificate's session resumes too`, async (t) => {
      const { ca, leaf } = await pki();
      const client = await ca.issue({ names: ["client.test"], client: true });
      const ln = await echoServer({
        certs: [leaf],
        clientAuth: "require-and-verify",
        clientCa: ca.cert,
        maxVersion,
      });
      t.after(() => ln.close());
      const cfg = tls.config({ ca: ca.cert, certs: [client], maxVersion });
      const resumed: boolean[] = [];
      for (let i = 0; i < 2; i++) resumed.push(await resumedOn(hostPort(ln), cfg));
      assert.deepEqual(resumed, [false, true]);
      await ln.close();
    });
  }

  test("close() right after connect (nothing read) still keeps the TLS 1.3 ticket", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await tls.listen({
      addr: "127.0.0.1:0",
      certs: [leaf],
      handler: async (c) => {
        await c.read();
      },
    });
    t.after(() => ln.close());
    const cfg = tls.config({ ca: ca.cert });
    const first = await tls.connect(hostPort(ln), cfg);
    t.after(() => first.close());
    assert.equal(first.state().resumed, false);
    await first.close();
    const second = await tls.connect(hostPort(ln), cfg);
    t.after(() => second.close());
    assert.equal(second.state().resumed, true);
    await second.close();
    await ln.close();
  });

  test("rotating ticketKeys by reload ends resumption of old tickets", async (t) => {
    const { ca, leaf } = await pki();
    const ln = await echoServer({ certs: [leaf], ticketKeys: randomBytes(48) });
    t.after(() => ln.close());
    const cfg = tls.config({ ca: ca.cert, serverName: "localhost" });
    const once = () => resumedOn(`127.0.0.1:${ln.addr.port}`, cfg);
    await once();
    assert.equal(await once(), true);
    await ln.reload({ ticketKeys: randomBytes(48) });
    assert.equal(await once(), false);
    await ln.close();
  });
});

describe("hooks", () => {
  test("keyLog receives NSS key log lines; verifyConnection can reject on either side", async (t) => {
    const { ca, leaf } = await pki();
    const lines: string[] = [];
    const serverErrors: Error[] = [];
    const ln = await echoServer({
      certs: [leaf],
      verifyConnection: (s) => {
        if (s.alpnProtocol === "forbidden") throw new Error("protocol forbidden here");
      },
      alpnProtocols: ["ok", "forbidden"],
      onError: (e) => serverErrors.push(e),
    });
    t.after(() => ln.close());
    const conn = await tls.connect(hostPort(ln), {
      ca: ca.cert,
      alpnProtocols: ["ok"],
      keyLog: (l) => lines.push(l),
    });
    t.after(() => conn.close());
    await conn.write("x");
    await conn.readExactly(1);
    await conn.close();
    assert.ok(
      lines.some((l) => /^CLIENT_HANDSHAKE_TRAFFIC_SECRET [0-9a-f]{64} [0-9a-f]+$/.test(l)),
      lines.join("\n"),
    );

    const pinned = await tls
      .connect(hostPort(ln), {
        ca: ca.cert,
        verifyConnection: (s) => {
          if (s.peerCertificates[0]?.fingerprint256 !== "00") throw new Error("pin mismatch");
        },
      })
      .catch((e) => e);
    assert.ok(pinned instanceof TLSError);
    assert.match(pinned.message, /verifyConnection rejected .*pin mismatch/);

    const forbidden = await tls
      .connect(hostPort(ln), { ca: ca.cert, alpnProtocols: ["forbidden"] })
      .then((c) => c.read().finally(() => c.close()))
      .catch((e) => e);
    assert.ok(forbidden === null || forbidden instanceof Error);
    const forbiddenSeen = () => serverErrors.some((e) => /protocol forbidden here/.test(e.message));
    await poll(forbiddenSeen, 3000);
    assert.ok(forbiddenSeen(), serverErrors.map((e) => e.message).join("\n"));
    await ln.close();
  });
});
