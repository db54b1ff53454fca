/** Invite: make a link (uses, expiry, role), show it with Copy and a QR code; list and revoke links. */
import type { JSX } from "preact";
import { useState } from "preact/hooks";
import { encode } from "uqr";
import { useEnv } from "../app.tsx";
import { explain } from "../errors.ts";
import { expiresIn, ROLE_LABEL } from "../format.ts";
import type { InviteVM, Role, SpaceVM } from "../state.ts";
import { Confirm, Icon } from "../components.tsx";
import { PanelHeader, canModerate } from "./space.tsx";

const USES = [1, 5, 25, 100] as const;
const EXPIRY = [
  { seconds: 3600, label: "1 hour" },
  { seconds: 86_400, label: "1 day" },
  { seconds: 7 * 86_400, label: "1 week" },
  { seconds: 30 * 86_400, label: "30 days" },
] as const;

export function InviteScreen({ space }: { space: SpaceVM }): JSX.Element {
  if (!canModerate(space)) {
    return (
      <div class="panel-page">
        <PanelHeader space={space} title="Invite people" />
        <div class="panel-empty"><p>Only the space's owners and moderators can invite people. Ask one of them for a link.</p></div>
      </div>
    );
  }
  return (
    <div class="panel-page">
      <PanelHeader space={space} title="Invite people" />
      <div class="panel-scroll">
        <NewLink space={space} />
        <Links space={space} />
      </div>
    </div>
  );
}

function NewLink({ space }: { space: SpaceVM }): JSX.Element {
  const { intents } = useEnv();
  const [uses, setUses] = useState<number>(1);
  const [expiry, setExpiry] = useState<number>(86_400);
  const [role, setRole] = useState<Role>("member");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  // The link holds the invite secret: it lives only in this component while shown.
  const [link, setLink] = useState<string | null>(null);
  const [copied, setCopied] = useState(false);
  if (link !== null) {
    return (
      <section class="card invite-made" aria-labelledby="made-title">
        <h2 id="made-title">Your invitation link</h2>
        <p class="muted small">Anyone with this link can join {space.name}. Send it only to the people you mean to invite. It is shown only now.</p>
        <div class="link-row">
          <label class="visually-hidden" for="invite-link">Invitation link</label>
          <input id="invite-link" class="link-input" readOnly value={link} onFocus={(e) => e.currentTarget.select()} />
          <button
            type="button"
            class="button button-primary"
            onClick={() => {
              navigator.clipboard.writeText(link).then(() => setCopied(true), () => setError("Copying is not allowed here: select the link and copy it by hand."));
            }}
          >
            <Icon name="copy" size={18} /> {copied ? "Copied" : "Copy"}
          </button>
        </div>
        {error !== null ? <p class="error" role="alert">{error}</p> : null}
        <QrCode text={link} />
        <p class="muted small center">Or let them scan this code with their phone's camera.</p>
        <button type="button" class="button wide" onClick={() => { setLink(null); setCopied(false); }}>Done</button>
      </section>
    );
  }
  return (
    <form
      class="card"
      onSubmit={(event) => {
        event.preventDefault();
        setBusy(true);
        setError(null);
        intents.createInvite(space.slot, { uses, expiresIn: expiry, role }).then(
          (made) => {
            setLink(made);
            setBusy(false);
          },
          (e: unknown) => {
            setError(explain(e));
            setBusy(false);
          },
        );
      }}
    >
      <h2>New link</h2>
      <div class="field-row">
        <label class="field">
          <span>How many people</span>
          <select value={uses} onChange={(e) => setUses(Number(e.currentTarget.value))}>
            {USES.map((n) => <option key={n} value={n}>{n === 1 ? "1 person" : `Up to ${n} people`}</option>)}
          </select>
        </label>
        <label class="field">
          <span>Works for</span>
          <select value={expiry} onChange={(e) => setExpiry(Number(e.currentTarget.value))}>
            {EXPIRY.map((x) => <option key={x.seconds} value={x.seconds}>{x.label}</option>)}
          </select>
        </label>
        <label class="field">
          <span>Joins as</span>
          <select value={role} onChange={(e) => setRole(e.currentTarget.value as Role)}>
            <option value="member">Member</option>
            {space.me.role === "owner" ? <option value="moderator">Moderator</option> : null}
          </select>
        </label>
      </div>
      {error !== null ? <p class="error" role="alert">{error}</p> : null}
      <button type="submit" class="button button-primary" disabled={busy}>{busy ? "Making the link…" : "Create link"}</button>
    </form>
  );
}

function QrCode({ text }: { text: string }): JSX.Element {
  const qr = encode(text, { ecc: "M", border: 2 });
  let path = "";
  qr.data.forEach((row, y) => row.forEach((dark, x) => {
    if (dark) path += `M${x} ${y}h1v1h-1z`;
  }));
  return (
    <svg class="qr" viewBox={`0 0 ${qr.size} ${qr.size}`} role="img" aria-label="QR code of the invitation link" shape-rendering="crispEdges">
      <rect width={qr.size} height={qr.size} class="qr-light" />
      <path d={path} class="qr-dark" />
    </svg>
  );
}

function Links({ space }: { space: SpaceVM }): JSX.Element {
  const { intents } = useEnv();
  const [revoking, setRevoking] = useState<InviteVM | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const now = Date.now();
  const open = space.invites.filter((i) => !i.revoked && i.expiresAt > now && i.uses < i.maxUses);
  return (
    <section class="card" aria-labelledby="links-title">
      <h2 id="links-title">Links that still work</h2>
      {open.length === 0 ? <p class="muted">None. Links that expire, are used up or revoked stop working.</p> : (
        <ul class="invite-list" role="list">
          {open.map((invite) => (
            <li class="invite-item" key={invite.id}>
              <div>
                <p>{ROLE_LABEL[invite.role]} link</p>
                <p class="muted small">{invite.maxUses - invite.uses} of {invite.maxUses} {invite.maxUses === 1 ? "use" : "uses"} left · expires {expiresIn(invite.expiresAt, now)}</p>
              </div>
              <button type="button" class="button button-quiet danger" onClick={() => setRevoking(invite)}>Revoke</button>
            </li>
          ))}
        </ul>
      )}
      {revoking !== null ? (
        <Confirm
          title="Revoke this link?"
          body="No one will be able to join with it any more. People who already joined stay."
          action="Revoke"
          busy={busy}
          error={error}
          onCancel={() => { setRevoking(null); setError(null); }}
          onConfirm={() => {
            setBusy(true);
            intents.revokeInvite(space.slot, revoking.id).then(
              () => { setRevoking(null); setBusy(false); },
              (e: unknown) => { setError(explain(e)); setBusy(false); },
            );
          }}
        />
      ) : null}
    </section>
  );
}
