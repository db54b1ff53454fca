/**
 * In the call: the top line (room, how many, the lock that opens the verification code, where
 * the media goes in plain words), the grid of tiles that reflows with the number of people
 * and the width, the bottom bar (microphone, camera, screen, hand, people, leave).
 */
import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { CallIntents, CallView, ParticipantView } from "../../call/topology.ts";
import { useEnv } from "../app.tsx";
import { callProblem as explain } from "../call_core.ts";
import { Avatar, Dialog } from "../components.tsx";
import type { CallScreenVM, DeviceKind, RoomVM, SpaceVM } from "../state.ts";
import { CallIcon, countWords, DevicePicker, inCall, micWords, RemoteAudio, SEAT_WORDS, tileLabel, topologyWords, TrackVideo, type CallIconName } from "./call_parts.tsx";
import { PeoplePanel } from "./call_people.tsx";

interface Tile {
  readonly key: string;
  readonly person: ParticipantView;
  readonly screen: boolean;
}

/** The grid's size class: 1, 2, 4 (2×2), 9 (3×3), 16 (4×4) tiles and more. */
function gridSize(n: number): number {
  if (n <= 1) return 1;
  if (n === 2) return 2;
  if (n <= 4) return 4;
  if (n <= 9) return 9;
  return 16;
}

