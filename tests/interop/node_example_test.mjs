// Interop: the Node.js example client (client/node: @grpc/grpc-js + @grpc/proto-loader on proto/, no code of
// ours on the wire) against the real server serving configs/default.textproto (the shipped shapes-world models).
//   - `example.mjs classify` (run as a child process, as a user runs it) names held-out scenes of shapes-gen
//     right against labels that differ in colour, shape or both;
//   - `example.mjs generate` streams accepted, progress with increasing steps and PNG frames every 5 steps, then
//     exactly one completed with the final image, all written to --out;
//   - bad requests surface as INVALID_ARGUMENT with the server's message, through the CLI (exit 1) and through
//     the library (ClipserveError.code, unary call and stream);
//   - aborting a generation's AbortSignal ends the stream CANCELLED and the server cancels the job; so does
//     Ctrl-C (SIGINT) in the CLI (exit 130);
//   - an unreachable server is UNAVAILABLE.
// Usage: node node_example_test.mjs <clipserve binary> <shapes-gen binary> <repo root>
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { drawScenes, startServer } from '../testing/clipserve_process.mjs';

const [binary, shapesGen, repoRoot] = process.argv.slice(2);
if (!binary || !shapesGen || !repoRoot) {
  console.error('usage: node node_example_test.mjs <clipserve> <shapes-gen> <repo root>');
  process.exit(2);
}
const exampleDir = path.join(repoRoot, 'client', 'node');
const example = path.join(exampleDir, 'example.mjs');
const config = path.join(repoRoot, 'configs', 'default.textproto');
for (const f of ['clip/model.safetensors', 'vqgan/model.safetensors']) {
  if (!fs.existsSync(path.join(repoRoot, 'models', 'shapes-world', f))) {
    console.log(`skipped: models/shapes-world/${f} is missing`);
    process.exit(77);
  }
}
if (!fs.existsSync(path.join(exampleDir, 'node_modules', '@grpc', 'grpc-js'))) {
  console.error(`${exampleDir}/node_modules is missing: run npm ci --prefix client/node (tools/test.sh does)`);
  process.exit(1);
}
// Imported once the packages are known to be there, so that a missing install is reported as such.
const { connect, status, ClipserveError } =
    await import(pathToFileURL(path.join(exampleDir, 'clipserve.mjs')).href);

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-node-example-'));

// The server's logs are kept and shown only when the test fails.
let server = null;
let serverLog = () => '';
// Never leave the server behind: a watchdog for a hung test, and a last resort on any exit.
process.on('exit', () => { if (server && server.exitCode === null) server.kill('SIGKILL'); });
const watchdog = setTimeout(() => {
  console.error(`FAILED: the test ran over 100 s\n--- server log ---\n${serverLog()}`);
  process.exit(1);
}, 100_000);

// Runs example.mjs; resolves to { code, stdout, stderr }. `onStdout` sees the output as it arrives.
function runExample(args, { onStdout } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [example, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
      onStdout?.(stdout, child);
    });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? signal, stdout, stderr }));
  });
}

