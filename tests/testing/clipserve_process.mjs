// For the Node.js tests (tests/interop, tests/web): the real server as a child process, and held-out scenes of
// the shapes world. Node built-ins only, so every test package can import it by path.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

// Spawns `binary` with `args` and --grpc_port=0 --http_port=0. Returns at once { child, ready, log() }:
// `ready` resolves to { grpcPort, httpPort } once the server has printed its bound ports (it loads its models
// after that: wait for /readyz or health), and rejects if it exits first. log() is everything it wrote so
// far (stdout and stderr), to show when a test fails.
export function startServer(binary, args) {
  const child = spawn(binary, [...args, '--grpc_port=0', '--http_port=0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  let out = '';
  const ready = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      log += d;
      const m = out.match(/clipserve grpc_port=(\d+) http_port=(\d+)/);
      if (m) resolve({ grpcPort: Number(m[1]), httpPort: Number(m[2]) });
    });
    child.stderr.on('data', (d) => { log += d; });
    child.on('error', reject);
    child.on('exit', (code, signal) => reject(new Error(`clipserve exited early with ${code ?? signal}`)));
  });
  return { child, ready, log: () => log };
}

// Runs shapes-gen (evaluation seeds are held out from training) into `dir` and returns its scenes, as
// captions.jsonl lists them ({file, colour, shape, size, background, ...}).
export async function drawScenes(shapesGen, { seed, count, dir }) {
  const code = await new Promise((resolve, reject) => {
    const c = spawn(shapesGen, [`--seed=${seed}`, `--count=${count}`, `--out=${dir}`], { stdio: 'inherit' });
    c.on('error', reject);
    c.on('close', resolve);
  });
  if (code !== 0) throw new Error(`shapes-gen exited with ${code}`);
  return fs.readFileSync(path.join(dir, 'captions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}
