/**
 * A line-driven Node client for tests/test_web_chat.py: one JSON command per stdin line, one
 * JSON answer per stdout line ({ok: ...} or {error, kind, name}). It joins through the web
 * client's own modules (spaces.ts, space.ts) and drives rooms.ts, chat.ts and stories.ts —
 * with the page's key duty running — over Node's global WebSocket; the vault is a
 * MemorySlotStore under a WebCrypto device key. Bytes are hex in both directions.
 */
import { type Command, serveLines } from "./e2e_lines.ts";
import { fromHex } from "../src/protocol/bytes.ts";
import { MemorySlotStore } from "../src/keystore/store.ts";
import { generateDeviceKey } from "../src/keystore/vault.ts";
import type { SpaceClient } from "../src/client/space.ts";
import { Spaces } from "../src/client/spaces.ts";
import { Rooms, type RoomView } from "../src/client/rooms.ts";
import { Chat, type Follower, type ReadItem } from "../src/client/chat.ts";
import { StoriesClient } from "../src/client/stories.ts";


const spaces = await Spaces.open({ store: new MemorySlotStore(), device: await generateDeviceKey() });
let current: { client: SpaceClient; rooms: Rooms; chat: Chat; stories: StoriesClient } | null = null;
const followers = new Map<string, Follower>();
const items = new Map<string, ReadItem[]>();
const expired = new Map<string, Set<number>>();
const dutyErrors: string[] = [];

function c(): NonNullable<typeof current> {
  if (current === null) throw new Error("no space is open");
  return current;
}

async function until<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function room(query: string): Promise<RoomView> {
  const all = await c().rooms.list();
  const found = all.find((v) => v.roomId === query) ?? all.find((v) => v.name === query);
  if (found === undefined) throw new Error(`no room ${query}`);
  return found;
}

async function memberKey(name: string): Promise<Uint8Array> {
  const m = (await c().client.members()).find((v) => v.displayName === name || v.fingerprint.startsWith(name));
  if (m === undefined) throw new Error(`no member ${name}`);
  return m.key;
}

const plain = (item: ReadItem): unknown => (item.kind === "shown"
  ? { kind: item.kind, seq: item.seq, text: item.text, sender: item.senderName, fingerprint: item.fingerprint, mine: item.mine, visible_until: item.visibleUntil }
  : { kind: item.kind, seq: item.seq, reason: item.reason, summary: item.summary, forked: item.forked, fingerprint: item.fingerprint });

const view = (v: RoomView): unknown => ({ room_id: v.roomId, name: v.name, kind: v.kind, history: v.history, ttl: v.ttl, may_post: v.mayPost });

const handlers: { [op: string]: (cmd: Command) => Promise<unknown> } = {
  join: async (cmd) => {
    const result = await spaces.join(cmd["link"] as string, cmd["name"] as string);
    const rooms = new Rooms(result.client);
    current = { client: result.client, rooms, chat: new Chat(result.client, rooms), stories: new StoriesClient(result.client, rooms) };
    rooms.startKeyDuty((err) => dutyErrors.push(String((err as Error)?.message ?? err)));
    return { space_id: result.spaceId };
  },
  rooms: async () => (await c().rooms.list()).map(view),
  wait_room: async (cmd) => view(await until(async () => (await c().rooms.list()).find((v) => v.name === cmd["name"]))),
  wait_role: async (cmd) => until(() => (c().client.myRole() === cmd["role"] ? cmd["role"] : undefined)),
  create_room: async (cmd) => {
    const publishers = await Promise.all(((cmd["publishers"] as string[] | undefined) ?? []).map(memberKey));
    const history = cmd["history"] as "since-join" | "shared" | undefined;
    return view(await c().rooms.create(cmd["kind"] as "chat" | "channel", cmd["name"] as string, {
      publishers, ...(history === undefined ? {} : { history }), ttl: (cmd["ttl"] as number | undefined) ?? 0,
    }));
  },
  set_publisher: async (cmd) => c().rooms.setPublisher((await room(cmd["room"] as string)).roomId, await memberKey(cmd["member"] as string), cmd["on"] as boolean),
  may_post: async (cmd) => until(async () => ((await room(cmd["room"] as string)).mayPost === cmd["want"] ? cmd["want"] : undefined)),
  follow: async (cmd) => {
    const id = (await room(cmd["room"] as string)).roomId;
    items.set(id, []);
    expired.set(id, new Set());
    followers.set(id, await c().chat.follow(id, {
      onMessage: (item) => items.get(id)!.push(item),
      onExpired: (_room, seq) => expired.get(id)!.add(seq),
      onError: (err) => dutyErrors.push(`follow: ${String((err as Error)?.message ?? err)}`),
    }));
    return items.get(id)!.map(plain);
  },
  items: async (cmd) => (items.get((await room(cmd["room"] as string)).roomId) ?? []).map(plain),
  wait_text: async (cmd) => {
    const id = (await room(cmd["room"] as string)).roomId;
    return plain(await until(() => items.get(id)?.find((i) => i.kind === "shown" && i.text === cmd["text"])));
  },
  wait_kind: async (cmd) => {
    const id = (await room(cmd["room"] as string)).roomId;
    return plain(await until(() => items.get(id)?.find((i) => i.kind === cmd["kind"] && i.seq === cmd["seq"])));
  },
  wait_expired: async (cmd) => {
    const id = (await room(cmd["room"] as string)).roomId;
    return until(() => (expired.get(id)?.has(cmd["seq"] as number) ? cmd["seq"] : undefined), (cmd["timeout"] as number | undefined) ?? 120_000);
  },
  /** `count` messages "TEXT i" as fast as the server takes them (a flooding member, for the red-team test). */
  flood: async (cmd) => {
    const roomId = (await room(cmd["room"] as string)).roomId;
    for (let i = 0; i < (cmd["count"] as number); i++) await c().chat.send(roomId, `${cmd["text"] as string} ${i}`);
    return cmd["count"];
  },
  send: async (cmd) => c().chat.send((await room(cmd["room"] as string)).roomId, cmd["text"] as string, (cmd["ttl"] as number | undefined) ?? 0),
  history: async (cmd) => (await c().chat.history((await room(cmd["room"] as string)).roomId)).map(plain),
  post_story: async (cmd) => c().stories.post((await room(cmd["room"] as string)).roomId, {
    image: fromHex(cmd["image"] as string), thumb: fromHex(cmd["thumb"] as string), width: cmd["width"] as number, height: cmd["height"] as number,
  }, cmd["caption"] as string, (cmd["ttl"] as number | undefined) ?? 86400),
  list_stories: async (cmd) => {
    const { stories, skipped } = await c().stories.list((await room(cmd["room"] as string)).roomId);
    return {
      stories: stories.map((s) => ({ story_id: s.storyId, author: s.author, caption: s.caption, visible_until: s.visibleUntil, width: s.width, height: s.height, mine: s.mine })),
      skipped,
    };
  },
  view_story: async (cmd) => {
    const { view: v, bytes } = await c().stories.view(cmd["story_id"] as string, (cmd["part"] as "image" | "thumb" | undefined) ?? "image");
    return { caption: v.caption, author: v.author, width: v.width, height: v.height, bytes };
  },
  share_keys: async () => c().rooms.runKeyDuty(),
  duty_errors: async () => dutyErrors,
};

await serveLines(handlers);
for (const f of followers.values()) f.stop();
await spaces.closeAll();
process.exit(0);