export function InCall({ space, room, call, view, onLeft }: { space: SpaceVM; room: RoomVM; call: CallScreenVM; view: CallView; onLeft: () => void }): JSX.Element {
  const { intents } = useEnv();
  const actions = intents.callIntents(space.slot, room.id);
  const [verify, setVerify] = useState(false);
  const [people, setPeople] = useState(false);
  const [devices, setDevices] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  const [leaving, setLeaving] = useState(false);
  const here = inCall(view);
  const me = here.find((p) => p.me) ?? null;
  const act = (run: (a: CallIntents) => Promise<void>): void => {
    if (actions === null) return;
    setProblem(null);
    run(actions).catch((e: unknown) => setProblem(explain(e)));
  };
  // A topology change is announced once, calmly.
  const [topology, setTopology] = useState(view.topology);
  const [moved, setMoved] = useState(false);
  useEffect(() => {
    if (view.topology === topology) return;
    setTopology(view.topology);
    if (topology === null) return;
    setMoved(true);
    const quiet = setTimeout(() => setMoved(false), 10_000);
    return () => clearTimeout(quiet);
  }, [view.topology]);

  const tiles: Tile[] = [];
  for (const p of here) if (p.tracks.screen !== undefined) tiles.push({ key: `${p.memberHex}-screen`, person: p, screen: true });
  for (const p of here) if (!p.me) tiles.push({ key: p.memberHex, person: p, screen: false });
  if (me !== null) tiles.push({ key: me.memberHex, person: me, screen: false });
  const selfCamera = me?.tracks.camera ?? call.preview.stream?.getVideoTracks()[0] ?? null;
  const offline = space.connection !== "online";
  const listener = me?.seat === "listener";
  const waiting = view.lobby.length;
  const canShare = typeof navigator !== "undefined" && typeof navigator.mediaDevices?.getDisplayMedia === "function";

  return (
    <div class="call" data-testid="call-view" data-topology={view.topology ?? ""}>
      <header class="call-top">
        <div class="call-title">
          <h1><bdi>{room.name}</bdi></h1>
          <p class="muted small" data-testid="call-count">{countWords(here.length)}{view.locked ? " · locked" : ""}</p>
        </div>
        <button
          type="button"
          class="call-lock"
          onClick={() => setVerify(true)}
          data-testid="call-lock"
          aria-haspopup="dialog"
          aria-label={view.encrypted ? "End-to-end encrypted: see the verification code" : "Securing the call…"}
        >
          <CallIcon name="lock" size={16} />
          <span class="call-lock-long" aria-hidden="true">{view.encrypted ? "End-to-end encrypted" : "Securing the call…"}</span>
          <span class="call-lock-short" aria-hidden="true">{view.encrypted ? "Encrypted" : "Securing…"}</span>
        </button>
      </header>
      <p class="call-route small">
        <span data-testid="call-topology">{here.length <= 1 ? "You are the only one here. Others appear as they join." : topologyWords(view.topology)}</span>
        {view.code !== null ? <span class="call-code-line">Verification code <span class="call-fp" data-testid="call-code-line">{view.code}</span></span> : null}
      </p>
      {offline || view.reason !== "" ? (
        <div class="banner" role="status" data-testid="call-banner">{view.reason || "Connection lost. Reconnecting… the call goes on when it is back."}</div>
      ) : null}
      {moved ? <p class="notice" role="status">{topologyWords(view.topology)}</p> : null}
      {problem !== null ? <p class="call-problem call-toast" role="alert">{problem}</p> : null}
      {me !== null && me.seat === "listener" ? <p class="notice" role="status">You are listening. Raise your hand to ask to speak.</p> : null}
      <div class="call-body">
        <ul class={`call-grid call-grid-${gridSize(tiles.length)}`} role="list" aria-label="People in the call">
          {tiles.map((t) => <CallTile key={t.key} tile={t} selfCamera={selfCamera} />)}
        </ul>
        {people ? <PeoplePanel view={view} stage={room.stage === true} actions={actions} onClose={() => setPeople(false)} onProblem={setProblem} /> : null}
      </div>
      {here.filter((p) => !p.me && p.tracks.audio !== undefined).map((p) => <RemoteAudio key={p.memberHex} track={p.tracks.audio!} speaker={call.preview.speaker} name={p.name} />)}
      <nav class="call-bar" aria-label="Call controls">
        <BarButton
          icon={me?.muted !== false ? "micOff" : "mic"}
          label={listener ? "Only speakers can talk" : me?.muted !== false ? "Turn on your microphone" : "Turn off your microphone"}
          off={me?.muted !== false}
          disabled={listener || actions === null}
          testid="call-mic"
          onClick={() => act((a) => a.setMuted(!(me?.muted ?? true)))}
        />
        <BarButton
          icon={me?.cameraOff !== false ? "videoOff" : "video"}
          label={me?.cameraOff !== false ? "Turn on your camera" : "Turn off your camera"}
          off={me?.cameraOff !== false}
          disabled={listener || actions === null}
          testid="call-camera"
          onClick={() => act((a) => a.setCamera(me?.cameraOff ?? true))}
        />
        {canShare ? (
          <BarButton
            icon="screen"
            label={me?.tracks.screen !== undefined ? "Stop sharing your screen" : "Share your screen"}
            pressed={me?.tracks.screen !== undefined}
            disabled={listener || actions === null}
            testid="call-screen"
            onClick={() => act((a) => a.shareScreen(me?.tracks.screen === undefined))}
          />
        ) : null}
        <BarButton
          icon="hand"
          label={me?.hand ? "Lower your hand" : "Raise your hand"}
          pressed={me?.hand ?? false}
          disabled={actions === null}
          testid="call-hand"
          onClick={() => act((a) => a.setHand(!(me?.hand ?? false)))}
        />
        <button
          type="button"
          class="call-button"
          aria-label="Camera, microphone and speaker"
          title="Camera, microphone and speaker"
          aria-haspopup="dialog"
          data-testid="call-devices"
          onClick={() => setDevices(true)}
        >
          <CallIcon name="settings" />
        </button>
        <button
          type="button"
          class={`call-button${people ? " call-button-on" : ""}`}
          aria-label={waiting > 0 && view.mayModerate ? `People, ${waiting} waiting to join` : "People"}
          title="People"
          aria-expanded={people}
          data-testid="call-people"
          onClick={() => setPeople(!people)}
        >
          <CallIcon name="people" />
          {waiting > 0 && view.mayModerate ? <span class="call-badge" aria-hidden="true">{waiting}</span> : null}
        </button>
        <button
          type="button"
          class="call-button call-leave"
          aria-label="Leave the call"
          title="Leave the call"
          disabled={leaving}
          data-testid="call-leave"
          onClick={() => {
            setLeaving(true);
            void (actions?.leave() ?? Promise.resolve()).catch(() => undefined).finally(onLeft);
          }}
        >
          <CallIcon name="leave" />
        </button>
      </nav>
      {verify ? <VerifyDialog view={view} onClose={() => setVerify(false)} /> : null}
      {devices ? <DevicesDialog space={space} room={room} call={call} onClose={() => setDevices(false)} /> : null}
    </div>
  );
}

function BarButton(props: { icon: CallIconName; label: string; off?: boolean; pressed?: boolean; disabled?: boolean; testid: string; onClick: () => void }): JSX.Element {
  return (
    <button
      type="button"
      class={`call-button${props.off ? " call-button-off" : ""}${props.pressed ? " call-button-on" : ""}`}
      aria-label={props.label}
      title={props.label}
      aria-pressed={props.pressed}
      disabled={props.disabled}
      data-testid={props.testid}
      onClick={props.onClick}
    >
      <CallIcon name={props.icon} />
    </button>
  );
}

