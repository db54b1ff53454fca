/**
 * Wire messages of chat rooms, channels and stories (PROTOCOL.md §11.3, §12; Python:
 * protocol/chat_wire.py). They join the CLIENT_MESSAGE / SERVER_MESSAGE unions of wire.ts.
 * The server sees routing metadata only; text, captions and images are ciphertext (`box`,
 * `meta`, `thumb`, image chunks).
 */
import { f, fd, list, literal, optional, ref, struct, type StructDef } from "./schema.ts";

export const CLIENT_ID_LEN = 16;
/** Below the default 256 KiB frame limit. */
export const STORY_CHUNK_BYTES = 128 * 1024;
export type StoryPartName = "image" | "thumb";
const PART = literal("image", "thumb");

/** A committed message as stored and relayed (not tagged). `box` is framed (§10.6). */
export interface ChatMessage {
  seq: number; sender: Uint8Array; client_id: Uint8Array; epoch: number; ttl: number; sent_at: number;
  expires_at: number | null; box: Uint8Array;
}
export interface StoryInfo {
  story_id: string; room_id: string; sender: Uint8Array; epoch: number; ttl: number; posted_at: number;
  expires_at: number; meta: Uint8Array; image_size: number; thumb_size: number;
}

export const CHAT_MESSAGE = struct("ChatMessage", [
  f("seq", "int"), f("sender", "bytes"), f("client_id", "bytes"), f("epoch", "int"), f("ttl", "int"),
  f("sent_at", "float"), f("expires_at", optional("float")), f("box", "bytes"),
]);
export const STORY_INFO = struct("StoryInfo", [
  f("story_id", "str"), f("room_id", "str"), f("sender", "bytes"), f("epoch", "int"), f("ttl", "int"),
  f("posted_at", "float"), f("expires_at", "float"), f("meta", "bytes"), f("image_size", "int"), f("thumb_size", "int"),
]);

// ---- client → server ----

export interface SendMessage {
  type: "send_message"; id: number; room_id: string; client_id: Uint8Array; epoch: number; ttl: number; box: Uint8Array;
}
export interface FetchMessages { type: "fetch_messages"; id: number; room_id: string; after: number; limit: number; follow: boolean }
export interface UploadStoryChunk { type: "upload_story_chunk"; id: number; story_id: string; offset: number; data: Uint8Array }
export interface PostStory {
  type: "post_story"; id: number; room_id: string; story_id: string; epoch: number; ttl: number; meta: Uint8Array;
  thumb: Uint8Array; image_size: number;
}
export interface ListStories { type: "list_stories"; id: number; room_id: string }
export interface FetchStoryPart { type: "fetch_story_part"; id: number; story_id: string; part: StoryPartName; offset: number }

export type ChatClientMessage =
  | SendMessage | FetchMessages | UploadStoryChunk | PostStory | ListStories | FetchStoryPart;

export const CHAT_CLIENT_STRUCTS: readonly StructDef[] = [
  struct("SendMessage", [f("id", "int"), f("room_id", "str"), f("client_id", "bytes"), f("epoch", "int"), f("ttl", "int"),
    f("box", "bytes")], { tag: "send_message" }),
  struct("FetchMessages", [f("id", "int"), f("room_id", "str"), fd("after", "int", 0), fd("limit", "int", 500),
    fd("follow", "bool", false)], { tag: "fetch_messages" }),
  struct("UploadStoryChunk", [f("id", "int"), f("story_id", "str"), f("offset", "int"), f("data", "bytes")],
    { tag: "upload_story_chunk" }),
  struct("PostStory", [f("id", "int"), f("room_id", "str"), f("story_id", "str"), f("epoch", "int"), f("ttl", "int"),
    f("meta", "bytes"), f("thumb", "bytes"), f("image_size", "int")], { tag: "post_story" }),
  struct("ListStories", [f("id", "int"), f("room_id", "str")], { tag: "list_stories" }),
  struct("FetchStoryPart", [f("id", "int"), f("story_id", "str"), fd("part", PART, "image"), fd("offset", "int", 0)],
    { tag: "fetch_story_part" }),
];

// ---- server → client ----

export interface MessageSent {
  type: "message_sent"; id: number; room_id: string; seq: number; sent_at: number; expires_at: number | null;
  duplicate: boolean;
}
export interface Messages { type: "messages"; id: number; room_id: string; messages: ChatMessage[]; last_seq: number }
export interface StoryChunkStored { type: "story_chunk_stored"; id: number; story_id: string; size: number }
export interface StoryPosted {
  type: "story_posted"; id: number; story_id: string; posted_at: number; expires_at: number; duplicate: boolean;
}
export interface Stories { type: "stories"; id: number; room_id: string; stories: StoryInfo[] }
export interface StoryPart {
  type: "story_part"; id: number; story: StoryInfo; part: StoryPartName; offset: number; total: number; data: Uint8Array;
}
/** Event: messages committed in a followed room (one group commit, in seq order). */
export interface MessagesAdded { type: "messages_added"; room_id: string; messages: ChatMessage[] }

export type ChatServerMessage =
  | MessageSent | Messages | StoryChunkStored | StoryPosted | Stories | StoryPart | MessagesAdded;

const messages = list(ref(CHAT_MESSAGE));

export const CHAT_SERVER_STRUCTS: readonly StructDef[] = [
  struct("MessageSent", [f("id", "int"), f("room_id", "str"), f("seq", "int"), f("sent_at", "float"),
    f("expires_at", optional("float")), fd("duplicate", "bool", false)], { tag: "message_sent" }),
  struct("Messages", [f("id", "int"), f("room_id", "str"), f("messages", messages), f("last_seq", "int")],
    { tag: "messages" }),
  struct("StoryChunkStored", [f("id", "int"), f("story_id", "str"), f("size", "int")], { tag: "story_chunk_stored" }),
  struct("StoryPosted", [f("id", "int"), f("story_id", "str"), f("posted_at", "float"), f("expires_at", "float"),
    fd("duplicate", "bool", false)], { tag: "story_posted" }),
  struct("Stories", [f("id", "int"), f("room_id", "str"), f("stories", list(ref(STORY_INFO)))], { tag: "stories" }),
  struct("StoryPart", [f("id", "int"), f("story", ref(STORY_INFO)), f("part", PART), f("offset", "int"), f("total", "int"),
    f("data", "bytes")], { tag: "story_part" }),
  struct("MessagesAdded", [f("room_id", "str"), f("messages", messages)], { tag: "messages_added" }),
];