// A PNG's signature and IHDR size.
function pngSize(bytes) {
  assert.ok(bytes.length > 33, 'PNG too short');
  assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  assert.equal(bytes.toString('latin1', 12, 16), 'IHDR', 'first chunk is IHDR');
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

async function waitFor(what, predicate, timeoutMs = 10000) {
  for (const end = Date.now() + timeoutMs; Date.now() < end;) {
    if (await predicate()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const colours = ['red', 'orange', 'yellow', 'green', 'blue', 'purple', 'white', 'black'];
const shapes = ['circle', 'square', 'triangle', 'star', 'cross', 'heart', 'ring', 'diamond', 'crescent', 'arrow'];
const other = (list, item, by) => list[(Math.max(list.indexOf(item), 0) + by) % list.length];

let failed = false;
let client = null;
try {
  const spawned = startServer(binary, [`--config=${config}`]);
  server = spawned.child;
  serverLog = spawned.log;
  const { grpcPort } = await spawned.ready;
  const target = `127.0.0.1:${grpcPort}`;
  client = connect(target);
  await waitFor('health SERVING', async () => {
    try {
      return (await client.checkHealth('clipserve.v1.Clip')) === 'SERVING' &&
             (await client.checkHealth('clipserve.v1.Generation')) === 'SERVING';
    } catch {
      return false;
    }
  }, 30000);
  console.log(`[${elapsed()}] server on ${target}: Clip and Generation SERVING`);

  // --- classify: held-out scenes (an evaluation seed: never seen in training), big shapes on plain grounds.
  const scenesDir = path.join(tmp, 'scenes');
  const scenes = (await drawScenes(shapesGen, { seed: 1000901, count: 16, dir: scenesDir }))
      .filter((s) => s.size === 'big' && s.background === 'plain').slice(0, 2);
  assert.equal(scenes.length, 2, 'two big shapes on plain backgrounds among 16 scenes');
  for (const scene of scenes) {
    const want = `${scene.colour} ${scene.shape}`;
    const oc = other(colours, scene.colour, 3);
    const os_ = other(shapes, scene.shape, 4);
    // The right label among ones that differ in colour, shape or both; not first, so order cannot win.
    const labels = [`${oc} ${os_}`, `${scene.colour} ${os_}`, want, `${oc} ${scene.shape}`];
    const image = path.join(scenesDir, scene.file);
    const r = await runExample([`--target=${target}`, 'classify', image, ...labels, '--template=a photo of a {}']);
    process.stdout.write(r.stdout);
    assert.equal(r.code, 0, `classify exit code (stderr: ${r.stderr})`);
    const rows = r.stdout.split('\n').map((l) => l.match(/^\s*([\d.]+)%\s+(.+)$/)).filter(Boolean)
        .map((m) => ({ probability: Number(m[1]) / 100, label: m[2] }));
    assert.equal(rows.length, labels.length, 'one line per label');
    assert.deepEqual(rows.map((x) => x.label).sort(), [...labels].sort());
    for (let i = 1; i < rows.length; i++) assert.ok(rows[i - 1].probability >= rows[i].probability, 'sorted');
    assert.ok(Math.abs(rows.reduce((s, x) => s + x.probability, 0) - 1) < 0.01, 'probabilities sum to 1');
    assert.equal(rows[0].label, want, `${scene.file} is a ${want}`);
  }
  console.log(`[${elapsed()}] classify: held-out scenes labelled right`);

  // --- generate through the CLI: 64 px, 20 steps, a frame every 5.
  const outDir = path.join(tmp, 'generated');
  const g = await runExample([`--target=${target}`, 'generate', 'a red circle on a white background',
                              '--steps=20', '--size=64', '--frame_every=5', '--cutn=8', '--seed=7',
                              `--out=${outDir}`]);
  assert.equal(g.code, 0, `generate exit code (stderr: ${g.stderr})`);
  const lines = g.stdout.trim().split('\n');
  console.log(`${lines[0]}\n  ... ${lines.length - 2} progress lines ...\n${lines[lines.length - 1]}`);
  const accepted = lines[0].match(/^accepted: job (\S+), (\d+) steps, seed (\d+) \(running\)$/);
  assert.ok(accepted, `first line is accepted: ${lines[0]}`);
  const jobId = accepted[1];
  assert.equal(accepted[2], '20');
  assert.equal(accepted[3], '7');
  const steps = [];
  const frames = [];
  const progressLine = /^step (\d+)\/20 {2}loss \S+ {2}similarity \S+ {2}[\d.]+ s(?: {2}frame (\d+)x(\d+) -> (.+))?$/;
  for (const line of lines.slice(1, -1)) {
    const m = line.match(progressLine);
    assert.ok(m, `a progress line: ${line}`);
    steps.push(Number(m[1]));
    if (m[4]) {
      assert.equal(Number(m[1]) % 5, 0, `frames only every 5 steps: ${line}`);
      assert.deepEqual(pngSize(fs.readFileSync(m[4])), { width: Number(m[2]), height: Number(m[3]) });
      assert.equal(Number(m[2]), 64);
      frames.push(path.basename(m[4]));
    }
  }
  assert.ok(steps.length >= 2, 'progress');
  for (let i = 1; i < steps.length; i++) assert.ok(steps[i] > steps[i - 1], `steps increase: ${steps}`);
  assert.ok(steps[steps.length - 1] <= 20);
  assert.ok(frames.length >= 1, 'at least one frame');
  assert.equal(lines.filter((l) => l.startsWith('completed')).length, 1, 'exactly one completed');
  const completed = lines[lines.length - 1].match(/^completed: job (\S+), 20 steps in .*, image 64x64 -> (.+)$/);
  assert.ok(completed, `last line is completed: ${lines[lines.length - 1]}`);
  assert.equal(completed[1], jobId);
  assert.deepEqual(pngSize(fs.readFileSync(completed[2])), { width: 64, height: 64 });
  assert.deepEqual(fs.readdirSync(outDir).sort(), [...frames, 'final.png'].sort(), 'the files written');
  console.log(`[${elapsed()}] generate: accepted, ${steps.length} progress messages (steps ${steps[0]}..` +
              `${steps[steps.length - 1]}), frames ${frames.join(' ')}, one completed with final.png 64x64`);

  // --- errors: the server's INVALID_ARGUMENT through grpc-js, via the CLI and the library.
  const image = path.join(scenesDir, scenes[0].file);
  const bad = await runExample([`--target=${target}`, 'classify', image, 'a red circle']);
  assert.equal(bad.code, 1, 'a single label: exit 1');
  assert.match(bad.stderr, /^example: INVALID_ARGUMENT: .*2/m, 'the CLI prints the code and the server message');
  console.log(`CLI, one label: exit 1, ${bad.stderr.trim()}`);
  await assert.rejects(client.classify(fs.readFileSync(image), []), (err) => {
    assert.ok(err instanceof ClipserveError);
    assert.equal(err.code, status.INVALID_ARGUMENT);
    assert.equal(err.codeName, 'INVALID_ARGUMENT');
    assert.ok(err.details.length > 0, 'the server says what is wrong');
    console.log(`library, no labels: ${err.message}`);
    return true;
  });
  await assert.rejects(client.generate('a red circle', { size: 63, steps: 1 }), (err) => {
    assert.equal(err.code, status.INVALID_ARGUMENT, `${err}`);
    console.log(`library, Generate 63 px: ${err.message}`);
    return true;
  });
  const down = await runExample(['--target=127.0.0.1:1', '--deadline_ms=5000', 'classify', image, 'a', 'b']);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /^example: UNAVAILABLE: /m);
  console.log(`[${elapsed()}] errors: INVALID_ARGUMENT (CLI, unary, stream), UNAVAILABLE (no server)`);

  // --- cancellation: an AbortSignal ends the stream CANCELLED on the client, and the server cancels the job.
  const jobState = async (id) => (await client.listGenerations()).find((j) => j.job_id === id)?.state;
  const controller = new AbortController();
  let abortedJob = '';
  let progressSeen = 0;
  await assert.rejects(
      client.generate('a blue square', {
        steps: 1000, cutn: 8, signal: controller.signal,
        onAccepted: (a) => { abortedJob = a.job_id; },
        onProgress: () => {
          if (++progressSeen === 2) controller.abort(new Error('the user went away'));
        },
      }),
      (err) => {
        assert.ok(err instanceof ClipserveError, `${err}`);
        assert.equal(err.code, status.CANCELLED, `${err}`);
        assert.equal(err.cause?.message, 'the user went away', 'the abort reason is the cause');
        return true;
      });
  assert.ok(abortedJob, 'the job was accepted before the abort');
  assert.equal(progressSeen, 2, 'no progress after the abort');
  await waitFor(`job ${abortedJob} cancelled on the server`,
                async () => (await jobState(abortedJob)) === 'GENERATION_STATE_CANCELLED');
  // An already aborted signal starts nothing.
  await assert.rejects(client.generate('x', { signal: AbortSignal.abort() }), (e) => e.code === status.CANCELLED);
  console.log(`[${elapsed()}] AbortSignal: stream ended CANCELLED after 2 progress messages; job ${abortedJob} ` +
              'GENERATION_STATE_CANCELLED on the server');

  // Ctrl-C in the CLI: the same, exit 130.
  let sigintJob = '';
  let sigintSent = false;
  const interrupted = await runExample(
      [`--target=${target}`, 'generate', 'a green star', '--steps=1000', '--cutn=8'], {
        onStdout: (out, child) => {
          sigintJob ||= out.match(/^accepted: job (\S+),/m)?.[1] ?? '';
          if (!sigintSent && /^step 1\//m.test(out)) {
            sigintSent = true;
            child.kill('SIGINT');
          }
        },
      });
  assert.equal(interrupted.code, 130, `SIGINT: exit 130 (stderr: ${interrupted.stderr})`);
  assert.match(interrupted.stderr, /interrupted \(CANCELLED\): job \S+ cancelled/);
  assert.ok(sigintJob);
  await waitFor(`job ${sigintJob} cancelled on the server`,
                async () => (await jobState(sigintJob)) === 'GENERATION_STATE_CANCELLED');
  console.log(`[${elapsed()}] CLI Ctrl-C: exit 130, ${interrupted.stderr.trim()}; server cancelled the job`);
} catch (e) {
  console.error('FAILED:', e);
  failed = true;
} finally {
  client?.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.on('exit', (code, signal) => r(code ?? signal)));
    server.kill('SIGTERM');
    const code = await exited;
    if (code !== 0) {
      console.error(`clipserve exited with ${code} after SIGTERM`);
      failed = true;
    }
  }
  if (failed) console.error(`--- server log ---\n${serverLog()}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  clearTimeout(watchdog);
}
console.log(`${failed ? 'FAILED' : 'passed'} in ${elapsed()}`);
process.exit(failed ? 1 : 0);
