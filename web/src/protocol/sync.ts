/**
 * The client's continuation rules (PROTOCOL.md §6.6): extend a cached, verified roster with a
 * `Records` page, and decide whether to ask again, stop, or refuse the server's chain.
 *
 * Pure: `syncStep` takes the roster so far (or null: start from the genesis), the head the
 * keystore remembers and one reply page, and returns the next step; `syncChain` runs the loop
 * over an injected `fetch(after)`. Nothing here talks to a server or touches a keystore.
 */
import { equal } from "./bytes.ts";
import { ChainConflict, RecordError, type Head, type Record } from "./records.ts";
import { applyRecord, rosterFromRecords, type Roster } from "./roster.ts";

/** One `Records` reply (§5.4, §6.6). */
export interface RecordsPage {
  readonly records: readonly Record[];
  readonly head_seq: number;
  readonly head_hash: Uint8Array;
}

export const REWROTE =
  "the server rewrote this space's history (it differs from what this device verified before); refusing it";
export const WITHHELD = "the server claims records after our head but does not send them";
export const EMPTY_CHAIN = "the server sent an empty chain for this space";
export const FAILS = "the server's roster for this space fails verification: ";

export type SyncStep =
  /** Ask again with `GetRecords(after)`. */
  | { readonly outcome: "more"; readonly roster: Roster; readonly after: number }
  /** The roster is at the server's head. */
  | { readonly outcome: "done"; readonly roster: Roster }
  /** A refusal: "rewrote" (rules 1–4), "withheld" (rule 3), "invalid" (a §7 rule failed). */
  | { readonly outcome: "rewrote" | "withheld" | "invalid"; readonly reason: string };

/**
 * The roster a command starts from: the cached one only if it is of this space and at the
 * remembered head (seq and hash), else null (verify from the genesis).
 */
export function syncBase(spaceId: string, cached: Roster | null, remembered: Head): Roster | null {
  if (cached === null || cached.spaceId !== spaceId) return null;
  if (cached.head.seq !== remembered.seq || !equal(cached.head.hash, remembered.hash)) return null;
  return cached;
}

/** `GetRecords.after` for a roster so far (-1 without one). */
export const afterOf = (roster: Roster | null): number => (roster === null ? -1 : roster.head.seq);

const refuse = (outcome: "rewrote" | "withheld" | "invalid", reason: string): SyncStep => ({ outcome, reason });

/**
 * One turn of the loop (§6.6 rules 1–4): apply the page on top of `roster` (the page's first
 * record must link to it: a `ChainConflict` there is a rewrite), check the remembered head
 * whenever the roster reaches its seq, then compare with the reply's head.
 */
export async function syncStep(
  spaceId: string, roster: Roster | null, remembered: Head, page: RecordsPage,
): Promise<SyncStep> {
  let r = roster;
  try {
    for (const [i, record] of page.records.entries()) {
      if (r === null) r = await rosterFromRecords(spaceId, [record]);
      else if (i === 0 && r.head.seq >= 0) {
        try {
          r = await applyRecord(r, record);
        } catch (err) {
          if (err instanceof ChainConflict) return refuse("rewrote", REWROTE);
          throw err;
        }
      } else r = await applyRecord(r, record);
      if (r.head.seq === remembered.seq && !equal(r.head.hash, remembered.hash)) return refuse("rewrote", REWROTE);
    }
  } catch (err) {
    if (err instanceof RecordError) return refuse("invalid", FAILS + err.message);
    throw err;
  }
  if (r === null) return refuse("invalid", EMPTY_CHAIN);
  if (page.head_seq < remembered.seq) return refuse("rewrote", REWROTE);
  if (page.records.length === 0) {
    if (page.head_seq < r.head.seq) return refuse("rewrote", REWROTE);
    if (page.head_seq > r.head.seq) return refuse("withheld", WITHHELD);
    if (!equal(page.head_hash, r.head.hash)) return refuse("rewrote", REWROTE);
    return { outcome: "done", roster: r };
  }
  if (r.head.seq >= page.head_seq) {
    if (r.head.seq === page.head_seq && !equal(page.head_hash, r.head.hash)) return refuse("rewrote", REWROTE);
    return { outcome: "done", roster: r };
  }
  return { outcome: "more", roster: r, after: r.head.seq };
}

/** The whole loop: `fetch(after)` is one `GetRecords` round trip. Ends on "done" or a refusal. */
export async function syncChain(
  spaceId: string, base: Roster | null, remembered: Head, fetch: (after: number) => Promise<RecordsPage>,
): Promise<Exclude<SyncStep, { outcome: "more" }>> {
  let roster = base;
  for (;;) {
    const step = await syncStep(spaceId, roster, remembered, await fetch(afterOf(roster)));
    if (step.outcome !== "more") return step;
    roster = step.roster;
  }
}
