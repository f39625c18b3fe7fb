/**
 * The SNI selector (src/tls/sni.ts): which certificate entry serves a server
 * name. Exact beats wildcard, a wildcard covers exactly one label, no SNI or
 * an unknown name gets the first entry, names compare case-insensitively and
 * without a trailing dot, and a certificate without SAN serves its CN.
 * Identities are built by tls.config from certificates issued at test time;
 * a property test checks the selection rule on random name sets (fast-check,
 * seeded), and one loopback test checks what a raw node:tls client is served.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { connect as rawTLSConnect } from "node:tls";
import fc from "fast-check";
import { createCA, type IssuedCert } from "../src/certs/index.ts";
import { tls } from "../src/index.ts";
import type { Identity } from "../src/tls/config.ts";
import { sniSelector } from "../src/tls/sni.ts";
import { withTimeout } from "./helpers/util.ts";

const SEED = Number(process.env.FC_SEED ?? 20_240_611);

describe("sniSelector on identities built from real certificates", async () => {
  const ca = await createCA();
  const root = await createCA({ name: "tlsnet sni test root" });
  const entries = {
    dflt: await ca.issue({ names: ["default.test"] }),
    wild: await ca.issue({ names: ["*.example.com"] }),
    exact: await ca.issue({ names: ["api.example.com"] }),
    mixed: await ca.issue({ names: ["Mixed.Example.ORG"] }),
    // No SAN at all: only intermediates can be issued without names; the CN is what it serves.
    cnOnly: await root.issue({ names: [], intermediate: true, commonName: "CN-Only.test" }),
    // With a SAN, the CN is not a name the certificate serves.
    sanAndCn: await ca.issue({ names: ["san.test"], commonName: "cn-ignored.test" }),
    dupFirst: await ca.issue({ names: ["dup.test"], commonName: "dup first" }),
    dupSecond: await ca.issue({ names: ["dup.test"], commonName: "dup second" }),
    ip: await ca.issue({ names: ["127.0.0.1"] }),
  };
  const order = Object.keys(entries) as Array<keyof typeof entries>;
  const ids = (list: IssuedCert[]) =>
    tls.config({ certs: list.map((c) => ({ cert: c.cert, key: c.key })) }).identities;
  const all = ids(order.map((k) => entries[k]));
  const select = sniSelector(all);
  const at = (k: keyof typeof entries) => order.indexOf(k);

  test("identities carry the SAN DNS names, lower-case; the CN only without a SAN", () => {
    assert.deepEqual(all[at("mixed")]!.names, ["mixed.example.org"]);
    assert.deepEqual(all[at("wild")]!.names, ["*.example.com"]);
    assert.deepEqual(all[at("cnOnly")]!.names, ["cn-only.test"]);
    assert.deepEqual(all[at("sanAndCn")]!.names, ["san.test"]);
    assert.deepEqual(all[at("ip")]!.names, [], "an IP SAN is not a DNS name");
  });

  test("no SNI and unknown names get the first entry", () => {
    assert.equal(select(undefined), 0);
    assert.equal(select(""), 0);
    assert.equal(select("unknown.test"), 0);
    assert.equal(select("127.0.0.1"), 0);
    assert.equal(select("cn-ignored.test"), 0, "a CN beside a SAN serves nothing");
  });

  test("exact beats wildcard, whichever comes first", () => {
    assert.ok(at("wild") < at("exact"), "the wildcard is listed first here");
    assert.equal(select("api.example.com"), at("exact"));
    const exactFirst = sniSelector(ids([entries.dflt, entries.exact, entries.wild]));
    assert.equal(exactFirst("api.example.com"), 1);
    assert.equal(exactFirst("www.example.com"), 2);
  });

  test("a wildcard matches exactly one label", () => {
    assert.equal(select("www.example.com"), at("wild"));
    assert.equal(select("a-b_c.example.com"), at("wild"));
    assert.equal(select("example.com"), 0, "not the bare parent");
    assert.equal(select("a.b.example.com"), 0, "not two labels");
    assert.equal(select(".example.com"), 0, "not an empty label");
    assert.equal(select("www.example.com.evil.test"), 0);
    assert.equal(select("wwwexample.com"), 0);
  });

  test("names compare case-insensitively, on both sides", () => {
    assert.equal(select("API.EXAMPLE.COM"), at("exact"));
    assert.equal(select("Www.Example.Com"), at("wild"));
    assert.equal(select("mixed.example.org"), at("mixed"));
    assert.equal(select("MIXED.EXAMPLE.ORG"), at("mixed"));
  });

  test("a trailing dot in the server name is ignored", () => {
    assert.equal(select("api.example.com."), at("exact"));
    assert.equal(select("WWW.example.com."), at("wild"));
    assert.equal(select("default.test."), at("dflt"));
    assert.equal(select("."), 0);
  });

  test("a certificate without SAN serves its CN", () => {
    assert.equal(select("cn-only.test"), at("cnOnly"));
    assert.equal(select("CN-ONLY.test."), at("cnOnly"));
  });

  test("earlier entries win ties", () => {
    assert.equal(select("dup.test"), at("dupFirst"));
  });
});

describe("sniSelector: the rule on random name sets", () => {
  /** The documented rule, written out plainly: the index that must serve `sni`. */
  function expected(entries: string[][], sni: string | undefined): number {
    if (!sni) return 0;
    const name = sni.toLowerCase().replace(/\.$/, "");
    const exact = entries.findIndex((ns) => ns.includes(name) && !name.startsWith("*."));
    if (exact >= 0) return exact;
    const labels = name.split(".");
    if (labels.length >= 2 && labels[0] !== "") {
      const pattern = `*.${labels.slice(1).join(".")}`;
      const wild = entries.findIndex((ns) => ns.includes(pattern));
      if (wild >= 0) return wild;
    }
    return 0;
  }

  const label = fc.constantFrom("a", "b", "xy");
  const dnsName = fc.array(label, { minLength: 1, maxLength: 3 }).map((l) => l.join("."));
  const certName = fc.tuple(fc.boolean(), dnsName).map(([w, n]) => (w ? `*.${n}` : n));
  const serverName = fc.option(
    fc
      .tuple(dnsName, fc.boolean(), fc.boolean())
      .map(([n, upper, dot]) => (upper ? n.toUpperCase() : n) + (dot ? "." : "")),
    { nil: undefined },
  );

  test("matches the rule for every name", () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(certName, { minLength: 1, maxLength: 3 }), {
          minLength: 1,
          maxLength: 5,
        }),
        fc.array(serverName, { minLength: 1, maxLength: 8 }),
        (entries, names) => {
          // The selector reads only `names` (lower-case, as tls.config builds them).
          const select = sniSelector(entries.map((names) => ({ names }) as unknown as Identity));
          for (const sni of names) {
            assert.equal(
              select(sni),
              expected(entries, sni),
              `${sni} over ${JSON.stringify(entries)}`,
            );
          }
        },
      ),
      { seed: SEED, numRuns: 2000 },
    );
  });
});

