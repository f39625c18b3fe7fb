/**
 * The first hour of a new user (issue 14, items 1 to 5): the README's set-up commands, what
 * `npm start` prints and how it stops, the README example for every CA shape, ESM-only said
 * plainly. Real child processes (npm, the CLI, openssl) on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { createCA } from "../src/certs/index.ts";
import { type TLSConn, tls } from "../src/index.ts";
import { ROOT, run, start, WORK, which } from "./helpers/cli.ts";

const README = readFileSync(join(ROOT, "README.md"), "utf8");

/** The fenced blocks of a markdown section, by heading. */
function blocks(section: string, lang: string): string[] {
  const start = README.indexOf(`\n## ${section}\n`);
  assert.notEqual(start, -1, `README has no "## ${section}" section`);
  const end = README.indexOf("\n## ", start + 1);
  const text = README.slice(start, end === -1 ? undefined : end);
  return [...text.matchAll(new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\`\`\``, "g"))].map(
    (m) => m[1]!,
  );
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test("README set-up: nothing is pasted after the command that does not return", () => {
  const [setup] = blocks("Set-up", "sh");
  const commands = setup!
    .split("\n")
    .map((l) => l.replace(/#.*$/, "").trim())
    .filter(Boolean);
  const i = commands.findIndex((c) => /\bnpm start\b/.test(c));
  assert.notEqual(i, -1, "the set-up block shows npm start");
  assert.equal(i, commands.length - 1, `npm start must come last: ${commands.join(" | ")}`);
  assert.doesNotMatch(commands[i]!, /&&\s*\S|;\s*\S/); // nothing chained after it either
  assert.ok(
    commands.some((c) => /(^|&&\s*)npm test\b/.test(c)),
    "the set-up block runs npm test",
  );
  assert.match(README, /in another terminal/i);
});

test("npm start prints a command that works here, and stops when npm is killed", {
  timeout: 60_000,
  skip: !which("npm") && "npm is not on the PATH",
}, async (t) => {
  const home = mkdtempSync(join(WORK, "home-npm-"));
  const npm = start(["start", "--", "--addr", "127.0.0.1:0"], {
    command: ["npm"],
    env: { TLSNET_HOME: home },
    t,
  });
  const pidLine = await npm.waitFor(/stop: {3}Ctrl-C, or kill (\d+)/, 30_000);
  const serverPid = Number(pidLine[1]);
  t.after(() => {
    if (alive(serverPid)) process.kill(serverPid, "SIGKILL");
  });
  assert.notEqual(serverPid, npm.child.pid, "the server is npm's descendant, not npm");

  // The printed command, pasted into a shell in the checkout, connects and verifies.
  const tryLine = (await npm.waitFor(/^try: {4}(.*)$/m))[1]!;
  assert.match(tryLine, /^npm run -s tlsnet -- connect 127\.0\.0\.1:\d+ --ca \S+ca\.pem$/);
  const pasted = spawnSync("sh", ["-c", `echo pasted | ${tryLine}`], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 30_000,
    env: { ...process.env, NO_COLOR: "1" },
  });
  assert.equal(pasted.status, 0, pasted.stderr);
  assert.equal(pasted.stdout, "pasted\n");
  assert.match(pasted.stderr, /verified\s+yes/);

  // Stopping npm by its pid stops the server too (the shell between them does not pass it on).
  npm.child.kill("SIGTERM");
  await npm.exited;
  const until = Date.now() + 10_000;
  while (alive(serverPid) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  assert.equal(alive(serverPid), false, `server ${serverPid} outlived npm`);
});

test("README example runs as written, and with an intermediate CA", {
  timeout: 60_000,
}, async () => {
  const [example] = blocks("Example", "ts");
  assert.match(example!, /certs: \[await ca\.issue\(/);
  const dir = mkdtempSync(join(WORK, "readme-"));
  const root = "const root = await createCA();\n";
  const variants = {
    root: example!,
    // The same code with a CA that has an intermediate: the client trusts only the root.
    intermediate: example!
      .replace(
        "const ca = await createCA();\n",
        `${root}const ca = (await root.issue({ names: [], intermediate: true })).ca;\n`,
      )
      .replace("{ ca: ca.cert,", "{ ca: root.cert,"),
  };
  assert.notEqual(variants.intermediate, example, "the example's shape changed; update this test");
  const results = await Promise.all(
    Object.entries(variants).map(([name, code]) => {
      const file = join(dir, `${name}.mts`);
      writeFileSync(file, code);
      return run([], { command: [process.execPath, "--import", "tsx", file] });
    }),
  );
  for (const r of results) {
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "echo: hello TLSv1.3\n");
  }
});

test("certs: [await ca.issue(...)] from an intermediate: tlsnet connect and openssl verify it", {
  timeout: 60_000,
}, async (t) => {
  const root = await createCA();
  const inter = await root.issue({ names: [], intermediate: true });
  const leaf = await inter.ca.issue({ names: ["localhost", "127.0.0.1"] });
  const server = await tls.listen({
    addr: "127.0.0.1:0",
    certs: [leaf],
    handler: async (conn: TLSConn) => {
      for await (const chunk of conn) await conn.write(chunk);
    },
  });
  t.after(() => server.close());
  const dir = mkdtempSync(join(WORK, "chain-"));
  const rootFile = join(dir, "root.pem");
  writeFileSync(rootFile, root.cert);

  const r = await run(["connect", `127.0.0.1:${server.addr.port}`, "--ca", rootFile], {
    input: "chain\n",
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "chain\n");
  assert.match(r.stderr, /verified\s+yes/);
  assert.match(r.stderr, /1 CN=tlsnet dev intermediate CA [0-9a-f]+, O=tlsnet/);

  if (!which("openssl")) {
    t.diagnostic("openssl is not installed: s_client check skipped");
    return;
  }
  const s = spawn(
    "openssl",
    [
      "s_client",
      "-connect",
      `127.0.0.1:${server.addr.port}`,
      "-servername",
      "localhost",
      "-verify_hostname",
      "localhost",
      "-CAfile",
      rootFile,
      "-verify_return_error",
    ],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  t.after(() => s.kill("SIGKILL"));
  let out = "";
  s.stdout.on("data", (b: Buffer) => {
    out += b.toString();
  });
  s.stderr.on("data", (b: Buffer) => {
    out += b.toString();
  });
  s.stdin.end();
  const code = await new Promise<number | null>((resolve) => s.on("close", resolve));
  assert.equal(code, 0, out);
  assert.match(out, /Verify return code: 0 \(ok\)/);
  assert.match(out, /depth=1 O = tlsnet, CN = tlsnet dev intermediate CA/);
});

test("README says tlsnet is ESM-only, as long as package.json has no require export", () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  const conditions = JSON.stringify(pkg.exports);
  if (conditions.includes('"require"') || conditions.includes('"default"')) {
    assert.match(README, /require\("tlsnet"\)/, "package.json exports require: show it in README");
  } else {
    assert.equal(pkg.type, "module");
    assert.match(README, /ESM-only/);
    assert.match(README, /TS1309/);
  }
});
