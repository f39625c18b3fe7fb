/**
 * A real fleet: HAProxy on loopback in TCP mode, `send-proxy-v2`, round robin
 * with TLS health checks, in front of
 *   1. two tlsnet servers (test/fixtures/fleet-server.ts, separate processes)
 *      sharing ticket keys and trusting the PROXY header from 127.0.0.1 only;
 *   2. two `tlsnet proxy` processes (--proxy-protocol-in, --proxy-protocol-out v2,
 *      shared --ticket-keys) in front of one plaintext backend in this process.
 * Checked: each server sees the client's real address, a second connection
 * resumes on the other replica, killing a replica loses no exchange, a
 * SIGTERM'd replica drains. Skipped, with the reason, when haproxy is missing
 * (.ci/run installs it). Config in a temp dir, loopback only, no stats socket;
 * HAProxy logs checks and connections to stderr, which a failure prints.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { accessSync, constants, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { after, before, describe, type TestContext, test } from "node:test";
import { createCA } from "../src/certs/index.ts";
import { type Conn, type Listener, type TLSConfig, type TLSConn, tcp, tls } from "../src/index.ts";
import { type Proc, start, WORK } from "./helpers/cli.ts";
import { closedPort } from "./helpers/net.ts";
import { failOnUnhandledRejections, until, withTimeout } from "./helpers/util.ts";

failOnUnhandledRejections(after);

function findHaproxy(): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin"];
  for (const d of dirs) {
    if (d === "") continue;
    try {
      accessSync(join(d, "haproxy"), constants.X_OK);
      return join(d, "haproxy");
    } catch {}
  }
  return undefined;
}

const HAPROXY = findHaproxy();
const skip = HAPROXY
  ? false
  : "haproxy is not installed (Debian: apt-get install haproxy; .ci/run does)";

interface PKI {
  ca: string;
  certFile: string;
  keyFile: string;
  keysFile: string;
  cfg: TLSConfig;
}
let pki: PKI;

before(async () => {
  const ca = await createCA();
  const leaf = await ca.issue({ names: ["localhost", "127.0.0.1"] });
  const certFile = join(WORK, "server.pem");
  const keyFile = join(WORK, "server-key.pem");
  const keysFile = join(WORK, "ticket.keys");
  writeFileSync(certFile, leaf.chain);
  writeFileSync(keyFile, leaf.key);
  writeFileSync(keysFile, `# fleet ticket keys\n${randomBytes(48).toString("base64")}\n`);
  pki = { ca: ca.cert, certFile, keyFile, keysFile, cfg: tls.config({ ca: ca.cert }) };
});

/** HAProxy in TCP mode, round robin over `servers` with send-proxy-v2 and TLS health checks. */
async function haproxy(t: TestContext, servers: number[]): Promise<{ port: number; proc: Proc }> {
  const port = await closedPort();
  const file = join(WORK, `haproxy-${port}.cfg`);
  writeFileSync(
    file,
    [
      "global",
      "    maxconn 200",
      // Health-check transitions and one line per connection on stderr, for a failure's log.
      "    log stderr format raw local0 info",
      "defaults",
      "    mode tcp",
      "    log global",
      "    option tcplog",
      "    option log-health-checks",
      "    timeout connect 1s",
      "    timeout client 30s",
      "    timeout server 30s",
      "    timeout check 1s",
      "    retries 3",
      "    option redispatch 1",
      "frontend fe",
      `    bind 127.0.0.1:${port}`,
      "    default_backend be",
      "backend be",
      "    balance roundrobin",
      "    default-server send-proxy-v2 check check-ssl verify none inter 300ms fall 1 rise 1",
      ...servers.map((p, i) => `    server s${i + 1} 127.0.0.1:${p}`),
      "",
    ].join("\n"),
  );
  const proc = start(["-db", "-f", file], { t, command: [HAPROXY!] });
  // Ready once one TCP conn gets through. That probe takes a round-robin turn, so wait
  // until HAProxy has logged it (the line is written when its stream ends, after the
  // pick): otherwise the pick can land between the test's first two conns.
  let probe = "";
  await until(
    async () => {
      try {
        const c = await tcp.connect(`127.0.0.1:${port}`, { timeout: 500 });
        probe = c.localAddr.toString();
        await c.close();
        return true;
      } catch {
        return false;
      }
    },
    () => `haproxy did not listen on ${port}:\n${proc.stderr()}`,
    10_000,
    50,
  );
  await proc.waitFor(new RegExp(`^${probe.replace(/\./g, "\\.")} \\[`, "m"), 10_000, "stderr");
  return { port, proc };
}