describe("a TLS listener serves what the selector picks", async () => {
  const ca = await createCA();
  const certs = await Promise.all([
    ca.issue({ names: ["first.test"] }),
    ca.issue({ names: ["*.example.com"] }),
    ca.issue({ names: ["api.example.com"] }),
  ]);

  /** The subject a raw node:tls client is served for `servername` (sent as given). */
  const servedTo = async (port: number, servername: string | undefined): Promise<string> => {
    const sock = rawTLSConnect({
      host: "127.0.0.1",
      port,
      rejectUnauthorized: false,
      ...(servername === undefined ? {} : { servername }),
    });
    try {
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          sock.once("secureConnect", resolve);
          sock.once("error", reject);
        }),
        5000,
        `handshake with servername ${servername}`,
      );
      return sock.getPeerCertificate().subject.CN as string;
    } finally {
      sock.destroy();
    }
  };

  test("case, trailing dot and wildcard depth, as a raw client sends them", async (t) => {
    const ln = await tls.listen({
      addr: "127.0.0.1:0",
      certs,
      handler: async (conn) => {
        await conn.readAll().catch(() => {});
      },
    });
    t.after(() => ln.close());
    const port = ln.addr.port;
    assert.equal(await servedTo(port, "API.Example.COM"), "api.example.com");
    assert.equal(await servedTo(port, "api.example.com."), "api.example.com");
    assert.equal(await servedTo(port, "WWW.EXAMPLE.COM"), "*.example.com");
    assert.equal(await servedTo(port, "a.b.example.com"), "first.test");
    assert.equal(await servedTo(port, "nobody.test"), "first.test");
    assert.equal(await servedTo(port, undefined), "first.test");
  });
});
