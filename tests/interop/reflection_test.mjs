// Interop: a clipserve server seen through Node.js's gRPC stack (@grpc/grpc-js), which shares no code with ours.
//   - server reflection (grpc-reflection-js) lists clipserve.v1.Clip and describes its methods;
//   - grpc.health.v1 answers SERVING once the model is loaded;
//   - a Tokenize call made from the .proto files in proto/ returns the reference ids.
// Usage: node reflection_test.mjs <clipserve binary> <default fixture dir> <repo root>
import assert from 'node:assert/strict';
import path from 'node:path';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { Client as ReflectionClient } from 'grpc-reflection-js';

import { startServer } from '../testing/clipserve_process.mjs';

import fs from 'node:fs';

const [binary, defaultFixtures, repoRoot] = process.argv.slice(2);
if (!binary || !defaultFixtures || !repoRoot) {
  console.error('usage: node reflection_test.mjs <clipserve> <default fixture dir> <repo root>');
  process.exit(2);
}
// Same rule as the C++ tests: $CLIPSERVE_FIXTURES, skipped (exit 77) when absent unless required.
const fixtures = process.env.CLIPSERVE_FIXTURES || defaultFixtures;
const modelDir = path.join(fixtures, 'clip');
if (!fs.existsSync(path.join(modelDir, 'config.json'))) {
  if (process.env.CLIPSERVE_FIXTURES_REQUIRED === '1') {
    console.error(`fixture model ${modelDir} is missing (set CLIPSERVE_FIXTURES)`);
    process.exit(1);
  }
  console.log(`skipped: fixture model ${modelDir} is missing; set CLIPSERVE_FIXTURES to run this test`);
  process.exit(77);
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 10000 }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

const protoOptions = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
                       includeDirs: [path.join(repoRoot, 'proto')] };

async function waitServing(target) {
  const health = grpc.loadPackageDefinition(
      protoLoader.loadSync('grpc/health/v1/health.proto', protoOptions)).grpc.health.v1;
  const client = new health.Health(target, grpc.credentials.createInsecure());
  for (let i = 0; i < 300; i++) {
    try {
      const res = await call(client, 'Check', { service: 'clipserve.v1.Clip' });
      if (res.status === 'SERVING') return client;
    } catch (e) { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('health never reported SERVING');
}

const { child, ready, log } = startServer(binary, [`--model=fixture=${modelDir}`]);
const { grpcPort } = await ready;
const target = `127.0.0.1:${grpcPort}`;
let failed = false;
try {
  const health = await waitServing(target);
  const overall = await call(health, 'Check', { service: '' });
  assert.equal(overall.status, 'SERVING');
  console.log('health: SERVING');

  const reflection = new ReflectionClient(target, grpc.credentials.createInsecure());
  const services = await reflection.listServices();
  console.log('services:', services.join(', '));
  assert.ok(services.includes('clipserve.v1.Clip'), 'reflection lists clipserve.v1.Clip');
  assert.ok(services.includes('grpc.health.v1.Health'), 'reflection lists grpc.health.v1.Health');
  const root = await reflection.fileContainingSymbol('clipserve.v1.Clip');
  const methods = Object.keys(root.lookupService('clipserve.v1.Clip').methods).sort();
  console.log('clipserve.v1.Clip methods:', methods.join(', '));
  for (const m of ['Classify', 'EmbedImage', 'EmbedText', 'GetModel', 'ListModels', 'Rank', 'Similarity', 'Tokenize']) {
    assert.ok(methods.includes(m), `reflection describes ${m}`);
  }

  const clip = grpc.loadPackageDefinition(
      protoLoader.loadSync('clipserve/v1/clipserve.proto', protoOptions)).clipserve.v1;
  const client = new clip.Clip(target, grpc.credentials.createInsecure());
  const tokens = await call(client, 'Tokenize', { texts: ['a photo of a cat'] });
  assert.deepEqual(tokens.results[0].ids, [49406, 320, 1125, 539, 320, 2368, 49407]);
  console.log('Tokenize through proto-loader: ok');
  try {
    await call(client, 'EmbedText', { model: 'missing', texts: ['x'] });
    assert.fail('unknown model must fail');
  } catch (e) {
    assert.equal(e.code, grpc.status.NOT_FOUND);
  }
  console.log('unknown model: NOT_FOUND');
} catch (e) {
  console.error('FAILED:', e);
  failed = true;
} finally {
  child.kill('SIGTERM');
  const code = await new Promise((r) => child.on('exit', r));
  if (code !== 0) {
    console.error(`clipserve exited with ${code} after SIGTERM`);
    failed = true;
  }
  if (failed) console.error(`--- server log ---\n${log()}`);
}
process.exit(failed ? 1 : 0);
