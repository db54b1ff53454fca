/**
 * What a person reads in the app (UX.md): no jargon, and AA contrast for every text colour on
 * every background of the palette, light and dark.
 *
 * The words: every string literal and JSX text of web/src/ui (comments and types stripped by
 * esbuild; imports and developer-console lines dropped), plus the messages of the client errors
 * that `explain` shows as they are (UsageError and other ClientErrors; VerificationError,
 * ServerError, Unreachable and Removed get their own plain sentences).
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { createRequire as requireFrom } from "node:module";
import { test } from "node:test";

// esbuild's API cannot be bundled into the test (it runs its own binary): load it at run time.
const ESBUILD = "esbuild";
const { transformSync } = requireFrom(import.meta.url)(ESBUILD) as typeof import("esbuild");

const JARGON = /\b(epochs?|rekey\w*|rosters?|SFUs?|SFrame|ciphertext|nonce|seq)\b/i;
// Run from web/ (npm test), like the tests that read ../protocol/vectors/.
const ROOT = join(process.cwd(), "src/");

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : /\.tsx?$/.test(name) ? [path] : [];
  });
}

/** String literals, template text and JSX text of a module (no comments, no imports). */
export function visibleStrings(source: string, path: string): string[] {
  const code = transformSync(source, { loader: path.endsWith(".tsx") ? "tsx" : "ts", jsx: "preserve", legalComments: "none" }).code
    .split("\n").filter((line) => !/^\s*(import|export \{.*\} from)\b/.test(line) && !/\bconsole\.\w+\(/.test(line)).join("\n");
  const out: string[] = [];
  for (const m of code.matchAll(/"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|`((?:[^`\\]|\\.)*)`/g)) out.push(m[1] ?? m[2] ?? m[3] ?? "");
  for (const m of code.matchAll(/>([^<>{}]*[A-Za-z][^<>{}]*)</g)) out.push(m[1]!);
  return out;
}

/** Errors `explain` (ui/errors.ts) replaces with its own sentence, and errors that are not ClientErrors. */
const PLAIN_SENTENCE = [
  "VerificationError", "RoomKeyUnavailable", "RoomKeyRefused", "RoomKeyConflict", "ServerError", "Unreachable", "Removed",
  "Error", "RangeError", "TypeError", "WireError",
];

test("the app's words have no jargon (epoch, rekey, roster, SFU, SFrame…)", () => {
  const found: string[] = [];
  const ui = files(join(ROOT, "ui"));
  assert.ok(ui.length > 10);
  let seen = 0;
  for (const path of ui) {
    for (const text of visibleStrings(readFileSync(path, "utf8"), path)) {
      seen += 1;
      // Class names, selectors and wire names are not read by anyone: skip identifier-only strings.
      if (!/\s/.test(text) && /^[\w.:/#@-]*$/.test(text)) continue;
      if (JARGON.test(text)) found.push(`${path.slice(ROOT.length)}: ${text}`);
    }
  }
  for (const path of files(join(ROOT, "client"))) {
    const source = readFileSync(path, "utf8");
    for (const m of source.matchAll(/new (\w+)\(\s*(?:"([^"]*)"|`([^`]*)`)/g)) {
      if (PLAIN_SENTENCE.includes(m[1]!)) continue;
      const text = m[2] ?? m[3] ?? "";
      if (JARGON.test(text)) found.push(`${path.slice(ROOT.length)}: new ${m[1]}("${text}")`);
    }
  }
  assert.ok(seen > 300, `only ${seen} strings found: the extraction broke`);
  assert.deepEqual(found, []);
});

test("the extraction sees JSX text and string literals, not comments", () => {
  const got = visibleStrings(`// the roster is here\nconst a = "The epoch moved";\nexport const B = () => <p class="x">Rekey done</p>;`, "x.tsx");
  assert.ok(got.includes("The epoch moved"));
  assert.ok(got.some((s) => s.includes("Rekey done")));
  assert.ok(!got.some((s) => s.includes("roster is here")));
});

// ---- contrast -------------------------------------------------------------------------------

function palette(css: string, dark: boolean): Record<string, string> {
  const block = (from: number): string => css.slice(css.indexOf("{", from) + 1, css.indexOf("}", from));
  const light = block(css.indexOf(":root"));
  const vars: Record<string, string> = {};
  const read = (text: string): void => {
    for (const m of text.matchAll(/--([\w-]+):\s*(#[0-9a-fA-F]{6})\s*;/g)) vars[m[1]!] = m[2]!;
  };
  read(light);
  if (dark) {
    const at = css.indexOf("@media (prefers-color-scheme: dark)");
    read(block(css.indexOf(":root", at)));
  }
  return vars;
}

function luminance(hex: string): number {
  const [r, g, b] = [1, 3, 5].map((i) => {
    const c = parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  }) as [number, number, number];
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

export function contrast(a: string, b: string): number {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p) as [number, number];
  return (x + 0.05) / (y + 0.05);
}

test("contrast: the formula", () => {
  assert.equal(Math.round(contrast("#000000", "#ffffff") * 10) / 10, 21);
  assert.equal(contrast("#777777", "#777777"), 1);
});

const CSS = readFileSync(join(ROOT, "ui/styles.css"), "utf8");
/** Text colour on background, as the stylesheet pairs them; 4.5:1 for text (AA), 3:1 for the focus ring. */
const TEXT_PAIRS: readonly [string, string][] = [
  ["fg", "bg"], ["fg", "surface"], ["fg", "surface-2"], ["fg", "accent-soft"], ["fg", "mine"],
  ["muted", "bg"], ["muted", "surface"], ["muted", "surface-2"], ["muted", "mine"],
  ["accent", "bg"], ["accent", "surface"], ["accent", "surface-2"], ["accent", "mine"],
  ["accent-fg", "accent"], ["danger", "bg"], ["danger", "surface"], ["danger", "surface-2"], ["danger-fg", "danger"],
];

for (const dark of [false, true]) {
  test(`contrast AA for every text colour on its backgrounds (${dark ? "dark" : "light"})`, () => {
    const p = palette(CSS, dark);
    const low: string[] = [];
    for (const [fg, bg] of TEXT_PAIRS) {
      assert.ok(p[fg] !== undefined && p[bg] !== undefined, `--${fg} or --${bg} is missing`);
      const ratio = contrast(p[fg]!, p[bg]!);
      if (ratio < 4.5) low.push(`--${fg} on --${bg}: ${ratio.toFixed(2)}`);
    }
    for (const bg of ["bg", "surface", "surface-2"]) {
      const ratio = contrast(p["focus"]!, p[bg]!);
      if (ratio < 3) low.push(`focus ring on --${bg}: ${ratio.toFixed(2)}`);
    }
    assert.deepEqual(low, []);
  });
}

test("contrast AA for the initials on every avatar colour", () => {
  const hues = [...CSS.matchAll(/\.avatar-hue-\d+ \{ background: (#[0-9a-f]{6}); \}/g)].map((m) => m[1]!);
  assert.equal(hues.length, 12);
  for (const hue of hues) assert.ok(contrast("#ffffff", hue) >= 4.5, `white on ${hue}: ${contrast("#ffffff", hue).toFixed(2)}`);
});
