/** A channel's stories: the row of round thumbnails, the full-screen viewer and "Post a story". */
import type { JSX } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { useEnv } from "../app.tsx";
import { explain } from "../errors.ts";
import { timeLeft } from "../format.ts";
import type { RoomVM, SpaceVM, StoryVM } from "../state.ts";
import { Avatar, Dialog, Icon, IconButton } from "../components.tsx";
import { usePreviewUrl } from "./photo.tsx";

export function StoriesRow({ space, room, stories }: { space: SpaceVM; room: RoomVM; stories: readonly StoryVM[] }): JSX.Element | null {
  const [open, setOpen] = useState<number | null>(null);
  const [posting, setPosting] = useState(false);
  const now = Date.now();
  const live = [...stories].filter((s) => s.expiresAt > now).sort((a, b) => b.at - a.at);
  if (live.length === 0 && !room.canPost) return null;
  return (
    <section class="stories" aria-label="Stories">
      <ul class="stories-row" role="list">
        {room.canPost ? (
          <li>
            <button type="button" class="story-thumb story-add" onClick={() => setPosting(true)}>
              <span class="story-ring story-ring-add"><Icon name="plus" size={26} /></span>
              <span class="story-name">Post a story</span>
            </button>
          </li>
        ) : null}
        {live.map((story, i) => (
          <li key={story.id}>
            <button
              type="button"
              class="story-thumb"
              aria-label={`Story by ${story.authorName}${story.caption ? `: ${story.caption}` : ""}, ${timeLeft(story.expiresAt, now) || "ending"} left${story.seen ? "" : " (new)"}`}
              title={story.caption || undefined}
              onClick={() => setOpen(i)}
            >
              <span class={`story-ring${story.seen ? "" : " story-unseen"}`}>
                {story.thumb !== null ? <img src={story.thumb} alt="" /> : <Avatar name={story.authorName} keyHex={story.authorKey} photo={null} size="l" />}
              </span>
              <span class="story-name"><bdi>{story.authorName}</bdi></span>
              <span class="story-left">{timeLeft(story.expiresAt, now) || "ending"} left</span>
            </button>
          </li>
        ))}
      </ul>
      {open !== null && live[open] !== undefined ? (
        <StoryViewer space={space} room={room} stories={live} index={open} onIndex={setOpen} onClose={() => setOpen(null)} />
      ) : null}
      {posting ? <PostStory space={space} room={room} onClose={() => setPosting(false)} /> : null}
    </section>
  );
}

function StoryViewer(props: { space: SpaceVM; room: RoomVM; stories: readonly StoryVM[]; index: number; onIndex: (i: number) => void; onClose: () => void }): JSX.Element {
  const { intents } = useEnv();
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const before = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    box.current?.focus();
    return () => before?.focus();
  }, []);
  const story = props.stories[props.index]!;
  const [picture, setPicture] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    setPicture(null);
    setError(null);
    intents.storyPicture(props.space.slot, props.room.id, story.id).then(
      (url) => live && setPicture(url),
      (e: unknown) => live && setError(explain(e)),
    );
    intents.markStorySeen(props.space.slot, props.room.id, story.id);
    return () => {
      live = false;
    };
  }, [story.id]);
  const move = (step: number): void => {
    const next = props.index + step;
    if (next >= 0 && next < props.stories.length) props.onIndex(next);
  };
  return (
    <div
      class="viewer"
      role="dialog"
      aria-modal="true"
      aria-label={`Story by ${story.authorName}`}
      tabIndex={-1}
      ref={box}
      onKeyDown={(e) => {
        if (e.key === "Escape") props.onClose();
        if (e.key === "ArrowLeft") move(-1);
        if (e.key === "ArrowRight") move(1);
      }}
    >
      <header class="viewer-head">
        <Avatar name={story.authorName} keyHex={story.authorKey} photo={null} size="s" />
        <div>
          <p class="viewer-author"><bdi>{story.authorName}</bdi></p>
          <p class="small">{timeLeft(story.expiresAt, Date.now()) || "ending"} left · {props.index + 1} of {props.stories.length}</p>
        </div>
        <IconButton icon="close" label="Close" onClick={props.onClose} class="viewer-close" />
      </header>
      <div class="viewer-stage">
        {picture !== null ? <img src={picture} alt={story.caption || `Story by ${story.authorName}`} /> : error !== null ? <p role="alert">{error}</p> : story.thumb !== null ? <img class="viewer-blur" src={story.thumb} alt="Loading the full picture" /> : <p>Loading…</p>}
      </div>
      {story.caption ? <p class="viewer-caption" dir="auto">{story.caption}</p> : null}
      <IconButton icon="left" label="Previous story" class="viewer-prev" disabled={props.index === 0} onClick={() => move(-1)} />
      <IconButton icon="right" label="Next story" class="viewer-next" disabled={props.index === props.stories.length - 1} onClick={() => move(1)} />
    </div>
  );
}

function PostStory({ space, room, onClose }: { space: SpaceVM; room: RoomVM; onClose: () => void }): JSX.Element {
  const { intents } = useEnv();
  const [photo, setPhoto] = useState<Blob | null>(null);
  const [caption, setCaption] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const url = usePreviewUrl(photo);
  return (
    <Dialog title="Post a story" onClose={onClose}>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          if (photo === null) return;
          setBusy(true);
          intents.postStory(space.slot, room.id, photo, caption.trim()).then(onClose, (e: unknown) => {
            setError(explain(e));
            setBusy(false);
          });
        }}
      >
        <p class="muted small">Everyone in {room.name} can see it for a day. The photo's hidden details (like where it was taken) are removed on this device before it is sent.</p>
        {url !== null ? <img class="story-preview" src={url} alt="The photo you chose" /> : null}
        <label class="button file-button">
          {photo === null ? "Choose a photo" : "Choose another photo"}
          <input type="file" accept="image/*" class="visually-hidden" onChange={(e) => setPhoto(e.currentTarget.files?.[0] ?? null)} />
        </label>
        <label class="field">
          <span>Caption (optional)</span>
          <input value={caption} maxLength={500} onInput={(e) => setCaption(e.currentTarget.value)} />
        </label>
        {error !== null ? <p class="error" role="alert">{error}</p> : null}
        <div class="dialog-actions">
          <button type="button" class="button" onClick={onClose}>Cancel</button>
          <button type="submit" class="button button-primary" disabled={busy || photo === null}>{busy ? "Posting…" : "Post"}</button>
        </div>
      </form>
    </Dialog>
  );
}
