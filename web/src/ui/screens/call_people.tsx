/**
 * The people panel of a call: who is in it (and, for hosts, who waits in the lobby with Admit /
 * Deny), per-person controls for hosts (mute, speaker/listener, lower hand, remove, ban — the
 * destructive ones confirmed), mute everyone, lock/unlock, end the call. Esc closes it.
 */
import type { JSX } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import type { CallIntents, CallView, ParticipantView } from "../../call/topology.ts";
import { callProblem as explain } from "../call_core.ts";
import { Avatar, Confirm, Dialog } from "../components.tsx";
import { CallIcon, inCall, micWords, SEAT_WORDS } from "./call_parts.tsx";

type Ask = { readonly title: string; readonly body: string; readonly action: string; readonly run: (a: CallIntents) => Promise<void> };

export function PeoplePanel(props: { view: CallView; stage: boolean; actions: CallIntents | null; onClose: () => void; onProblem: (text: string | null) => void }): JSX.Element {
  const { view, actions } = props;
  const host = view.mayModerate;
  const panel = useRef<HTMLElement>(null);
  const [manage, setManage] = useState<ParticipantView | null>(null);
  const [ask, setAsk] = useState<Ask | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    panel.current?.querySelector<HTMLElement>("button")?.focus();
    const esc = (event: KeyboardEvent): void => {
      // A dialog open above the panel takes the Escape itself.
      if (event.key === "Escape" && document.querySelector("dialog[open]") === null) props.onClose();
    };
    document.addEventListener("keydown", esc);
    return () => document.removeEventListener("keydown", esc);
  }, []);
  const act = (run: (a: CallIntents) => Promise<void>): Promise<void> => {
    if (actions === null) return Promise.resolve();
    props.onProblem(null);
    return run(actions).catch((e: unknown) => props.onProblem(explain(e)));
  };
  const here = inCall(view);
  return (
    <aside class="call-people" aria-label="People" ref={panel} data-testid="call-people-panel">
      <div class="call-people-head">
        <h2>People</h2>
        <button type="button" class="icon-button" aria-label="Close the people list" title="Close" onClick={props.onClose}>
          <CallIcon name="close" />
        </button>
      </div>
      <div class="call-people-scroll">
        {host && view.lobby.length > 0 ? (
          <section aria-labelledby="call-lobby-title">
            <h3 class="call-people-group" id="call-lobby-title">Waiting to join ({view.lobby.length})</h3>
            <ul role="list">
              {view.lobby.map((p) => (
                <li class="call-person call-knock" key={p.memberHex} data-testid="call-knocker" data-name={p.name}>
                  <Avatar name={p.name} keyHex={p.memberHex} photo={null} size="s" />
                  <div class="call-person-info">
                    <p class="member-name"><bdi>{p.name}</bdi></p>
                    <p class="muted small call-fp">{p.fingerprint}</p>
                  </div>
                  <div class="call-person-actions">
                    <button type="button" class="button button-primary" aria-label={`Let ${p.name} in`} onClick={() => void act((a) => a.admit(p.memberHex))}>Admit</button>
                    <button type="button" class="button" aria-label={`Don't let ${p.name} in`} onClick={() => void act((a) => a.deny(p.memberHex))}>Deny</button>
                  </div>
                </li>
              ))}
            </ul>
          </section>
        ) : null}
        <section aria-labelledby="call-here-title">
          <h3 class="call-people-group" id="call-here-title">In the call ({here.length})</h3>
          <ul role="list">
            {here.map((p) => (
              <li class="call-person" key={p.memberHex} data-testid="call-person" data-name={p.name}>
                <Avatar name={p.name} keyHex={p.memberHex} photo={null} size="s" />
                <div class="call-person-info">
                  <p class="member-name"><bdi>{p.me ? `${p.name} (you)` : p.name}</bdi></p>
                  <p class="muted small">
                    {SEAT_WORDS[p.seat]}
                    {p.muted ? ` · ${micWords(p).toLowerCase()}` : ""}
                    {p.hand ? " · hand raised" : ""}
                  </p>
                </div>
                {p.hand ? <span class="call-flag" title="Hand raised"><CallIcon name="hand" size={18} /></span> : null}
                {host && !p.me ? (
                  <button type="button" class="icon-button" aria-label={`Manage ${p.name}`} title={`Manage ${p.name}`} onClick={() => setManage(p)}>
                    <CallIcon name="more" />
                  </button>
                ) : null}
              </li>
            ))}
          </ul>
        </section>
      </div>
      {host ? (
        <div class="call-people-foot">
          <button type="button" class="button" onClick={() => void act((a) => a.muteAll())}>Mute everyone</button>
          <button type="button" class="button" onClick={() => void act((a) => a.lock(!view.locked))} data-testid="call-lock-toggle">
            {view.locked ? "Unlock the call" : "Lock the call"}
          </button>
          <p class="muted small">{view.locked ? "The call is locked: no one new can join." : "Locking stops anyone new from joining."}</p>
          <button
            type="button"
            class="button danger"
            onClick={() => setAsk({ title: "End the call for everyone?", body: "Everyone will be disconnected and the call will end.", action: "End the call", run: (a) => a.end() })}
          >
            End the call for everyone
          </button>
        </div>
      ) : null}
      {manage !== null ? (
        <ManageDialog
          stage={props.stage}
          person={view.participants.find((p) => p.memberHex === manage.memberHex) ?? manage}
          onClose={() => setManage(null)}
          onAct={(run) => {
            setManage(null);
            void act(run);
          }}
          onAsk={(next) => {
            setManage(null);
            setAsk(next);
          }}
        />
      ) : null}
      {ask !== null ? (
        <Confirm
          title={ask.title}
          body={ask.body}
          action={ask.action}
          busy={busy}
          onCancel={() => setAsk(null)}
          onConfirm={() => {
            setBusy(true);
            void act(ask.run).finally(() => {
              setBusy(false);
              setAsk(null);
            });
          }}
        />
      ) : null}
    </aside>
  );
}

