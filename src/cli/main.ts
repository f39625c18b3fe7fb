#!/usr/bin/env node
/**
 * The `tlsnet` command: picks the subcommand, runs it, and turns what it
 * returns or throws into the exit status: 0 ok, 1 runtime failure (one line
 * on stderr), 2 usage (the reason and the usage line).
 * @module
 */
import { type Command, err, flushStdout, out, UsageError, version } from "./common.ts";
import { debugLines, explain } from "./explain.ts";

// Loaded on demand: `tlsnet info` need not load the certificate library.
const COMMANDS: Record<string, () => Promise<{ command: Command }>> = {
  serve: () => import("./serve.ts"),
  proxy: () => import("./proxy.ts"),
  connect: () => import("./connect.ts"),
  fetch: () => import("./fetch.ts"),
  cert: () => import("./cert.ts"),
  bench: () => import("./bench.ts"),
  info: () => import("./info.ts"),
  "build-native": () => import("./build-native.ts"),
};

const USAGE = `usage: tlsnet <command> [options]

Commands:
  serve     serve TLS (echo or HTTP/1.1) with a generated dev certificate or yours
  proxy     terminate TLS and forward to a plaintext TCP service (PROXY protocol out)
  connect   handshake with a server, show what was negotiated, pipe stdin/stdout
  fetch     GET many https:// URLs concurrently, with a summary table
  cert      make a dev CA and certificates for names (PEM files)
  info      show the TLS backend, versions, protocol range and cipher list
  build-native  compile the native TLS engine for this Node (C compiler, OpenSSL headers)
  bench     run the benchmarks (from a checkout of the repository)

Run 'tlsnet <command> --help' for a command's options and an example.

Example:
  tlsnet serve --addr 127.0.0.1:8443 &
  echo hello | tlsnet connect 127.0.0.1:8443 --ca ~/.local/share/tlsnet/ca.pem

From a checkout, run it as 'npm run -s tlsnet -- <command>'.`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    err(USAGE);
    return 2;
  }
  if (name === "--help" || name === "-h" || name === "help") {
    out(USAGE);
    return 0;
  }
  if (name === "--version" || name === "-v") {
    out(version());
    return 0;
  }
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!load) {
    err(`tlsnet: unknown command '${name}'`);
    err(USAGE.split("\n")[0]);
    err("run 'tlsnet --help' for the list of commands");
    return 2;
  }
  const { command } = await load();
  try {
    return await command.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      err(`tlsnet ${name}: ${e.message}`);
      err(`usage: ${command.usage}`);
      err(`run 'tlsnet ${name} --help' for more`);
      return 2;
    }
    // Commands word their own failures (CliError); anything else is worded here, without a stack.
    const server = name === "serve" || name === "proxy";
    const x = explain(e, {
      role: server ? "server" : "client",
      fields: name === "proxy" ? { addr: "--listen" } : { addr: "--addr" },
    });
    err(`tlsnet ${name}: ${x.message}`);
    if (x.hint) err(x.hint);
    if (process.env.TLSNET_DEBUG) for (const line of debugLines(e)) err(line);
    return 1;
  }
}

// `tlsnet connect ... | head` closes our stdout early; that is not an error.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code === "EPIPE") process.exit(0);
  throw e;
});

const code = await main(process.argv.slice(2));
await flushStdout();
// Exit explicitly: a pending stdin read (connect) must not keep the process alive.
process.exit(code);
