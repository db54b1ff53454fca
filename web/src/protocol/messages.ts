/**
 * Chat messages (PROTOCOL.md §11) and story meta/parts (§12): XChaCha20-Poly1305-IETF under a
 * key derived from the room key of (epoch, generation), with the header bound as associated
 * data and an Ed25519 signature by the sender inside the padded plaintext.
 */
import { concat, equal, utf8 } from "./bytes.ts";
import { aead, aeadOpen as aeadOpenRaw, ed25519Sign, ed25519Verify, hkdf, randomBytes, sha256 } from "./crypto.ts";
import { decode, encode as pack, type MsgValue } from "./msgpack.ts";
import { frame, unframe } from "./roomkeys.ts";

export const MESSAGE_SIG = utf8("salon/message-sig/v1\x00");
export const MESSAGE_AD = utf8("salon/message-ad/v1\x00");
export const STORY_SIG = utf8("salon/story-sig/v1\x00");
export const STORY_AD = utf8("salon/story-ad/v1\x00");
export const MESSAGE_LABEL = "salon/room-message/v1";
export const STORY_LABEL = "salon/room-story/v1";
export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;
export const PAD_BLOCK = 256;

export class MessageError extends Error {}

const isInt = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x);

// ---- primitives -------------------------------------------------------------------------

/** aead(key, nonce, pt, ad) = nonce || XChaCha20-Poly1305-IETF(key, nonce, pt, ad) (ciphertext || tag). */
export function aeadSeal(key: Uint8Array, plaintext: Uint8Array, ad: Uint8Array, nonce: Uint8Array = randomBytes(NONCE_BYTES)): Promise<Uint8Array> {
  return aead(key, plaintext, ad, nonce);
}

export async function aeadOpen(key: Uint8Array, box: Uint8Array, ad: Uint8Array): Promise<Uint8Array> {
  if (key.length !== 32) throw new Error("bad aead key length");
  if (box.length < NONCE_BYTES + TAG_BYTES) throw new MessageError("the box is too short");
  try {
    return await aeadOpenRaw(key, box, ad);
  } catch {
    throw new MessageError("the box does not open");
  }
}

/** pad(x) = u32be(len(x)) || x || zeros, the whole rounded up to a multiple of 256 (§11.2). */
export function pad(x: Uint8Array): Uint8Array {
  const total = Math.ceil((4 + x.length) / PAD_BLOCK) * PAD_BLOCK;
  const out = new Uint8Array(total);
  new DataView(out.buffer).setUint32(0, x.length);
  out.set(x, 4);
  return out;
}

/** The inverse of `pad`: requires 4 + length ≤ len (§11.4); the filler is not checked. */
export function unpad(padded: Uint8Array): Uint8Array {
  if (padded.length < 4) throw new MessageError("padded plaintext too short");
  const n = new DataView(padded.buffer, padded.byteOffset, 4).getUint32(0);
  if (4 + n > padded.length) throw new MessageError("padded length beyond the plaintext");
  return padded.slice(4, 4 + n);
}

function decodeArray(bytes: Uint8Array, n: number, what: string): unknown[] {
  let value: unknown;
  try {
    value = decode(bytes);
  } catch {
    throw new MessageError(`malformed ${what}`);
  }
  if (!Array.isArray(value) || value.length !== n) throw new MessageError(`malformed ${what}`);
  return value as unknown[];
}

// ---- chat messages (§11) ----------------------------------------------------------------

/** The clear fields bound into a message: [space_id, room_id, epoch, sender, client_id, ttl]. */
export interface MessageHeader {
  spaceId: string;
  roomId: string;
  epoch: number;
  sender: Uint8Array;
  clientId: Uint8Array;
  ttl: number;
}

/** MessageContent (array_like): [text, created_at, head, head_hash, sig]. */
export interface MessageContent {
  text: string;
  createdAt: number;
  head: number;
  headHash: Uint8Array;
  sig: Uint8Array;
}

const headerArray = (h: MessageHeader): MsgValue[] => [h.spaceId, h.roomId, h.epoch, h.sender, h.clientId, h.ttl];

