// Starts a real pointillist server (the demo model on the CPU) on a free local port for the
// tests, and stops it. It waits for the server's own log lines, never for a fixed time.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { HOLD_DIR, HOLD_DIR_ENV } from "./holds.js";

const STARTUP_TIMEOUT_MS = 180_000;

export interface RunningServer {
  address: string;
  stop(): Promise<void>;
}

export async function startServer(): Promise<RunningServer> {
  const bin = process.env.POINTILLIST_BIN ?? "pointillist";
  const child = spawn(
    bin,
    ["serve", "--address", "127.0.0.1:0", "--inventory", "cpu", "--device", "cpu"],
    // The hold fault lets tests keep a job running without guessing how long a step takes.
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, [HOLD_DIR_ENV]: HOLD_DIR } },
  );
  const log: string[] = [];
  try {
    const port = await waitForReady(child, log);
    return { address: `127.0.0.1:${port}`, stop: () => stopServer(child) };
  } catch (error) {
    child.kill("SIGKILL");
    throw new Error(`the server did not start: ${String(error)}\n${log.join("\n")}`);
  }
}

/** Reads stderr until "listening on ... (port N)" and then "SERVING" (every model warm). */
function waitForReady(child: ChildProcess, log: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    let port: number | undefined;
    const timer = setTimeout(() => reject(new Error("timed out")), STARTUP_TIMEOUT_MS);
    const lines = createInterface({ input: child.stderr! });
    lines.on("line", (line) => {
      log.push(line);
      const listening = /listening on \S+ \(port (\d+)\)/.exec(line);
      if (listening) port = Number(listening[1]);
      if (port !== undefined && line.includes("all models warm: SERVING")) {
        clearTimeout(timer);
        resolve(port);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code}`));
    });
  });
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM"); // the server drains, then exits
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  await exited;
  clearTimeout(timer);
}
