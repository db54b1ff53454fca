/**
 * Image hygiene in the browser before anything is encrypted (issue 9; the rules of
 * client/images.py and client/stories.py): decode the picked file, scale it down (never up) so
 * its longest side is at most 1920 px, and re-encode it as JPEG (quality 0.85) from pixels on
 * a canvas, plus a 320 px thumbnail (quality 0.70). A canvas-encoded JPEG holds only the pixels:
 * EXIF (GPS position, camera serial, time), XMP, ICC profiles and comments never leave the
 * device. EXIF orientation is applied while decoding (`imageOrientation: "from-image"`), so
 * the picture stands the way the camera meant, without the tag.
 *
 * Avatars follow `salon profile --avatar`: longest side ≤ 128 px, JPEG quality 0.80, lowered
 * (0.65, 0.50, 0.35) until it fits in a profile record.
 *
 * Browser only (createImageBitmap and a canvas); the rest of the client is testable in Node.
 */
import { UsageError } from "./context.ts";
import type { StoryImage } from "./stories.ts";

export const MAX_SIDE = 1920;
export const THUMB_SIDE = 320;
export const JPEG_QUALITY = 0.85;
export const THUMB_QUALITY = 0.7;
export const MAX_INPUT_BYTES = 50 * 1024 * 1024;
export const AVATAR_SIDE = 128;
export const AVATAR_QUALITIES = [0.8, 0.65, 0.5, 0.35] as const;
/** A profile box is capped at 14,336 bytes (§7); leave room for the name and the encryption. */
export const MAX_AVATAR_BYTES = 14_336 - 1024;

export interface CleanJpeg {
  readonly jpeg: Uint8Array;
  readonly width: number;
  readonly height: number;
}

/** The size scaled down (never up) so the longest side is at most `maxSide`, as client/images.py rounds it. */
export function boundedSize(width: number, height: number, maxSide: number): { width: number; height: number } {
  const scale = Math.min(1, maxSide / Math.max(width, height));
  if (scale >= 1) return { width, height };
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

/** Whether bytes look like a JPEG (SOI marker), i.e. the browser really encoded JPEG. */
export function isJpeg(bytes: Uint8Array): boolean {
  return bytes.length > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

async function decode(file: Blob, what: string): Promise<ImageBitmap> {
  if (file.size > MAX_INPUT_BYTES) throw new UsageError(`the ${what} file is larger than ${MAX_INPUT_BYTES / (1024 * 1024)} MB`);
  try {
    return await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    throw new UsageError(`the ${what} is not a picture this browser can read`);
  }
}

type AnyCanvas = OffscreenCanvas | HTMLCanvasElement;

function canvasOf(width: number, height: number): AnyCanvas {
  if (typeof OffscreenCanvas !== "undefined") return new OffscreenCanvas(width, height);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

async function toJpegBlob(canvas: AnyCanvas, quality: number): Promise<Blob> {
  if ("convertToBlob" in canvas) return canvas.convertToBlob({ type: "image/jpeg", quality });
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob === null ? reject(new UsageError("could not re-encode the image")) : resolve(blob)), "image/jpeg", quality);
  });
}

/** Draws the bitmap at its bounded size on a fresh canvas (white under transparency) and encodes JPEG. */
export async function boundedJpeg(bitmap: ImageBitmap, maxSide: number, quality: number): Promise<CleanJpeg> {
  const { width, height } = boundedSize(bitmap.width, bitmap.height, maxSide);
  // Halve in steps first when shrinking a lot: one bilinear pass from far above aliases.
  let source: CanvasImageSource = bitmap;
  let sw = bitmap.width;
  let sh = bitmap.height;
  while (sw / 2 >= width * 1.5 && sh / 2 >= height * 1.5) {
    const half = canvasOf(Math.round(sw / 2), Math.round(sh / 2));
    const hctx = half.getContext("2d") as CanvasRenderingContext2D | OffscreenCanvasRenderingContext2D | null;
    if (hctx === null) throw new UsageError("this browser cannot draw images");
    hctx.imageSmoothingEnabled = true;
    hctx.imageSmoothingQuality = "high";
    hctx.drawImage(source, 0, 0, half.width, half.height);
    source = half;
    sw = half.width;
    sh = half.height;
  }
  const canvas = canvasOf(width, height);
  const ctx = canvas.getContext("2d") as CanvasRenderingContext2D | OffscreenCanvasRenderingContext2D | null;
  if (ctx === null) throw new UsageError("this browser cannot draw images");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, 0, 0, width, height);
  const jpeg = new Uint8Array(await (await toJpegBlob(canvas, quality)).arrayBuffer());
  if (!isJpeg(jpeg)) throw new UsageError("this browser could not encode a JPEG");
  return { jpeg, width, height };
}

/** A picked picture → a story's clean JPEG (≤ 1920 px) and thumbnail (≤ 320 px), metadata gone. */
export async function prepareStoryImage(file: Blob): Promise<StoryImage> {
  const bitmap = await decode(file, "story image");
  try {
    const image = await boundedJpeg(bitmap, MAX_SIDE, JPEG_QUALITY);
    const thumb = await boundedJpeg(bitmap, THUMB_SIDE, THUMB_QUALITY);
    return { image: image.jpeg, thumb: thumb.jpeg, width: image.width, height: image.height };
  } finally {
    bitmap.close();
  }
}

/** A picked picture → an avatar JPEG (≤ 128 px) small enough for a profile record. */
export async function prepareAvatar(file: Blob): Promise<CleanJpeg> {
  const bitmap = await decode(file, "avatar");
  try {
    for (const quality of AVATAR_QUALITIES) {
      const out = await boundedJpeg(bitmap, AVATAR_SIDE, quality);
      if (out.jpeg.length <= MAX_AVATAR_BYTES) return out;
    }
  } finally {
    bitmap.close();
  }
  throw new UsageError("the avatar does not fit in a profile even at low quality");
}
