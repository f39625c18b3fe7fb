/**
 * Model-based fuzzing of Conn (not part of `npm test`): the properties of
 * test/model.test.ts (test/helpers/model.ts) with many more runs.
 *
 *   npm run fuzz -- --runs 2000 --time 600
 *   npm run fuzz -- --config tls-server --seed 42 --runs 500
 *   FC_PROP=tls-server FC_SEED=-12345 FC_PATH="3:1:0" npm run fuzz      # replay a counterexample
 *
 * Options (environment in brackets):
 *   --runs N        runs per config (FUZZ_RUNS; default 1000)
 *   --seed S        fast-check seed (FC_SEED; default: random, printed)
 *   --path P        replay path of a counterexample (FC_PATH; needs the seed)
 *   --config NAMES  tcp-server,tcp-client,tls-server,tls-client (FC_PROP; default all)
 *   --time SECONDS  stop starting new runs after this long, per config (FUZZ_TIME; default 600)
 *   --shrink SECONDS  shrinking budget after a failure (default 120)
 *   --max-actions N actions per sequence (default 20)
 *   --ignore RULES  comma-separated rule ids to ignore, to look for the next bug while a
 *                   known one is being fixed (exploration only; the suite ignores nothing)
 *
 * Prints each config's result, the seed and path to reproduce, the shrunk
 * counterexample and its violations. Exits 1 if any config failed.
 */
import { parseArgs } from "node:util";
import { CONFIGS, configName, runModel } from "../test/helpers/model.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string" },
    seed: { type: "string" },
    path: { type: "string" },
    config: { type: "string" },
    time: { type: "string" },
    shrink: { type: "string" },
    "max-actions": { type: "string" },
    ignore: { type: "string" },
  },
});

const env = process.env;
const num = (s: string | undefined, dflt: number) =>
  s === undefined || s === "" ? dflt : Number(s);
const runs = num(values.runs ?? env.FUZZ_RUNS, 1000);
const seedArg = values.seed ?? env.FC_SEED;
const path = values.path ?? env.FC_PATH;
const timeS = num(values.time ?? env.FUZZ_TIME, 600);
const shrinkS = num(values.shrink, 120);
const maxActions = num(values["max-actions"], 20);
const wanted = (values.config ?? env.FC_PROP ?? "").split(",").filter(Boolean);
const ignore = new Set((values.ignore ?? "").split(",").filter(Boolean));
if (path && seedArg === undefined) {
  console.error("--path needs --seed (or FC_PATH needs FC_SEED)");
  process.exit(2);
}
const configs = wanted.length ? CONFIGS.filter((c) => wanted.includes(configName(c))) : CONFIGS;
if (configs.length === 0) {
  console.error(`unknown config ${wanted.join(",")}; one of ${CONFIGS.map(configName).join(", ")}`);
  process.exit(2);
}

let failed = false;
for (const cfg of configs) {
  const seed =
    seedArg === undefined ? (Date.now() ^ (Math.random() * 0x7fffffff)) | 0 : Number(seedArg);
  let done = 0;
  const t0 = Date.now();
  console.log(
    `${configName(cfg)}: up to ${runs} runs, ${timeS} s, seed ${seed}${path ? `, path ${path}` : ""}`,
  );
  const r = await runModel(cfg, {
    numRuns: runs,
    seed,
    path,
    maxActions,
    shrinkBudgetMs: shrinkS * 1000,
    timeLimitMs: timeS * 1000,
    ignore,
    onRun: () => {
      done++;
      if (done % 100 === 0)
        console.log(`  ${done} runs, ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    },
  });
  console.log(
    `${r.name}: ${r.failed ? "FAILED" : "ok"}, ${r.executed} sequences run, ${(r.ms / 1000).toFixed(1)} s, seed ${r.seed}`,
  );
  if (r.failed) {
    failed = true;
    console.log(r.report);
  }
}
process.exit(failed ? 1 : 0);
