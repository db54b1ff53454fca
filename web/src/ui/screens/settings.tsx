/** Settings: my name and photo here, a passphrase for this browser, the app's bundle hash, leave. */
import type { JSX } from "preact";
import { useRef, useState } from "preact/hooks";
import { useEnv } from "../app.tsx";
import { explain } from "../errors.ts";
import { navigate } from "../router.ts";
import type { SpaceVM } from "../state.ts";
import { Confirm } from "../components.tsx";
import { PanelHeader } from "./space.tsx";
import { PhotoPicker } from "./photo.tsx";

/** The hash of the app's code that the server put in the page (`<meta name="salon-bundle">`). */
export function bundleHash(): string | null {
  const meta = document.querySelector('meta[name="salon-bundle"]');
  const value = meta?.getAttribute("content") ?? "";
  return value === "" ? null : value;
}

export function SettingsScreen({ space }: { space: SpaceVM }): JSX.Element {
  return (
    <div class="panel-page">
      <PanelHeader space={space} title="Settings" />
      <div class="panel-scroll">
        <Profile space={space} />
        {space.passphrase !== null ? <Passphrase space={space} passphrase={space.passphrase} /> : null}
        <AppCode />
        <Leave space={space} />
      </div>
    </div>
  );
}

function Profile({ space }: { space: SpaceVM }): JSX.Element {
  const { intents } = useEnv();
  const [name, setName] = useState(space.me.name);
  const [photo, setPhoto] = useState<Blob | null | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const [status, setStatus] = useState<string | null>(null);
  const changed = name.trim() !== space.me.name || photo !== undefined;
  return (
    <form
      class="card"
      onSubmit={(event) => {
        event.preventDefault();
        setBusy(true);
        setStatus(null);
        intents.setProfile(space.slot, name.trim(), photo).then(
          () => { setBusy(false); setPhoto(undefined); setStatus("Saved."); },
          (e: unknown) => { setBusy(false); setStatus(explain(e)); },
        );
      }}
    >
      <h2>You in this space</h2>
      <label class="field">
        <span>Your name</span>
        <input value={name} required maxLength={64} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <PhotoPicker photo={photo ?? null} current={photo === null ? null : space.me.photo} onChange={(p) => setPhoto(p)} label={space.me.photo !== null || photo ? "Change photo" : "Add a photo"} />
      <p class="muted small">Only people in this space see your name and photo.</p>
      {status !== null ? <p role="status">{status}</p> : null}
      <button type="submit" class="button button-primary" disabled={busy || !changed || name.trim() === ""}>{busy ? "Saving…" : "Save"}</button>
    </form>
  );
}

function Passphrase({ passphrase: has }: { space: SpaceVM; passphrase: boolean }): JSX.Element {
  const { intents } = useEnv();
  // Passphrases stay in the input elements (uncontrolled), never in component state.
  const current = useRef<HTMLInputElement>(null);
  const first = useRef<HTMLInputElement>(null);
  const second = useRef<HTMLInputElement>(null);
  const [busy, setBusy] = useState(false);
  const [status, setStatus] = useState<{ text: string; error: boolean } | null>(null);
  const clear = (): void => {
    for (const field of [current.current, first.current, second.current]) if (field !== null) field.value = "";
  };
  const apply = (next: string | null): void => {
    const now = current.current?.value ?? null;
    if (has && (now === null || now === "")) {
      setStatus({ text: "Type your current passphrase first.", error: true });
      current.current?.focus();
      return;
    }
    setBusy(true);
    setStatus(null);
    intents.setPassphrase(next, has ? now : null).then(
      () => {
        clear();
        setBusy(false);
        setStatus({ text: next === null ? "Passphrase removed. This browser opens your spaces without asking." : "Passphrase saved. This browser will ask for it next time.", error: false });
      },
      (e: unknown) => {
        if (current.current !== null) current.current.value = "";
        setBusy(false);
        setStatus({ text: explain(e), error: true });
      },
    );
  };
  return (
    <form
      class="card"
      aria-labelledby="passphrase-title"
      onSubmit={(event) => {
        event.preventDefault();
        const a = first.current, b = second.current;
        if (a === null || b === null) return;
        if (a.value !== b.value) {
          setStatus({ text: "The two new passphrases are not the same.", error: true });
          return;
        }
        apply(a.value);
      }}
    >
      <h2 id="passphrase-title">Passphrase for this browser</h2>
      <p class="muted small">
        {has
          ? "This browser asks for your passphrase before it opens your spaces. It protects every space on this browser."
          : "Optional. Your spaces are already locked to this browser. With a passphrase, someone using this computer also needs it to open them. If you forget it, you lose your spaces here."}
      </p>
      {has ? (
        <label class="field">
          <span>Current passphrase</span>
          <input ref={current} type="password" autocomplete="current-password" data-testid="passphrase-current" />
        </label>
      ) : null}
      <label class="field">
        <span>{has ? "New passphrase" : "Passphrase"}</span>
        <input ref={first} type="password" autocomplete="new-password" minLength={8} required data-testid="passphrase-new" aria-describedby="passphrase-hint" />
        <small id="passphrase-hint" class="muted">At least 8 characters. A few words you will remember work well.</small>
      </label>
      <label class="field">
        <span>Type it again</span>
        <input ref={second} type="password" autocomplete="new-password" minLength={8} required data-testid="passphrase-again" />
      </label>
      {status !== null ? <p class={status.error ? "error" : "ok"} role={status.error ? "alert" : "status"}>{status.text}</p> : null}
      <div class="button-row">
        <button type="submit" class="button" disabled={busy}>{busy ? "Saving…" : has ? "Change passphrase" : "Set passphrase"}</button>
        {has ? <button type="button" class="button" disabled={busy} onClick={() => apply(null)}>Remove passphrase</button> : null}
      </div>
    </form>
  );
}

function AppCode(): JSX.Element {
  const hash = bundleHash();
  return (
    <section class="card" aria-labelledby="code-title">
      <h2 id="code-title">This app's code</h2>
      {hash !== null ? <><p class="hash-label">Code fingerprint</p><p class="hash">{hash}</p></> : <p class="muted">This copy of the app was not built with a fingerprint.</p>}
      <p class="muted small">The server sends this app's code, so it could send altered code. Anyone can build the app from Salon's source and check that its code fingerprint is the same as this one (<code>salon web verify</code> does it).</p>
    </section>
  );
}

function Leave({ space }: { space: SpaceVM }): JSX.Element {
  const { intents } = useEnv();
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <section class="card" aria-labelledby="leave-title">
      <h2 id="leave-title">Leave {space.name}</h2>
      <p class="muted small">You will stop receiving anything from this space. To come back you will need a new invitation.</p>
      <button type="button" class="button button-danger" onClick={() => setAsking(true)}>Leave the space</button>
      {asking ? (
        <Confirm
          title={`Leave ${space.name}?`}
          body="You will no longer be able to read or write here, and this space's keys will be removed from this browser. To come back you will need a new invitation."
          action="Leave"
          busy={busy}
          error={error}
          onCancel={() => setAsking(false)}
          onConfirm={() => {
            setBusy(true);
            intents.leave(space.slot).then(
              () => navigate("/", { replace: true }),
              (e: unknown) => { setError(explain(e)); setBusy(false); },
            );
          }}
        />
      ) : null}
    </section>
  );
}