function ManageDialog(props: { stage: boolean; person: ParticipantView; onClose: () => void; onAct: (run: (a: CallIntents) => Promise<void>) => void; onAsk: (ask: Ask) => void }): JSX.Element {
  const p = props.person;
  const name = p.name;
  return (
    <Dialog title={name} onClose={props.onClose}>
      <p class="muted small">{SEAT_WORDS[p.seat]} · <span class="call-fp">{p.fingerprint}</span></p>
      <div class="menu-list">
        {p.mutedBy === null ? <button type="button" class="menu-item" onClick={() => props.onAct((a) => a.mute(p.memberHex))}>Turn off {name}'s microphone</button> : null}
        {p.hand ? <button type="button" class="menu-item" onClick={() => props.onAct((a) => a.lowerHand(p.memberHex))}>Lower {name}'s hand</button> : null}
        {props.stage && p.seat === "listener" ? <button type="button" class="menu-item" onClick={() => props.onAct((a) => a.promote(p.memberHex))}>Let {name} speak</button> : null}
        {props.stage && p.seat === "speaker" ? <button type="button" class="menu-item" onClick={() => props.onAct((a) => a.demote(p.memberHex))}>Make {name} a listener</button> : null}
        <button
          type="button"
          class="menu-item danger"
          onClick={() => props.onAsk({ title: `Remove ${name} from the call?`, body: `${name} will be removed from the call and will not see or hear anything new. They can join again unless the call is locked.`, action: "Remove", run: (a) => a.kick(p.memberHex, false) })}
        >
          Remove from the call
        </button>
        <button
          type="button"
          class="menu-item danger"
          onClick={() => props.onAsk({ title: `Ban ${name} from the call?`, body: `${name} will be removed from the call and will not be able to join it again.`, action: "Ban", run: (a) => a.kick(p.memberHex, true) })}
        >
          Ban from the call
        </button>
      </div>
      <div class="dialog-actions">
        <button type="button" class="button" onClick={props.onClose}>Close</button>
      </div>
    </Dialog>
  );
}
