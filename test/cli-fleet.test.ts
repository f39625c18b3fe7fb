/**
 * The CLI as a fleet member: `serve` drains on SIGTERM within --grace and
 * shares --ticket-keys; `tlsnet proxy` terminates TLS in front of a plaintext
 * backend (a tcp.listen in this process) with PROXY protocol out and in,
 * half-close, backpressure, mTLS, and a drain. Child processes on 127.0.0.1
 * port 0, TLSNET_HOME in a temporary directory, all killed in t.after.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, type TestContext, test } from "node:test";
import { createCA } from "../src/certs/index.ts";
import { type Conn, type Listener, tcp, tls } from "../src/index.ts";
import { HOME, type Proc, serve, start, WORK } from "./helpers/cli.ts";
import { closedPort, rawConnect, rawOutcome } from "./helpers/net.ts";
import { resumedOn } from "./helpers/tls.ts";
import { failOnUnhandledRejections, sleep, until, withTimeout } from "./helpers/util.ts";

failOnUnhandledRejections(after);

const CA_FILE = join(HOME, "ca.pem");

async function proxy(t: TestContext, args: string[]): Promise<Proc & { port: number }> {
  const p = start(["proxy", "--listen", "127.0.0.1:0", ...args], { t });
  const m = await p.waitFor(/listening on https:\/\/127\.0\.0\.1:(\d+)/);
  return { ...p, port: Number(m[1]) };
}

/**
 * A plaintext backend that reads a PROXY v2 header (trusted from 127.0.0.1) and
 * answers each conn with one line describing it, then echoes until EOF and
 * half-closes back.
 */
async function backend(t: TestContext): Promise<Listener<Conn>> {
  const ln = await tcp.listen({
    addr: "127.0.0.1:0",
    proxyProtocol: { trusted: ["127.0.0.1/32"] },
    handler: async (c) => {
      const tlvs = Object.fromEntries(
        (c.proxy?.tlvs ?? []).map((x) => [x.type, x.value.toString("latin1")]),
      );
      await c.write(
        `${JSON.stringify({ client: c.remoteAddr.toString(), v: c.proxy?.version, tlvs })}\n`,
      );
      for await (const chunk of c) await c.write(chunk);
      await c.closeWrite();
    },
  });
  t.after(() => ln.close());
  return ln;
}

describe("serve: SIGTERM drains", () => {
  test("an open connection keeps working during the grace period; the server stops when it ends", async (t) => {
    const server = await serve(["--grace", "20s"], { t });
    const conn = await tls.connect(`localhost:${server.port}`, { caFile: CA_FILE, timeout: 5000 });
    t.after(() => conn.close());
    await conn.write("before\n");
    assert.equal(await conn.readLine({ timeout: 5000 }), "before");
    server.child.kill("SIGTERM");
    await server.waitFor(
      /SIGTERM: no longer accepting; draining 1 open connection\(s\) for up to 20 s/,
    );
    // New connections are refused: the port is closed.
    await assert.rejects(
      tls.connect(`localhost:${server.port}`, { caFile: CA_FILE, timeout: 3000 }),
    );
    await conn.write("during the drain\n");
    assert.equal(await conn.readLine({ timeout: 5000 }), "during the drain");
    await conn.closeWrite();
    assert.equal(await conn.read(16, { timeout: 5000 }), null);
    const { code } = await withTimeout(server.exited, 10_000, "serve exits after the last conn");
    assert.equal(code, 0);
    assert.match(server.stdout(), /stopped: every connection finished/);
  });

  test("connections still open after --grace are closed, and the log says how many", async (t) => {
    const server = await serve(["--grace", "300ms"], { t });
    const conns = await Promise.all(
      [0, 1].map(() => tls.connect(`localhost:${server.port}`, { caFile: CA_FILE, timeout: 5000 })),
    );
    for (const c of conns) t.after(() => c.close());
    for (const c of conns) {
      await c.write("x");
      await c.readExactly(1, { timeout: 5000 });
    }
    const t0 = performance.now();
    server.child.kill("SIGTERM");
    await server.waitFor(/draining 2 open connection\(s\) for up to 300 ms/);
    for (const c of conns)
      assert.equal(await c.read(16, { timeout: 5000 }), null, "closed by the server");
    const { code } = await withTimeout(server.exited, 10_000, "serve exits");
    assert.equal(code, 0);
    assert.ok(performance.now() - t0 >= 250, "not before the grace period");
    assert.match(
      server.stdout(),
      /stopped: closed 2 connection\(s\) still open after the 300 ms grace period/,
    );
  });

  test("bad --grace and --ticket-keys values are refused", async (t) => {
    const bad = start(["serve", "--addr", "127.0.0.1:0", "--grace", "soon"], { t });
    assert.equal((await bad.exited).code, 2);
    assert.match(bad.stderr(), /--grace takes a duration like 500ms, 10s or 2m, got 'soon'/);
    const file = join(WORK, "short.keys");
    writeFileSync(file, `${randomBytes(32).toString("base64")}\n`);
    const keys = start(["serve", "--addr", "127.0.0.1:0", "--ticket-keys", file], { t });
    assert.equal((await keys.exited).code, 1);
    assert.match(keys.stderr(), /--ticket-keys .*short\.keys: line 1 is not a 48-byte key/);
  });
});

