/**
 * A call room (UX.md screen 8): the pre-join screen (camera and microphone preview, device
 * pickers, "join muted" / "camera off", one Join button), the lobby wait, the call itself
 * (call_grid.tsx) and the end of it, each failure in its own plain words.
 */
import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { CallView } from "../../call/topology.ts";
import { useEnv } from "../app.tsx";
import { callProblem as explain } from "../call_core.ts";
import { Avatar, Link, Private } from "../components.tsx";
import { roomKey, useStore, type CallScreenVM, type DeviceKind, type RoomVM, type SpaceVM } from "../state.ts";
import { PanelHeader } from "./space.tsx";
import { CallIcon, DevicePicker, MicMeter, TrackVideo } from "./call_parts.tsx";
import { InCall } from "./call_grid.tsx";

export function CallScreen({ space, room }: { space: SpaceVM; room: RoomVM }): JSX.Element {
  const { store, intents } = useEnv();
  const call = useStore(store, (s) => s.calls[roomKey(space.slot, room.id)]);
  const [round, setRound] = useState(0);
  useEffect(() => {
    intents.openCall(space.slot, room.id);
    return () => intents.closeCall(space.slot, room.id);
  }, [space.slot, room.id, round]);
  const again = (): void => {
    intents.closeCall(space.slot, room.id);
    setRound((n) => n + 1);
  };
  if (call === undefined) {
    return (
      <div class="room call-room" data-testid="call-prejoin">
        <PanelHeader space={space} title={room.name} sub="Call" />
        <div class="panel-empty" aria-busy="true"><p class="muted">Opening the call…</p></div>
      </div>
    );
  }
  const view = call.view;
  const phase = view?.phase ?? "idle";
  if (view !== null && phase === "in-call") return <InCall space={space} room={room} call={call} view={view} onLeft={again} />;
  if (view !== null && phase === "lobby") return <Lobby space={space} room={room} onLeft={again} />;
  if (view !== null && (phase === "ended" || phase === "removed" || phase === "failed")) {
    return <CallOver space={space} room={room} view={view} onAgain={again} />;
  }
  return <PreJoin space={space} room={room} call={call} joining={phase === "joining"} />;
}

function PreJoin({ space, room, call, joining }: { space: SpaceVM; room: RoomVM; call: CallScreenVM; joining: boolean }): JSX.Element {
  const { intents } = useEnv();
  const [muted, setMuted] = useState(false);
  const [cameraOff, setCameraOff] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const preview = call.preview;
  const camera = preview.stream?.getVideoTracks()[0] ?? null;
  const noMic = preview.microphoneProblem !== null && !preview.starting;
  const waiting = busy || joining;
  const pick = (kind: DeviceKind, id: string): void => {
    intents.pickDevice(space.slot, room.id, kind, id).catch((e: unknown) => setError(explain(e)));
  };
  return (
    <div class="room call-room" data-testid="call-prejoin">
      <PanelHeader space={space} title={room.name} sub={<Private />} />
      <div class="call-scroll">
        <div class="prejoin">
          <div class="prejoin-preview">
            {camera !== null && !cameraOff ? (
              <TrackVideo track={camera} mirror label="Your camera" />
            ) : (
              <div class="prejoin-off">
                <Avatar name={space.me.name} keyHex={space.me.key} photo={space.me.photo} size="l" />
                <p>{preview.starting ? "Starting your camera…" : cameraOff ? "Your camera will be off" : "No camera picture"}</p>
              </div>
            )}
            <p class="prejoin-you">
              <span>{space.me.name}</span>
              {muted || noMic ? <span class="call-flag" title="Microphone off"><CallIcon name="micOff" size={16} /><span class="visually-hidden">Microphone off</span></span> : null}
            </p>
          </div>
          <form
            class="prejoin-form"
            onSubmit={(event) => {
              event.preventDefault();
              setBusy(true);
              setError(null);
              intents.joinCall(space.slot, room.id, { muted: muted || noMic, cameraOff: cameraOff || camera === null }).then(
                () => setBusy(false),
                (e: unknown) => {
                  setError(explain(e));
                  setBusy(false);
                },
              );
            }}
          >
            <h2>Ready to join?</h2>
            <p class="muted small">Only the people in this call can see and hear it.</p>
            {preview.cameraProblem !== null ? <p class="call-problem" role="alert" data-testid="camera-problem">{preview.cameraProblem}</p> : null}
            {preview.microphoneProblem !== null ? <p class="call-problem" role="alert" data-testid="microphone-problem">{preview.microphoneProblem}</p> : null}
            {(preview.cameraProblem !== null || preview.microphoneProblem !== null) && !preview.starting ? (
              <button type="button" class="button" onClick={() => intents.retryDevices(space.slot, room.id).catch((e: unknown) => setError(explain(e)))}>Try again</button>
            ) : null}
            <DevicePicker label="Camera" none="No camera found" devices={preview.cameras} value={preview.camera} onPick={(id) => pick("camera", id)} />
            <DevicePicker label="Microphone" none="No microphone found" devices={preview.microphones} value={preview.microphone} onPick={(id) => pick("microphone", id)} />
            {preview.microphoneTrack ? <MicMeter track={preview.microphoneTrack} /> : null}
            {preview.canPickSpeaker && preview.speakers.length > 0 ? (
              <DevicePicker label="Speaker" none="" devices={preview.speakers} value={preview.speaker} onPick={(id) => pick("speaker", id)} />
            ) : null}
            <label class="choice">
              <input type="checkbox" checked={muted || noMic} disabled={noMic} onChange={(e) => setMuted(e.currentTarget.checked)} data-testid="join-muted" />
              <span>Join with my microphone off</span>
            </label>
            <label class="choice">
              <input type="checkbox" checked={cameraOff || (camera === null && !preview.starting)} disabled={camera === null && !preview.starting} onChange={(e) => setCameraOff(e.currentTarget.checked)} data-testid="join-camera-off" />
              <span>Join with my camera off</span>
            </label>
            {error !== null || call.error !== null ? <p class="error" role="alert">{error ?? call.error}</p> : null}
            <button type="submit" class="button button-primary wide" disabled={waiting || preview.starting} data-testid="call-join">
              {waiting ? "Joining…" : "Join"}
            </button>
          </form>
        </div>
      </div>
    </div>
  );
}