/** message_key = HKDF(room_key, MESSAGE_LABEL, utf8(room_id)). */
export function messageKey(roomKey: Uint8Array, roomId: string): Promise<Uint8Array> {
  return hkdf(roomKey, MESSAGE_LABEL, utf8(roomId));
}

export function messageAd(h: MessageHeader): Uint8Array {
  return concat(MESSAGE_AD, pack(headerArray(h)));
}

export function messageStatement(h: MessageHeader, text: string, createdAt: number, head: number, headHash: Uint8Array): Uint8Array {
  return concat(MESSAGE_SIG, pack([...headerArray(h), createdAt, head, headHash, text]));
}

export function encodeMessageContent(c: MessageContent): Uint8Array {
  return pack([c.text, c.createdAt, c.head, c.headHash, c.sig]);
}

export function decodeMessageContent(bytes: Uint8Array): MessageContent {
  const [text, createdAt, head, headHash, sig] = decodeArray(bytes, 5, "message content");
  if (typeof text !== "string" || !isInt(createdAt) || !isInt(head) || !(headHash instanceof Uint8Array) || !(sig instanceof Uint8Array)) {
    throw new MessageError("malformed message content");
  }
  return { text, createdAt, head, headHash, sig };
}

export interface MessageDraft {
  header: MessageHeader;
  text: string;
  createdAt: number;
  head: number;
  headHash: Uint8Array;
}

/**
 * Seals a message under the room key of (epoch, generation): returns the framed box
 * (SendMessage.box, u32be(generation) || nonce || ct || tag). `nonce` is for known answers only.
 */
export async function sealMessage(
  draft: MessageDraft, senderSeed: Uint8Array, roomKey: Uint8Array, generation: number,
  nonce: Uint8Array = randomBytes(NONCE_BYTES),
): Promise<Uint8Array> {
  const h = draft.header;
  if (h.clientId.length !== 16) throw new Error("a client id is 16 bytes");
  const sig = await ed25519Sign(senderSeed, messageStatement(h, draft.text, draft.createdAt, draft.head, draft.headHash));
  const plain = pad(encodeMessageContent({ text: draft.text, createdAt: draft.createdAt, head: draft.head, headHash: draft.headHash, sig }));
  const box = await aeadSeal(await messageKey(roomKey, h.roomId), plain, messageAd(h), nonce);
  return frame(generation, box);
}

/**
 * Opens an (unframed) message box with the room key of its generation and verifies the
 * signature under header.sender over the rebuilt statement (§11.4 step 4). Throws MessageError.
 */
export async function openMessage(box: Uint8Array, header: MessageHeader, roomKey: Uint8Array): Promise<MessageContent> {
  const plain = await aeadOpen(await messageKey(roomKey, header.roomId), box, messageAd(header));
  const content = decodeMessageContent(unpad(plain));
  const statement = messageStatement(header, content.text, content.createdAt, content.head, content.headHash);
  if (!(await ed25519Verify(header.sender, statement, content.sig))) throw new MessageError("bad signature");
  return content;
}

/** Unframes SendMessage/ChatMessage.box: the generation tells which room key to derive. */
export { unframe };

// ---- stories (§12) ----------------------------------------------------------------------

/** [space_id, room_id, epoch, sender, story_id, ttl]. */
export interface StoryHeader {
  spaceId: string;
  roomId: string;
  epoch: number;
  sender: Uint8Array;
  storyId: string;
  ttl: number;
}

export type StoryPart = "meta" | "image" | "thumb";

/** StoryMeta (array_like, 9 elements). */
export interface StoryMeta {
  caption: string;
  createdAt: number;
  head: number;
  headHash: Uint8Array;
  width: number;
  height: number;
  imageSha256: Uint8Array;
  thumbSha256: Uint8Array;
  sig: Uint8Array;
}

export type UnsignedStoryMeta = Omit<StoryMeta, "sig">;

const storyHeaderArray = (h: StoryHeader): MsgValue[] => [h.spaceId, h.roomId, h.epoch, h.sender, h.storyId, h.ttl];

