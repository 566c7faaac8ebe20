// The Node client against a real pointillist server on a free local port (demo model, CPU).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  Code,
  GenerationMode,
  JobState,
  PointillistClient,
  PointillistError,
  type GenerationEvent,
} from "../src/index.js";
import { newHold } from "./holds.js";
import { startServer, type RunningServer } from "./server.js";

let server: RunningServer;
let client: PointillistClient;

before(async () => {
  const started = Date.now();
  server = await startServer();
  console.log(`server ready in ${Date.now() - started} ms`);
  client = new PointillistClient(server.address, { timeoutMs: 120_000 });
});

after(async () => {
  client?.close();
  const stopping = Date.now();
  await server?.stop();
  console.log(`server stopped in ${Date.now() - stopping} ms`);
});

test("stream sends queued, started, every step in order, then one result", async () => {
  const events: GenerationEvent[] = [];
  for await (const event of client.stream({
    prompt: "a lighthouse at dusk",
    width: 64,
    height: 64,
    steps: 6,
    seed: 5n,
    preview: { everyNSteps: 3 },
  })) {
    events.push(event);
  }

  const kinds = events.map((event) => event.case);
  assert.deepEqual(kinds, [
    "queued", "started",
    "progress", "progress", "progress", "preview",
    "progress", "progress", "progress", "preview",
    "result",
  ]);
  const steps = events.flatMap((e) => (e.case === "progress" ? [e.value.step] : []));
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
  assert.ok(events.every((e) => e.jobId === events[0]!.jobId && e.jobId !== ""));
  const last = events.at(-1)!;
  assert.equal(last.case, "result");
  if (last.case !== "result") return;
  const image = last.value.images[0]!;
  assert.equal(image.seed, 5n);
  assert.equal(image.mimeType, "image/png");
  assert.deepEqual([image.width, image.height], [64, 64]);
  assert.deepEqual([...image.data.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
});

test("generate returns the result, reproducible by its seed", async () => {
  const first = await client.generate({ prompt: "a fox", width: 64, height: 64, steps: 3, seed: 11n });
  const again = await client.generate({ prompt: "a fox", width: 64, height: 64, steps: 3, seed: 11n });

  assert.notEqual(first.jobId, again.jobId);
  assert.equal(first.result.images[0]!.seed, 11n);
  assert.deepEqual(first.result.images[0]!.data, again.result.images[0]!.data);
  assert.equal(first.result.reproducibility?.modelId, "demo");
});

test("image-to-image from uploaded bytes and from an earlier job's image", async () => {
  const source = await client.generate({ prompt: "a harbour", width: 64, height: 64, steps: 2, seed: 3n });
  const png = source.result.images[0]!.data;

  const events: GenerationEvent[] = [];
  for await (const event of client.stream({
    prompt: "a harbour at night",
    steps: 4,
    seed: 4n,
    strength: 0.5,
    initImage: { source: { case: "data", value: png } },
  })) {
    events.push(event);
  }
  // steps x strength run, and progress says so.
  const totals = events.flatMap((e) => (e.case === "progress" ? [e.value.totalSteps] : []));
  assert.deepEqual(totals, [2, 2]);
  const last = events.at(-1)!;
  assert.equal(last.case, "result");
  if (last.case !== "result") return;
  const record = last.value.reproducibility!;
  assert.equal(record.mode, GenerationMode.IMAGE_TO_IMAGE);
  assert.equal(record.parameters?.strength, 0.5);
  assert.match(record.initImageSha256, /^[0-9a-f]{64}$/);
  assert.deepEqual([last.value.images[0]!.width, last.value.images[0]!.height], [64, 64]);

  // The same image by reference: no upload, the same pixels, so the same hash and bytes.
  const byReference = await client.generate({
    prompt: "a harbour at night",
    steps: 4,
    seed: 4n,
    strength: 0.5,
    initImage: { source: { case: "jobImage", value: { jobId: source.jobId, index: 0 } } },
  });
  assert.equal(byReference.result.reproducibility?.initImageSha256, record.initImageSha256);
  assert.deepEqual(byReference.result.images[0]!.data, last.value.images[0]!.data);
});

test("aborting a stream mid-run cancels its job on the server", async () => {
  // Held after step 1, the job is still running when the stream is aborted, however fast the
  // machine is.
  const hold = newHold("abort");
  const abort = new AbortController();
  let jobId = "";
  let lastStep = 0;
  await assert.rejects(
    (async () => {
      for await (const event of client.stream(
        { prompt: hold.prompt, width: 64, height: 64, steps: 4 },
        { signal: abort.signal },
      )) {
        jobId = event.jobId;
        if (event.case === "progress") {
          lastStep = event.value.step;
          abort.abort();
        }
      }
    })(),
    (error: unknown) => error instanceof PointillistError && error.code === Code.Canceled,
  );
  assert.ok(jobId !== "" && lastStep === 1);

  // Watching the job ends with its CANCELLED status once the server has stopped it.
  await assert.rejects(
    async () => {
      for await (const _ of client.watch(jobId)) {
        // replayed events of the job, up to its cancel
      }
    },
    (error: unknown) => error instanceof PointillistError && error.code === Code.Canceled,
  );
  const job = await client.getJob(jobId);
  assert.equal(job.state, JobState.CANCELLED);
  assert.ok((job.progress?.step ?? 0) < 4);
});

test("cancelJob stops a submitted job", async () => {
  const hold = newHold("cancel");
  const jobId = await client.submit({ prompt: hold.prompt, width: 64, height: 64, steps: 4 });
  for await (const event of client.watch(jobId)) {
    if (event.case === "progress") break; // held after step 1: leaving the watch leaves it running
  }
  const job = await client.cancelJob(jobId);
  assert.ok(
    job.state === JobState.CANCELLED || (job.state === JobState.RUNNING && job.cancelRequested),
  );
  await assert.rejects(
    async () => {
      for await (const _ of client.watch(jobId)) {
        // replayed events
      }
    },
    (error: unknown) => error instanceof PointillistError && error.code === Code.Canceled,
  );
});

test("an invalid request fails with its field violation", async () => {
  await assert.rejects(
    async () => {
      for await (const _ of client.stream({ prompt: "a lighthouse", width: 65, height: 64 })) {
        assert.fail("no event is sent for an invalid request");
      }
    },
    (error: unknown) => {
      assert.ok(error instanceof PointillistError);
      assert.equal(error.code, Code.InvalidArgument);
      assert.deepEqual(
        error.fieldViolations.map((v) => v.field),
        ["parameters.width"],
      );
      assert.match(error.fieldViolations[0]!.description, /16/);
      return true;
    },
  );
});

test("an unknown job is NOT_FOUND with the resource named", async () => {
  await assert.rejects(client.getJob("no-such-job"), (error: unknown) => {
    assert.ok(error instanceof PointillistError);
    assert.equal(error.code, Code.NotFound);
    assert.deepEqual(error.resource, { type: "job", name: "no-such-job" });
    return true;
  });
});

test("a deadline travels to the server, which ends the call with DEADLINE_EXCEEDED", async () => {
  // Held after step 1, the job cannot finish before its deadline on any machine; the server, not
  // only the client library, must end it, and record why.
  const hold = newHold("deadline");
  let jobId = "";
  await assert.rejects(
    (async () => {
      const request = { prompt: hold.prompt, width: 64, height: 64, steps: 4 };
      for await (const event of client.stream(request, { timeoutMs: 800 })) {
        jobId = event.jobId;
      }
    })(),
    (error: unknown) => error instanceof PointillistError && error.code === Code.DeadlineExceeded,
  );
  assert.notEqual(jobId, "");
  // The job's own stream ends with the same status once the server has stopped it.
  await assert.rejects(
    async () => {
      for await (const _ of client.watch(jobId)) {
        // replayed events, up to the deadline
      }
    },
    (error: unknown) => error instanceof PointillistError && error.code === Code.DeadlineExceeded,
  );
  const job = await client.getJob(jobId);
  assert.equal(job.state, JobState.CANCELLED);
  assert.equal(job.outcome.case, "error");
  assert.equal(job.outcome.value?.code, Code.DeadlineExceeded);
  assert.ok((job.progress?.step ?? 0) < 4);
});