/** Run `fn`; if it fails, add what every process printed to the error. */
async function withLogs(
  procs: () => Array<[string, Proc]>,
  fn: () => Promise<void>,
): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const logs = procs()
      .map(([name, p]) => `--- ${name} stdout:\n${p.stdout()}--- ${name} stderr:\n${p.stderr()}`)
      .join("\n");
    if (e instanceof Error) e.message += `\n${logs}`;
    throw e;
  }
}

/** One fleet server process on `port`. */
async function replica(
  t: TestContext,
  name: string,
  port: number,
  graceMs = 10_000,
): Promise<Proc> {
  const p = start([name, String(port), pki.certFile, pki.keyFile, pki.keysFile, String(graceMs)], {
    t,
    command: [process.execPath, "--import", "tsx", "test/fixtures/fleet-server.ts"],
  });
  await p.waitFor(/listening \d+/);
  return p;
}

/** Connect through the balancer; returns the conn and a function sending one line and reading the answer. */
async function client(
  port: number,
): Promise<{ conn: TLSConn; ask: (line: string) => Promise<string> }> {
  const conn = await tls.connect(`localhost:${port}`, pki.cfg, { timeout: 5000 });
  const ask = async (line: string) => {
    await conn.write(`${line}\n`);
    const reply = await conn.readLine({ timeout: 5000 });
    assert.ok(reply !== null, `no reply to ${line}`);
    return reply;
  };
  return { conn, ask };
}

/** One whole exchange on a fresh conn: the reply, whether the client resumed, its local address. */
async function exchange(port: number, line: string) {
  const { conn, ask } = await client(port);
  try {
    const reply = await ask(line);
    return { reply, resumed: conn.state().resumed, local: conn.localAddr.toString() };
  } finally {
    await conn.close();
  }
}

describe("HAProxy (send-proxy-v2) in front of two tlsnet servers", {
  skip,
  timeout: 60_000,
}, () => {
  test("real client addresses, resumption across replicas, drain on SIGTERM, no lost exchange on a kill", async (t) => {
    const [p1, p2] = [await closedPort(), await closedPort()];
    const replicas = new Map<string, Proc>();
    const [r1, r2] = await Promise.all([replica(t, "s1", p1), replica(t, "s2", p2)]);
    replicas.set("s1", r1);
    replicas.set("s2", r2);
    const lb = await haproxy(t, [p1, p2]);
    const logs = (): Array<[string, Proc]> => [...replicas.entries(), ["haproxy", lb.proc]];
    await withLogs(logs, async () => {
      // 1. The server sees the client's own address, and a second conn resumes on the other replica.
      const first = await exchange(lb.port, "one");
      const second = await exchange(lb.port, "two");
      const nameOf = (reply: string) => reply.split(" ")[0]!;
      assert.match(
        first.reply,
        new RegExp(
          `^s[12] client=${first.local.replace(/\./g, "\\.")} resumed=false proxy=v2 one$`,
        ),
      );
      assert.equal(second.reply.split(" ")[1], `client=${second.local}`);
      assert.notEqual(nameOf(second.reply), nameOf(first.reply), "round robin: the other replica");
      assert.equal(second.resumed, true, `resumed on the other replica: ${second.reply}`);
      assert.match(second.reply, /resumed=true/);

      // 2. Drain: SIGTERM the replica holding an open conn; it keeps serving that conn,
      // new conns go to the other one, and it exits once the conn is done.
      const held = await client(lb.port);
      t.after(() => held.conn.close());
      const heldName = nameOf(await held.ask("hold"));
      const other = heldName === "s1" ? "s2" : "s1";
      const draining = replicas.get(heldName)!;
      draining.child.kill("SIGTERM");
      await draining.waitFor(/draining 1\b/);
      for (let i = 0; i < 3; i++) {
        const r = await exchange(lb.port, `during-${i}`);
        assert.equal(nameOf(r.reply), other, `new conns avoid the draining replica: ${r.reply}`);
      }
      assert.match(await held.ask("still here"), new RegExp(`^${heldName} .* still here$`));
      await held.conn.closeWrite();
      assert.equal(await held.conn.read(16, { timeout: 5000 }), null);
      const exit = await withTimeout(draining.exited, 10_000, "the drained replica exits");
      assert.equal(exit.code, 0);
      assert.match(draining.stdout(), /drained/);

      // 3. Bring it back on the same port; HAProxy's checks put it back in rotation.
      const back = await replica(t, heldName, heldName === "s1" ? p1 : p2);
      replicas.set(heldName, back);
      await until(
        async () => {
          try {
            return nameOf((await exchange(lb.port, "probe")).reply) === heldName;
          } catch {
            return false; // HAProxy may still be finding out; the exchanges below must not fail
          }
        },
        `${heldName} back in rotation`,
        10_000,
        100,
      );

      // 4. Kill one replica (SIGKILL) mid-run: every exchange completes, on the survivor.
      const done: string[] = [];
      for (let i = 0; i < 12; i++) {
        if (i === 4) {
          const victim = replicas.get("s1")!;
          victim.child.kill("SIGKILL");
          await victim.exited;
        }
        const r = await exchange(lb.port, `n${i}`);
        assert.match(r.reply, new RegExp(` n${i}$`));
        if (i >= 4) assert.equal(nameOf(r.reply), "s2", `after the kill: ${r.reply}`);
        done.push(r.reply);
      }
      assert.equal(done.length, 12);
      assert.equal(replicas.get("s2")!.stderr(), "", "no PROXY protocol errors on the survivor");
    });
  });
});