function Lobby({ space, room, onLeft }: { space: SpaceVM; room: RoomVM; onLeft: () => void }): JSX.Element {
  const { intents } = useEnv();
  const [busy, setBusy] = useState(false);
  return (
    <div class="room call-room" data-testid="call-lobby">
      <PanelHeader space={space} title={room.name} sub={<Private />} />
      <div class="panel-empty">
        <div class="card narrow call-card" role="status" aria-live="polite">
          <CallIcon name="people" size={40} />
          <h2>Waiting for a host to let you in</h2>
          <p class="muted">The hosts of this call can see that you are waiting. You will join as soon as one of them lets you in.</p>
          <button
            type="button"
            class="button"
            disabled={busy}
            onClick={() => {
              setBusy(true);
              const leave = intents.callIntents(space.slot, room.id)?.leave() ?? Promise.resolve();
              void leave.catch(() => undefined).finally(onLeft);
            }}
          >
            Leave
          </button>
        </div>
      </div>
    </div>
  );
}

const OVER_TITLES = { ended: "The call has ended", removed: "You are not in the call", failed: "You could not join the call" } as const;
const OVER_TEXTS = {
  ended: "A host ended the call for everyone.",
  removed: "A host removed you from this call.",
  failed: "Something stopped the call from starting. Try again in a moment.",
} as const;

function CallOver({ space, room, view, onAgain }: { space: SpaceVM; room: RoomVM; view: CallView; onAgain: () => void }): JSX.Element {
  const phase = view.phase === "ended" || view.phase === "removed" ? view.phase : "failed";
  return (
    <div class="room call-room" data-testid="call-over" data-phase={phase}>
      <PanelHeader space={space} title={room.name} sub="Call" />
      <div class="panel-empty">
        <div class="card narrow call-card" role="alert">
          <h2>{OVER_TITLES[phase]}</h2>
          <p data-testid="call-reason">{view.reason || OVER_TEXTS[phase]}</p>
          <div class="button-row">
            {phase !== "removed" ? <button type="button" class="button button-primary" onClick={onAgain}>{phase === "failed" ? "Try again" : "Join again"}</button> : null}
            <Link href={`/space/${space.slot}`} class="button">Back to {space.name}</Link>
          </div>
        </div>
      </div>
    </div>
  );
}

