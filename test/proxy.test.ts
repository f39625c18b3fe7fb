/**
 * The PROXY protocol (v1 text, v2 binary): the parser and writer on their own,
 * the CIDR matcher, listeners that read the header before anything else (TCP
 * and TLS), dialing with `proxyHeader`, and every malformed header kind sent by
 * a raw socket to a real listener: a clear ProxyProtocolError to onError, the
 * socket closed, nothing leaked, and the listener still serving.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, describe, test } from "node:test";
import { cidrMatcher } from "../src/cidr.ts";
import {
  ConfigError,
  type Conn,
  type Listener,
  ProxyProtocolError,
  type ProxyProtocolReason,
  type TCPListenOptions,
  TlsnetError,
  tcp,
  tls,
} from "../src/index.ts";
import { crc32c, encodeProxyHeader, parseProxyHeader } from "../src/proxy.ts";
import { rawConnect, rawOutcome } from "./helpers/net.ts";
import { pki } from "./helpers/tls.ts";
import { failOnUnhandledRejections, sleep, until, withTimeout } from "./helpers/util.ts";

failOnUnhandledRejections(after);

const SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** A v2 header by hand: signature, ver/cmd byte, fam/proto byte, the body (length is its size unless given). */
function v2(verCmd: number, famProto: number, body: Buffer, len = body.length): Buffer {
  const fixed = Buffer.alloc(4);
  fixed[0] = verCmd;
  fixed[1] = famProto;
  fixed.writeUInt16BE(len, 2);
  return Buffer.concat([SIG, fixed, body]);
}

/** The 12-byte IPv4 address block: 192.0.2.1:56324 -> 198.51.100.7:443. */
function inet4Block(): Buffer {
  const b = Buffer.from([192, 0, 2, 1, 198, 51, 100, 7, 0, 0, 0, 0]);
  b.writeUInt16BE(56324, 8);
  b.writeUInt16BE(443, 10);
  return b;
}

function tlv(type: number, value: Buffer, claimed = value.length): Buffer {
  const head = Buffer.from([type, 0, 0]);
  head.writeUInt16BE(claimed, 1);
  return Buffer.concat([head, value]);
}

function parsed(bytes: Buffer | string) {
  const r = parseProxyHeader(Buffer.from(bytes as string, "latin1"));
  assert.equal(r.kind, "header", `expected a header, got ${r.kind}`);
  return r as Extract<typeof r, { kind: "header" }>;
}

