/**
 * Build the native TLS engine (native/*.c) with the machine's C compiler
 * (src/tls/engine/build.ts says where the headers come from):
 *
 *   npm run build:native            -> build/native/tlsnet_native.node
 *   npm run build:native -- --asan  -> build/native-asan/tlsnet_native.node
 *                                      (AddressSanitizer + UBSan; see npm run test:asan)
 *   --if-possible                   a failure is a warning, exit 0 (npm's prepare script,
 *                                      so that `npm ci` builds it where a compiler is there)
 *
 * Exit status 1 with the reason on failure. An installed package does the same
 * with `tlsnet build-native`.
 * @module
 */
import { buildNative } from "../src/tls/engine/build.ts";

const asan = process.argv.includes("--asan");
const ifPossible = process.argv.includes("--if-possible");

try {
  buildNative({ asan, log: (line) => console.log(line) });
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
