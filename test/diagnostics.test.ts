/**
 * node:diagnostics_channel events (what OpenTelemetry instrumentations hook
 * into): a subscriber sees dial, handshake and accept spans with their
 * contexts and results, close and error events — over real loopback sockets.
 */
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { createConnection } from "node:net";
import { test } from "node:test";
import { type Conn, type ConnectionState, tcp, tls } from "../src/index.ts";
import { pki } from "./helpers/tls.ts";
import { until, withTimeout } from "./helpers/util.ts";

type Event = { channel: string; kind: string; ctx: Record<string, unknown> };

/** Subscribe to every tlsnet channel; returns the events and an unsubscribe function. */
function record(): { events: Event[]; stop: () => void } {
  const events: Event[] = [];
  const stops: Array<() => void> = [];
  for (const name of ["tlsnet:dial", "tlsnet:handshake", "tlsnet:accept"]) {
    const ch = diagnostics.tracingChannel(name);
    const handlers = Object.fromEntries(
      ["start", "end", "asyncStart", "asyncEnd", "error"].map((kind) => [
        kind,
        (ctx: Record<string, unknown>) => events.push({ channel: name, kind, ctx }),
      ]),
    ) as unknown as Parameters<typeof ch.subscribe>[0];
    ch.subscribe(handlers);
    stops.push(() => ch.unsubscribe(handlers));
  }
  for (const name of ["tlsnet:close", "tlsnet:error"]) {
    const fn = (msg: unknown) =>
      events.push({ channel: name, kind: "publish", ctx: msg as Record<string, unknown> });
    diagnostics.subscribe(name, fn);
    stops.push(() => diagnostics.unsubscribe(name, fn));
  }
  return {
    events,
    stop: () => {
      for (const s of stops) s();
    },
  };
}

const of = (events: Event[], channel: string, kind: string) =>
  events.filter((e) => e.channel === channel && e.kind === kind);

test("a TLS dial, its handshake, the server's accept span and both closes are published", async (t) => {
  const { ca, leaf } = await pki();
  const rec = record();
  t.after(rec.stop);
  const ln = await tls.listen({
    addr: "127.0.0.1:0",
    certs: [leaf],
    handler: async (c) => {
      for await (const chunk of c) await c.write(chunk);
    },
  });
  t.after(() => ln.close());
  const conn = await tls.connect(`localhost:${ln.addr.port}`, { ca: ca.cert, timeout: 5000 });
  await conn.write("hi");
  assert.equal((await conn.readExactly(2)).toString(), "hi");
  await conn.close();

  const dial = of(rec.events, "tlsnet:dial", "asyncEnd");
  assert.equal(dial.length, 1);
  assert.equal(dial[0]!.ctx.transport, "tls");
  assert.equal(dial[0]!.ctx.address, `localhost:${ln.addr.port}`);
  assert.equal(dial[0]!.ctx.result, conn, "the dial span's result is the conn");
  assert.equal(
    of(rec.events, "tlsnet:dial", "start")[0]!.ctx,
    dial[0]!.ctx,
    "one context per span",
  );

  const hs = of(rec.events, "tlsnet:handshake", "asyncEnd");
  assert.deepEqual(hs.map((e) => e.ctx.role).sort(), ["client", "server"]);
  const client = hs.find((e) => e.ctx.role === "client")!;
  assert.equal(client.ctx.serverName, "localhost");
  assert.equal((client.ctx.result as ConnectionState).version, conn.state().version);

  await until(() => of(rec.events, "tlsnet:accept", "asyncEnd").length === 1, "accept span", 3000);
  const accept = of(rec.events, "tlsnet:accept", "asyncEnd")[0]!;
  assert.equal(String(accept.ctx.localAddr), ln.addr.toString());
  assert.equal(String(accept.ctx.remoteAddr), conn.localAddr.toString());

  await until(() => of(rec.events, "tlsnet:close", "publish").length >= 2, "both closes", 3000);
  assert.ok(of(rec.events, "tlsnet:close", "publish").some((e) => e.ctx.conn === conn));
});

test("a failed dial ends its span with the error; a failed handshake is published on error and handshake", async (t) => {
  const { leaf } = await pki();
  const rec = record();
  t.after(rec.stop);
  const ln = await tcp.listen({ addr: "127.0.0.1:0" });
  const port = ln.addr.port;
  await ln.close();
  const refused = await tcp.connect(`127.0.0.1:${port}`).catch((e: unknown) => e);
  const dialErr = of(rec.events, "tlsnet:dial", "error");
  assert.equal(dialErr.length, 1);
  assert.equal(dialErr[0]!.ctx.error, refused);

  const errors: Error[] = [];
  const tln = await tls.listen({
    addr: "127.0.0.1:0",
    certs: [leaf],
    handler: () => {},
    onError: (e) => errors.push(e),
  });
  t.after(() => tln.close());
  const raw = createConnection(tln.addr.port, "127.0.0.1");
  raw.on("error", () => {});
  raw.end("GET / HTTP/1.1\r\n\r\n");
  await withTimeout(
    until(() => errors.length === 1, "onError", 3000),
    4000,
    "onError",
  );
  const hsErr = of(rec.events, "tlsnet:handshake", "error");
  assert.equal(hsErr.length, 1);
  assert.equal(hsErr[0]!.ctx.role, "server");
  assert.equal(hsErr[0]!.ctx.error, errors[0], "the same error object reaches onError");
  assert.ok(of(rec.events, "tlsnet:error", "publish").some((e) => e.ctx.error === errors[0]));
  raw.destroy();
});

test("TCP accept() conns get an accept span; nothing is published without subscribers", async (t) => {
  const rec = record();
  const ln = await tcp.listen({ addr: "127.0.0.1:0" });
  t.after(() => ln.close());
  const [client, server] = await Promise.all([tcp.connect(ln.addr), ln.accept()]);
  t.after(() => Promise.all([client.close(), server.close()]));
  await until(() => of(rec.events, "tlsnet:accept", "asyncEnd").length === 1, "accept span", 3000);
  assert.equal(of(rec.events, "tlsnet:accept", "asyncEnd")[0]!.ctx.result as Conn, server);
  rec.stop();
  const before = rec.events.length;
  const c2 = await tcp.connect(ln.addr);
  const s2 = await ln.accept();
  await Promise.all([c2.close(), s2.close()]);
  assert.equal(rec.events.length, before, "unsubscribed: no events");
});