function parseError(bytes: Buffer | string): ProxyProtocolError {
  try {
    const r = parseProxyHeader(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes);
    assert.fail(`expected ProxyProtocolError, got ${r.kind}`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    assert.ok(err instanceof ProxyProtocolError, `expected ProxyProtocolError, got ${err}`);
    return err;
  }
}

describe("parser and writer", () => {
  test("v1 TCP4, TCP6 and UNKNOWN lines parse exactly; the length stops at the CRLF", () => {
    const line = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    const r = parsed(`${line}GET /`);
    assert.equal(r.length, line.length);
    assert.equal(r.header.version, 1);
    assert.equal(r.header.command, "PROXY");
    assert.equal(r.header.source?.toString(), "192.0.2.1:56324");
    assert.equal(r.header.destination?.toString(), "198.51.100.7:443");
    const six = parsed("PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n").header;
    assert.equal(six.family, "IPv6");
    assert.equal(six.source?.toString(), "[2001:db8::1]:1");
    assert.equal(six.destination?.port, 65535);
    for (const unknown of ["PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n"]) {
      const u = parsed(unknown);
      assert.equal(u.length, unknown.length);
      assert.equal(u.header.source, null);
      assert.equal(u.header.family, "unspec");
    }
    // 107 bytes, the spec's worst case, is still a line.
    const longest = `PROXY UNKNOWN ${"ffff:".repeat(7)}ffff ${"ffff:".repeat(7)}ffff 65535 65535\r\n`;
    assert.equal(longest.length, 107);
    assert.equal(parsed(longest).length, 107);
  });

  test("v2 IPv4, IPv6, LOCAL, UNSPEC, unix and datagram headers", () => {
    const four = parsed(v2(0x21, 0x11, inet4Block()));
    assert.equal(four.length, 28);
    assert.equal(four.header.version, 2);
    assert.equal(four.header.source?.toString(), "192.0.2.1:56324");
    assert.equal(four.header.destination?.toString(), "198.51.100.7:443");

    const six = Buffer.alloc(36);
    six[0] = 0x20;
    six[1] = 0x01;
    six[2] = 0x0d;
    six[3] = 0xb8;
    six[15] = 1;
    six[31] = 2;
    six.writeUInt16BE(5000, 32);
    six.writeUInt16BE(443, 34);
    const h6 = parsed(v2(0x21, 0x21, six)).header;
    assert.equal(h6.source?.address, "2001:db8::1");
    assert.equal(h6.destination?.address, "::2");
    assert.equal(h6.source?.port, 5000);

    // LOCAL: whatever the block holds is skipped, and no addresses are reported.
    const local = parsed(v2(0x20, 0x11, inet4Block()));
    assert.equal(local.length, 28);
    assert.equal(local.header.command, "LOCAL");
    assert.equal(local.header.source, null);
    const unspec = parsed(v2(0x21, 0x00, Buffer.alloc(7)));
    assert.equal(unspec.header.command, "PROXY");
    assert.equal(unspec.header.source, null);
    const unix = parsed(v2(0x21, 0x31, Buffer.alloc(216)));
    assert.equal(unix.header.family, "unix");
    assert.equal(unix.header.source, null);
    const udp = parsed(v2(0x21, 0x12, inet4Block()));
    assert.equal(udp.header.protocol, "dgram");
    assert.equal(udp.header.source, null);
  });

  test("v2 TLVs are returned in order; a CRC32C TLV is checked", () => {
    const body = Buffer.concat([
      inet4Block(),
      tlv(0x01, Buffer.from("h2")),
      tlv(0x02, Buffer.from("example.com")),
      tlv(0x04, Buffer.alloc(0)),
    ]);
    const h = parsed(v2(0x21, 0x11, body)).header;
    assert.deepEqual(
      h.tlvs.map((t) => [t.type, t.value.toString()]),
      [
        [1, "h2"],
        [2, "example.com"],
        [4, ""],
      ],
    );
    // CRC32C of the whole header with the checksum field zeroed.
    const withCrc = v2(0x21, 0x11, Buffer.concat([inet4Block(), tlv(0x03, Buffer.alloc(4))]));
    withCrc.writeUInt32BE(crc32c(withCrc), withCrc.length - 4);
    assert.equal(parsed(withCrc).header.tlvs[0]?.type, 3);
    assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283); // the standard check value
  });

  test("a header split anywhere is `more` until complete; other bytes are `none`", () => {
    const whole = Buffer.concat([v2(0x21, 0x11, inet4Block()), Buffer.from("data")]);
    for (let i = 0; i < 28; i++) assert.equal(parseProxyHeader(whole.subarray(0, i)).kind, "more");
    assert.equal(parseProxyHeader(whole).kind, "header");
    const line = Buffer.from("PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
    for (let i = 0; i < line.length; i++) {
      assert.equal(parseProxyHeader(line.subarray(0, i)).kind, "more", `v1 prefix of ${i}`);
    }
    for (const other of ["GET / HTTP/1.1\r\n", "\x16\x03\x01\x02\x00", "PROXZ", "\r\n\r\nX"]) {
      assert.equal(parseProxyHeader(Buffer.from(other, "latin1")).kind, "none", other);
    }
  });

  test("the writer's headers parse back to what was written", () => {
    const cases = [
      { version: 1, source: "192.0.2.1:5", destination: "198.51.100.7:443", src: "192.0.2.1:5" },
      { version: 2, source: "192.0.2.1:5", destination: "198.51.100.7:443", src: "192.0.2.1:5" },
      { version: 1, source: "[2001:db8::1]:7", destination: "[::1]:443", src: "[2001:db8::1]:7" },
      { version: 2, source: "[2001:db8::1]:7", destination: "[::1]:443", src: "[2001:db8::1]:7" },
      // IPv4-mapped addresses (a dual-stack listener's view) are sent as IPv4.
      { version: 2, source: "[::ffff:10.0.0.1]:9", destination: "10.0.0.2:1", src: "10.0.0.1:9" },
      // Mixed families go out as IPv6, the IPv4 side mapped.
      { version: 1, source: "10.0.0.1:9", destination: "[::1]:1", src: "[::ffff:10.0.0.1]:9" },
    ] as const;
    for (const c of cases) {
      const h = parsed(encodeProxyHeader(c)).header;
      assert.equal(h.version, c.version);
      assert.equal(h.source?.toString(), c.src, JSON.stringify(c));
    }
    assert.equal(
      encodeProxyHeader({ version: 1, command: "LOCAL" }).toString(),
      "PROXY UNKNOWN\r\n",
    );
    assert.equal(
      parsed(encodeProxyHeader({ version: 2, command: "LOCAL" })).header.command,
      "LOCAL",
    );
    const withTlv = encodeProxyHeader({
      version: 2,
      source: { host: "192.0.2.1", port: 1 },
      destination: "192.0.2.2:2",
      tlvs: [{ type: 0x05, value: Buffer.from("id-1") }],
    });
    assert.equal(parsed(withTlv).header.tlvs[0]?.value.toString(), "id-1");
  });

  test("the writer refuses what it cannot send, with ConfigError naming the field", () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ version: 3, source: "1.2.3.4:1", destination: "1.2.3.4:2" }, /proxyHeader\.version/],
      [{ version: 1, destination: "1.2.3.4:2" }, /proxyHeader\.source is required/],
      [{ version: 1, source: "example.com:1", destination: "1.2.3.4:2" }, /IP address/],
      [{ version: 1, source: "1.2.3.4", destination: "1.2.3.4:2" }, /proxyHeader\.source/],
      [
        {
          version: 1,
          source: "1.2.3.4:1",
          destination: "1.2.3.4:2",
          tlvs: [{ type: 1, value: Buffer.alloc(1) }],
        },
        /version 2/,
      ],
      [
        {
          version: 2,
          source: "1.2.3.4:1",
          destination: "1.2.3.4:2",
          tlvs: [{ type: 1, value: Buffer.alloc(65535) }],
        },
        /64 KiB/,
      ],
      [{ version: 2, command: "RELAY", source: "1.2.3.4:1", destination: "1.2.3.4:2" }, /command/],
    ];
    for (const [init, re] of bad) {
      assert.throws(
        () => encodeProxyHeader(init as never),
        (e: unknown) => e instanceof ConfigError && re.test(e.message),
        JSON.stringify(init).slice(0, 80),
      );
    }
  });
});

