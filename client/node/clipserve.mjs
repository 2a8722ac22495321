// A small clipserve client for Node.js backends, on @grpc/grpc-js and @grpc/proto-loader with the .proto files
// of this repository (proto/): no generated code, nothing of clipserve's own gRPC stack.
//
//   import { connect } from './clipserve.mjs';
//   const client = connect('localhost:8500');                       // { token, tlsCa, tls } optional
//   const { labels } = await client.classify(pngBytes, ['a red circle', 'a blue square']);
//   const done = await client.generate('a red circle', { steps: 30, frameEvery: 5, onProgress: (p) => ... });
//   client.close();
//
// Every failed call rejects with a ClipserveError carrying the gRPC status: `code` (a number, compare it with
// `status.INVALID_ARGUMENT` etc.), `codeName` ('INVALID_ARGUMENT') and the server's `details`.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

export const status = grpc.status;

// The repository's proto/ directory (client/node/../../proto); $CLIPSERVE_PROTO_DIR or the `protoDir` option
// point elsewhere (e.g. a copy vendored into your own project).
const defaultProtoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'proto');

// keepCase: fields keep the .proto's snake_case names (frame_every, job_id), as in the API docs. longs: Number
// (seeds are uint64 but fit a double's 53 bits in practice; the server picks them below 2^53). enums: String
// ('IMAGE_FORMAT_PNG'). oneofs: the set member of a oneof is named by a virtual field (`event`: 'progress').
const protoOptions = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

const codeNames = Object.fromEntries(Object.entries(grpc.status).map(([name, code]) => [code, name]));

export class ClipserveError extends Error {
  constructor(code, details, metadata, options) {
    const codeName = codeNames[code] ?? `CODE_${code}`;
    super(`${codeName}: ${details}`, options);
    this.name = 'ClipserveError';
    this.code = code;
    this.codeName = codeName;
    this.details = details;
    this.metadata = metadata;
  }
}

// A grpc-js ServiceError as a ClipserveError (its `details` is the server's message without the code prefix).
function wrapError(err, cause) {
  if (err instanceof ClipserveError) return err;
  const code = typeof err.code === 'number' ? err.code : grpc.status.UNKNOWN;
  return new ClipserveError(code, err.details ?? err.message, err.metadata, cause ? { cause } : undefined);
}

function loadServices(protoDir) {
  const load = (file) => grpc.loadPackageDefinition(
      protoLoader.loadSync(file, { ...protoOptions, includeDirs: [protoDir] }));
  const api = load('clipserve/v1/clipserve.proto').clipserve.v1;
  const health = load('grpc/health/v1/health.proto').grpc.health.v1;
  return { Clip: api.Clip, Generation: api.Generation, Health: health.Health };
}

function channelCredentials({ tls, tlsCa }) {
  if (tlsCa) return grpc.credentials.createSsl(fs.readFileSync(tlsCa));
  if (tls) return grpc.credentials.createSsl();  // the system's roots
  return grpc.credentials.createInsecure();
}

function toBuffer(bytes) {
  if (Buffer.isBuffer(bytes)) return bytes;
  if (bytes instanceof Uint8Array || bytes instanceof ArrayBuffer) return Buffer.from(bytes);
  throw new TypeError('an image must be a Buffer, Uint8Array or ArrayBuffer of encoded image bytes');
}

// The request without its undefined fields (proto2: an unset optional field is not sent at all).
function definedOnly(request) {
  return Object.fromEntries(Object.entries(request).filter(([, v]) => v !== undefined && v !== null));
}

