/** Random ids (PROTOCOL.md §1): rooms, stories, invites, calls. */
import { base64urlEncode } from "./crypto.ts";

export const ID_BYTES = 12;
export const MIN_ID_LEN = 8;
export const MAX_ID_LEN = 64;
const ID_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_-]{7,63}$/;

/** Whether the **whole** text is an id a peer may send (ASCII, 8..64 chars, no leading "-"). */
export const isValidId = (text: string): boolean => ID_PATTERN.test(text);

/** base64url(12 random bytes), drawn again while it starts with "-". */
export function newId(random: (n: number) => Uint8Array = (n) => globalThis.crypto.getRandomValues(new Uint8Array(n))): string {
  for (;;) {
    const id = base64urlEncode(random(ID_BYTES));
    if (!id.startsWith("-")) return id;
  }
}
