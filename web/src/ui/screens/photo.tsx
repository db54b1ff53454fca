/** Choosing a picture (profile photo, story): a file input with a round preview. */
import type { JSX } from "preact";
import { useEffect, useMemo } from "preact/hooks";
import { Icon } from "../components.tsx";

export function usePreviewUrl(blob: Blob | null): string | null {
  const url = useMemo(() => (blob === null ? null : URL.createObjectURL(blob)), [blob]);
  useEffect(() => () => {
    if (url !== null) URL.revokeObjectURL(url);
  }, [url]);
  return url;
}

export function PhotoPicker(props: { photo: Blob | null; current?: string | null; onChange: (photo: Blob | null) => void; label: string }): JSX.Element {
  const url = usePreviewUrl(props.photo);
  const shown = url ?? props.current ?? null;
  return (
    <div class="photo-picker">
      {shown !== null ? <img class="avatar avatar-l" src={shown} alt="Your photo" /> : <span class="avatar avatar-l avatar-empty" aria-hidden="true"><Icon name="camera" /></span>}
      <label class="button file-button">
        {props.label}
        <input
          type="file"
          accept="image/*"
          class="visually-hidden"
          onChange={(e) => props.onChange(e.currentTarget.files?.[0] ?? null)}
        />
      </label>
      {props.photo !== null ? <button type="button" class="button button-quiet" onClick={() => props.onChange(null)}>Remove</button> : null}
    </div>
  );
}
