/**
 * A line-driven Node client for tests/test_web_core.py: reads one JSON command per line on
 * stdin, answers one JSON line on stdout ({ok: ...} or {error, kind, name}). It uses the web
 * client's own modules (spaces.ts, join.ts, space.ts, session.ts) over Node's global WebSocket,
 * with the vault in a MemorySlotStore under a WebCrypto device key.
 */
import { type Command, serveLines } from "./e2e_lines.ts";
import { MemorySlotStore } from "../src/keystore/store.ts";
import { generateDeviceKey } from "../src/keystore/vault.ts";
import type { Removed } from "../src/client/context.ts";
import { JoinError } from "../src/client/join.ts";
import type { SpaceClient } from "../src/client/space.ts";
import { Spaces } from "../src/client/spaces.ts";


const spaces = await Spaces.open({ store: new MemorySlotStore(), device: await generateDeviceKey() });
let current: SpaceClient | null = null;
let currentSlot = "";
let removed: Removed | null = null;
const states: string[] = [];

function client(): SpaceClient {
  if (current === null) throw new Error("no space is open");
  return current;
}

function watch(c: SpaceClient): void {
  current = c;
  c.onRemoved((err) => {
    removed = err;
  });
  c.onConnectionState((s) => states.push(s));
}

async function until<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function members(): Promise<unknown[]> {
  return (await client().members()).map((m) => ({ display_name: m.displayName, role: m.role, fingerprint: m.fingerprint, me: m.me }));
}

async function memberKey(fp: string): Promise<Uint8Array> {
  const m = (await client().members()).find((v) => v.fingerprint.startsWith(fp) || v.displayName === fp);
  if (m === undefined) throw new Error(`no member ${fp}`);
  return m.key;
}

const handlers: { [op: string]: (c: Command) => Promise<unknown> } = {
  preview: async (c) => spaces.preview(c["link"] as string),
  join: async (c) => {
    const result = await spaces.join(c["link"] as string, c["name"] as string);
    watch(result.client);
    currentSlot = result.slot;
    return { space_id: result.spaceId, name: result.spaceName, slot: result.slot };
  },
  create: async (c) => {
    const created = await spaces.create(c["server"] as string, c["name"] as string, c["as"] as string);
    watch(created.client);
    currentSlot = created.slot;
    return { space_id: created.spaceId, link: created.link };
  },
  info: async () => ({ ...(await client().info()), role: client().myRole(), may_invite: client().mayInvite(), state: client().connectionState() }),
  members: async () => members(),
  wait_member: async (c) => until(async () => {
    const all = await members();
    return all.some((m) => (m as { display_name: string }).display_name === c["name"]) ? all : undefined;
  }),
  wait_role: async (c) => until(() => (client().myRole() === c["role"] ? client().myRole() : undefined)),
  create_invite: async (c) => ({
    link: await client().createInvite(c["uses"] as number, c["expires"] as number, (c["role"] as "member" | "moderator") ?? "member"),
  }),
  list_invites: async () => client().listInvites(),
  revoke_invite: async (c) => client().revokeInvite(c["invite_id"] as string),
  set_profile: async (c) => client().setProfile(c["name"] as string, null),
  kick: async (c) => client().kick(await memberKey(c["member"] as string), { ban: c["ban"] === true }),
  wait_removed: async () => until(() => (removed === null ? undefined : { how: removed.how, message: removed.message, state: client().connectionState() })),
  space_keys: async () => {
    const r = client().roster();
    return { epoch: r.epoch, held: client().spaceKey(r.epoch) !== undefined };
  },
  wait_epoch: async (c) => until(() => {
    const r = client().roster();
    return r.epoch >= (c["epoch"] as number) && client().spaceKey(r.epoch) !== undefined
      ? { epoch: r.epoch, held: true, rekey_by_me: r.rekeyAuthors.get(r.epoch) === [...client().me.memberKey].map((b) => b.toString(16).padStart(2, "0")).join("") }
      : undefined;
  }),
  list: async () => spaces.list(),
  leave: async () => spaces.leave(currentSlot),
  sync: async () => {
    await client().sync();
    return members();
  },
  wait_state: async (c) => until(() => (client().connectionState() === c["state"] ? states : undefined)),
  states: async () => states,
};

await serveLines(handlers, (err) => (err instanceof JoinError ? { error: err.message, kind: err.kind, name: err.name } : undefined));
await spaces.closeAll();
process.exit(0);