describe("serve --ticket-keys", () => {
  test("two processes sharing a key file resume each other's sessions; SIGHUP rereads it", async (t) => {
    const file = join(WORK, "ticket.keys");
    const k1 = randomBytes(48);
    writeFileSync(file, `# fleet keys, newest first\n${k1.toString("base64")}\n`);
    const [a, b] = await Promise.all([
      serve(["--ticket-keys", file], { t }),
      serve(["--ticket-keys", file], { t }),
    ]);
    const cfg = tls.config({ caFile: CA_FILE });
    const resumed = (port: number) => resumedOn(`localhost:${port}`, cfg);
    assert.equal(await resumed(a.port), false);
    assert.equal(await resumed(b.port), true, "b decrypts a's ticket");
    // Rotate on a only: a new first key (hex this time). The native engine decrypts with
    // every listed key; node:tls holds only the first. (The servers inherit TLSNET_ENGINE.)
    writeFileSync(file, `${randomBytes(48).toString("hex")}\n${k1.toString("base64")}\n`);
    a.child.kill("SIGHUP");
    await a.waitFor(/reloaded certificates/);
    assert.equal(
      await resumed(a.port),
      tls.backend().engine === "native",
      "b's K1 ticket resumes on rotated a only where K1 still decrypts",
    );
    assert.equal(await resumed(b.port), false, "and a's new ticket is not K1's");
  });
});

