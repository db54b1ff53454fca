/**
 * The worker's frame code path against frames another implementation made
 * (tests/test_web_media_interop.py): reads IN.json (a sender's key and the frames the Python
 * client protected), opens each with MediaReceivers exactly as the worker does, then protects
 * the same frames with MediaSender under a key of its own and writes OUT.json for Python.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { fromHex, toHex } from "../../src/protocol/bytes.ts";
import type { Codec } from "../../src/protocol/sframe.ts";
import { MediaReceivers, MediaSender } from "../../src/media/frames.ts";

interface Frame {
  codec: Codec;
  frame: string;
  protected: string;
  source: number;
}

const [input, output] = process.argv.slice(2);
if (input === undefined || output === undefined) throw new Error("usage: media_interop IN.json OUT.json");
const given = JSON.parse(readFileSync(input, "utf8")) as {
  index: number; epoch: number; base_key: string; frames: Frame[]; send_index: number; send_epoch: number; send_key: string;
};
const receivers = new MediaReceivers();
await receivers.setKey(given.index, given.epoch, fromHex(given.base_key), 0);
const opened = [];
for (const f of given.frames) {
  const got = await receivers.open(f.source, f.codec, fromHex(f.protected), 1);
  opened.push(got.ok ? { ok: true, kid: got.kid, frame: toHex(got.frame) } : { ok: false, drop: got.drop });
}
const sender = new MediaSender();
const kid = await sender.setKey(given.send_index, given.send_epoch, fromHex(given.send_key));
const made = [];
for (const f of given.frames) {
  const p = await sender.protect(f.codec, fromHex(f.frame));
  made.push({ codec: f.codec, frame: f.frame, protected: p === null ? null : toHex(p) });
}
writeFileSync(output, JSON.stringify({ opened, kid, made }));
