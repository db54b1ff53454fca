/**
 * Display names as the page shows them. A name is whatever its member typed into an encrypted
 * profile, so a malicious member can pick one made to pass for someone else's: the same name,
 * the same name with zero-width or other invisible characters, right-to-left overrides that
 * reorder what follows, or ten thousand characters. The rule here:
 *
 * - `cleanName`: invisible and control characters (Unicode Cc, Cf — bidi overrides and
 *   isolates, zero-width joiners, BOM — line/paragraph separators, blank fillers) are removed,
 *   runs of white space become one space, and the result is cut to `MAX_NAME` characters.
 * - `memberLabels`: a member whose cleaned name looks like another current member's (compared
 *   after NFKC and case folding), or like "You", is labelled with its fingerprint too —
 *   `Alice (a1b2 c3d4)`, the groups the members screen shows — like the CLI's `name (fp)`.
 */
import { fromHex } from "../protocol/bytes.ts";
import { fingerprint } from "../protocol/identities.ts";
import type { Roster } from "../protocol/roster.ts";

export const MAX_NAME = 64;

// Cc, Cf, Zl, Zp, plus characters that render as blanks (Hangul fillers, braille blank, …).
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\u115F\u1160\u3164\uFFA0\u2800\u034F\u180E]/gu;

/** A name with invisible characters removed, white space collapsed, and at most MAX_NAME characters. */
export function cleanName(raw: string): string {
  const text = raw.replace(/[\s\u2028\u2029]+/gu, " ").replace(INVISIBLE, "").replace(/ +/gu, " ").trim();
  const chars = Array.from(text);
  return chars.length > MAX_NAME ? `${chars.slice(0, MAX_NAME - 1).join("").trimEnd()}…` : text;
}

/** What two names are compared by (NFKC, case folded, spaces removed). */
export function nameKey(name: string): string {
  return cleanName(name).normalize("NFKC").toLowerCase().replace(/\s+/gu, "");
}

/** "a1b2 c3d4": the fingerprint groups shown beside a name that needs them. */
export function shortFingerprint(fp: string): string {
  return `${fp.slice(0, 4)} ${fp.slice(4, 8)}`;
}

/**
 * The page's label of each current member (hex key → label), from their display names (already
 * decrypted; `null` when missing or unreadable): cleaned, and with the fingerprint beside any
 * name that another member's (or "You") resembles.
 */
export async function memberLabels(roster: Roster, names: ReadonlyMap<string, string | null>): Promise<Map<string, string>> {
  const cleaned = new Map<string, string>();
  const count = new Map<string, number>([["you", 1]]);
  for (const id of roster.members.keys()) {
    const name = cleanName(names.get(id) ?? "");
    cleaned.set(id, name);
    if (name !== "") count.set(nameKey(name), (count.get(nameKey(name)) ?? 0) + 1);
  }
  const out = new Map<string, string>();
  for (const [id, name] of cleaned) {
    if (name === "") continue;
    out.set(id, (count.get(nameKey(name)) ?? 0) > 1 ? `${name} (${shortFingerprint(await fingerprint(fromHex(id)))})` : name);
  }
  return out;
}
