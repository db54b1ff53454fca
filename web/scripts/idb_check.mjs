// Bundle scripts/idb_check.ts for the browser into OUTDIR (with an index.html that loads it),
// for tests/test_web_idb.py.
import { build } from "esbuild";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const out = process.argv[2];
if (out === undefined) {
  console.error("usage: node scripts/idb_check.mjs OUTDIR");
  process.exit(2);
}
const web = resolve(fileURLToPath(import.meta.url), "..", "..");
await build({
  entryPoints: [join(web, "scripts", "idb_check.ts")],
  outfile: join(out, "idb_check.js"),
  bundle: true,
  platform: "browser",
  format: "iife",
  target: "es2022",
  logLevel: "warning",
});
writeFileSync(join(out, "index.html"), '<!doctype html><meta charset="utf-8"><title>idb check</title><script src="idb_check.js"></script>\n');
