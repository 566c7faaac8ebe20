// The pointillist page: one StreamGenerate call over the Connect protocol (fetch streaming),
// showing the queue position, a progress bar that moves with every step, the live preview and
// the final image with its seed. Cancel asks the server to cancel the job (JobService.CancelJob);
// the stream then ends with CANCELLED, as every client sees it.
import { createClient, Code, ConnectError } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import { BadRequestSchema } from "../../node/src/gen/google/rpc/error_details_pb.js";
import {
  GenerationService,
  type Image,
  type InputImageSchema,
  type StreamGenerateResponse,
} from "../../node/src/gen/pointillist/v1/generation_pb.js";
import { JobService } from "../../node/src/gen/pointillist/v1/jobs_pb.js";

const transport = createConnectTransport({ baseUrl: window.location.origin, useBinaryFormat: true });
const generation = createClient(GenerationService, transport);
const jobs = createClient(JobService, transport);

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`missing #${id}`);
  return found as T;
}

const form = element<HTMLFormElement>("form");
const generateButton = element<HTMLButtonElement>("generate");
const cancelButton = element<HTMLButtonElement>("cancel");
const statusLine = element<HTMLParagraphElement>("status");
const jobLine = element<HTMLParagraphElement>("job");
const progressBar = element<HTMLProgressElement>("progress");
const progressText = element<HTMLParagraphElement>("progress-text");
const previewImage = element<HTMLImageElement>("preview");
const resultImage = element<HTMLImageElement>("result");
const resultCaption = element<HTMLElement>("result-caption");
const initImageInput = element<HTMLInputElement>("init_image");
const reuseBox = element<HTMLInputElement>("reuse");
const strengthInput = element<HTMLInputElement>("strength");
const strengthValue = element<HTMLOutputElement>("strength-value");
const maskInput = element<HTMLInputElement>("mask");

/** The job of the last result shown: "the last result" as an init image, by reference. */
let lastResultJob = "";

/** The job of the stream in flight, and the step it reached. */
let running: { jobId: string; step: number; abort: AbortController } | null = null;

