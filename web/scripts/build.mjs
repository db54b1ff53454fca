// `npm run build [-- --outdir DIR]`: the web app, bundled with esbuild, REPRODUCIBLY — the same
// checkout gives byte-identical files on any machine (esbuild pinned by package-lock.json; no
// timestamps, absolute paths or source maps in the output; minified; names content-hashed).
//
// Output (default ../spaces/web_dist/, which the Python package ships and `salon serve` serves):
//   assets/<name>-<hash>.js|.css|…   the bundle (immutable, content-hashed names)
//   assets/*.LEGAL.txt               the license comments esbuild took out of the bundle
//   manifest.json                    {"bundle": HASH, "files": {path: sha256 hex}} of assets/
//   assets/sframe_worker-<hash>.js   the SFrame media worker (src/media/sframe_worker.ts), its
//                                    own self-contained module (a Worker loads it same-origin,
//                                    CSP `worker-src 'self'`); inside HASH like every asset
//   index.html                       web/index.html with <meta name="salon-bundle" content=HASH>,
//                                    <meta name="salon-sframe-worker" content=/assets/…js> (the
//                                    worker's URL, read by src/call/sfu.ts sframeWorkerUrl()),
//                                    the stylesheet links and the module script put in
//
// HASH (the "bundle hash") covers every file under assets/ and nothing else: it is the SHA-256
// of the `sha256sum` listing of assets/, i.e. of one line "<sha256 hex>  assets/<name>\n" per
// file, sorted by path (bytewise). By hand: cd DIR && find assets -type f | LC_ALL=C sort |
// xargs sha256sum | sha256sum. index.html is not inside HASH (it carries HASH); `salon web
// verify` compares it, the manifest and every asset file by file.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const web = resolve(fileURLToPath(import.meta.url), "..", "..");

function parseArgs(argv) {
  let outdir = resolve(web, "..", "spaces", "web_dist");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--outdir" && argv[i + 1] !== undefined) {
      outdir = resolve(argv[++i]);
    } else {
      console.error("usage: node scripts/build.mjs [--outdir DIR]");
      process.exit(2);
    }
  }
  return { outdir };
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const byPath = (a, b) => (a < b ? -1 : a > b ? 1 : 0); // bytewise for ASCII names, locale-free

/** The bundle hash over `files` ({path: sha256 hex}): SHA-256 of their `sha256sum` listing. */
export function bundleHash(files) {
  const listing = Object.keys(files)
    .sort(byPath)
    .map((path) => `${files[path]}  ${path}\n`)
    .join("");
  return sha256(Buffer.from(listing, "utf8"));
}

function escapeAttr(text) {
  return text.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
}

