/**
 * Build the native TLS engine (native/*.c) with the machine's C compiler:
 *
 *   npm run build:native            -> build/native/tlsnet_native.node
 *   npm run build:native -- --asan  -> build/native-asan/tlsnet_native.node
 *                                      (AddressSanitizer + UBSan; see npm run test:asan)
 *   --if-possible                   a failure is a warning, exit 0 (npm's prepare script,
 *                                      so that `npm ci` builds it where a compiler is there)
 *
 * No download: N-API headers come from the npm package node-api-headers when it
 * is installed, else from the include/node directory of the running Node;
 * OpenSSL headers from the system (Debian libssl-dev), else from Node's
 * include/node/openssl. The addon is not linked to libssl: it uses the OpenSSL
 * of the Node process that loads it. Exit status 1 with the reason on failure.
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, renameSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const asan = process.argv.includes("--asan");
const ifPossible = process.argv.includes("--if-possible");
const outDir = join(root, "build", asan ? "native-asan" : "native");
const out = join(outDir, "tlsnet_native.node");
const tmp = `${out}.${process.pid}.tmp`;
const cc = process.env.CC ?? "cc";

function napiInclude(): string {
  try {
    const pkg = createRequire(import.meta.url).resolve("node-api-headers/package.json");
    const dir = join(dirname(pkg), "include");
    if (existsSync(join(dir, "node_api.h"))) return dir;
  } catch {
    // not installed: fall back to the running Node's headers
  }
  const dir = resolve(dirname(process.execPath), "..", "include", "node");
  if (existsSync(join(dir, "node_api.h"))) return dir;
  throw new Error(
    "no N-API headers: install the dev dependency node-api-headers (npm ci), or use a Node " +
      "installation that ships include/node",
  );
}

function main(): void {
  const napi = napiInclude();
  // N-API headers after the system's, so that <openssl/...> is the system's (libssl-dev) when
  // present and Node's own copy (include/node/openssl) otherwise.
  const systemSSL = existsSync("/usr/include/openssl/ssl.h");
  const nodeSSL = existsSync(join(napi, "openssl", "ssl.h"));
  if (!systemSSL && !nodeSSL) {
    throw new Error("no OpenSSL headers: install libssl-dev (Debian) or openssl-devel");
  }
  const sources = readdirSync(join(root, "native"))
    .filter((f) => f.endsWith(".c"))
    .sort()
    .map((f) => join(root, "native", f));
  const flags = [
    "-std=gnu11",
    "-shared",
    "-fPIC",
    "-fvisibility=hidden",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-DOPENSSL_API_COMPAT=30000",
    "-DOPENSSL_NO_DEPRECATED",
    ...(asan
      ? ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
      : ["-O2", "-g"]),
    "-idirafter",
    napi,
    "-o",
    tmp,
    ...sources,
    "-ldl", // dladdr/dlopen (in libc itself since glibc 2.34)
  ];
  mkdirSync(outDir, { recursive: true });
  console.log(
    `build:native: ${cc} (${sources.length} files), N-API headers ${napi}, OpenSSL headers ${
      systemSSL ? "/usr/include/openssl" : join(napi, "openssl")
    }${asan ? ", ASan+UBSan" : ""}`,
  );
  const r = spawnSync(cc, flags, { stdio: "inherit" });
  if (r.error) throw new Error(`cannot run ${cc}: ${r.error.message} (install build-essential)`);
  if (r.status !== 0) throw new Error(`${cc} failed with status ${r.status}`);
  // A new file, renamed over the old: a process that has the old one loaded keeps its copy.
  renameSync(tmp, out);
  console.log(`build:native: wrote ${out}`);
}

try {
  main();
} catch (err) {
  const why = err instanceof Error ? err.message : String(err);
  if (ifPossible) {
    console.warn(
      `build:native: not built (${why}); tlsnet runs on the node engine (node:tls). ` +
        "Install a C compiler and OpenSSL 3 headers, then npm run build:native.",
    );
  } else {
    console.error(`build:native failed: ${why}`);
    process.exit(1);
  }
}