function setStatus(text: string, isError = false): void {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function seconds(duration: Duration | undefined): number {
  return duration ? Number(duration.seconds) + duration.nanos / 1e9 : 0;
}

/** Shows an image, freeing the object URL it replaces. */
function show(target: HTMLImageElement, image: Image): void {
  const previous = target.src;
  const bytes = new Uint8Array(image.data);
  target.src = URL.createObjectURL(new Blob([bytes], { type: image.mimeType }));
  if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
}

function clearFieldErrors(): void {
  for (const note of document.querySelectorAll<HTMLElement>(".field-error")) {
    note.textContent = "";
    document.getElementById(note.dataset.for ?? "")?.removeAttribute("aria-invalid");
  }
}

/** Puts each google.rpc.BadRequest field violation next to its input. */
function showFieldErrors(error: ConnectError): boolean {
  let shown = false;
  for (const bad of error.findDetails(BadRequestSchema)) {
    for (const violation of bad.fieldViolations) {
      // "parameters.init_image.data" is shown next to the init image input.
      const name = violation.field.replace(/^parameters\./, "").split(".")[0] ?? "";
      const note = document.querySelector<HTMLElement>(`.field-error[data-for="${name}"]`);
      if (!note) continue;
      note.textContent = violation.description;
      document.getElementById(name)?.setAttribute("aria-invalid", "true");
      shown = true;
    }
  }
  return shown;
}

function onEvent(event: StreamGenerateResponse): void {
  if (running && event.jobId && !running.jobId) {
    running.jobId = event.jobId;
    jobLine.textContent = `job ${event.jobId}`;
  }
  const e = event.event;
  switch (e.case) {
    case "queued": {
      const ahead = e.value.position;
      setStatus(ahead === 0 ? "Queued: next in line." : `Queued: ${ahead} ahead.`);
      break;
    }
    case "started": {
      const device = e.value.device;
      setStatus(`Running on ${device?.name || device?.id || "a replica"}.`);
      break;
    }
    case "progress": {
      const p = e.value;
      if (running) running.step = p.step;
      progressBar.max = p.totalSteps;
      progressBar.value = p.step;
      const left = seconds(p.estimatedRemaining);
      progressText.textContent =
        `step ${p.step} / ${p.totalSteps} · ${p.stepsPerSecond.toFixed(1)} steps/s` +
        (left > 0 ? ` · about ${left.toFixed(1)} s left` : "");
      break;
    }
    case "preview": {
      const image = e.value.images[0];
      if (image) show(previewImage, image);
      break;
    }
    case "result": {
      const image = e.value.images[0];
      if (!image) break;
      show(resultImage, image);
      lastResultJob = event.jobId;
      reuseBox.disabled = false;
      const total = seconds(e.value.timings?.total);
      resultCaption.textContent =
        `seed ${image.seed} · ${image.width}×${image.height} · ${total.toFixed(2)} s`;
      setStatus("Done.");
      break;
    }
  }
}

function numberField(id: string): number {
  const value = element<HTMLInputElement>(id).value.trim();
  return value === "" ? 0 : Number(value);
}

/** An uploaded file's bytes, or the last result by reference; undefined when neither. */
async function imageInput(
  input: HTMLInputElement,
  reuse = false,
): Promise<MessageInitShape<typeof InputImageSchema> | undefined> {
  if (reuse && lastResultJob) {
    return { source: { case: "jobImage", value: { jobId: lastResultJob, index: 0 } } };
  }
  const file = input.files?.[0];
  if (!file) return undefined;
  return { source: { case: "data", value: new Uint8Array(await file.arrayBuffer()) } };
}

async function generate(): Promise<void> {
  clearFieldErrors();
  const steps = numberField("steps");
  const seedText = element<HTMLInputElement>("seed").value.trim();
  const abort = new AbortController();
  running = { jobId: "", step: 0, abort };
  generateButton.disabled = true;
  cancelButton.disabled = false;
  progressBar.max = Math.max(steps, 1);
  progressBar.value = 0;
  progressText.textContent = "\u00a0";
  resultCaption.textContent = "Result";
  resultImage.removeAttribute("src");
  previewImage.removeAttribute("src");
  jobLine.textContent = "";
  setStatus("Submitting…");
  try {
    const initImage = await imageInput(initImageInput, reuseBox.checked);
    // Image modes: the output has the init image's size, so width and height are left to it.
    const image = initImage
      ? { initImage, strength: Number(strengthInput.value), mask: await imageInput(maskInput) }
      : { width: numberField("width"), height: numberField("height") };
    const stream = generation.streamGenerate(
      {
        parameters: {
          prompt: element<HTMLTextAreaElement>("prompt").value,
          ...image,
          steps,
          seed: seedText === "" ? undefined : BigInt(seedText),
          preview: { everyNSteps: 1, maxSize: 256 },
        },
      },
      { signal: abort.signal },
    );
    for await (const event of stream) onEvent(event);
  } catch (caught) {
    const error = ConnectError.from(caught);
    if (error.code === Code.Canceled) {
      setStatus(`Cancelled at step ${running?.step ?? 0}.`);
    } else if (error.code === Code.InvalidArgument && showFieldErrors(error)) {
      setStatus("Please fix the highlighted fields.", true);
    } else {
      setStatus(`Failed (${Code[error.code]}): ${error.rawMessage}`, true);
    }
  } finally {
    running = null;
    generateButton.disabled = false;
    cancelButton.disabled = true;
  }
}

async function cancel(): Promise<void> {
  const job = running;
  if (!job) return;
  cancelButton.disabled = true;
  setStatus("Cancelling…");
  if (!job.jobId) {
    job.abort.abort(); // not accepted yet: leaving the call cancels it
    return;
  }
  try {
    await jobs.cancelJob({ jobId: job.jobId });
  } catch (caught) {
    setStatus(`Cancel failed: ${ConnectError.from(caught).rawMessage}`, true);
  }
}

async function describeModels(): Promise<void> {
  const models = element<HTMLParagraphElement>("models");
  try {
    const answer = await generation.listModels({});
    const model = answer.models.find((m) => m.id === answer.defaultModel) ?? answer.models[0];
    if (!model) return;
    const limits = model.limits;
    models.textContent =
      `model ${model.id} · up to ${limits?.maxWidth}×${limits?.maxHeight}, ` +
      `${limits?.maxSteps} steps · ${model.ready ? "ready" : "warming up"}`;
  } catch (caught) {
    models.textContent = `server unreachable: ${ConnectError.from(caught).rawMessage}`;
  }
}

form.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  void generate();
});
cancelButton.addEventListener("click", () => void cancel());
strengthInput.addEventListener("input", () => {
  strengthValue.textContent = strengthInput.value;
});
void describeModels();
