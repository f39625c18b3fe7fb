/**
 * The package as a user gets it: compiled by `npm run build`'s tsconfig into a temporary
 * node_modules/tlsnet (outside this checkout, so nothing resolves from our node_modules), then
 * loaded by child processes with `require()` and `import()`. Checks that the core and
 * tlsnet/certs load nothing from outside the package, install no globals, that the exports
 * carry a `default` condition, and that the CLI runs from the built files.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { nodeHeaders } from "../src/tls/engine/build.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const WORK = mkdtempSync(join(tmpdir(), "tlsnet-package-"));
const APP = join(WORK, "app");
const PKG = join(APP, "node_modules", "tlsnet");
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
  dependencies?: object;
  peerDependencies?: object;
  optionalDependencies?: object;
  exports: Record<string, string | Record<string, string>>;
  files: string[];
  sideEffects: unknown;
};

before(() => {
  mkdirSync(PKG, { recursive: true });
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(
    process.execPath,
    [tsc, "-p", "tsconfig.build.json", "--outDir", join(PKG, "dist")],
    {
      cwd: ROOT,
      stdio: "pipe",
      timeout: 120_000,
    },
  );
  cpSync(join(ROOT, "package.json"), join(PKG, "package.json"));
});

after(() => rmSync(WORK, { recursive: true, force: true }));

/** Runs `node ...args` in the app directory; returns stdout, throws with stderr on failure. */
function node(args: string[], env?: NodeJS.ProcessEnv): string {
  const r = spawnSync(process.execPath, args, {
    cwd: APP,
    encoding: "utf8",
    timeout: 120_000,
    ...(env ? { env } : {}),
  });
  assert.equal(r.status, 0, `node ${args.join(" ")} failed:\n${r.stderr}`);
  return r.stdout;
}

function distFiles(suffix: string): string[] {
  return (readdirSync(join(PKG, "dist"), { recursive: true }) as string[])
    .filter((f) => f.endsWith(suffix))
    .map((f) => join(PKG, "dist", f));
}

/** Module specifiers of static imports and re-exports (at the start of a line) and dynamic imports. */
function specifiers(src: string): string[] {
  const found = [
    ...src.matchAll(/^(?:import|export)\s[^;]*?\bfrom\s*["']([^"']+)["']/gm),
    ...src.matchAll(/^import\s*["']([^"']+)["']/gm),
    ...src.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g),
  ];
  return found.map((m) => m[1]!);
}

const requireOk = (process.features as { require_module?: boolean }).require_module === true;
const needsRequireEsm = {
  skip: requireOk
    ? false
    : `require() of ES modules needs Node >= 20.19 (this is ${process.version})`,
};

describe("package.json", () => {
  test("declares no runtime dependency of any kind", () => {
    assert.equal(pkg.dependencies, undefined);
    assert.equal(pkg.peerDependencies, undefined);
    assert.equal(pkg.optionalDependencies, undefined);
  });

  test("every code export has types first and a default condition (require and import)", () => {
    for (const [key, value] of Object.entries(pkg.exports)) {
      if (key === "./package.json") continue;
      assert.equal(typeof value, "object", key);
      const conditions = Object.keys(value as object);
      assert.deepEqual(conditions, ["types", "default"], `${key}: ${conditions}`);
    }
  });
});

