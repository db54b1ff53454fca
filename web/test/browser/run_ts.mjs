// Bundles one TypeScript entry for node with esbuild (Node 20 cannot run TypeScript) and runs
// it with the remaining arguments: `node test/browser/run_ts.mjs ENTRY.ts ARGS…`.
import { build } from "esbuild";
import { mkdtempSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const [entry, ...args] = process.argv.slice(2);
if (entry === undefined) {
  console.error("usage: node test/browser/run_ts.mjs ENTRY.ts ARGS…");
  process.exit(2);
}
const dir = mkdtempSync(join(tmpdir(), "salon-run-ts-"));
try {
  const bundle = join(dir, "entry.mjs");
  await build({
    entryPoints: [resolve(entry)], outfile: bundle, bundle: true, platform: "node", format: "esm", target: "node20",
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
    logLevel: "warning",
  });
  const run = spawnSync(process.execPath, [bundle, ...args.map((a) => resolve(a))], { stdio: "inherit" });
  process.exitCode = run.status ?? 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
