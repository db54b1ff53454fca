/**
 * The joiner's space key (PROTOCOL.md §8.4 steps 3–4): the invite's seal is the server's to
 * swap, so its key stays pending until a verified chain shows the join and that the key is
 * the space key of the join's epoch. Pure functions over a verified roster.
 */
import { equal } from "./bytes.ts";
import { secretboxOpen } from "./crypto.ts";
import type { SealedSpaceKey } from "./invites.ts";
import { recordHash, type Record } from "./records.ts";
import { epochAt, hashAt, type Roster } from "./roster.ts";

export const INVITE_KEY_REFUSED =
  "the invite carried a space key that this space's chain does not hold for the epoch of your join (the server, or " +
  "someone else who has the link, swapped it, or served an outdated one); you are on the member list but can read " +
  "nothing until an owner or moderator rekeys";
export const JOIN_MISSING = "the server's chain does not hold this join";

/** The sealed key kept pending with the seq of the join record (§8.4 step 2). */
export interface PendingInviteKey {
  readonly sealed: SealedSpaceKey;
  readonly join_seq: number;
}

/**
 * Step 3: does the verified chain hold `join` at its seq? true/false when the roster kept that
 * seq's hash (§6.6); null when it did not (prove it by a segment first, §6.6 "load_hash").
 */
export async function chainHoldsJoin(r: Roster, join: Record): Promise<boolean | null> {
  if (join.seq < 0 || join.seq > r.head.seq) return false;
  const kept = hashAt(r, join.seq);
  if (kept === undefined) return null;
  return equal(kept, await recordHash(join));
}

async function opens(key: Uint8Array, box: Uint8Array): Promise<boolean> {
  try {
    await secretboxOpen(key, box);
    return true;
  } catch {
    return false;
  }
}

/**
 * key_fits_chain(epoch, key): epoch > 0 — the chain has rekey[epoch] (epoch ≤ current) and its
 * prev_box opens under the key; epoch 0 — the latest meta if it is of epoch 0, else any epoch-0
 * profile (a current member's latest or a departed member's last) opens under it.
 */
export async function keyFitsChain(r: Roster, epoch: number, key: Uint8Array): Promise<boolean> {
  if (key.length !== 32 || epoch < 0) return false;
  let boxes: Uint8Array[];
  if (epoch > 0) {
    const rekey = r.rekeys.get(epoch);
    boxes = rekey !== undefined && epoch <= r.epoch ? [rekey.prev_box] : [];
  } else if (r.meta !== null && r.meta.epoch === 0) {
    boxes = [r.meta.box];
  } else {
    // r.profiles holds current members' latest profiles and departed members' last ones.
    boxes = [...r.profiles.values()].filter((p) => p.epoch === 0).map((p) => p.box);
  }
  for (const box of boxes) if (await opens(key, box)) return true;
  return false;
}

export type InviteKeyDecision =
  | { readonly accepted: true; readonly epoch: number; readonly key: Uint8Array }
  | { readonly accepted: false; readonly reason: string };

/**
 * Step 4: take the pending key only if join_seq ≤ head, sealed.epoch == epoch_at(join_seq) and
 * the key fits the chain. Decided once by the caller (accepted → space_key[epoch]; refused →
 * dropped, the membership kept, no profile published).
 */
export async function takeInviteKey(r: Roster, pending: PendingInviteKey): Promise<InviteKeyDecision> {
  const { sealed, join_seq: joinSeq } = pending;
  if (sealed.space_id !== r.spaceId) return { accepted: false, reason: INVITE_KEY_REFUSED };
  if (joinSeq < 0 || joinSeq > r.head.seq || sealed.epoch !== epochAt(r, joinSeq)) {
    return { accepted: false, reason: INVITE_KEY_REFUSED };
  }
  if (!(await keyFitsChain(r, sealed.epoch, sealed.key))) return { accepted: false, reason: INVITE_KEY_REFUSED };
  return { accepted: true, epoch: sealed.epoch, key: sealed.key };
}
