// Bundle scripts/interop.ts with esbuild (Node 20 cannot run TypeScript) and run it:
// `node scripts/interop.mjs OUT.json` writes what the TypeScript protocol modules make, for
// tests/test_web_interop.py to check with the Python implementation.
import { build } from "esbuild";
import { mkdtempSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const out = process.argv[2];
if (out === undefined) {
  console.error("usage: node scripts/interop.mjs OUT.json");
  process.exit(2);
}
const web = resolve(fileURLToPath(import.meta.url), "..", "..");
const dir = mkdtempSync(join(tmpdir(), "salon-interop-"));
try {
  const bundle = join(dir, "interop.mjs");
  await build({
    entryPoints: [join(web, "scripts", "interop.ts")],
    outfile: bundle,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
    logLevel: "warning",
  });
  const run = spawnSync(process.execPath, [bundle, resolve(out)], { stdio: "inherit" });
  process.exitCode = run.status ?? 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
