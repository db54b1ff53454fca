// Bundles the real-call test page (call_cli_page.ts) and the SFrame worker as a web_dir that
// `salon serve` serves (tests/test_web_call_media_cli.py): index.html + assets/.
import { build } from "esbuild";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const out = process.argv[2];
if (out === undefined) {
  console.error("usage: node test/browser/build_call_cli.mjs OUTDIR");
  process.exit(2);
}
const web = resolve(fileURLToPath(import.meta.url), "..", "..", "..");
mkdirSync(join(out, "assets"), { recursive: true });
const common = {
  bundle: true, format: "esm", target: "es2022", platform: "browser", logLevel: "warning",
  external: ["crypto", "fs", "path"], define: { "process.env.NODE_ENV": '"production"' },
};
await build({ ...common, entryPoints: [join(web, "test", "browser", "call_cli_page.ts")], outfile: join(out, "assets", "call_cli_page.js") });
await build({ ...common, entryPoints: [join(web, "src", "media", "sframe_worker.ts")], outfile: join(out, "assets", "sframe_worker.js") });
writeFileSync(
  join(out, "index.html"),
  '<!doctype html><html><head><meta charset="utf-8"><title>call</title>' +
    '<meta name="salon-sframe-worker" content="/assets/sframe_worker.js">' +
    '<script type="module" src="/assets/call_cli_page.js"></script></head><body></body></html>\n',
);