// Ties a call to an AbortSignal: aborting cancels the call (grpc-js then ends it with CANCELLED). Returns the
// function that detaches the listener once the call has ended.
function bindSignal(call, signal) {
  if (!signal) return () => {};
  const onAbort = () => call.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

function abortedError(signal) {
  return new ClipserveError(grpc.status.CANCELLED, 'aborted before the call started', undefined,
                            { cause: signal.reason });
}

// Connects to a clipserve gRPC endpoint ("host:port"). Options:
//   token          sent as `authorization: Bearer <token>` metadata on every call
//   tls            true: TLS with the system's roots; tlsCa: TLS trusting this PEM file (implies tls)
//   protoDir       where clipserve/v1/clipserve.proto lives (default: this repository's proto/)
//   channelOptions extra grpc-js channel options
export function connect(target, options = {}) {
  const protoDir = options.protoDir ?? process.env.CLIPSERVE_PROTO_DIR ?? defaultProtoDir;
  const services = loadServices(protoDir);
  const creds = channelCredentials(options);
  // Frames and batches of images can exceed grpc-js's 4 MiB default; the server's own limit is its config's
  // limits.max_message_bytes (64 MiB by default).
  const channelOptions = { 'grpc.max_receive_message_length': 64 << 20, 'grpc.max_send_message_length': 64 << 20,
                           ...options.channelOptions };
  const clip = new services.Clip(target, creds, channelOptions);
  // The other stubs share the first one's channel.
  const shared = { channelOverride: clip.getChannel() };
  const generation = new services.Generation(target, creds, shared);
  const health = new services.Health(target, creds, shared);

  // The bearer token goes in per-call metadata, so it also works on a plaintext channel (grpc-js sends call
  // credentials only over TLS); use TLS when the token matters.
  const metadata = () => {
    const md = new grpc.Metadata();
    if (options.token) md.set('authorization', `Bearer ${options.token}`);
    return md;
  };
  const callOptions = (deadlineMs) => (deadlineMs ? { deadline: Date.now() + deadlineMs } : {});

  function unary(stub, method, request, { deadlineMs, signal } = {}) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortedError(signal));
      let detach = () => {};
      const call = stub[method](request, metadata(), callOptions(deadlineMs), (err, response) => {
        detach();
        if (err) reject(wrapError(err, signal?.aborted ? signal.reason : undefined));
        else resolve(response);
      });
      detach = bindSignal(call, signal);
    });
  }

  return {
    // The raw grpc-js stubs, for the calls this module does not wrap.
    clip,
    generation,
    health,

    // Zero-shot classification of one encoded image (PNG, JPEG, WebP or BMP bytes) against `labels` (at least
    // two). Resolves to { model, labels: [{ label, index, probability, score }] }, most probable first.
    // Options: model (default: the server's default), template ("a photo of a {}"), topK, deadlineMs, signal.
    async classify(image, labels, { model, template, topK, deadlineMs, signal } = {}) {
      const request = definedOnly({ model, images: [{ encoded: toBuffer(image) }], labels, template,
                                    top_k: topK });
      const response = await unary(clip, 'Classify', request, { deadlineMs, signal });
      return { model: response.model, labels: response.results[0]?.labels ?? [] };
    },

    listModels({ deadlineMs, signal } = {}) {
      return unary(clip, 'ListModels', {}, { deadlineMs, signal }).then((r) => r.models);
    },

    listGenerations({ deadlineMs, signal } = {}) {
      return unary(generation, 'ListGenerations', {}, { deadlineMs, signal }).then((r) => r.generations);
    },

    cancelGeneration(jobId, { deadlineMs, signal } = {}) {
      return unary(generation, 'CancelGeneration', { job_id: jobId }, { deadlineMs, signal });
    },

    // grpc.health.v1 status of a service ('' = the whole server, 'clipserve.v1.Clip', 'clipserve.v1.Generation'):
    // 'SERVING', 'NOT_SERVING', ...
    checkHealth(service = '', { deadlineMs = 5000, signal } = {}) {
      return unary(health, 'Check', { service }, { deadlineMs, signal }).then((r) => r.status);
    },

    // Runs a VQGAN+CLIP generation and resolves to its `completed` message: { job_id, image: { data, format,
    // width, height }, steps, loss, similarity, elapsed_seconds, seed }. Options:
    //   steps, size (width = height) or width/height, seed, cutn, learningRate, frameEvery (a frame every n
    //   steps), frameFormat ('png' | 'jpeg' | 'webp'), detach, deadlineMs
    //   onAccepted(accepted), onProgress(progress): called for the stream's messages as they arrive (a progress
    //   message holds `frame` on every frameEvery-th step)
    //   signal: an AbortSignal; aborting cancels the stream, which cancels the job on the server (unless
    //   detach), and the promise rejects with a ClipserveError whose code is CANCELLED.
    // A stream that ends without `completed`, or with a second one, rejects with INTERNAL.
    generate(prompt, opts = {}) {
      const { signal, onAccepted, onProgress } = opts;
      // proto2: a field that is sent is set, even to 0 (and the server rejects e.g. a learning rate of 0), so
      // options left out are left out of the request and take the server's defaults.
      const request = definedOnly({
        prompt,
        width: opts.width ?? opts.size,
        height: opts.height ?? opts.size,
        steps: opts.steps,
        seed: opts.seed,
        cutn: opts.cutn,
        learning_rate: opts.learningRate,
        frame_every: opts.frameEvery,
        frame_format: opts.frameFormat ? `IMAGE_FORMAT_${opts.frameFormat.toUpperCase()}` : undefined,
        detach: opts.detach,
      });
      return new Promise((resolve, reject) => {
        if (signal?.aborted) return reject(abortedError(signal));
        const call = generation.Generate(request, metadata(), callOptions(opts.deadlineMs));
        const detachSignal = bindSignal(call, signal);
        let completed = null;
        let settled = false;
        const fail = (err) => {
          if (settled) return;
          settled = true;
          detachSignal();
          reject(err);
        };
        const callback = (fn, message) => {
          try {
            fn?.(message);
          } catch (err) {  // a throwing callback ends the call, as an error of the caller's own
            call.cancel();
            fail(err);
          }
        };
        call.on('data', (message) => {
          if (settled) return;  // failed (a callback threw, a second completed): nothing more reaches the caller
          switch (message.event) {
            case 'accepted':
              callback(onAccepted, message.accepted);
              break;
            case 'progress':
              callback(onProgress, message.progress);
              break;
            case 'completed':
              if (completed) {
                call.cancel();
                fail(new ClipserveError(grpc.status.INTERNAL, 'the stream sent a second completed message'));
              }
              completed = message.completed;
              break;
            default:
              break;  // an event this client does not know yet
          }
        });
        call.on('error', (err) => fail(wrapError(err, signal?.aborted ? signal.reason : undefined)));
        call.on('end', () => {
          // 'end' also follows an error; only a clean end settles here.
          setImmediate(() => {
            if (settled) return;
            if (!completed) {
              fail(new ClipserveError(grpc.status.INTERNAL, 'the stream ended without a completed message'));
              return;
            }
            settled = true;
            detachSignal();
            resolve(completed);
          });
        });
      });
    },

    close() {
      clip.close();
    },
  };
}
