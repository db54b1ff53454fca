/**
 * The bridge from the client core (client/spaces.ts, space.ts, rooms.ts, chat.ts, stories.ts)
 * to the UI store: subscribes to the core's events, turns them into view models, and carries
 * out the UI's intents. Until the core modules land this bridge has no spaces and refuses
 * every intent with a plain message.
 */
import { UsageError } from "../client/context.ts";
import type { Intents, Store } from "./state.ts";

export function startCore(store: Store): Intents {
  store.update((s) => ({ ...s, ready: true }));
  const notYet = (): Promise<never> => Promise.reject(new UsageError("This version of the app can't do that yet."));
  return {
    unlock: notYet,
    previewInvite: notYet,
    join: notYet,
    openSpace: () => undefined,
    openRoom: () => undefined,
    send: notYet,
    postStory: notYet,
    storyPicture: notYet,
    markStorySeen: () => undefined,
    createRoom: notYet,
    setRole: notYet,
    remove: notYet,
    createInvite: notYet,
    revokeInvite: notYet,
    setProfile: notYet,
    setPassphrase: notYet,
    leave: notYet,
  };
}
