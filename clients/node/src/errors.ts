// A failed call as one error type that carries the server's google.rpc details: field
// violations (BadRequest), retry delay (RetryInfo), the missing resource (ResourceInfo) and the
// reason (ErrorInfo). gRPC sends them in grpc-status-details-bin; Connect decodes them.
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** One invalid request field, as the server named it (e.g. "parameters.width"). */
export interface FieldViolation {
  field: string;
  description: string;
}

/** The resource a NOT_FOUND error is about. */
export interface MissingResource {
  type: string;
  name: string;
}

export class PointillistError extends Error {
  /** The status code, e.g. Code.InvalidArgument; `Code[error.code]` names it. */
  readonly code: Code;
  /** The status message without the code prefix. */
  readonly rawMessage: string;
  /** From google.rpc.BadRequest; empty unless the request was invalid. */
  readonly fieldViolations: readonly FieldViolation[];
  /** From google.rpc.RetryInfo: how long to wait before retrying; undefined when not said. */
  readonly retryDelayMs: number | undefined;
  /** From google.rpc.ResourceInfo, for NOT_FOUND. */
  readonly resource: MissingResource | undefined;
  /** From google.rpc.ErrorInfo, e.g. "REPLICA_CRASHED". */
  readonly reason: string | undefined;
  /** The underlying Connect error (headers, trailers, every raw detail). */
  override readonly cause: ConnectError;

  constructor(cause: ConnectError) {
    super(`${Code[cause.code]}: ${cause.rawMessage}`);
    this.name = "PointillistError";
    this.code = cause.code;
    this.rawMessage = cause.rawMessage;
    this.cause = cause;
    this.fieldViolations = cause
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations)
      .map((v) => ({ field: v.field, description: v.description }));
    const retry = cause.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryDelayMs =
      retry === undefined ? undefined : Number(retry.seconds) * 1000 + retry.nanos / 1e6;
    const resource = cause.findDetails(ResourceInfoSchema)[0];
    this.resource = resource && { type: resource.resourceType, name: resource.resourceName };
    this.reason = cause.findDetails(ErrorInfoSchema)[0]?.reason;
  }
}

/** Any error a call threw (network, abort, status) as a PointillistError. */
export function toPointillistError(caught: unknown): PointillistError {
  if (caught instanceof PointillistError) return caught;
  const error = ConnectError.from(caught);
  // The client's own deadline timer (AbortSignal.timeout) fired before the server answered.
  if (error.code === Code.Canceled && isTimeout(error.cause)) {
    return new PointillistError(
      new ConnectError("the deadline passed", Code.DeadlineExceeded, undefined, undefined, caught),
    );
  }
  return new PointillistError(error);
}

function isTimeout(cause: unknown): boolean {
  return cause instanceof Error && cause.name === "TimeoutError";
}
