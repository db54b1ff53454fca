// Bundles the call media test page and the SFrame worker into OUTDIR (tests/test_web_call_media.py
// serves it): index.html, call_media_page.js, sframe_worker.js.
import { build } from "esbuild";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const out = process.argv[2];
if (out === undefined) {
  console.error("usage: node test/browser/build_call_media.mjs OUTDIR");
  process.exit(2);
}
const web = resolve(fileURLToPath(import.meta.url), "..", "..", "..");
const common = { bundle: true, format: "esm", target: "es2022", platform: "browser", logLevel: "warning" };
await build({ ...common, entryPoints: [join(web, "test", "browser", "call_media_page.ts")], outfile: join(out, "call_media_page.js") });
await build({ ...common, entryPoints: [join(web, "src", "media", "sframe_worker.ts")], outfile: join(out, "sframe_worker.js") });
writeFileSync(
  join(out, "index.html"),
  '<!doctype html><html><head><meta charset="utf-8"><title>call media</title>' +
    '<meta name="salon-sframe-worker" content="sframe_worker.js">' +
    '<script type="module" src="call_media_page.js"></script></head><body></body></html>\n',
);