async function main() {
  const { outdir } = parseArgs(process.argv.slice(2));
  const entry = join(web, "src", "main.tsx");
  const template = join(web, "index.html");
  for (const needed of [entry, template]) {
    if (!existsSync(needed)) {
      console.error(`build: ${relative(web, needed)} is missing`);
      process.exit(1);
    }
  }
  const result = await build({
    absWorkingDir: web, // every path esbuild records is relative to web/, never absolute
    // The app, and the crypto self-check (its own entry: it runs whatever the app does);
    // what they share (libsodium) goes into a common chunk, loaded once.
    entryPoints: ["src/main.tsx", "src/selfcheck.ts"],
    splitting: true,
    outdir: "out", // virtual: write is false, nothing lands here
    write: false,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["es2022", "chrome120", "firefox115"],
    minify: true,
    sourcemap: false,
    legalComments: "linked", // licenses kept, in assets/*.LEGAL.txt, linked from the bundle
    charset: "utf8",
    jsx: "automatic",
    jsxImportSource: "preact",
    entryNames: "assets/[name]-[hash]",
    chunkNames: "assets/[name]-[hash]",
    assetNames: "assets/[name]-[hash]",
    loader: {
      ".svg": "file",
      ".png": "file",
      ".jpg": "file",
      ".woff2": "file",
      ".wasm": "file",
    },
    define: { "process.env.NODE_ENV": '"production"' },
    // libsodium's emscripten module names node's `crypto` on a path the browser never takes.
    external: ["crypto", "fs", "path"],
    metafile: true, // in memory only: which output is an entry (never written)
    logLevel: "warning",
  });
  // The SFrame worker: one file, nothing shared with the app's chunks (a worker cannot use
  // them), same reproducibility settings.
  const worker = await build({
    absWorkingDir: web,
    entryPoints: ["src/media/sframe_worker.ts"],
    outdir: "out",
    write: false,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["es2022", "chrome120", "firefox115"],
    minify: true,
    sourcemap: false,
    legalComments: "linked",
    charset: "utf8",
    entryNames: "assets/[name]-[hash]",
    assetNames: "assets/[name]-[hash]",
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "warning",
  });
  const workerFiles = worker.outputFiles.filter((f) => f.path.endsWith(".js"));
  if (workerFiles.length !== 1) throw new Error("expected one output for src/media/sframe_worker.ts");
  const outBase = join(web, "out");
  const workerPath = relative(outBase, workerFiles[0].path).split(sep).join("/");
  const files = {};
  const contents = new Map();
  for (const file of [...result.outputFiles, ...worker.outputFiles]) {
    const path = relative(outBase, file.path).split(sep).join("/");
    if (!path.startsWith("assets/")) throw new Error(`unexpected output ${path}`);
    contents.set(path, file.contents);
    files[path] = sha256(file.contents);
  }
  const paths = Object.keys(files).sort(byPath);
  const hash = bundleHash(files);
  const outputs = result.metafile.outputs;
  const entryOf = (path) => outputs[`out/${path}`]?.entryPoint;
  const scripts = ["src/main.tsx", "src/selfcheck.ts"].map((entry) => {
    const found = paths.filter((p) => p.endsWith(".js") && entryOf(p) === entry);
    if (found.length !== 1) throw new Error(`expected one output for ${entry}, got ${found}`);
    return found[0];
  });
  // Preload what the entries import statically (not what they may import later, lazily).
  const chunks = [];
  const visit = (path) => {
    for (const imported of outputs[`out/${path}`]?.imports ?? []) {
      const chunk = imported.path.replace(/^out\//, "");
      if (imported.kind !== "import-statement" || chunks.includes(chunk)) continue;
      if (!scripts.includes(chunk)) chunks.push(chunk);
      visit(chunk);
    }
  };
  scripts.forEach(visit);
  chunks.sort(byPath);
  const styles = paths.filter((p) => p.endsWith(".css"));
  const head = [
    `<meta name="salon-bundle" content="${hash}">`,
    `<meta name="salon-sframe-worker" content="/${escapeAttr(workerPath)}">`,
    ...styles.map((p) => `<link rel="stylesheet" href="/${escapeAttr(p)}">`),
    ...chunks.map((p) => `<link rel="modulepreload" href="/${escapeAttr(p)}">`),
    ...scripts.map((p) => `<script type="module" src="/${escapeAttr(p)}"></script>`),
  ].join("\n");
  let html = readFileSync(template, "utf8");
  if (/<script\b[^>]*>\s*[^<\s]/i.test(html) || /<style\b/i.test(html) || /\sstyle=/i.test(html)) {
    throw new Error("index.html: no inline scripts or styles (the CSP forbids them)");
  }
  const marker = "<!-- salon:assets -->";
  if (html.includes(marker)) html = html.replace(marker, head);
  else if (html.includes("</head>")) html = html.replace("</head>", `${head}\n</head>`);
  else throw new Error("index.html needs a </head> or a <!-- salon:assets --> marker");
  const manifest = { bundle: hash, files: Object.fromEntries(paths.map((p) => [p, files[p]])) };

  // Replace the output directory whole (only one we made: it holds a manifest, or nothing).
  if (existsSync(outdir) && readdirSync(outdir).length > 0 && !existsSync(join(outdir, "manifest.json"))) {
    throw new Error(`${outdir} is not empty and holds no manifest.json: not overwriting it`);
  }
  rmSync(outdir, { recursive: true, force: true });
  for (const path of paths) {
    const target = join(outdir, ...path.split("/"));
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, contents.get(path));
  }
  writeFileSync(join(outdir, "index.html"), html);
  writeFileSync(join(outdir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  console.log(`built ${relative(process.cwd(), outdir) || "."}: bundle ${hash}`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
