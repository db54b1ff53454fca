/**
 * Head references and forks (PROTOCOL.md §11.5; Python: protocol/forks.py, client/forks.py).
 * Messages and stories name the roster head their author verified, `(seq, hash)`; a reader
 * accepts one only if it is on its own verified chain. A reference beyond our head is a reason
 * to sync once (per new reference); an older one than the roster keeps a hash of is proven by
 * fetching the records from it to the next kept hash and checking that they link.
 */
import { equal } from "../protocol/bytes.ts";
import { recordHash, type Record } from "../protocol/records.ts";
import { hashAt } from "../protocol/roster.ts";
import type { Records } from "../protocol/wire.ts";
import type { SpaceContext } from "./context.ts";

export const FORK_WARNING = "the server may be showing you a forked history";
export const HEAD_HASH_LEN = 32;

/** head_problem (§11.5): why (seq, hash) is not consistent with my chain, or null. */
export function headProblem(
  hashAtSeq: (seq: number) => Uint8Array | undefined, myHead: number, seq: number, headHash: Uint8Array,
): string | null {
  if (seq < 0 || headHash.length !== HEAD_HASH_LEN) return "it names no roster head";
  if (seq > myHead) {
    return `its author had verified roster record #${seq}, but the server shows you the chain only up to #${myHead}: ${FORK_WARNING}`;
  }
  const mine = hashAtSeq(seq);
  if (mine === undefined || !equal(mine, headHash)) return `its author's roster record #${seq} differs from yours: ${FORK_WARNING}`;
  return null;
}

/** epoch_problem (§11.4 step 2): a post beyond my epoch (after a sync) means a hidden key change. */
export function epochProblem(myEpoch: number, claimedEpoch: number): string | null {
  if (claimedEpoch > myEpoch) {
    return `it is encrypted for key epoch ${claimedEpoch}, but the server shows you a chain that only reaches epoch ${myEpoch}: ${FORK_WARNING}`;
  }
  return null;
}

/** Checks head references and epochs for one reader; `refresh` re-syncs. */
export class HeadCheck {
  private triedHead = -1;
  private triedEpoch = -1;
  private readonly proven = new Map<number, Uint8Array>();

  constructor(private readonly ctx: SpaceContext, private readonly refresh: () => Promise<unknown>) {}

  hashAt(seq: number): Uint8Array | undefined {
    return hashAt(this.ctx.roster(), seq) ?? this.proven.get(seq);
  }

  async headProblem(seq: number, headHash: Uint8Array): Promise<string | null> {
    if (seq > this.ctx.roster().head.seq && seq > this.triedHead) {
      this.triedHead = seq;
      await this.refresh();
    }
    await this.loadHash(seq);
    return headProblem((s) => this.hashAt(s), this.ctx.roster().head.seq, seq, headHash);
  }

  async epochProblem(epoch: number): Promise<string | null> {
    if (epoch > this.ctx.roster().epoch && epoch > this.triedEpoch) {
      this.triedEpoch = epoch;
      await this.refresh();
    }
    return epochProblem(this.ctx.roster().epoch, epoch);
  }

  /** Proves the hash of record `seq` (at or below our head) by linking it to the next kept hash. */
  async loadHash(seq: number): Promise<void> {
    const roster = this.ctx.roster();
    if (!Number.isSafeInteger(seq) || seq < 0 || seq > roster.head.seq || this.hashAt(seq) !== undefined) return;
    let anchor = roster.head.seq;
    for (const k of roster.hashes.keys()) if (k > seq && k < anchor) anchor = k;
    const anchorHash = hashAt(roster, anchor) ?? roster.head.hash;
    const want = anchor - seq + 1;
    const fetched: Record[] = [];
    while (fetched.length < want) {
      const reply = await this.ctx.request<Records>({ type: "get_records", after: seq - 1 + fetched.length });
      if (reply.records.length === 0) break;
      fetched.push(...reply.records.slice(0, want - fetched.length));
    }
    if (fetched.length !== want || fetched.some((r, i) => r.seq !== seq + i)) return;
    const hashes = await Promise.all(fetched.map((r) => recordHash(r)));
    for (let i = 0; i + 1 < fetched.length; i++) if (!equal(fetched[i + 1]!.prev, hashes[i]!)) return;
    if (!equal(hashes[hashes.length - 1]!, anchorHash)) return;
    this.proven.set(seq, hashes[0]!);
  }
}
