/** Address parsing and formatting, through the public API (tcp.connect, tcp.listen, SocketAddr). */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type Address, ConfigError, SocketAddr, TlsnetError, tcp, tls } from "../src/index.ts";
import {
  closeAll,
  closeAndFail,
  closedPort,
  connectPair,
  echoListener,
  ipv6Unavailable,
  roundTrip,
} from "./helpers/net.ts";
import { pki } from "./helpers/tls.ts";
import { withTimeout } from "./helpers/util.ts";

const NOT_LINUX =
  process.platform === "linux" ? false : `needs Linux loopback semantics (${process.platform})`;

describe("malformed addresses reject with ConfigError before any I/O", () => {
  const bad: Array<[label: string, address: Address, shown: string]> = [
    ["a host without a port", "nohost", "nohost"],
    ["an IPv4 address without a port", "127.0.0.1", "127.0.0.1"],
    ["port 0 (listen only)", "127.0.0.1:0", "127.0.0.1:0"],
    ["port 65536", "127.0.0.1:65536", "127.0.0.1:65536"],
    ["a missing ']'", "[::1:80", "[::1:80"],
    ["an unbracketed IPv6 address", "::1:80", "::1:80"],
    ["a non-numeric port", "127.0.0.1:http", "127.0.0.1:http"],
    ["an object with port 70000 and no host", { port: 70000 }, "70000"],
    ["an object with port 0", { host: "127.0.0.1", port: 0 }, "127.0.0.1"],
    ["an empty host", ":8080", ":8080"],
  ];
  for (const [label, address, shown] of bad) {
    test(`tcp.connect with ${label}: ${JSON.stringify(address)}`, async () => {
      let resolverCalls = 0;
      const resolver = async () => {
        resolverCalls++;
        return ["127.0.0.1"];
      };
      const p = tcp.connect(address, { resolver, timeout: 2000 });
      const err = await withTimeout(
        p.then(closeAndFail("connect resolved"), (e: unknown) => e),
        500,
        "rejection",
      );
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
      assert.ok(err instanceof TlsnetError);
      assert.equal(err.code, "ERR_TLSNET_CONFIG");
      assert.ok(
        err.message.includes(shown),
        `message ${JSON.stringify(err.message)} does not show ${shown}`,
      );
      assert.equal(resolverCalls, 0, "no name resolution for a malformed address");
    });
  }

  test("tcp.listen with a port out of range or bad brackets", async () => {
    for (const addr of ["127.0.0.1:65536", "[::1:0", "::1:0", "127.0.0.1", "127.0.0.1:-1"]) {
      await assert.rejects(
        tcp.listen({ addr }).then(closeAndFail(`listen(${addr})`)),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.code === "ERR_TLSNET_CONFIG" &&
          err.message.includes(addr),
        `listen(${addr})`,
      );
    }
  });
});

describe("well-formed addresses", () => {
  test('listen on ":0" binds all interfaces and 127.0.0.1 reaches it', async (t) => {
    const ln = await echoListener({ addr: ":0" });
    try {
      assert.ok(ln.addr.port > 0 && ln.addr.port <= 65535);
      assert.ok(
        ln.addr.address === "::" || ln.addr.address === "0.0.0.0",
        `all interfaces, got ${ln.addr.address}`,
      );
      const c4 = await tcp.connect(`127.0.0.1:${ln.addr.port}`, { timeout: 5000 });
      assert.equal(await roundTrip(c4, "all-v4"), "all-v4");
      await c4.close();
      if (ln.addr.address === "::") {
        const c6 = await tcp.connect(`[::1]:${ln.addr.port}`, { timeout: 5000 });
        assert.equal(await roundTrip(c6, "all-v6"), "all-v6");
        await c6.close();
      } else {
        t.diagnostic("listening on 0.0.0.0 (no IPv6 stack): IPv6 half not checked");
      }
    } finally {
      await ln.close();
    }
  });

  test('listen on "[::1]:0" and connect with every IPv6 spelling', async (t) => {
    const why = await ipv6Unavailable();
    if (why) return t.skip(`::1 unavailable: ${why}`);
    const ln = await echoListener({ addr: "[::1]:0" });
    try {
      assert.equal(ln.addr.family, "IPv6");
      assert.equal(ln.addr.address, "::1");
      assert.equal(ln.addr.toString(), `[::1]:${ln.addr.port}`);
      const port = ln.addr.port;
      for (const address of [
        `[::1]:${port}`,
        { host: "::1", port },
        { host: "[::1]", port },
      ] as Address[]) {
        const c = await tcp.connect(address, { timeout: 5000 });
        assert.equal(c.remoteAddr.toString(), `[::1]:${port}`, JSON.stringify(address));
        assert.equal(c.remoteAddr.family, "IPv6");
        assert.equal(await roundTrip(c, "v6"), "v6");
        await c.close();
      }
    } finally {
      await ln.close();
    }
  });

  test("connect with a { host, port } object", async () => {
    const ln = await echoListener();
    try {
      const c = await tcp.connect({ host: "127.0.0.1", port: ln.addr.port }, { timeout: 5000 });
      assert.equal(await roundTrip(c, "obj"), "obj");
      await c.close();
    } finally {
      await ln.close();
    }
  });

  test("a port in range that nothing listens on fails as a dial, not as a ConfigError", async () => {
    const port = await closedPort();
    const p = tcp.connect(`127.0.0.1:${port}`, { timeout: 5000 });
    await assert.rejects(p.then(closeAndFail("connect")), (err: unknown) => {
      assert.ok(!(err instanceof ConfigError), String(err));
      assert.equal((err as TlsnetError).code, "ERR_TLSNET_DIAL");
      return true;
    });
  });
});

