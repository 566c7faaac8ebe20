// A typed Node client for pointillist over native gRPC (HTTP/2), built on Connect for Node
// and the stubs protoc-gen-es generates from proto/ (`make node`).
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { BalancedTransport } from "./balancing.js";
import { toPointillistError } from "./errors.js";
import {
  GenerationService,
  type GenerationParametersSchema,
  type GenerationResult,
  type ListModelsResponse,
  type Priority,
  type StreamGenerateResponse,
} from "./gen/pointillist/v1/generation_pb.js";
import { type Job, JobService } from "./gen/pointillist/v1/jobs_pb.js";

/** How long after the deadline the client gives up by itself if the server has not answered. */
const DEADLINE_BACKSTOP_MS = 2_000;

/** What to generate: any subset of GenerationParameters (zero values mean model defaults). */
export type GenerationParameters = MessageInitShape<typeof GenerationParametersSchema>;

/** One event of a generation: which one (`case`), its data (`value`) and the job's id. */
export type GenerationEvent = Exclude<StreamGenerateResponse["event"], { case: undefined }> & {
  jobId: string;
};

/** The outcome of generate(): the result and the id of the job that made it. */
export interface Generated {
  jobId: string;
  result: GenerationResult;
}

export interface CallOptions {
  /** Where the job waits among the queued jobs of its model. */
  priority?: Priority;
  /** Aborting cancels the call; for StreamGenerate and Generate that cancels the job too. */
  signal?: AbortSignal;
  /** Deadline of the call in milliseconds (the job is bound by it). */
  timeoutMs?: number;
}

export interface ClientOptions {
  /** Default deadline of every call in milliseconds; none when undefined. */
  timeoutMs?: number;
}

export class PointillistClient {
  private readonly generation: Client<typeof GenerationService>;
  private readonly jobs: Client<typeof JobService>;
  private readonly defaultTimeoutMs: number | undefined;
  private readonly transport: BalancedTransport;

  /**
   * `target`: host:port of the gRPC port, a full http:// URL, or several servers to balance
   * over: `ipv4:h1:p1,h2:p2` or `dns:///name:port` (every address the name resolves to, as a
   * Kubernetes headless Service answers). Calls go round-robin, with retries of refusals.
   */
  constructor(target: string, options: ClientOptions = {}) {
    this.transport = new BalancedTransport(target);
    this.generation = createClient(GenerationService, this.transport);
    this.jobs = createClient(JobService, this.transport);
    this.defaultTimeoutMs = options.timeoutMs;
  }

  /** Runs one generation and returns its result; throws PointillistError. */
  async generate(parameters: GenerationParameters, options: CallOptions = {}): Promise<Generated> {
    try {
      const answer = await this.generation.generate(
        { parameters, priority: options.priority },
        this.callOptions(options),
      );
      if (!answer.result) throw new Error("the server sent no result");
      return { jobId: answer.jobId, result: answer.result };
    } catch (caught) {
      throw toPointillistError(caught);
    }
  }

  /**
   * Streams one generation's events: queued, started, progress for every step, previews when
   * asked for, then the result. A failed or cancelled stream throws PointillistError; leaving
   * the loop early (break) or aborting the signal cancels the job on the server.
   */
  async *stream(
    parameters: GenerationParameters,
    options: CallOptions = {},
  ): AsyncGenerator<GenerationEvent, void, undefined> {
    const done = new AbortController();
    const call = this.generation.streamGenerate(
      { parameters, priority: options.priority },
      this.callOptions(options, done.signal),
    );
    yield* events(call, done);
  }

  /** Queues a generation without waiting for it; returns the job id. */
  async submit(parameters: GenerationParameters, options: CallOptions = {}): Promise<string> {
    try {
      const answer = await this.jobs.submitJob(
        { parameters, priority: options.priority },
        this.callOptions(options),
      );
      return answer.jobId;
    } catch (caught) {
      throw toPointillistError(caught);
    }
  }

  /** Streams a job's events from its first; ends with the job's error when it failed. */
  async *watch(
    jobId: string,
    options: CallOptions = {},
  ): AsyncGenerator<GenerationEvent, void, undefined> {
    const done = new AbortController();
    yield* events(this.jobs.watchJob({ jobId }, this.callOptions(options, done.signal)), done);
  }

  /** A job's state, parameters, timestamps and result or error. */
  async getJob(jobId: string, options: CallOptions = {}): Promise<Job> {
    try {
      const answer = await this.jobs.getJob({ jobId }, this.callOptions(options));
      if (!answer.job) throw new Error("the server sent no job");
      return answer.job;
    } catch (caught) {
      throw toPointillistError(caught);
    }
  }

  /** Cancels a job; returns it as it is after the cancel. */
  async cancelJob(jobId: string, options: CallOptions = {}): Promise<Job> {
    try {
      const answer = await this.jobs.cancelJob({ jobId }, this.callOptions(options));
      if (!answer.job) throw new Error("the server sent no job");
      return answer.job;
    } catch (caught) {
      throw toPointillistError(caught);
    }
  }

  /** The served models with their limits and defaults. */
  async listModels(options: CallOptions = {}): Promise<ListModelsResponse> {
    try {
      return await this.generation.listModels({}, this.callOptions(options));
    } catch (caught) {
      throw toPointillistError(caught);
    }
  }

  /** Closes the connections; calls still running fail. */
  close(): void {
    this.transport.close();
  }

  /**
   * The deadline travels as the grpc-timeout header (the server bounds the job by it and ends
   * the call with DEADLINE_EXCEEDED), with an unref'd client-side timer as a backstop a little
   * later. Connect's own timeoutMs is not used: its timer outlives a stream left early (break)
   * and keeps the process alive until the deadline.
   */
  private callOptions(
    options: CallOptions,
    done?: AbortSignal,
  ): { signal?: AbortSignal; headers?: Record<string, string> } {
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    const signals = [options.signal, done];
    let headers: Record<string, string> | undefined;
    if (timeoutMs !== undefined) {
      headers = { "grpc-timeout": `${Math.max(1, Math.ceil(timeoutMs))}m` };
      signals.push(AbortSignal.timeout(timeoutMs + DEADLINE_BACKSTOP_MS));
    }
    const present = signals.filter((s): s is AbortSignal => s !== undefined);
    return {
      signal: present.length > 1 ? AbortSignal.any(present) : present[0],
      headers,
    };
  }
}

/**
 * The call's responses as events. `done` is aborted when the consumer leaves early (break):
 * that ends the call at once, with its deadline timer (left alone, Connect keeps the timer
 * and the process alive until the deadline).
 */
async function* events(
  call: AsyncIterable<{ jobId: string; event: StreamGenerateResponse["event"] }>,
  done: AbortController,
): AsyncGenerator<GenerationEvent, void, undefined> {
  try {
    for await (const response of call) {
      if (response.event.case === undefined) continue; // an event this version does not know
      yield { ...response.event, jobId: response.jobId };
    }
  } catch (caught) {
    throw toPointillistError(caught);
  } finally {
    done.abort();
  }
}
