/**
 * The line protocol the Node e2e scripts (core_e2e.ts, chat_e2e.ts, call_e2e.ts) speak with
 * their pytest drivers: one JSON command per stdin line ({op, ...}), one JSON answer per stdout
 * line — {ok: result} or {error, kind, name} — bytes as hex. "quit" ends the loop.
 */
import { createInterface } from "node:readline";
import { ClientError, Removed, ServerError } from "../src/client/context.ts";

export type Command = { op: string; [key: string]: unknown };
export type Handler = (command: Command) => Promise<unknown>;
export interface Described { error: string; kind: string; name: string }

/** The client errors every script reports alike; `special` names a script's own first. */
export function describe(err: unknown, special?: (err: unknown) => Described | undefined): Described {
  const own = special?.(err);
  if (own !== undefined) return own;
  if (err instanceof ServerError) return { error: err.message, kind: err.code, name: err.name };
  if (err instanceof Removed) return { error: err.message, kind: err.how, name: err.name };
  if (err instanceof ClientError) return { error: err.message, kind: "", name: err.name };
  return { error: String((err as Error)?.stack ?? err), kind: "", name: "Error" };
}

/** Answer commands from stdin until "quit" or end of input. */
export async function serveLines(
  handlers: Record<string, Handler>,
  special?: (err: unknown) => Described | undefined,
): Promise<void> {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() === "") continue;
    const command = JSON.parse(line) as Command;
    if (command.op === "quit") break;
    let answer: unknown;
    try {
      const handler = handlers[command.op];
      if (handler === undefined) throw new Error(`unknown op ${command.op}`);
      answer = { ok: (await handler(command)) ?? null };
    } catch (err) {
      answer = describe(err, special);
    }
    process.stdout.write(JSON.stringify(answer, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString("hex") : v)) + "\n");
  }
}
