#!/usr/bin/env node
// A clipserve client as a Node.js backend would have it (see README.md):
//
//   node example.mjs [--target=HOST:PORT] classify IMAGE LABEL LABEL... [--template="a photo of a {}"] [--top_k=N]
//   node example.mjs [--target=HOST:PORT] generate PROMPT [--steps=N] [--size=N] [--seed=N] [--cutn=N]
//                    [--frame_every=N] [--format=png|jpeg|webp] [--out=DIR]
//
// Common flags: --model=NAME, --deadline_ms=N, --token=T (authorization: Bearer T), --tls, --tls_ca=PEM, --json.
// Exit codes: 0 done, 1 the server answered an error (its gRPC code and message are printed), 2 bad usage,
// 130 interrupted (Ctrl-C cancels a generation on the server).
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { connect, ClipserveError } from './clipserve.mjs';

const usage = `usage:
  node example.mjs [--target=HOST:PORT] classify IMAGE LABEL LABEL... [--template=T] [--top_k=N]
  node example.mjs [--target=HOST:PORT] generate PROMPT [--steps=N] [--size=N] [--seed=N] [--cutn=N]
                   [--frame_every=N] [--format=png|jpeg|webp] [--out=DIR]
common: --model=NAME --deadline_ms=N --token=T --tls --tls_ca=PEM --json
target: --target, else $CLIPSERVE_TARGET, else localhost:8500`;

function usageError(message) {
  console.error(`example: ${message}\n${usage}`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      target: { type: 'string' }, model: { type: 'string' }, token: { type: 'string' },
      tls: { type: 'boolean' }, tls_ca: { type: 'string' }, deadline_ms: { type: 'string' },
      json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      template: { type: 'string' }, top_k: { type: 'string' },
      steps: { type: 'string' }, size: { type: 'string' }, seed: { type: 'string' }, cutn: { type: 'string' },
      frame_every: { type: 'string' }, format: { type: 'string' }, out: { type: 'string' },
    },
  });
} catch (err) {
  usageError(err.message);
}
const { values: flags, positionals } = parsed;
if (flags.help) {
  console.log(usage);
  process.exit(0);
}

function intFlag(name, min = 0) {
  const v = flags[name];
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min) usageError(`--${name} must be an integer >= ${min}, not '${v}'`);
  return Number(v);
}

const [verb, ...args] = positionals;
const target = flags.target ?? process.env.CLIPSERVE_TARGET ?? 'localhost:8500';
const deadlineMs = intFlag('deadline_ms', 1);
if (flags.tls_ca && !fs.existsSync(flags.tls_ca)) usageError(`--tls_ca: no such file ${flags.tls_ca}`);
const client = connect(target, { token: flags.token, tls: flags.tls, tlsCa: flags.tls_ca });

async function classify() {
  const [imagePath, ...labels] = args;
  if (!imagePath) usageError('classify needs an image and its candidate labels');
  let image;
  try {
    image = fs.readFileSync(imagePath);
  } catch (err) {
    usageError(`cannot read ${imagePath}: ${err.message}`);
  }
  // The label count is the server's to check (it wants at least two): its INVALID_ARGUMENT says so.
  const result = await client.classify(image, labels, {
    model: flags.model, template: flags.template, topK: intFlag('top_k'), deadlineMs,
  });
  if (flags.json) {
    console.log(JSON.stringify(result));
    return;
  }
  console.log(`${imagePath} (model ${result.model}):`);
  for (const { label, probability } of result.labels) {
    console.log(`${(probability * 100).toFixed(2).padStart(7)}%  ${label}`);
  }
}

const extensions = { IMAGE_FORMAT_PNG: 'png', IMAGE_FORMAT_JPEG: 'jpg', IMAGE_FORMAT_WEBP: 'webp' };

async function generate() {
  const prompt = args.join(' ');
  if (!prompt) usageError('generate needs a prompt');
  const out = flags.out;
  if (out) fs.mkdirSync(out, { recursive: true });
  const save = (name, frame) => {
    if (!out) return '';
    const file = path.join(out, `${name}.${extensions[frame.format] ?? 'png'}`);
    fs.writeFileSync(file, frame.data);
    return file;
  };
  const print = (line, json) => console.log(flags.json ? JSON.stringify(json) : line);

  // Ctrl-C aborts the stream: the server cancels the job, the call ends CANCELLED.
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort(new Error('interrupted')));
  let jobId = '';
  try {
    const done = await client.generate(prompt, {
      steps: intFlag('steps', 1), size: intFlag('size', 1), seed: intFlag('seed'), cutn: intFlag('cutn'),
      frameEvery: intFlag('frame_every'), frameFormat: flags.format, deadlineMs, signal: controller.signal,
      onAccepted: (a) => {
        jobId = a.job_id;
        const where = a.queue_position > 0 ? `queued at ${a.queue_position}` : 'running';
        print(`accepted: job ${a.job_id}, ${a.total_steps} steps, seed ${a.seed} (${where})`,
              { event: 'accepted', job_id: a.job_id, total_steps: a.total_steps, seed: a.seed,
                queue_position: a.queue_position });
      },
      onProgress: (p) => {
        let line = `step ${p.step}/${p.total_steps}  loss ${p.loss.toFixed(4)}  similarity ` +
                   `${p.similarity.toFixed(4)}  ${p.elapsed_seconds.toFixed(1)} s`;
        const json = { event: 'progress', step: p.step, total_steps: p.total_steps, loss: p.loss,
                       similarity: p.similarity, elapsed_seconds: p.elapsed_seconds };
        if (p.frame) {
          const file = save(`frame-${String(p.step).padStart(4, '0')}`, p.frame);
          line += `  frame ${p.frame.width}x${p.frame.height}${file ? ` -> ${file}` : ''}`;
          Object.assign(json, { frame: file, frame_width: p.frame.width, frame_height: p.frame.height });
        }
        print(line, json);
      },
    });
    const file = save('final', done.image);
    print(`completed: job ${done.job_id}, ${done.steps} steps in ${done.elapsed_seconds.toFixed(1)} s, ` +
          `similarity ${done.similarity.toFixed(4)}, seed ${done.seed}, image ` +
          `${done.image.width}x${done.image.height}${file ? ` -> ${file}` : ' (--out=DIR saves it)'}`,
          { event: 'completed', job_id: done.job_id, steps: done.steps, similarity: done.similarity,
            loss: done.loss, seed: done.seed, elapsed_seconds: done.elapsed_seconds, image: file,
            width: done.image.width, height: done.image.height });
  } catch (err) {
    if (controller.signal.aborted && err instanceof ClipserveError && err.codeName === 'CANCELLED') {
      console.error(`example: interrupted (${err.codeName})${jobId ? `: job ${jobId} cancelled` : ''}`);
      process.exitCode = 130;
      return;
    }
    throw err;
  }
}

try {
  if (verb === 'classify') await classify();
  else if (verb === 'generate') await generate();
  else usageError(verb ? `unknown command '${verb}'` : 'a command is needed');
} catch (err) {
  if (!(err instanceof ClipserveError)) throw err;
  // What a backend would log or map to its own HTTP status: the gRPC code name and the server's message.
  console.error(`example: ${err.codeName}: ${err.details}`);
  process.exitCode = 1;
} finally {
  client.close();
}
