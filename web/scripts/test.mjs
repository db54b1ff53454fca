// Bundle every test/*.test.ts with esbuild (Node 20 cannot run TypeScript) into .test-build/,
// then run them with node's own test runner. The tests read ../protocol/vectors/.
import { build } from "esbuild";
import { readdirSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";

const out = ".test-build";
rmSync(out, { recursive: true, force: true });
const tests = readdirSync("test").filter((name) => name.endsWith(".test.ts"));
if (tests.length === 0) {
  console.error("no tests found in web/test");
  process.exit(1);
}
await build({
  entryPoints: tests.map((name) => join("test", name)),
  outdir: out,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  outExtension: { ".js": ".mjs" },
  banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
  logLevel: "warning",
});
const files = tests.map((name) => join(out, name.replace(/\.ts$/, ".mjs")));
const run = spawnSync(process.execPath, ["--test", ...files], { stdio: "inherit" });
process.exit(run.status ?? 1);