function CallTile({ tile, selfCamera }: { tile: Tile; selfCamera: MediaStreamTrack | null }): JSX.Element {
  const p = tile.person;
  if (tile.screen) {
    return (
      <li class="tile tile-screen" tabIndex={0} aria-label={`${p.me ? "Your" : `${p.name}'s`} screen`} data-testid="call-tile-screen" data-name={p.name}>
        <TrackVideo track={p.tracks.screen ?? null} label={`${p.name}'s screen`} fit="contain" />
        <p class="tile-name"><CallIcon name="screen" size={16} /> <bdi>{p.me ? "Your screen" : `${p.name}'s screen`}</bdi></p>
      </li>
    );
  }
  const camera = p.me ? (p.cameraOff ? null : selfCamera) : p.cameraOff ? null : (p.tracks.camera ?? null);
  const reconnecting = !p.me && (p.link === "connecting" || p.link === "waiting" || p.link === "failed");
  return (
    <li
      class={`tile${p.speaking ? " tile-speaking" : ""}${p.me ? " tile-me" : ""}`}
      tabIndex={0}
      aria-label={tileLabel(p)}
      data-testid="call-tile"
      data-name={p.name}
      data-me={p.me ? "yes" : undefined}
    >
      {camera !== null ? (
        <TrackVideo track={camera} mirror={p.me} label={p.me ? "Your camera" : `${p.name}'s camera`} />
      ) : (
        <div class="tile-off">
          <Avatar name={p.name} keyHex={p.memberHex} photo={null} size="l" />
        </div>
      )}
      {p.speaking ? <span class="tile-speaking-tag"><CallIcon name="speaking" size={14} /> Speaking</span> : null}
      {p.hand ? <span class="tile-hand" title="Hand raised"><CallIcon name="hand" size={18} /><span class="visually-hidden">Hand raised</span></span> : null}
      {reconnecting ? <span class="tile-state">{p.link === "failed" ? "Connection lost. Reconnecting…" : "Connecting…"}</span> : null}
      <div class="tile-foot">
        <p class="tile-name">
          {p.muted ? <span class="tile-muted" title={micWords(p)} data-testid="tile-muted" data-muted-by={p.mutedBy ?? undefined}><CallIcon name="micOff" size={16} /><span class="visually-hidden">{micWords(p)}</span></span> : null}
          <bdi>{p.me ? `${p.name} (you)` : p.name}</bdi>
          {p.seat !== "speaker" ? <span class="tile-seat">{SEAT_WORDS[p.seat]}</span> : null}
        </p>
        <p class="tile-fp" title="Compare this with them in person to be sure it is really them">{p.fingerprint}</p>
      </div>
    </li>
  );
}

function VerifyDialog({ view, onClose }: { view: CallView; onClose: () => void }): JSX.Element {
  return (
    <Dialog title="End-to-end encrypted" onClose={onClose}>
      <p>Only the people in this call can see and hear it — not the server, not us.</p>
      <p class="hash-label">Verification code</p>
      <p class="fingerprint-big call-code" data-testid="call-code">{view.code ?? "Waiting for everyone…"}</p>
      <p class="muted small">Everyone in the call sees the same code. Read it out loud: if it matches on every screen, no one else is listening in.</p>
      <p class="muted small">{topologyWords(view.topology)}</p>
      <div class="dialog-actions">
        <button type="button" class="button" onClick={onClose}>Close</button>
      </div>
    </Dialog>
  );
}

function DevicesDialog({ space, room, call, onClose }: { space: SpaceVM; room: RoomVM; call: CallScreenVM; onClose: () => void }): JSX.Element {
  const { intents } = useEnv();
  const [problem, setProblem] = useState<string | null>(null);
  const preview = call.preview;
  const pick = (kind: DeviceKind, id: string): void => {
    setProblem(null);
    intents.pickDevice(space.slot, room.id, kind, id).catch((e: unknown) => setProblem(explain(e)));
  };
  return (
    <Dialog title="Camera, microphone and speaker" onClose={onClose}>
      <DevicePicker label="Camera" none="No camera found" devices={preview.cameras} value={preview.camera} onPick={(id) => pick("camera", id)} />
      <DevicePicker label="Microphone" none="No microphone found" devices={preview.microphones} value={preview.microphone} onPick={(id) => pick("microphone", id)} />
      {preview.canPickSpeaker && preview.speakers.length > 0 ? (
        <DevicePicker label="Speaker" none="" devices={preview.speakers} value={preview.speaker} onPick={(id) => pick("speaker", id)} />
      ) : (
        <p class="muted small">Sound plays on this device's usual speaker.</p>
      )}
      {preview.cameraProblem !== null ? <p class="call-problem" role="alert">{preview.cameraProblem}</p> : null}
      {preview.microphoneProblem !== null ? <p class="call-problem" role="alert">{preview.microphoneProblem}</p> : null}
      {problem !== null ? <p class="error" role="alert">{problem}</p> : null}
      <div class="dialog-actions">
        <button type="button" class="button" onClick={onClose}>Done</button>
      </div>
    </Dialog>
  );
}
