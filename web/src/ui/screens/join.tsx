/**
 * Join (`/join/<id>#<secret>`): the space's name, who invites, one name field, an optional
 * photo, one button. The secret was taken out of the address bar before the first render
 * (main.tsx → holdInviteSecret) and lives only in this module's map until the join is done.
 */
import type { JSX } from "preact";
import { useEffect, useState } from "preact/hooks";
import { useEnv } from "../app.tsx";
import { explain } from "../errors.ts";
import { navigate } from "../router.ts";
import type { InvitePreviewVM } from "../state.ts";
import { expiresIn } from "../format.ts";
import { Link, Private } from "../components.tsx";
import { PhotoPicker } from "./photo.tsx";

const secrets = new Map<string, string>();

/** Keeps the secret of `inviteId` for this page's life only (not in any state or storage). */
export function holdInviteSecret(inviteId: string, secret: string): void {
  if (secret !== "") secrets.set(inviteId, secret);
}

type Phase =
  | { readonly step: "opening" }
  | { readonly step: "ready"; readonly preview: InvitePreviewVM }
  | { readonly step: "failed"; readonly message: string };

export function JoinScreen({ inviteId }: { inviteId: string }): JSX.Element {
  const { intents } = useEnv();
  const [phase, setPhase] = useState<Phase>({ step: "opening" });
  const [name, setName] = useState("");
  const [photo, setPhoto] = useState<Blob | null>(null);
  const [joining, setJoining] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const secret = secrets.get(inviteId);
    if (secret === undefined) {
      setPhase({ step: "failed", message: "This link is incomplete. Open the whole link you were sent (it has a part after #), or ask for a new one." });
      return;
    }
    let live = true;
    intents.previewInvite(inviteId, secret).then(
      (preview) => live && setPhase({ step: "ready", preview }),
      (e: unknown) => live && setPhase({ step: "failed", message: explain(e, "join") }),
    );
    return () => {
      live = false;
    };
  }, [inviteId]);

  if (phase.step === "opening") {
    return (
      <main class="centered" aria-busy="true">
        <div class="card narrow"><h1>Opening your invitation…</h1><p class="muted">Checking the link with the server.</p></div>
      </main>
    );
  }
  if (phase.step === "failed") {
    return (
      <main class="centered">
        <div class="card narrow">
          <h1>This invitation can't be used</h1>
          <p role="alert">{phase.message}</p>
          <p><Link href="/" class="button">Go to your spaces</Link></p>
        </div>
      </main>
    );
  }
  const { preview } = phase;
  const join = (event: Event): void => {
    event.preventDefault();
    const secret = secrets.get(inviteId);
    if (secret === undefined || name.trim() === "") return;
    setJoining(true);
    setError(null);
    intents.join(inviteId, secret, name.trim(), photo).then(
      (slot) => {
        secrets.delete(inviteId);
        navigate(`/space/${slot}`, { replace: true });
      },
      (e: unknown) => {
        setError(explain(e, "join"));
        setJoining(false);
      },
    );
  };
  return (
    <main class="centered">
      <form class="card narrow join" onSubmit={join}>
        <p class="eyebrow">You were invited to join</p>
        <h1 class="space-title">{preview.spaceName || "a space"}</h1>
        {preview.description ? <p class="muted">{preview.description}</p> : null}
        <p class="muted">
          {preview.inviter ? <>Invited by <strong>{preview.inviter}</strong>. </> : null}
          {preview.role !== "member" ? <>You will join as {preview.role}. </> : null}
          This link expires {expiresIn(preview.expiresAt, Date.now())}.
        </p>
        <label class="field">
          <span>Your name in this space</span>
          <input
            value={name}
            maxLength={64}
            required
            autocomplete="nickname"
            data-testid="join-name"
            onInput={(e) => setName(e.currentTarget.value)}
            aria-describedby="name-help"
          />
          <small id="name-help" class="muted">Only people in this space see it. No one can link it to you anywhere else.</small>
        </label>
        <PhotoPicker photo={photo} onChange={setPhoto} label="Add a photo (optional)" />
        {error !== null ? <p class="error" role="alert">{error}</p> : null}
        <button class="button button-primary wide" type="submit" data-testid="join-submit" disabled={joining || name.trim() === ""}>
          {joining ? "Joining…" : "Join"}
        </button>
        <p class="center"><Private /></p>
      </form>
    </main>
  );
}