/** Malformed v1 lines: [label, bytes, reason]. */
const BAD_V1: Array<[string, string, ProxyProtocolReason]> = [
  ["LF without CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "malformed"],
  ["CR without LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "malformed"],
  ["unknown protocol", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "malformed"],
  ["two spaces", "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "malformed"],
  ["no space after PROXY", "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "malformed"],
  ["too few fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed"],
  ["too many fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "malformed"],
  ["trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "malformed"],
  ["octet over 255", "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", "malformed"],
  ["leading zero in an octet", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "malformed"],
  ["IPv6 under TCP4", "PROXY TCP4 ::1 ::1 1 2\r\n", "malformed"],
  ["IPv4 under TCP6", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "malformed"],
  ["IPv6 with a zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "malformed"],
  ["a host name", "PROXY TCP4 example.com 5.6.7.8 1 2\r\n", "malformed"],
  ["port over 65535", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "malformed"],
  ["port with a leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "malformed"],
  ["negative port", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "malformed"],
  ["a NUL byte", "PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n", "malformed"],
  ["a non-ASCII byte", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n", "malformed"],
  ["no CRLF within 107 bytes", `PROXY UNKNOWN ${"x".repeat(120)}`, "oversized"],
];

/** Malformed v2 headers: [label, bytes, reason]. */
const BAD_V2: Array<[string, Buffer, ProxyProtocolReason]> = [
  ["version 1", v2(0x11, 0x11, inet4Block()), "malformed"],
  ["version 3", v2(0x31, 0x11, inet4Block()), "malformed"],
  ["version 0", v2(0x01, 0x11, inet4Block()), "malformed"],
  ["command 2", v2(0x22, 0x11, inet4Block()), "malformed"],
  ["command 15", v2(0x2f, 0x11, inet4Block()), "malformed"],
  ["family 4", v2(0x21, 0x41, inet4Block()), "malformed"],
  ["family 15", v2(0x21, 0xf1, inet4Block()), "malformed"],
  ["protocol 3", v2(0x21, 0x13, inet4Block()), "malformed"],
  ["IPv4 block shorter than 12", v2(0x21, 0x11, Buffer.alloc(8)), "malformed"],
  ["IPv6 block shorter than 36", v2(0x21, 0x21, Buffer.alloc(12)), "malformed"],
  ["unix block shorter than 216", v2(0x21, 0x31, Buffer.alloc(100)), "malformed"],
  ["length beyond 64 KiB", v2(0x21, 0x11, inet4Block(), 0xffff), "oversized"],
  [
    "TLV longer than the header",
    v2(0x21, 0x11, Buffer.concat([inet4Block(), tlv(0x01, Buffer.from("h2"), 40)])),
    "malformed",
  ],
  [
    "TLV cut short",
    v2(0x21, 0x11, Buffer.concat([inet4Block(), Buffer.from([0x01, 0x00])])),
    "malformed",
  ],
  [
    "CRC32C mismatch",
    v2(0x21, 0x11, Buffer.concat([inet4Block(), tlv(0x03, Buffer.from([1, 2, 3, 4]))])),
    "malformed",
  ],
  [
    "CRC32C of the wrong size",
    v2(0x21, 0x11, Buffer.concat([inet4Block(), tlv(0x03, Buffer.from([1, 2]))])),
    "malformed",
  ],
];

describe("hostile headers, parsed", () => {
  for (const [label, bytes, reason] of [...BAD_V1, ...BAD_V2]) {
    test(`${label}: ProxyProtocolError (${reason})`, () => {
      const err = parseError(bytes);
      assert.equal(err.reason, reason);
      assert.equal(err.code, "ERR_TLSNET_PROXY_PROTOCOL");
      assert.equal(err.name, "ProxyProtocolError");
      assert.ok(err instanceof TlsnetError);
      assert.ok(err.message.length > 20, err.message);
    });
  }
  test("an oversized v2 length is refused from the 16 fixed bytes alone", () => {
    const fixed = v2(0x21, 0x11, Buffer.alloc(0), 0xffff);
    assert.equal(fixed.length, 16);
    assert.equal(parseError(fixed).reason, "oversized");
  });
});

describe("CIDR matcher", () => {
  test("IPv4 and IPv6 ranges, bare addresses, IPv4-mapped peers", () => {
    const m = cidrMatcher(["10.0.0.0/8", "192.168.1.128/25", "2001:db8::/32", "127.0.0.1", "::1"]);
    for (const yes of [
      "10.1.2.3",
      "10.255.255.255",
      "192.168.1.200",
      "2001:db8:ffff::1",
      "127.0.0.1",
      "::1",
      "::ffff:10.9.9.9",
      "::ffff:127.0.0.1",
    ]) {
      assert.ok(m(yes), `${yes} should match`);
    }
    for (const no of [
      "11.0.0.1",
      "192.168.1.127",
      "2001:db9::1",
      "127.0.0.2",
      "::2",
      "garbage",
      "",
    ]) {
      assert.ok(!m(no), `${no} should not match`);
    }
    assert.ok(cidrMatcher(["0.0.0.0/0"])("203.0.113.9"));
    assert.ok(!cidrMatcher(["0.0.0.0/0"])("2001:db8::1"), "an IPv4 range does not cover IPv6");
    assert.ok(cidrMatcher(["::/0"])("203.0.113.9"), "::/0 covers everything");
    assert.ok(cidrMatcher(["::ffff:0:0/96"])("198.51.100.1"), "the mapped range covers IPv4");
    assert.ok(cidrMatcher(["fe80::/10"])("fe80::1%eth0"), "a zone does not change the address");
    assert.ok(cidrMatcher(["1:2:3:4:5:6:7:8/127"])("1:2:3:4:5:6:7:9"));
    assert.ok(!cidrMatcher(["1:2:3:4:5:6:7:8/128"])("1:2:3:4:5:6:7:9"));
    assert.ok(cidrMatcher(["::ffff:1.2.3.0/120"])("1.2.3.77"));
  });

  test("bad entries are ConfigErrors naming the entry", () => {
    for (const bad of [
      ["10.0.0.0/33"],
      ["::/129"],
      ["10.0.0.0/"],
      ["10.0.0/8"],
      ["host.example"],
      [""],
      [7],
      ["1.2.3.4/-1"],
    ]) {
      assert.throws(
        () => cidrMatcher(bad, "trusted"),
        (e: unknown) => e instanceof ConfigError && /trusted\[0\]/.test(e.message),
        JSON.stringify(bad),
      );
    }
    assert.throws(() => cidrMatcher("10.0.0.0/8"), ConfigError);
  });
});

interface Seen {
  remote: string;
  local: string;
  version: number | null;
  command: string | null;
  data: string;
}

/**
 * A TCP listener with proxyProtocol whose handler reports what it saw (addresses,
 * header, the first line of data) as one JSON line, then echoes the rest.
 */
async function reportingListener(
  t: { after: (fn: () => Promise<void>) => void },
  extra: Partial<TCPListenOptions> = {},
): Promise<{ ln: Listener<Conn>; errors: Error[] }> {
  const errors: Error[] = [];
  const ln = await tcp.listen({
    addr: "127.0.0.1:0",
    proxyProtocol: true,
    onError: (e) => errors.push(e),
    handler: async (conn) => {
      const line = await conn.readLine({ timeout: 5000 });
      const seen: Seen = {
        remote: conn.remoteAddr.toString(),
        local: conn.localAddr.toString(),
        version: conn.proxy?.version ?? null,
        command: conn.proxy?.command ?? null,
        data: line ?? "",
      };
      await conn.write(`${JSON.stringify(seen)}\n`);
      for await (const chunk of conn) await conn.write(chunk);
    },
    ...extra,
  });
  t.after(() => ln.close());
  return { ln, errors };
}

/** Send `bytes` on a raw socket, then `line\n`, and read the server's JSON report. */
async function report(port: number, bytes: Buffer | string, line = "hello"): Promise<Seen> {
  const s = await rawConnect(port);
  try {
    s.write(bytes);
    s.write(`${line}\n`);
    const text = await withTimeout(readLineRaw(s), 5000, "the server's report");
    return JSON.parse(text) as Seen;
  } finally {
    s.destroy();
  }
}

function readLineRaw(s: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let acc = "";
    const onData = (b: Buffer) => {
      acc += b.toString("latin1");
      const nl = acc.indexOf("\n");
      if (nl >= 0) {
        s.off("data", onData);
        resolve(acc.slice(0, nl));
      }
    };
    s.on("data", onData);
    s.once("close", () => reject(new Error(`closed before a line; got ${JSON.stringify(acc)}`)));
  });
}

describe("tcp.listen with proxyProtocol", () => {
  test("remoteAddr and localAddr come from a v1 or v2 header; conn.proxy holds it", async (t) => {
    const { ln, errors } = await reportingListener(t);
    const one = await report(ln.addr.port, "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
    assert.deepEqual(one, {
      remote: "192.0.2.1:56324",
      local: "198.51.100.7:443",
      version: 1,
      command: "PROXY",
      data: "hello",
    });
    const two = await report(
      ln.addr.port,
      encodeProxyHeader({
        version: 2,
        source: "[2001:db8::5]:4000",
        destination: "[2001:db8::6]:443",
      }),
    );
    assert.equal(two.remote, "[2001:db8::5]:4000");
    assert.equal(two.version, 2);
    assert.deepEqual(errors, []);
  });

  test("LOCAL and UNKNOWN keep the socket's own addresses", async (t) => {
    const { ln } = await reportingListener(t);
    for (const hdr of [encodeProxyHeader({ version: 2, command: "LOCAL" }), "PROXY UNKNOWN\r\n"]) {
      const s = await rawConnect(ln.addr.port);
      t.after(() => void s.destroy());
      s.write(hdr);
      s.write("x\n");
      const seen = JSON.parse(await withTimeout(readLineRaw(s), 5000, "report")) as Seen;
      assert.equal(seen.remote, `127.0.0.1:${s.localPort}`);
      assert.equal(seen.local, `127.0.0.1:${ln.addr.port}`);
      assert.ok(seen.command === "LOCAL" || seen.version === 1);
      s.destroy();
    }
  });

  test("bytes after the header are not lost: same segment, byte by byte, and large", async (t) => {
    const { ln } = await reportingListener(t);
    const hdr = encodeProxyHeader({
      version: 2,
      source: "192.0.2.1:1",
      destination: "192.0.2.2:2",
    });
    // Header and data in one write.
    const s1 = await rawConnect(ln.addr.port);
    t.after(() => void s1.destroy());
    s1.write(Buffer.concat([hdr, Buffer.from("first line\nrest")]));
    assert.equal((JSON.parse(await readLineRaw(s1)) as Seen).data, "first line");
    // Header and data one byte at a time, with pauses, so every split point is crossed.
    const s2 = await rawConnect(ln.addr.port);
    t.after(() => void s2.destroy());
    s2.setNoDelay(true);
    const v1 = Buffer.from("PROXY TCP4 192.0.2.9 192.0.2.2 77 2\r\nslow\n");
    for (const byte of v1) {
      s2.write(Buffer.from([byte]));
      await sleep(1);
    }
    const seen = JSON.parse(await withTimeout(readLineRaw(s2), 5000, "report")) as Seen;
    assert.equal(seen.remote, "192.0.2.9:77");
    assert.equal(seen.data, "slow");
    // A megabyte behind the header comes back intact.
    const c = await tcp.connect(ln.addr.toString(), {
      timeout: 5000,
      proxyHeader: { version: 1, source: "192.0.2.3:3", destination: "192.0.2.2:2" },
    });
    t.after(() => c.close());
    const big = Buffer.alloc(1 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    await c.write("big\n");
    const first = JSON.parse((await c.readLine({ timeout: 5000 }))!) as Seen;
    assert.equal(first.remote, "192.0.2.3:3");
    await Promise.all([c.write(big), c.closeWrite()]);
    const back = await c.readAll({ timeout: 10_000 });
    assert.ok(back.equals(big), `echoed ${back.length} bytes, expected ${big.length} identical`);
  });

  test("accept() conns carry the header too", async (t) => {
    const ln = await tcp.listen({ addr: "127.0.0.1:0", proxyProtocol: { timeout: 2000 } });
    t.after(() => ln.close());
    const c = await tcp.connect(ln.addr.toString(), {
      proxyHeader: { version: 2, source: "203.0.113.4:999", destination: "203.0.113.5:443" },
    });
    t.after(() => c.close());
    const s = await ln.accept({ timeout: 5000 });
    t.after(() => s.close());
    assert.equal(s.remoteAddr.toString(), "203.0.113.4:999");
    assert.equal(s.proxy?.destination?.toString(), "203.0.113.5:443");
    await c.write("after");
    assert.equal((await s.readExactly(5, { timeout: 5000 })).toString(), "after");
    assert.equal(c.proxy, null, "a dialed conn has no header of its own");
  });

  test("optional mode takes conns with a v1 header, a v2 header, or none", async (t) => {
    const { ln } = await reportingListener(t, { proxyProtocol: { mode: "optional" } });
    assert.equal(
      (await report(ln.addr.port, "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n")).remote,
      "192.0.2.1:1",
    );
    const v2h = encodeProxyHeader({
      version: 2,
      source: "192.0.2.7:7",
      destination: "192.0.2.2:2",
    });
    assert.equal((await report(ln.addr.port, v2h)).remote, "192.0.2.7:7");
    const none = await report(ln.addr.port, "", "plain client");
    assert.equal(none.version, null);
    assert.equal(none.data, "plain client");
    assert.match(none.remote, /^127\.0\.0\.1:\d+$/);
    // "PRO" is a prefix of "PROXY": the listener waits for more, then sees it is no header.
    const almost = await report(ln.addr.port, "", "PROTOCOL line");
    assert.equal(almost.data, "PROTOCOL line");
  });

  test("optional mode: a silent client is taken as headerless after the timeout (server speaks first)", async (t) => {
    const ln = await tcp.listen({
      addr: "127.0.0.1:0",
      proxyProtocol: { mode: "optional", timeout: 200 },
      handler: async (conn) => {
        await conn.write(`220 hello ${conn.proxy === null}\n`);
      },
    });
    t.after(() => ln.close());
    const c = await tcp.connect(ln.addr.toString(), { timeout: 5000 });
    t.after(() => c.close());
    assert.equal(await c.readLine({ timeout: 5000 }), "220 hello true");
  });

  test("trusted: a peer outside the list is refused; inside, including IPv4-mapped forms, it is served", async (t) => {
    const refused = await reportingListener(t, { proxyProtocol: { trusted: ["10.0.0.0/8"] } });
    const s = await rawConnect(refused.ln.addr.port);
    s.write("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nhi\n");
    const out = await withTimeout(rawOutcome(s), 5000, "refused conn closing");
    assert.equal(out.data.length, 0, "nothing served to an untrusted peer");
    await until(() => refused.errors.length === 1, "onError for the untrusted peer");
    const e = refused.errors[0]!;
    assert.ok(e instanceof ProxyProtocolError);
    assert.equal(e.reason, "untrusted");
    assert.match(e.message, /127\.0\.0\.1.*not in proxyProtocol\.trusted/);
    for (const trusted of [
      ["127.0.0.1/32"],
      ["127.0.0.0/8", "10.0.0.0/8"],
      ["::ffff:127.0.0.1/128"],
    ]) {
      const ok = await reportingListener(t, { proxyProtocol: { trusted } });
      const seen = await report(ok.ln.addr.port, "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n");
      assert.equal(seen.remote, "192.0.2.1:1", JSON.stringify(trusted));
    }
  });

  test("trusted + optional: an untrusted peer is served without a header and refused with one", async (t) => {
    const { ln, errors } = await reportingListener(t, {
      proxyProtocol: { mode: "optional", trusted: ["10.0.0.0/8"] },
    });
    const plain = await report(ln.addr.port, "", "no header");
    assert.equal(plain.version, null);
    assert.equal(plain.data, "no header");
    const s = await rawConnect(ln.addr.port);
    s.write("PROXY TCP4 6.6.6.6 192.0.2.2 1 2\r\nspoof\n");
    const out = await withTimeout(rawOutcome(s), 5000, "forged header closing");
    assert.equal(out.data.length, 0);
    await until(() => errors.length === 1, "onError for the forged header");
    assert.equal((errors[0] as ProxyProtocolError).reason, "untrusted");
  });

  test("a header that does not arrive in time fails the conn; the listener goes on", async (t) => {
    const { ln, errors } = await reportingListener(t, { proxyProtocol: { timeout: 150 } });
    const silent = await rawConnect(ln.addr.port);
    const slow = await rawConnect(ln.addr.port);
    slow.write("PROXY TCP4 1.2");
    const [a, b] = await withTimeout(
      Promise.all([rawOutcome(silent), rawOutcome(slow)]),
      5000,
      "both stalled conns closed",
    );
    assert.equal(a.data.length + b.data.length, 0);
    await until(() => errors.length === 2, "two timeouts reported");
    for (const e of errors) {
      assert.ok(e instanceof ProxyProtocolError);
      assert.equal(e.reason, "timeout");
      assert.match(e.message, /within 150 ms/);
    }
    assert.equal(
      (await report(ln.addr.port, "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n")).remote,
      "192.0.2.1:1",
    );
  });

  test("close() while a header is awaited destroys the socket and reports nothing", async () => {
    const errors: Error[] = [];
    const ln = await tcp.listen({
      addr: "127.0.0.1:0",
      proxyProtocol: true,
      handler: () => {},
      onError: (e) => errors.push(e),
    });
    const s = await rawConnect(ln.addr.port);
    await until(() => ln.stats().active === 1, "the conn is accepted");
    await withTimeout(ln.close(), 5000, "close");
    await withTimeout(rawOutcome(s), 5000, "the waiting socket closed");
    await until(() => ln.stats().active === 0, "active back to 0");
    assert.deepEqual(errors, []);
  });

  test("bad proxyProtocol options are ConfigErrors before binding", async () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ mode: "sometimes" }, /proxyProtocol\.mode/],
      [{ timeout: -1 }, /proxyProtocol\.timeout/],
      [{ trusted: ["10.0.0.0/40"] }, /proxyProtocol\.trusted\[0\]/],
      [{ trusted: "10.0.0.0/8" }, /proxyProtocol\.trusted/],
      ["yes", /proxyProtocol must be/],
    ];
    for (const [opt, re] of bad) {
      await assert.rejects(
        tcp.listen({ addr: "127.0.0.1:0", proxyProtocol: opt as never }),
        (e: unknown) => e instanceof ConfigError && re.test(e.message),
      );
    }
  });
});

describe("hostile headers against a live listener", () => {
  /** Send each case on a raw socket: the conn must close unserved, and onError get the reason. */
  async function hostile(
    t: { after: (fn: () => Promise<void>) => void },
    kind: "tcp" | "tls",
    cases: Array<[string, Buffer | string, ProxyProtocolReason, ("end" | "stall")?]>,
  ) {
    const errors: Array<{ err: Error; remote: string | undefined }> = [];
    let served = 0;
    const common = {
      addr: "127.0.0.1:0",
      proxyProtocol: { timeout: 300 },
      onError: (err: Error, info: { remoteAddr?: { toString(): string } }) =>
        errors.push({ err, remote: info.remoteAddr?.toString() }),
    };
    const { leaf, ca } = await pki();
    const ln =
      kind === "tcp"
        ? await tcp.listen({
            ...common,
            handler: async (c) => {
              served++;
              await c.write(`from ${c.remoteAddr}\n`);
            },
          })
        : await tls.listen({
            ...common,
            certs: [leaf],
            handler: async (c) => {
              served++;
              await c.write(`from ${c.remoteAddr}\n`);
            },
          });
    t.after(() => ln.close());
    for (const [label, bytes, reason, how] of cases) {
      const before = errors.length;
      const s = await rawConnect(ln.addr.port);
      const port = s.localPort;
      s.write(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes);
      if (how === "end") s.end();
      const out = await withTimeout(rawOutcome(s), 5000, `${label}: the conn is closed`);
      assert.equal(out.data.length, 0, `${label}: nothing may be served`);
      await until(() => errors.length > before, `${label}: onError`);
      const { err, remote } = errors[errors.length - 1]!;
      assert.ok(err instanceof ProxyProtocolError, `${label}: got ${err}`);
      assert.equal(err.reason, reason, `${label}: ${err.message}`);
      assert.match(err.message, /PROXY protocol/, label);
      assert.equal(remote, `127.0.0.1:${port}`, `${label}: onError names the socket's peer`);
    }
    assert.equal(errors.length, cases.length, "one error per hostile conn, no more");
    assert.equal(served, 0);
    // Still serving, and nothing left open.
    if (kind === "tcp") {
      const c = await tcp.connect(ln.addr.toString(), {
        timeout: 5000,
        proxyHeader: { version: 2, source: "192.0.2.1:1", destination: "192.0.2.2:2" },
      });
      assert.equal(await c.readLine({ timeout: 5000 }), "from 192.0.2.1:1");
      await c.close();
    } else {
      const c = await tls.connect(`localhost:${ln.addr.port}`, {
        ca: ca.cert,
        timeout: 5000,
        proxyHeader: { version: 1, source: "192.0.2.1:1", destination: "192.0.2.2:2" },
      });
      assert.equal(await c.readLine({ timeout: 5000 }), "from 192.0.2.1:1");
      await c.close();
    }
    await until(
      () => ln.stats().active === 0,
      () => `active is ${ln.stats().active}, expected 0`,
    );
  }

  const truncations: Array<[string, Buffer | string, ProxyProtocolReason, "end" | "stall"]> = [
    ["v1 cut short by FIN", "PROXY TCP4 1.2.3.4 5.6.7.8 1", "truncated", "end"],
    ["v2 length beyond the data, then FIN", v2(0x21, 0x11, inet4Block(), 100), "truncated", "end"],
    [
      "v2 length beyond the data, then silence",
      v2(0x21, 0x11, inet4Block(), 100),
      "timeout",
      "stall",
    ],
    ["v2 signature only, then silence", SIG, "timeout", "stall"],
    ["FIN before any byte", "", "truncated", "end"],
  ];
  const missing: Array<[string, Buffer | string, ProxyProtocolReason]> = [
    ["an HTTP request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "missing"],
    ["a TLS ClientHello", Buffer.from("16030100c8010000c40303", "hex"), "missing"],
    [
      "a bad v2 signature",
      Buffer.concat([Buffer.from("\r\n\r\n\0\r\nQUIX\n"), Buffer.alloc(16)]),
      "missing",
    ],
    ["lower-case v1", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "missing"],
    ["random bytes", Buffer.from([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]), "missing"],
  ];

  test("every malformed v1 line (TCP listener)", async (t) => {
    await hostile(t, "tcp", BAD_V1);
  });
  test("every malformed v2 header (TCP listener)", async (t) => {
    await hostile(t, "tcp", BAD_V2);
  });
  test("truncated, slow and missing headers (TCP listener)", async (t) => {
    await hostile(t, "tcp", [...truncations, ...missing]);
  });
  test("malformed, truncated and missing headers before TLS (TLS listener)", async (t) => {
    await hostile(t, "tls", [
      BAD_V1[0]!,
      BAD_V1[8]!,
      BAD_V1[BAD_V1.length - 1]!,
      BAD_V2[0]!,
      BAD_V2[11]!,
      BAD_V2[12]!,
      ...truncations,
      missing[1]!,
    ]);
  });
});

describe("tls.listen with proxyProtocol, and dialing with proxyHeader", () => {
  test("the header is read before TLS: the handshake works and remoteAddr is the client's", async (t) => {
    const { leaf, ca } = await pki();
    const ln = await tls.listen({
      addr: "127.0.0.1:0",
      certs: [leaf],
      proxyProtocol: { trusted: ["127.0.0.1/32"] },
      handler: async (c) => {
        const p = c.proxy;
        await c.write(
          `${c.remoteAddr} ${c.localAddr} v${p?.version} ${c.state().version} net=${c.netConn.remoteAddr.address}\n`,
        );
      },
    });
    t.after(() => ln.close());
    for (const version of [1, 2] as const) {
      const c = await tls.connect(`localhost:${ln.addr.port}`, {
        ca: ca.cert,
        timeout: 5000,
        proxyHeader: { version, source: "[2001:db8::7]:1234", destination: "[2001:db8::1]:443" },
      });
      t.after(() => c.close());
      const line = await c.readLine({ timeout: 5000 });
      assert.match(
        line!,
        new RegExp(
          `^\\[2001:db8::7\\]:1234 \\[2001:db8::1\\]:443 v${version} TLSv1\\.3 net=127\\.0\\.0\\.1$`,
        ),
      );
    }
  });

  test("tcp.connect and tls.connect put the header first on the wire, before the ClientHello", async (t) => {
    const got: Buffer[] = [];
    const srv = net.createServer((s) => {
      const parts: Buffer[] = [];
      s.on("data", (b) => {
        parts.push(b);
        const all = Buffer.concat(parts);
        if (all.length >= 60) {
          got.push(all);
          s.destroy();
        }
      });
      s.on("error", () => {});
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    t.after(() => new Promise<void>((r) => srv.close(() => r())));
    const port = (srv.address() as net.AddressInfo).port;
    const line = "PROXY TCP4 192.0.2.1 192.0.2.2 10 20\r\n";
    const c = await tcp.connect(`127.0.0.1:${port}`, {
      proxyHeader: { version: 1, source: "192.0.2.1:10", destination: "192.0.2.2:20" },
    });
    await c.write("x".repeat(40));
    await until(() => got.length === 1, "the raw server's bytes");
    await c.close();
    assert.equal(got[0]!.subarray(0, line.length).toString(), line);
    // TLS: the v2 header, then a TLS record (0x16 = handshake).
    await assert.rejects(
      tls.connect(`127.0.0.1:${port}`, {
        verifyPeer: false,
        timeout: 3000,
        proxyHeader: { version: 2, source: "192.0.2.1:10", destination: "192.0.2.2:20" },
      }),
    );
    await until(() => got.length === 2, "the raw server's TLS bytes");
    const hdr = encodeProxyHeader({
      version: 2,
      source: "192.0.2.1:10",
      destination: "192.0.2.2:20",
    });
    assert.ok(got[1]!.subarray(0, hdr.length).equals(hdr), "the v2 header comes first");
    assert.equal(got[1]![hdr.length], 0x16, "then the ClientHello record");
  });

  test("a bad proxyHeader is a ConfigError before any I/O", async () => {
    await assert.rejects(
      tcp.connect("127.0.0.1:9", {
        proxyHeader: { version: 1, source: "nope", destination: "1.2.3.4:5" },
      }),
      (e: unknown) => e instanceof ConfigError && /proxyHeader\.source/.test(e.message),
    );
    await assert.rejects(
      tls.connect("127.0.0.1:9", { proxyHeader: { version: 4 } as never }),
      (e: unknown) => e instanceof ConfigError && /proxyHeader\.version/.test(e.message),
    );
  });

  test("tls.server() over an accepted conn keeps the conn's header (STARTTLS behind a balancer)", async (t) => {
    const { leaf, ca } = await pki();
    const ln = await tcp.listen({ addr: "127.0.0.1:0", proxyProtocol: true });
    t.after(() => ln.close());
    const dialing = tcp.connect(ln.addr.toString(), {
      proxyHeader: { version: 2, source: "192.0.2.44:4", destination: "192.0.2.2:2" },
    });
    const plain = await ln.accept({ timeout: 5000 });
    const client = await dialing;
    t.after(() => client.close());
    const upgraded = tls.server(plain, { certs: [leaf] });
    t.after(() => upgraded.close());
    const secure = tls.client(client, { ca: ca.cert, serverName: "localhost" });
    t.after(() => secure.close());
    await Promise.all([upgraded.handshake({ timeout: 5000 }), secure.handshake({ timeout: 5000 })]);
    assert.equal(upgraded.remoteAddr.toString(), "192.0.2.44:4");
    assert.equal(upgraded.proxy?.version, 2);
  });
});