describe("tlsnet proxy", () => {
  test("forwards both ways with PROXY v2 naming the client, ALPN and SNI; half-close works", async (t) => {
    const be = await backend(t);
    const px = await proxy(t, [
      "--to",
      be.addr.toString(),
      "--proxy-protocol-out",
      "v2",
      "--alpn",
      "demo,other",
    ]);
    const conn = await tls.connect(`localhost:${px.port}`, {
      caFile: CA_FILE,
      alpnProtocols: ["demo"],
      timeout: 5000,
    });
    t.after(() => conn.close());
    const info = JSON.parse((await conn.readLine({ timeout: 5000 }))!);
    assert.equal(
      info.client,
      conn.localAddr.toString(),
      "the backend sees the TLS client's address",
    );
    assert.equal(info.v, 2);
    assert.equal(info.tlvs[1], "demo", "ALPN TLV");
    assert.equal(info.tlvs[2], "localhost", "authority (SNI) TLV");
    assert.match(info.tlvs[0x20], /TLSv1\.3/, "SSL TLV with the version");
    await conn.write("one\n");
    assert.equal(await conn.readLine({ timeout: 5000 }), "one");
    await conn.closeWrite(); // the backend sees EOF, half-closes back, the proxy passes that on
    assert.equal(await conn.read(64, { timeout: 5000 }), null);
    await px.waitFor(
      /127\.0\.0\.1:\d+ TLSv1\.3 alpn=demo sni=localhost to=127\.0\.0\.1:\d+ .* in=4 out=\d+/,
    );
  });

  test("8 MiB each way arrive intact while the client reads slowly (backpressure)", async (t) => {
    const be = await tcp.listen({
      addr: "127.0.0.1:0",
      handler: async (c) => {
        for await (const chunk of c) await c.write(chunk);
        await c.closeWrite();
      },
    });
    t.after(() => be.close());
    const px = await proxy(t, ["--to", be.addr.toString()]);
    const conn = await tls.connect(`localhost:${px.port}`, { caFile: CA_FILE, timeout: 5000 });
    t.after(() => conn.close());
    const data = randomBytes(8 << 20);
    const sent = createHash("sha256").update(data).digest("hex");
    const writing = (async () => {
      for (let i = 0; i < data.length; i += 256 << 10)
        await conn.write(data.subarray(i, i + (256 << 10)));
      await conn.closeWrite();
    })();
    const h = createHash("sha256");
    let got = 0;
    await sleep(300); // let buffers fill everywhere before reading
    for (;;) {
      const chunk = await conn.read(64 << 10, { timeout: 10_000 });
      if (chunk === null) break;
      h.update(chunk);
      got += chunk.length;
    }
    await writing;
    assert.equal(got, data.length);
    assert.equal(h.digest("hex"), sent);
  });

  test("--client-auth require-and-verify: a client without a certificate is refused, one with is forwarded with its CN", async (t) => {
    const ca = await createCA();
    const dir = mkdtempSync(join(WORK, "mtls-"));
    const server = await ca.issue({ names: ["localhost"] });
    const client = await ca.issue({ names: ["alice"], client: true });
    writeFileSync(join(dir, "s.pem"), server.chain);
    writeFileSync(join(dir, "s-key.pem"), server.key);
    writeFileSync(join(dir, "ca.pem"), ca.cert);
    const be = await backend(t);
    const px = await proxy(t, [
      "--to",
      be.addr.toString(),
      "--cert",
      join(dir, "s.pem"),
      "--key",
      join(dir, "s-key.pem"),
      "--client-auth",
      "require-and-verify",
      "--client-ca",
      join(dir, "ca.pem"),
      "--proxy-protocol-out",
      "v2",
    ]);
    const refused = tls
      .connect(`localhost:${px.port}`, { ca: ca.cert, timeout: 5000 })
      .then(async (c) => {
        try {
          return await c.readLine({ timeout: 5000 }); // TLS 1.3: the refusal comes after the handshake
        } finally {
          await c.close();
        }
      });
    await assert.rejects(refused);
    await until(
      () =>
        /failed: the client sent no certificate \(--client-auth require-and-verify requires one\)/.test(
          px.stderr(),
        ),
      () => `the refusal is not in the log:\n${px.stderr()}`,
    );
    const ok = await tls.connect(`localhost:${px.port}`, {
      ca: ca.cert,
      certs: [{ cert: client.chain, key: client.key }],
      timeout: 5000,
    });
    t.after(() => ok.close());
    const info = JSON.parse((await ok.readLine({ timeout: 5000 }))!);
    assert.match(info.tlvs[0x20], /alice/, "the client certificate's CN reaches the backend");
    assert.equal(info.tlvs[0x20].charCodeAt(0) & 0x02, 0x02, "PP2_CLIENT_CERT_CONN");
  });

  test("--proxy-protocol-in: behind a balancer, the client named by its header is passed on", async (t) => {
    const be = await backend(t);
    const px = await proxy(t, [
      "--to",
      be.addr.toString(),
      "--proxy-protocol-in",
      "--proxy-trusted",
      "127.0.0.0/8",
      "--proxy-protocol-out",
      "v1",
    ]);
    const conn = await tls.connect(`localhost:${px.port}`, {
      caFile: CA_FILE,
      timeout: 5000,
      proxyHeader: { version: 2, source: "198.51.100.23:40000", destination: "203.0.113.1:443" },
    });
    t.after(() => conn.close());
    const info = JSON.parse((await conn.readLine({ timeout: 5000 }))!);
    assert.equal(info.client, "198.51.100.23:40000");
    assert.equal(info.v, 1);
    await conn.close();
    await px.waitFor(/ 198\.51\.100\.23:40000 TLSv1\.3 /); // logged when the conn ends
    // A conn without the header is refused before TLS, and logged.
    const raw = await rawConnect(px.port);
    raw.write(Buffer.from("16030100c8010000c40303", "hex"));
    await withTimeout(rawOutcome(raw), 5000, "headerless conn closed");
    await until(() => /did not start with a PROXY header/.test(px.stderr()), "the refusal logged");
  });

  test("a backend that is down: the client's conn ends and the log names the backend", async (t) => {
    const port = await closedPort();
    const px = await proxy(t, ["--to", `127.0.0.1:${port}`]);
    const conn = await tls.connect(`localhost:${px.port}`, { caFile: CA_FILE, timeout: 5000 });
    t.after(() => conn.close());
    assert.equal(await conn.read(16, { timeout: 5000 }).catch(() => null), null);
    await px.waitFor(new RegExp(`error: backend 127\\.0\\.0\\.1:${port}: .*refused`));
  });

  test("a backend that resets mid-stream: the log counts what went through before the error", async (t) => {
    const be = await tcp.listen({
      addr: "127.0.0.1:0",
      handler: async (c) => {
        await c.readExactly(5);
        await c.write("12345678");
        await sleep(50); // the reply goes out before the reset
        c.socket.resetAndDestroy();
      },
    });
    t.after(() => be.close());
    const px = await proxy(t, ["--to", be.addr.toString()]);
    const conn = await tls.connect(`localhost:${px.port}`, { caFile: CA_FILE, timeout: 5000 });
    t.after(() => conn.close());
    await conn.write("hello");
    assert.equal((await conn.readExactly(8, { timeout: 5000 })).toString(), "12345678");
    assert.equal(await conn.read(16, { timeout: 5000 }).catch(() => null), null);
    await px.waitFor(/to=127\.0\.0\.1:\d+ .* in=5 out=8 error: /);
  });

  test("SIGTERM: open proxied conns finish within --grace, then it exits 0", async (t) => {
    const be = await backend(t);
    const px = await proxy(t, [
      "--to",
      be.addr.toString(),
      "--proxy-protocol-out",
      "v2",
      "--grace",
      "20s",
    ]);
    const conn = await tls.connect(`localhost:${px.port}`, { caFile: CA_FILE, timeout: 5000 });
    t.after(() => conn.close());
    await conn.readLine({ timeout: 5000 });
    px.child.kill("SIGTERM");
    await px.waitFor(/draining 1 open connection/);
    await conn.write("late\n");
    assert.equal(await conn.readLine({ timeout: 5000 }), "late");
    await conn.closeWrite();
    assert.equal(await conn.read(16, { timeout: 5000 }), null);
    assert.equal((await withTimeout(px.exited, 10_000, "proxy exits")).code, 0);
  });

  test("usage errors: no --to, a bad --proxy-protocol-out, --proxy-trusted without --proxy-protocol-in", async (t) => {
    const cases: Array<[string[], RegExp]> = [
      [["proxy"], /--to HOST:PORT \(the backend\) is required/],
      [
        ["proxy", "--to", "127.0.0.1:1", "--proxy-protocol-out", "v3"],
        /--proxy-protocol-out must be v1 or v2/,
      ],
      [
        ["proxy", "--to", "127.0.0.1:1", "--proxy-trusted", "10.0.0.0/8"],
        /--proxy-trusted needs --proxy-protocol-in/,
      ],
      [["proxy", "--to", "nowhere"], /--to: /],
    ];
    for (const [args, re] of cases) {
      const p = start(args, { t });
      assert.equal((await p.exited).code, 2, args.join(" "));
      assert.match(p.stderr(), re);
    }
  });
});
