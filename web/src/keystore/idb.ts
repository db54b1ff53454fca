/**
 * The vault's storage in the browser: a `SlotStore` over IndexedDB, and the device key — an
 * AES-GCM `CryptoKey` generated once with `extractable: false` and stored in IndexedDB as the
 * key object itself (structured clone), so no script, ours included, can read its bytes.
 * Nothing is kept in cookies or localStorage.
 */
import { generateDeviceKey } from "./vault.ts";
import type { SlotStore } from "./store.ts";

export const DB_NAME = "salon";
const DB_VERSION = 1;
const SLOTS = "slots";
const KEYS = "keys";
const DEVICE = "device";

function promised<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

/** Open (creating on first use) the database with its two object stores. */
export function openDatabase(name: string = DB_NAME, factory: IDBFactory = globalThis.indexedDB): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = factory.open(name, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains(SLOTS)) db.createObjectStore(SLOTS);
      if (!db.objectStoreNames.contains(KEYS)) db.createObjectStore(KEYS);
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("cannot open IndexedDB"));
    req.onblocked = () => reject(new Error("IndexedDB is blocked by another tab of this app"));
  });
}

export class IdbSlotStore implements SlotStore {
  constructor(private readonly db: IDBDatabase) {}

  async get(slot: string): Promise<Uint8Array | undefined> {
    const value: unknown = await promised(this.db.transaction(SLOTS, "readonly").objectStore(SLOTS).get(slot));
    return value instanceof Uint8Array ? value.slice() : undefined;
  }

  async put(slot: string, bytes: Uint8Array): Promise<void> {
    const tx = this.db.transaction(SLOTS, "readwrite");
    tx.objectStore(SLOTS).put(bytes.slice(), slot);
    await done(tx);
  }

  async delete(slot: string): Promise<void> {
    const tx = this.db.transaction(SLOTS, "readwrite");
    tx.objectStore(SLOTS).delete(slot);
    await done(tx);
  }

  async list(): Promise<string[]> {
    const keys = await promised(this.db.transaction(SLOTS, "readonly").objectStore(SLOTS).getAllKeys());
    return keys.filter((k): k is string => typeof k === "string");
  }
}

/**
 * This browser's device key: the stored one, or a fresh non-extractable one stored now. The
 * check and the store are one transaction, so two tabs opening at once agree on one key.
 */
export async function deviceKey(db: IDBDatabase): Promise<CryptoKey> {
  const fresh = await generateDeviceKey();
  const tx = db.transaction(KEYS, "readwrite");
  const store = tx.objectStore(KEYS);
  const result = new Promise<CryptoKey>((resolve, reject) => {
    const req = store.get(DEVICE);
    req.onsuccess = () => {
      const existing: unknown = req.result;
      if (existing instanceof CryptoKey) {
        resolve(existing);
        return;
      }
      store.put(fresh, DEVICE);
      resolve(fresh);
    };
    req.onerror = () => reject(req.error ?? new Error("cannot read the device key"));
  });
  await done(tx);
  return result;
}

/** The page's key store: the IndexedDB slot store and the device key. */
export async function openBrowserStore(name: string = DB_NAME): Promise<{ store: IdbSlotStore; device: CryptoKey; db: IDBDatabase }> {
  const db = await openDatabase(name);
  return { store: new IdbSlotStore(db), device: await deviceKey(db), db };
}
