// Client-side load balancing for the Node client, as the Python client gets it from gRPC's
// round_robin and retry policy: a target that names several servers (`ipv4:h1:p1,h2:p2`, or
// `dns:///name:port`, every address the name resolves to) gets one HTTP/2 connection per server,
// each call goes to the next server, and a refusal that accepted nothing (UNAVAILABLE while a
// server drains or is gone, RESOURCE_EXHAUSTED when a queue is full) is retried on the next one.
// The server's `grpc-retry-pushback-ms` trailer sets the delay; -1 (the job itself ran and
// failed, or the wait would be long) means: do not retry, the caller sees the error. A stream is
// retried only until its first message arrives, so a started generation never runs twice.
import { lookup } from "node:dns/promises";
import type {
  DescMessage,
  DescMethodStreaming,
  DescMethodUnary,
  MessageInitShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

const MAX_ATTEMPTS = 4;
const INITIAL_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2_000;
/** How long resolved addresses are used before `dns:///` targets are resolved again. */
const RESOLVE_EVERY_MS = 30_000;
const RETRYABLE = new Set([Code.Unavailable, Code.ResourceExhausted]);
/** The request headers a Transport takes (the fetch API's HeadersInit). */
type Header = Parameters<Transport["unary"]>[3];

/** The base URLs a target names; a `dns:///` target is resolved (every address) when called. */
export async function resolveTarget(target: string): Promise<string[]> {
  if (target.startsWith("ipv4:") || target.startsWith("ipv6:")) {
    return target.slice(5).split(",").map((address) => `http://${address}`);
  }
  if (target.startsWith("dns:")) {
    const hostPort = target.replace(/^dns:(\/\/[^/]*)?\/?/, "");
    const colon = hostPort.lastIndexOf(":");
    const [host, port] = [hostPort.slice(0, colon), hostPort.slice(colon + 1)];
    const addresses = await lookup(host, { all: true });
    return addresses.map(({ address, family }) =>
      family === 6 ? `http://[${address}]:${port}` : `http://${address}:${port}`,
    );
  }
  return [target.includes("://") ? target : `http://${target}`];
}

/** A Transport that spreads calls over every server of a target, with retries (see above). */
export class BalancedTransport implements Transport {
  private servers = new Map<string, { session: Http2SessionManager; transport: Transport }>();
  private order: string[] = [];
  private next = 0;
  private resolvedAt = 0;
  private resolving: Promise<void> | undefined;

  constructor(private readonly target: string) {}

  async unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: Header,
    input: MessageInitShape<I>,
    contextValues?: ContextValues,
  ): Promise<UnaryResponse<I, O>> {
    return this.withRetries(signal, (transport) =>
      transport.unary(method, signal, timeoutMs, header, input, contextValues),
    );
  }

  async stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: Header,
    input: AsyncIterable<MessageInitShape<I>>,
    contextValues?: ContextValues,
  ): Promise<StreamResponse<I, O>> {
    const requests: MessageInitShape<I>[] = [];
    for await (const request of input) requests.push(request); // server streaming: one
    return this.withRetries(signal, async (transport) => {
      const response = await transport.stream(
        method,
        signal,
        timeoutMs,
        header,
        replay(requests),
        contextValues,
      );
      // Wait for the first message: an error before it is a refusal that may be retried.
      const messages = response.message[Symbol.asyncIterator]();
      const first = await messages.next();
      return { ...response, message: prepend(first, messages) };
    });
  }

  /** Ends every connection; calls still running fail. */
  close(): void {
    for (const { session } of this.servers.values()) session.abort();
  }

  private async withRetries<T>(
    signal: AbortSignal | undefined,
    attempt: (transport: Transport) => Promise<T>,
  ): Promise<T> {
    let backoffMs = INITIAL_BACKOFF_MS;
    for (let attempts = 1; ; attempts++) {
      const transport = await this.pick();
      try {
        return await attempt(transport);
      } catch (caught) {
        const error = ConnectError.from(caught);
        const pushback = Number(error.metadata.get("grpc-retry-pushback-ms") ?? Number.NaN);
        if (attempts >= MAX_ATTEMPTS || !RETRYABLE.has(error.code) || pushback < 0) throw caught;
        const delayMs = Number.isNaN(pushback) ? Math.random() * backoffMs : pushback;
        backoffMs = Math.min(MAX_BACKOFF_MS, backoffMs * 2);
        await wait(delayMs, signal);
        if (error.code === Code.Unavailable) this.resolvedAt = 0; // a server may be gone
      }
    }
  }

  private async pick(): Promise<Transport> {
    if (Date.now() - this.resolvedAt > RESOLVE_EVERY_MS || this.order.length === 0) {
      this.resolving ??= this.resolve().finally(() => (this.resolving = undefined));
      await this.resolving;
    }
    const url = this.order[this.next++ % this.order.length];
    return this.servers.get(url)!.transport;
  }

  private async resolve(): Promise<void> {
    const urls = await resolveTarget(this.target);
    for (const url of urls) {
      if (this.servers.has(url)) continue;
      // One HTTP/2 connection per server, kept so that close() can end it.
      const session = new Http2SessionManager(url);
      const transport = createGrpcTransport({ baseUrl: url, sessionManager: session });
      this.servers.set(url, { session, transport });
    }
    for (const [url, { session }] of this.servers) {
      if (!urls.includes(url)) {
        session.abort(); // a server the name no longer resolves to (scaled down)
        this.servers.delete(url);
      }
    }
    this.order = urls;
    this.resolvedAt = Date.now();
  }
}

async function* replay<T>(messages: T[]): AsyncIterable<T> {
  yield* messages;
}

async function* prepend<T>(first: IteratorResult<T>, rest: AsyncIterator<T>): AsyncIterable<T> {
  if (first.done) return;
  yield first.value;
  for (let item = await rest.next(); !item.done; item = await rest.next()) yield item.value;
}

function wait(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