describe("SocketAddr.toString", () => {
  test("IPv4 as address:port, IPv6 in brackets", () => {
    assert.equal(new SocketAddr("127.0.0.1", 8443).toString(), "127.0.0.1:8443");
    assert.equal(new SocketAddr("::1", 8443).toString(), "[::1]:8443");
    assert.equal(new SocketAddr("::1", 8443).family, "IPv6");
    assert.equal(new SocketAddr("10.1.2.3", 1).family, "IPv4");
    assert.equal(`${new SocketAddr("::1", 80)}`, "[::1]:80");
  });

  test("the addresses of a live IPv4 connection", async () => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0" });
    try {
      assert.equal(ln.addr.toString(), `127.0.0.1:${ln.addr.port}`);
      const [client, server] = await connectPair(ln);
      try {
        assert.equal(client.remoteAddr.toString(), `127.0.0.1:${ln.addr.port}`);
        assert.equal(client.remoteAddr.family, "IPv4");
        assert.equal(server.remoteAddr.toString(), `127.0.0.1:${client.localAddr.port}`);
        assert.equal(server.localAddr.toString(), client.remoteAddr.toString());
      } finally {
        await closeAll(client, server);
      }
    } finally {
      await ln.close();
    }
  });

  // A listener bound to one IP gives its conns its own address as their local one (no
  // getsockname per conn); a wildcard listener must still report the address reached.
  test("a server conn's localAddr is the address the client reached, wildcard bind or not", {
    skip: NOT_LINUX,
  }, async (t) => {
    const { leaf } = await pki();
    const listeners = {
      "tcp 127.0.0.2": await tcp.listen({ addr: "127.0.0.2:0" }),
      "tcp all interfaces": await tcp.listen({ addr: ":0" }),
      "tls 127.0.0.2": await tls.listen({ addr: "127.0.0.2:0", certs: [leaf] }),
      "tls all interfaces": await tls.listen({ addr: ":0", certs: [leaf] }),
    };
    t.after(() => Promise.all(Object.values(listeners).map((ln) => ln.close())));
    for (const [label, ln] of Object.entries(listeners)) {
      const reached = `127.0.0.2:${ln.addr.port}`;
      const [c, s] = await Promise.allSettled([
        tcp.connect(reached, { timeout: 5000 }),
        ln.accept({ timeout: 5000 }),
      ]);
      t.after(() =>
        closeAll(
          c.status === "fulfilled" ? c.value : undefined,
          s.status === "fulfilled" ? s.value : undefined,
        ),
      );
      if (c.status === "rejected") throw c.reason;
      if (s.status === "rejected") throw s.reason;
      const [client, server] = [c.value, s.value];
      assert.equal(client.remoteAddr.toString(), reached, label);
      // A dual-stack wildcard reports an IPv4 peer's side as ::ffff:127.0.0.2.
      assert.equal(server.localAddr.address.replace(/^::ffff:/, ""), "127.0.0.2", label);
      assert.equal(server.localAddr.port, ln.addr.port, label);
      assert.equal(server.remoteAddr.port, client.localAddr.port, label);
    }
  });
});
