/**
 * Stories: an image and a caption posted to a channel, end-to-end encrypted, expiring
 * (PROTOCOL.md §12; Python reference: client/stories.py). The image and thumbnail must already
 * be clean JPEGs (images.ts re-encodes a picked file in the browser, which drops EXIF/GPS/XMP).
 * The sealed image goes up in 128 KiB chunks and one `post_story` commits it, in exactly the
 * format `salon story get` opens; viewing checks what the CLI checks.
 */
import { equal, toHex } from "../protocol/bytes.ts";
import { fingerprint } from "../protocol/identities.ts";
import { newId } from "../protocol/ids.ts";
import {
  MessageError, openStoryMeta, openStoryPart, sealStory, unframe, type StoryHeader, type StoryMeta,
} from "../protocol/messages.ts";
import { roomGeneration, rosterAt } from "../protocol/roster.ts";
import {
  STORY_CHUNK_BYTES, STORY_INFO, type PostStory, type Stories, type StoryChunkStored, type StoryInfo, type StoryPart,
  type StoryPartName, type StoryPosted,
} from "../protocol/chat_wire.ts";
import { encodeStruct } from "../protocol/schema.ts";
import { ServerError, Unreachable, UsageError, VerificationError, type SpaceContext } from "./context.ts";
import { memberName, plainReason, visibleUntil } from "./chat.ts";
import { HeadCheck } from "./forks.ts";
import { RoomKeyRefused, RoomKeyUnavailable, type Rooms } from "./rooms.ts";

export const DEFAULT_STORY_TTL = 24 * 3600;
export const MAX_STORY_TTL = 7 * 86400;
export const MAX_STORY_BYTES = 4 * 1024 * 1024;
export const MAX_STORY_THUMB_BYTES = 128 * 1024;
/** What this page accepts to fetch (4× the default server limits, which operators may raise). */
export const MAX_FETCHED_IMAGE = 4 * MAX_STORY_BYTES;
export const MAX_FETCHED_THUMB = 4 * MAX_STORY_THUMB_BYTES;
const SEND_ATTEMPTS = 3;
const RECONNECT_RETRIES = 20;

export interface StoryImage {
  /** The JPEG to post (longest side ≤ 1920 px, no metadata). */
  image: Uint8Array;
  /** Its thumbnail JPEG (longest side ≤ 320 px). */
  thumb: Uint8Array;
  width: number;
  height: number;
}

/** A verified story's details (not its image). Times in seconds since the epoch. */
export interface StoryView {
  readonly storyId: string;
  readonly roomId: string;
  readonly sender: Uint8Array;
  readonly senderHex: string;
  readonly author: string;
  readonly fingerprint: string;
  readonly caption: string;
  readonly postedAt: number;
  /** When it stops being shown: min(server expiry, created_at + ttl + 300 s). */
  readonly visibleUntil: number;
  readonly width: number;
  readonly height: number;
  readonly imageSize: number;
  readonly mine: boolean;
  readonly info: StoryInfo;
}

/** A listed story that could not be shown, and why. */
export interface SkippedStory {
  readonly storyId: string;
  /** The detailed reason (may use protocol words). */
  readonly reason: string;
  /** One calm sentence for the page. */
  readonly summary: string;
}

const skip = (storyId: string, reason: string, unreadable = false): SkippedStory => (
  { storyId, reason, summary: plainReason(unreadable ? "unreadable" : "refused", reason, "story") }
);

const header = (ctx: SpaceContext, info: StoryInfo): StoryHeader => ({
  spaceId: ctx.spaceId, roomId: info.room_id, epoch: info.epoch, sender: info.sender, storyId: info.story_id, ttl: info.ttl,
});

export class StoriesClient {
  constructor(private readonly ctx: SpaceContext, private readonly rooms: Rooms) {}