describe("the built package", () => {
  test('require("tlsnet") and require("tlsnet/certs") work', needsRequireEsm, () => {
    const out = node([
      "-e",
      `const t = require("tlsnet");
       const c = require("tlsnet/certs");
       console.log(typeof t.tls.connect, typeof t.tcp.listen, typeof t.ConfigError, typeof c.createCA);
       c.createCA().then(async (ca) => {
         const leaf = await ca.issue({ names: ["localhost"] });
         console.log(leaf.key.split("\\n")[0]);
       });`,
    ]);
    assert.deepEqual(out.trim().split("\n"), [
      "function function function function",
      "-----BEGIN PRIVATE KEY-----",
    ]);
  });

  test('import("tlsnet") and import("tlsnet/certs") work and add no globals', () => {
    const out = node([
      "--input-type=module",
      "-e",
      `const before = new Set([...Reflect.ownKeys(globalThis), ...Reflect.ownKeys(Reflect).map((k) => "Reflect." + String(k))]);
       const t = await import("tlsnet");
       const c = await import("tlsnet/certs");
       await (await c.createCA()).issue({ names: ["localhost"] });
       const now = [...Reflect.ownKeys(globalThis), ...Reflect.ownKeys(Reflect).map((k) => "Reflect." + String(k))];
       console.log(JSON.stringify({ added: now.filter((k) => !before.has(k)).map(String), tls: typeof t.tls.listen }));`,
    ]);
    assert.deepEqual(JSON.parse(out), { added: [], tls: "function" });
  });

  test("the compiled code imports only node: builtins and its own files", () => {
    const files = distFiles(".js");
    assert.ok(files.length > 10, `${files.length} files in dist`);
    for (const file of files) {
      const src = readFileSync(file, "utf8");
      for (const spec of specifiers(src)) {
        assert.ok(spec.startsWith("node:") || spec.startsWith("."), `${file} imports ${spec}`);
      }
    }
  });

  test("the declarations reference nothing outside the package but Node's types", () => {
    for (const file of distFiles(".d.ts")) {
      const src = readFileSync(file, "utf8");
      assert.doesNotMatch(src, /reference types="(?!node")/, file);
      for (const spec of specifiers(src)) {
        assert.ok(spec.startsWith("node:") || spec.startsWith("."), `${file} imports ${spec}`);
      }
    }
  });

  test("source maps carry their sources (src/ is not shipped)", () => {
    const maps = distFiles(".js.map");
    assert.ok(maps.length > 10);
    for (const file of maps) {
      const map = JSON.parse(readFileSync(file, "utf8")) as {
        sources: string[];
        sourcesContent?: string[];
      };
      assert.equal(map.sourcesContent?.length, map.sources.length, file);
      assert.ok(
        map.sourcesContent.every((s) => s.length > 0),
        file,
      );
    }
  });

  test("the CLI runs from the built files: info and cert", () => {
    const main = join(PKG, "dist", "cli", "main.js");
    const info = JSON.parse(node([main, "info", "--json"])) as { backend: string };
    assert.equal(info.backend, "openssl");
    const dir = join(WORK, "certs");
    node([main, "cert", "api.test", "--dir", dir]);
    const pem = readFileSync(join(dir, "api.test.pem"), "utf8");
    assert.match(pem, /^-----BEGIN CERTIFICATE-----\n/);
  });

  test("tlsnet build-native compiles the shipped sources with Node's own headers; info then says native", {
    skip: canCompile(),
    timeout: 180_000,
  }, () => {
    assert.ok(pkg.files.includes("native"), "the package ships native/");
    cpSync(join(ROOT, "native"), join(PKG, "native"), { recursive: true });
    const main = join(PKG, "dist", "cli", "main.js");
    // Before: nothing built in the package, so the node engine, and info says why.
    const env = { ...process.env, TLSNET_ENGINE: "", TLSNET_NATIVE_ADDON: "" };
    const before = JSON.parse(node([main, "info", "--json"], env)) as Record<string, string>;
    assert.equal(before.engine, "node");
    assert.match(before.engineReason ?? "", /tlsnet build-native/);
    // node-api-headers (our dev dependency) cannot resolve from here: Node's include/node serves.
    const built = node([main, "build-native"], env);
    assert.match(
      built,
      /native engine ready: .*build\/native\/tlsnet_native\.node \(self-check: TLS_/,
    );
    const after = JSON.parse(node([main, "info", "--json"], env)) as Record<string, string>;
    assert.equal(after.engine, "native", after.engineReason);
  });
});

/** False when a C compiler and the headers build-native needs are there, else why not. */
function canCompile(): string | false {
  const cc = spawnSync(process.env.CC ?? "cc", ["--version"], { encoding: "utf8" });
  if (cc.error || cc.status !== 0) return "no C compiler (Debian: build-essential)";
  const include = nodeHeaders(); // what an installed package has: no node-api-headers there
  if (!include) return "this Node ships no N-API headers (include/node)";
  const ssl =
    existsSync("/usr/include/openssl/ssl.h") || existsSync(join(include, "openssl", "ssl.h"));
  return ssl ? false : "no OpenSSL 3 headers (Debian: libssl-dev)";
}
