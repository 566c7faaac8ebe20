// One Node client, two real pointillist servers: calls spread over both, and when one stops the
// client's retries send every later call to the other, with no error seen by the caller.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, PointillistClient, PointillistError } from "../src/index.js";
import { resolveTarget } from "../src/balancing.js";
import { startServer, type RunningServer } from "./server.js";

let servers: RunningServer[] = [];

before(async () => {
  servers = await Promise.all([startServer(), startServer()]);
});

after(async () => {
  await Promise.all(servers.map((server) => server.stop()));
});

/** Which server ran the job: the one whose JobService knows it (each keeps its own jobs). */
async function owner(jobId: string): Promise<number> {
  const found: number[] = [];
  for (const [index, server] of servers.entries()) {
    const direct = new PointillistClient(server.address, { timeoutMs: 10_000 });
    try {
      await direct.getJob(jobId);
      found.push(index);
    } catch (error) {
      assert.ok(error instanceof PointillistError);
      assert.ok([Code.NotFound, Code.Unavailable].includes(error.code), String(error));
    } finally {
      direct.close();
    }
  }
  assert.equal(found.length, 1, `job ${jobId} is known to servers ${found}`);
  return found[0];
}

function spread(seed: number) {
  return { prompt: "spread", width: 64, height: 64, steps: 1, seed: BigInt(seed) };
}

test("targets name one server, several, or a DNS name with all its addresses", async () => {
  assert.deepEqual(await resolveTarget("127.0.0.1:5"), ["http://127.0.0.1:5"]);
  assert.deepEqual(await resolveTarget("ipv4:127.0.0.1:5,127.0.0.1:6"), [
    "http://127.0.0.1:5",
    "http://127.0.0.1:6",
  ]);
  const local = await resolveTarget("dns:///localhost:7");
  const loopback = ["http://127.0.0.1:7", "http://[::1]:7"];
  assert.ok(local.some((url) => loopback.includes(url)), String(local));
});

test("round-robin over two servers; a stopped one drops out without an error", async () => {
  const target = `ipv4:${servers.map((server) => server.address).join(",")}`;
  const client = new PointillistClient(target, { timeoutMs: 120_000 });
  try {
    const served = [0, 0];
    for (let seed = 0; seed < 10; seed++) {
      const { jobId } = await client.generate(spread(seed));
      served[await owner(jobId)]++;
    }
    assert.deepEqual(served, [5, 5]);

    await servers[0].stop(); // drains and exits: its address now refuses connections
    for (let seed = 10; seed < 20; seed++) {
      const { jobId } = await client.generate(spread(seed));
      assert.equal(await owner(jobId), 1);
    }
  } finally {
    client.close();
  }
});
