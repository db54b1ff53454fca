/** The key store of this browser is protected by a passphrase: ask for it. */
import type { JSX } from "preact";
import { useRef, useState } from "preact/hooks";
import { useEnv } from "../app.tsx";
import { explain } from "../errors.ts";

export function UnlockScreen(): JSX.Element {
  const { intents } = useEnv();
  // The passphrase stays in the input element (uncontrolled), never in component state.
  const input = useRef<HTMLInputElement>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <main class="centered">
      <form
        class="card narrow"
        onSubmit={(event) => {
          event.preventDefault();
          const field = input.current;
          if (field === null) return;
          const passphrase = field.value;
          field.value = "";
          setBusy(true);
          setError(null);
          intents.unlock(passphrase).catch((e: unknown) => {
            setError(explain(e));
            setBusy(false);
            field.focus();
          });
        }}
      >
        <h1>Unlock Salon</h1>
        <p class="muted">You chose a passphrase to protect your spaces on this browser.</p>
        <label class="field">
          <span>Passphrase</span>
          <input ref={input} type="password" autocomplete="current-password" required />
        </label>
        {error !== null ? <p class="error" role="alert">{error}</p> : null}
        <button class="button button-primary wide" type="submit" disabled={busy}>{busy ? "Unlocking…" : "Unlock"}</button>
        <p class="muted small">Forgot it? It can't be recovered: your spaces on this browser stay locked. Ask for new invitations to join again.</p>
      </form>
    </main>
  );
}
