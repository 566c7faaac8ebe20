export {
  PointillistClient,
  type CallOptions,
  type ClientOptions,
  type GenerationEvent,
  type GenerationParameters,
  type Generated,
} from "./client.js";
export { PointillistError, toPointillistError, type FieldViolation } from "./errors.js";
export { Code } from "@connectrpc/connect";
export * from "./gen/pointillist/v1/generation_pb.js";
export * from "./gen/pointillist/v1/jobs_pb.js";
export * from "./gen/pointillist/v1/status_pb.js";
