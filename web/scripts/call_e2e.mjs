// Bundle scripts/call_e2e.ts with esbuild and run it under `node --experimental-websocket`
// (Node 20's global WebSocket), stdin/stdout passed through: tests/test_web_call_signalling.py
// drives the web CallClient beside real `salon call` participants with it.
import { build } from "esbuild";
import { mkdtempSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const web = resolve(fileURLToPath(import.meta.url), "..", "..");
const dir = mkdtempSync(join(tmpdir(), "salon-core-e2e-"));
try {
  const bundle = join(dir, "call_e2e.mjs");
  await build({
    entryPoints: [join(web, "scripts", "call_e2e.ts")],
    outfile: bundle,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
    logLevel: "warning",
  });
  const run = spawnSync(process.execPath, ["--experimental-websocket", "--no-warnings", bundle], { stdio: "inherit" });
  process.exitCode = run.status ?? 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
