/**
 * `tlsnet bench`: a thin launcher for the benchmark suite in bench/run.ts,
 * which lives in the repository (not in the published package) and runs
 * under tsx in a child process of its own.
 * @module
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type Command, err, out } from "./common.ts";

const usage = "tlsnet bench [throughput|pingpong|handshake|all] [--json] ...";

const help = `${usage}

Run the benchmarks (tlsnet beside raw node:tls, client and server in separate
processes). Everything after "bench" goes to bench/run.ts; they need a checkout
of the repository with its dev dependencies (npm install).

Example:
  tlsnet bench handshake --json`;

export const command: Command = { usage, help, run };

const MISSING = "benchmarks: run `npm run bench` in a checkout of the tlsnet repository";

async function run(argv: string[]): Promise<number> {
  const root = fileURLToPath(new URL("../../", import.meta.url));
  const script = fileURLToPath(new URL("../../bench/run.ts", import.meta.url));
  let loader: string | undefined;
  try {
    loader = import.meta.resolve("tsx");
  } catch {
    loader = undefined;
  }
  if (!existsSync(script) || loader === undefined) {
    if (argv.includes("--help") || argv.includes("-h")) out(help);
    out(MISSING);
    return 0;
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
