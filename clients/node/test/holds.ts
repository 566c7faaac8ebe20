// Hold a real job after its first step until the test releases it (engine/faults.py,
// POINTILLIST_FAULT_HOLD_DIR). Every server that server.ts starts gives its workers HOLD_DIR, so a
// job whose prompt is `hold.prompt` stops after step 1 until `release()` or a cancel. Tests that
// need a job to be "still running" use this, so no outcome depends on how fast the machine is.
import { randomUUID } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const HOLD_DIR_ENV = "POINTILLIST_FAULT_HOLD_DIR";
export const HOLD_DIR = mkdtempSync(join(tmpdir(), "pointillist-node-holds-"));

export interface Hold {
  prompt: string;
  release(): void;
}

/** A hold no other test shares (a fresh name, so a fresh release file). */
export function newHold(label: string): Hold {
  const name = `${label}-${randomUUID().slice(0, 12)}`;
  return {
    prompt: `hold:${name}`,
    release: () => writeFileSync(join(HOLD_DIR, name), ""),
  };
}
