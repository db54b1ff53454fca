// `node scripts/run_ts.mjs NAME [ARGS...]`: bundle scripts/NAME.ts with esbuild (Node 20 cannot
// run TypeScript) and run it under `node --experimental-websocket` (Node 20's global WebSocket)
// with ARGS, stdin/stdout passed through. The pytest drivers use it for interop.ts (what the
// TypeScript protocol modules make, checked by Python) and the line-protocol e2e scripts
// core_e2e.ts, chat_e2e.ts and call_e2e.ts (the web client beside a real `salon serve`).
import { build } from "esbuild";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const [name, ...args] = process.argv.slice(2);
const web = resolve(fileURLToPath(import.meta.url), "..", "..");
const entry = name === undefined ? undefined : join(web, "scripts", `${name}.ts`);
if (entry === undefined || !/^[a-z0-9_]+$/.test(name) || !existsSync(entry)) {
  console.error("usage: node scripts/run_ts.mjs NAME [ARGS...]  (runs scripts/NAME.ts)");
  process.exit(2);
}
const dir = mkdtempSync(join(tmpdir(), `salon-${name}-`));
try {
  const bundle = join(dir, `${name}.mjs`);
  await build({
    entryPoints: [entry],
    outfile: bundle,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
    logLevel: "warning",
  });
  const run = spawnSync(process.execPath, ["--experimental-websocket", "--no-warnings", bundle, ...args], { stdio: "inherit" });
  process.exitCode = run.status ?? 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
