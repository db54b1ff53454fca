/**
 * A call in the browser, put together: the CallClient (call.ts) with the real topologies —
 * mesh.ts, and sfu.ts over the SFrame worker (media_keys.ts, started the first time the call
 * runs on the SFU and closed when the call ends) — fed with the page's local devices. This is
 * what ui/call_core.ts's `StartCall` needs (`CallSession`: view, onChange, intents, close).
 */
import type { SpaceContext } from "../client/context.ts";
import { MediaKeys } from "../media/media_keys.ts";
import { CallClient } from "./call.ts";
import { meshTopology } from "./mesh.ts";
import { sfuTopology, sframeWorkerUrl } from "./sfu.ts";
import type { CallIntents, CallView, LocalMedia, TopologyFactory, TopologyName } from "./topology.ts";

export interface LocalSources {
  readonly media: LocalMedia;
  onChange(listener: (media: LocalMedia) => void): () => void;
}

export interface BrowserCall {
  readonly client: CallClient;
  view(): CallView;
  onChange(listener: () => void): () => void;
  readonly intents: CallIntents;
  close(): Promise<void>;
}

/** Join `roomId` with our `local` sources; resolves once joined (or refused: see view()). */
export async function startBrowserCall(
  ctx: SpaceContext, roomId: string, local: LocalSources,
  choices: { muted: boolean; cameraOff: boolean; relayOnly?: boolean },
): Promise<BrowserCall> {
  let keys: MediaKeys | null = null;
  const sfu: TopologyFactory = (tctx) => {
    keys ??= MediaKeys.start(sframeWorkerUrl());
    return sfuTopology(keys)(tctx);
  };
  const topologies = new Map<TopologyName, TopologyFactory>([["mesh", meshTopology], ["sfu", sfu]]);
  const client = new CallClient(ctx, roomId, {
    topologies, media: local.media, startMuted: choices.muted, cameraOff: choices.cameraOff,
    relayOnly: choices.relayOnly ?? false,
  });
  const offMedia = local.onChange((media) => void client.setLocalMedia(media).catch(() => undefined));
  const offEnd = client.onChange(() => {
    const phase = client.view().phase;
    if (phase === "ended" || phase === "removed" || phase === "failed") offMedia(); // the worker goes in close()
  });
  await client.join();
  return {
    client,
    view: () => client.view(),
    onChange: (listener) => client.onChange(listener),
    intents: client,
    async close() {
      offMedia();
      offEnd();
      await client.close();
      keys?.close();
      keys = null;
    },
  };
}
