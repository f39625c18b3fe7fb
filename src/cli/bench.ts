/**
 * `tlsnet bench`: a thin launcher for the benchmark suite in bench/run.ts,
 * which lives in the repository (not in the published package) and runs
 * under tsx in a child process of its own.
 * @module
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type Command, err, out } from "./common.ts";

const usage =
  "tlsnet bench [WORKLOAD...] [--quick] [--json] [--rounds N] [--conns N] [--svg FILE] [--src DIR] [--cpu-prof]";

const about = `${usage}

Run the benchmarks: tlsnet beside raw node:tls, client and server in separate
processes, several rounds, medians and ratios. Everything after "bench" goes to
the suite (bench/run.ts in the repository); it needs a checkout with its dev
dependencies (npm ci), and is not part of the installed package.`;

const example = `Example:
  tlsnet bench handshake --quick
  tlsnet bench throughput pingpong --rounds 3 --json > bench.json`;

const help = `${about}\n\n${example}`;

export const command: Command = { usage, help, run };

const MISSING =
  "the benchmarks are not in the installed package; run them from a checkout of the repository (npm ci, then npm run -s tlsnet -- bench)";

/** The suite's own option list (its usage text without its first line), or undefined. */
function suiteOptions(loader: string, script: string, root: string): string | undefined {
  const r = spawnSync(process.execPath, ["--import", loader, script, "--help"], {
    cwd: root,
    encoding: "utf8",
    timeout: 30_000,
  });
  if (r.status !== 0) return undefined;
  const lines = r.stdout.trimEnd().split("\n").slice(1);
  return lines.length > 0 ? lines.join("\n") : undefined;
}

async function run(argv: string[]): Promise<number> {
  const root = fileURLToPath(new URL("../../", import.meta.url));
  const script = fileURLToPath(new URL("../../bench/run.ts", import.meta.url));
  let loader: string | undefined;
  try {
    loader = import.meta.resolve("tsx");
  } catch {
    loader = undefined;
  }
  const wantsHelp = argv.includes("--help") || argv.includes("-h");
  const present = existsSync(script) && loader !== undefined;
  if (wantsHelp) {
    const options = present && loader ? suiteOptions(loader, script, root) : undefined;
    out(about);
    out();
    if (options) out(`Options (from bench/run.ts):\n${options}\n`);
    out(example);
    if (!present) {
      out();
      out(MISSING);
    }
    return 0;
  }
  if (!present || loader === undefined) {
    err(`tlsnet bench: ${MISSING}`);
    return 1;
  }
  const child = spawn(process.execPath, ["--import", loader, script, ...argv], {
    cwd: root,
    stdio: "inherit",
  });
  // Ctrl-C reaches the child through the terminal; SIGTERM is passed on by hand.
  const forward = () => child.kill("SIGTERM");
  process.on("SIGTERM", forward);
  return new Promise<number>((resolve) => {
    child.on("error", (e) => {
      process.off("SIGTERM", forward);
      err(`tlsnet bench: cannot start the benchmarks: ${e.message}`);
      resolve(1);
    });
    child.on("exit", (code, signal) => {
      process.off("SIGTERM", forward);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}