describe("HAProxy in front of two `tlsnet proxy` in front of a plaintext backend", {
  skip,
  timeout: 60_000,
}, () => {
  test("the backend sees the real client through two PROXY hops; resumption across proxies; drain", async (t) => {
    const backend: Listener<Conn> = await tcp.listen({
      addr: "127.0.0.1:0",
      proxyProtocol: { trusted: ["127.0.0.1/32"] },
      handler: async (c) => {
        for (;;) {
          const line = await c.readLine({ timeout: 30_000 });
          if (line === null) break;
          await c.write(`backend client=${c.remoteAddr} ${line}\n`);
        }
        await c.closeWrite();
      },
      onError: () => {}, // health-check conns that hang up
    });
    t.after(() => backend.close());
    const [p1, p2] = [await closedPort(), await closedPort()];
    const proxyArgs = (port: number) => [
      "proxy",
      "--listen",
      `127.0.0.1:${port}`,
      "--to",
      backend.addr.toString(),
      "--cert",
      pki.certFile,
      "--key",
      pki.keyFile,
      "--ticket-keys",
      pki.keysFile,
      "--proxy-protocol-in",
      "--proxy-trusted",
      "127.0.0.1/32",
      "--proxy-protocol-out",
      "v2",
      "--grace",
      "10s",
    ];
    const proxies = [start(proxyArgs(p1), { t }), start(proxyArgs(p2), { t })];
    await Promise.all(proxies.map((p) => p.waitFor(/listening on https:/)));
    const lb = await haproxy(t, [p1, p2]);
    const logs = (): Array<[string, Proc]> => [
      ["proxy 1", proxies[0]!],
      ["proxy 2", proxies[1]!],
      ["haproxy", lb.proc],
    ];
    await withLogs(logs, async () => {
      const first = await exchange(lb.port, "one");
      const second = await exchange(lb.port, "two");
      assert.equal(
        first.reply,
        `backend client=${first.local} one`,
        "the client's address, through both hops",
      );
      assert.equal(second.reply, `backend client=${second.local} two`);
      assert.equal(second.resumed, true, "the second conn resumes, on the other proxy");
      // Each proxy logged one of the two clients (by its real address).
      const logged = (p: Proc, local: string) => p.stdout().includes(` ${local} TLSv1.3 `);
      await until(
        () =>
          (logged(proxies[0]!, first.local) && logged(proxies[1]!, second.local)) ||
          (logged(proxies[1]!, first.local) && logged(proxies[0]!, second.local)),
        () =>
          `each proxy should log one client:\n${proxies.map((p) => p.stdout()).join("\n---\n")}`,
      );

      // Drain one proxy with a conn open through it; new conns go through the other.
      // Round robin over two: the third conn takes the path of the first.
      const firstProxy = logged(proxies[0]!, first.local) ? 0 : 1;
      const draining = proxies[firstProxy]!;
      const survivor = proxies[1 - firstProxy]!;
      const held = await client(lb.port);
      t.after(() => held.conn.close());
      const local = held.conn.localAddr.toString();
      assert.equal(await held.ask("hold"), `backend client=${local} hold`);
      draining.child.kill("SIGTERM");
      // (a health check that is mid-handshake may count too)
      await draining.waitFor(/SIGTERM: no longer accepting; draining \d+ open connection/);
      const during = await exchange(lb.port, "during");
      assert.equal(during.reply, `backend client=${during.local} during`);
      await until(
        () => logged(survivor, during.local),
        "the survivor served the conn made during the drain",
      );
      assert.equal(await held.ask("late"), `backend client=${local} late`);
      await held.conn.closeWrite();
      assert.equal(await held.conn.read(16, { timeout: 5000 }), null);
      assert.equal((await withTimeout(draining.exited, 10_000, "drained proxy exits")).code, 0);
      assert.match(draining.stdout(), /stopped: every connection finished/);
    });
  });
});