export function storyKey(roomKey: Uint8Array, roomId: string): Promise<Uint8Array> {
  return hkdf(roomKey, STORY_LABEL, utf8(roomId));
}

export function storyAd(h: StoryHeader, part: StoryPart): Uint8Array {
  return concat(STORY_AD, pack([...storyHeaderArray(h), part]));
}

export function storyStatement(h: StoryHeader, m: UnsignedStoryMeta): Uint8Array {
  return concat(STORY_SIG, pack([
    ...storyHeaderArray(h), m.caption, m.createdAt, m.head, m.headHash, m.width, m.height, m.imageSha256, m.thumbSha256,
  ]));
}

export function encodeStoryMeta(m: StoryMeta): Uint8Array {
  return pack([m.caption, m.createdAt, m.head, m.headHash, m.width, m.height, m.imageSha256, m.thumbSha256, m.sig]);
}

export function decodeStoryMeta(bytes: Uint8Array): StoryMeta {
  const [caption, createdAt, head, headHash, width, height, imageSha256, thumbSha256, sig] = decodeArray(bytes, 9, "story meta");
  if (
    typeof caption !== "string" || !isInt(createdAt) || !isInt(head) || !(headHash instanceof Uint8Array) ||
    !isInt(width) || !isInt(height) || !(imageSha256 instanceof Uint8Array) || !(thumbSha256 instanceof Uint8Array) ||
    !(sig instanceof Uint8Array)
  ) {
    throw new MessageError("malformed story meta");
  }
  return { caption, createdAt, head, headHash, width, height, imageSha256, thumbSha256, sig };
}

export interface SealedStory {
  /** PostStory.meta: u32be(generation) || meta_box. */
  metaFramed: Uint8Array;
  /** Not framed, not padded. */
  imageBox: Uint8Array;
  thumbBox: Uint8Array;
  meta: StoryMeta;
}

/** Seals a story: signs the meta (hashes of image and thumb included), boxes the three parts. */
export async function sealStory(
  header: StoryHeader, draft: Omit<UnsignedStoryMeta, "imageSha256" | "thumbSha256">,
  image: Uint8Array, thumb: Uint8Array, senderSeed: Uint8Array, roomKey: Uint8Array, generation: number,
  nonces: Partial<Record<StoryPart, Uint8Array>> = {},
): Promise<SealedStory> {
  const unsigned: UnsignedStoryMeta = { ...draft, imageSha256: await sha256(image), thumbSha256: await sha256(thumb) };
  const meta: StoryMeta = { ...unsigned, sig: await ed25519Sign(senderSeed, storyStatement(header, unsigned)) };
  const key = await storyKey(roomKey, header.roomId);
  const box = (part: StoryPart, pt: Uint8Array) => aeadSeal(key, pt, storyAd(header, part), nonces[part] ?? randomBytes(NONCE_BYTES));
  return {
    metaFramed: frame(generation, await box("meta", pad(encodeStoryMeta(meta)))),
    imageBox: await box("image", image),
    thumbBox: await box("thumb", thumb),
    meta,
  };
}

/** Opens an (unframed) meta box and verifies its signature under header.sender. */
export async function openStoryMeta(metaBox: Uint8Array, header: StoryHeader, roomKey: Uint8Array): Promise<StoryMeta> {
  const plain = await aeadOpen(await storyKey(roomKey, header.roomId), metaBox, storyAd(header, "meta"));
  const meta = decodeStoryMeta(unpad(plain));
  if (!(await ed25519Verify(header.sender, storyStatement(header, meta), meta.sig))) throw new MessageError("bad signature");
  return meta;
}

/** Opens the image or thumb box and checks its SHA-256 against the signed meta. */
export async function openStoryPart(
  box: Uint8Array, part: "image" | "thumb", header: StoryHeader, roomKey: Uint8Array, meta: StoryMeta,
): Promise<Uint8Array> {
  const plain = await aeadOpen(await storyKey(roomKey, header.roomId), box, storyAd(header, part));
  const want = part === "image" ? meta.imageSha256 : meta.thumbSha256;
  if (!equal(await sha256(plain), want)) throw new MessageError(`the ${part} does not match its signed hash`);
  return plain;
}