  /** Seals and posts a story to a channel; retries after `stale` and after a reconnection with the same story id. */
  async post(roomId: string, picture: StoryImage, caption = "", ttl = DEFAULT_STORY_TTL): Promise<StoryPosted> {
    if (!Number.isSafeInteger(ttl) || ttl <= 0 || ttl > MAX_STORY_TTL) throw new UsageError("a story lasts 1 second to 7 days");
    const room = this.ctx.roster().rooms.get(roomId);
    if (room === undefined) throw new UsageError("there is no such room in this space");
    if (room.spec.kind !== "channel") throw new UsageError("stories are posted to channels");
    if (picture.thumb.length + 40 > MAX_STORY_THUMB_BYTES) throw new UsageError("the thumbnail is too large");
    if (picture.image.length + 40 > MAX_STORY_BYTES) throw new UsageError("the image is too large (over 4 MB after re-encoding)");
    const storyId = newId();
    let stale = 0;
    let lost = 0;
    for (;;) {
      try {
        return await this.postOnce(roomId, storyId, picture, caption, ttl);
      } catch (err) {
        if (err instanceof ServerError && err.code === "stale" && ++stale < SEND_ATTEMPTS) {
          await this.ctx.sync();
          continue;
        }
        if (err instanceof Unreachable && this.ctx.connectionState() !== "closed" && ++lost < RECONNECT_RETRIES) {
          await this.online();
          continue;
        }
        throw err;
      }
    }
  }

  private async postOnce(roomId: string, storyId: string, picture: StoryImage, caption: string, ttl: number): Promise<StoryPosted> {
    const roster = this.ctx.roster();
    const generation = roomGeneration(roster, roomId);
    const key = await this.rooms.key(roomId, roster.epoch, generation);
    const h: StoryHeader = { spaceId: roster.spaceId, roomId, epoch: roster.epoch, sender: this.ctx.me.memberKey, storyId, ttl };
    const sealed = await sealStory(
      h,
      { caption, createdAt: Math.floor(Date.now() / 1000), head: roster.head.seq, headHash: roster.head.hash, width: picture.width, height: picture.height },
      picture.image, picture.thumb, this.ctx.me.signingSeed, key, generation,
    );
    const blob = sealed.imageBox;
    for (let offset = 0; offset < Math.max(blob.length, 1); offset += STORY_CHUNK_BYTES) {
      await this.ctx.request<StoryChunkStored>({
        type: "upload_story_chunk", story_id: storyId, offset, data: blob.slice(offset, offset + STORY_CHUNK_BYTES),
      });
    }
    const request: Omit<PostStory, "id"> = {
      type: "post_story", room_id: roomId, story_id: storyId, epoch: roster.epoch, ttl, meta: sealed.metaFramed,
      thumb: sealed.thumbBox, image_size: blob.length,
    };
    return this.ctx.request<StoryPosted>(request);
  }

  private online(): Promise<void> {
    return new Promise((resolve) => {
      const check = (state: string): boolean => state === "online" || state === "closed";
      if (check(this.ctx.connectionState())) return resolve();
      const off = this.ctx.onConnectionState((state) => {
        if (check(state)) {
          off();
          resolve();
        }
      });
    });
  }

  /** Live stories of a channel, newest first, and those skipped with why. */
  async list(roomId: string): Promise<{ stories: StoryView[]; skipped: SkippedStory[] }> {
    const reply = await this.ctx.request<Stories>({ type: "list_stories", room_id: roomId });
    const reader = new StoryReader(this.ctx, this.rooms);
    const stories: StoryView[] = [];
    const skipped: SkippedStory[] = [];
    const listed = new Set<string>();
    const now = Date.now() / 1000;
    for (const info of reply.stories) {
      if (info.room_id !== roomId) {
        skipped.push(skip(info.story_id, "it belongs to another room"));
        continue;
      }
      if (listed.has(info.story_id)) {
        skipped.push(skip(info.story_id, "it is listed twice (a replay)"));
        continue;
      }
      listed.add(info.story_id);
      try {
        const { view } = await reader.view(info);
        if (view.visibleUntil > now) stories.push(view);
      } catch (err) {
        if (!(err instanceof VerificationError)) throw err;
        skipped.push(skip(info.story_id, err.message, err instanceof RoomKeyUnavailable && !(err instanceof RoomKeyRefused)));
      }
    }
    stories.sort((a, b) => b.postedAt - a.postedAt);
    return { stories, skipped };
  }

