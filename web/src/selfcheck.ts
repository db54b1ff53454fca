/**
 * The page's own check that its crypto runs here, under this page's CSP: libsodium (WASM,
 * needs `'wasm-unsafe-eval'`) signs and verifies, WebCrypto does Ed25519 and X25519. The
 * result goes on `<html data-salon-selfcheck="ok">` (or `"failed"`, with the reason in
 * `data-salon-selfcheck-error`) for the browser tests to read; nothing secret is in it.
 *
 * The build (scripts/build.mjs) makes this module an entry of its own, loaded by index.html
 * beside the app: it runs once on every page, whatever the app does.
 */
import { ed25519PublicKey, ed25519Sign, ed25519Verify } from "./protocol/crypto.ts";

async function webCryptoWorks(): Promise<void> {
  const subtle = globalThis.crypto.subtle;
  const ed = (await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])) as CryptoKeyPair;
  const message = new TextEncoder().encode("salon");
  const signature = await subtle.sign({ name: "Ed25519" }, ed.privateKey, message);
  if (!(await subtle.verify({ name: "Ed25519" }, ed.publicKey, signature, message))) {
    throw new Error("WebCrypto Ed25519 does not verify its own signature");
  }
  await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
}

async function sodiumWorks(): Promise<void> {
  const seed = new Uint8Array(32).fill(7);
  const message = new TextEncoder().encode("salon");
  const publicKey = await ed25519PublicKey(seed);
  const signature = await ed25519Sign(seed, message);
  if (!(await ed25519Verify(publicKey, message, signature))) {
    throw new Error("libsodium Ed25519 does not verify its own signature");
  }
}

/** Run both checks once; resolves with the outcome also written on `<html>`. */
export async function selfCheck(root: HTMLElement = document.documentElement): Promise<boolean> {
  try {
    await Promise.all([sodiumWorks(), webCryptoWorks()]);
    root.dataset["salonSelfcheck"] = "ok";
    return true;
  } catch (error) {
    root.dataset["salonSelfcheck"] = "failed";
    root.dataset["salonSelfcheckError"] = error instanceof Error ? error.message : String(error);
    return false;
  }
}

if (typeof document !== "undefined") void selfCheck();
