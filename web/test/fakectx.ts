/**
 * Test double of the SpaceContext seam for unit tests of rooms/chat/stories (the integration
 * test, tests/test_web_chat.py, runs them against a real server and real CLI users instead).
 * The roster is the records.json chain (or a prefix); requests are answered by `handlers`.
 */
import { fromHex } from "../src/protocol/bytes.ts";
import { RECORD, type Record } from "../src/protocol/records.ts";
import { rosterFromRecords, type Roster } from "../src/protocol/roster.ts";
import type { ClientMessage, ServerMessage } from "../src/protocol/wire.ts";
import type { HeldRoomKey } from "../src/keystore/vault.ts";
import { ServerError, type ConnectionState, type SpaceContext, type WithoutId } from "../src/client/context.ts";
import { fromJson, loadVectors } from "./vectors.ts";

export const recordsVectors = loadVectors("records");
export const chain: Record[] = recordsVectors.records.map((item: { record: unknown }) => fromJson(RECORD, item.record));
export const people = loadVectors("identities").people;
const spaceKeys = loadVectors("space_keys").space_keys as { [epoch: string]: string };

export type Handler = (message: WithoutId<ClientMessage>) => Omit<ServerMessage, "id"> | Promise<Omit<ServerMessage, "id">>;

export class FakeContext implements SpaceContext {
  readonly spaceId: string = recordsVectors.space_id;
  readonly serverUrl = "ws://test";
  readonly requests: WithoutId<ClientMessage>[] = [];
  readonly handlers = new Map<string, Handler>();
  keys: HeldRoomKey[] = [];
  syncs = 0;
  private listeners: ((event: ServerMessage) => void)[] = [];
  private nextId = 1;

  constructor(private current: Roster, readonly me: SpaceContext["me"]) {}

  static async of(who: "alice" | "bob" | "carol", upTo = chain.length): Promise<FakeContext> {
    const p = people[who];
    const roster = await rosterFromRecords(recordsVectors.space_id, chain.slice(0, upTo));
    return new FakeContext(roster, {
      memberKey: fromHex(p.member_key), signingSeed: fromHex(p.signing_seed), boxSecret: fromHex(p.box_secret),
      boxKey: fromHex(p.box_key),
    });
  }

  roster(): Roster {
    return this.current;
  }
  async sync(): Promise<Roster> {
    this.syncs++;
    return this.current;
  }
  async request<T extends ServerMessage>(message: WithoutId<ClientMessage>): Promise<T> {
    this.requests.push(message);
    const handler = this.handlers.get(message.type);
    if (handler === undefined) throw new ServerError("invalid_message", `no handler for ${message.type}`);
    return { ...(await handler(message)), id: this.nextId++ } as T;
  }
  onEvent(listener: (event: ServerMessage) => void): () => void {
    this.listeners.push(listener);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }
  emit(event: ServerMessage): void {
    for (const l of this.listeners) l(event);
  }
  onReconnect(): () => void {
    return () => {};
  }
  onRoster(): () => void {
    return () => {};
  }
  connectionState(): ConnectionState {
    return "online";
  }
  onConnectionState(): () => void {
    return () => {};
  }
  spaceKey(epoch: number): Uint8Array | undefined {
    const hex = spaceKeys[String(epoch)];
    return hex === undefined ? undefined : fromHex(hex);
  }
  roomKeys(): readonly HeldRoomKey[] {
    return this.keys;
  }
  async saveRoomKeys(keys: readonly HeldRoomKey[]): Promise<void> {
    this.keys = [...keys];
  }
  async append(): Promise<Roster> {
    throw new ServerError("forbidden", "the fake context does not append");
  }
}