  /** Fetches, decrypts and verifies a story's image or thumbnail. */
  async view(storyId: string, part: StoryPartName = "image"): Promise<{ view: StoryView; bytes: Uint8Array }> {
    const chunks: Uint8Array[] = [];
    let offset = 0;
    let info: StoryInfo | undefined;
    for (;;) {
      let reply: StoryPart;
      try {
        reply = await this.ctx.request<StoryPart>({ type: "fetch_story_part", story_id: storyId, part, offset });
      } catch (err) {
        if (err instanceof ServerError && err.code === "not_found") throw new UsageError("this story is gone (it may have expired)");
        throw err;
      }
      if (info !== undefined && !equal(encodeStruct(STORY_INFO, reply.story), encodeStruct(STORY_INFO, info))) {
        throw new VerificationError("the story changed while it was being fetched");
      }
      if (reply.part !== part || reply.offset !== offset) throw new VerificationError("the server sent another part of the story");
      // A server streaming (or claiming) a part far larger than any server's limit would only
      // fill this page's memory.
      const cap = part === "image" ? MAX_FETCHED_IMAGE : MAX_FETCHED_THUMB;
      if (reply.total > cap || offset + reply.data.length > cap) {
        throw new VerificationError(`the server sends a story ${part} larger than any story may be`);
      }
      info = reply.story;
      chunks.push(reply.data);
      offset += reply.data.length;
      if (offset >= reply.total || reply.data.length === 0) break;
    }
    const { view, meta, key } = await new StoryReader(this.ctx, this.rooms).view(info!);
    if (view.visibleUntil <= Date.now() / 1000) throw new UsageError("this story is gone (it has expired)");
    const box = new Uint8Array(offset);
    let at = 0;
    for (const chunk of chunks) {
      box.set(chunk, at);
      at += chunk.length;
    }
    try {
      return { view, bytes: await openStoryPart(box, part, header(this.ctx, info!), key, meta) };
    } catch (err) {
      if (err instanceof MessageError) throw new VerificationError(`the story's ${part} does not verify: ${err.message}`);
      throw err;
    }
  }
}

/** Decrypts and verifies stories' meta (§12 reader checks). Errors are VerificationErrors. */
export class StoryReader {
  private readonly heads: HeadCheck;

  constructor(private readonly ctx: SpaceContext, private readonly rooms: Rooms) {
    this.heads = new HeadCheck(ctx, () => ctx.sync());
  }

  async view(info: StoryInfo): Promise<{ view: StoryView; meta: StoryMeta; key: Uint8Array }> {
    const ctx = this.ctx;
    const epochProblem = await this.heads.epochProblem(info.epoch);
    if (epochProblem !== null) throw new VerificationError(epochProblem);
    let generation: number;
    let box: Uint8Array;
    try {
      ({ generation, box } = unframe(info.meta));
    } catch (err) {
      throw new VerificationError((err as Error).message);
    }
    // RoomKeyUnavailable / RoomKeyRefused / RoomKeyConflict are VerificationErrors: the story is skipped with why.
    const key = await this.rooms.key(info.room_id, info.epoch, generation);
    let meta: StoryMeta;
    try {
      meta = await openStoryMeta(box, header(ctx, info), key);
    } catch (err) {
      if (err instanceof MessageError) throw new VerificationError(`a story does not verify: ${err.message}`);
      throw err;
    }
    const headProblem = await this.heads.headProblem(meta.head, meta.headHash);
    if (headProblem !== null) throw new VerificationError(headProblem);
    const senderHex = toHex(info.sender);
    const at = rosterAt(ctx.roster(), meta.head);
    if (at === null || at.epoch !== info.epoch) throw new VerificationError("a story claims a roster state that never was");
    if (at.roomGeneration(info.room_id) !== generation) throw new VerificationError("a story's key generation does not match its roster state");
    if (!at.mayPost(info.room_id, senderHex)) throw new VerificationError("a story's author was not allowed to post in this channel");
    const view: StoryView = {
      storyId: info.story_id, roomId: info.room_id, sender: info.sender, senderHex, author: await memberName(ctx, senderHex),
      fingerprint: await fingerprint(info.sender), caption: meta.caption, postedAt: info.posted_at,
      visibleUntil: visibleUntil(info.expires_at, info.ttl, meta.createdAt) ?? info.expires_at, width: meta.width,
      height: meta.height, imageSize: info.image_size, mine: equal(info.sender, ctx.me.memberKey), info,
    };
    return { view, meta, key };
  }
}
