// The clipserve web demo: plain JavaScript against the server's HTTP/JSON gateway (docs/api.md), no libraries.
// Classify: POST /v1/classify. Search: POST /v1/rank (a sentence against uploaded images). Generate: POST
// /v1/generate, read as Server-Sent Events from a fetch() body (EventSource cannot POST), frames shown as they
// arrive; Cancel aborts the fetch, which cancels the job on the server.
'use strict';

const $ = (id) => document.getElementById(id);

function authHeaders() {
  const token = $('token').value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// The gateway's error body is {"error": {"code", "status", "message"}}; anything else is shown as text.
async function errorOf(response) {
  const text = await response.text();
  try {
    const e = JSON.parse(text).error;
    return new Error(`${e.status} (HTTP ${e.code}): ${e.message}`);
  } catch {
    return new Error(`HTTP ${response.status}: ${text}`);
  }
}

async function postJson(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...authHeaders() },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

// A File as base64 (the JSON mapping of `bytes`).
function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ''));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function showError(id, error) {
  const p = $(id);
  p.textContent = error ? String(error.message || error) : '';
  p.hidden = !error;
}

function percent(x) {
  return `${(100 * x).toFixed(1)} %`;
}

async function loadModels() {
  const status = $('server-status');
  try {
    const response = await fetch('/v1/models', { headers: authHeaders() });
    if (!response.ok) throw await errorOf(response);
    const models = (await response.json()).models || [];
    const chosen = models.find((m) => m.is_default) || models[0];
    $('model-name').textContent = chosen ? `${chosen.name} (${chosen.image_size} px, ${chosen.device})` : 'none';
    status.textContent = 'ready';
    status.className = 'status ok';
  } catch (e) {
    status.textContent = `not ready: ${e.message}`;
    status.className = 'status bad';
  }
}

// ---- Classify ------------------------------------------------------------------------------------------------

$('classify-file').addEventListener('change', () => {
  const file = $('classify-file').files[0];
  const img = $('classify-preview');
  if (file) {
    img.src = URL.createObjectURL(file);
    img.hidden = false;
  }
});

$('classify-run').addEventListener('click', async () => {
  showError('classify-error', null);
  const list = $('classify-results');
  list.replaceChildren();
  const file = $('classify-file').files[0];
  const labels = $('classify-labels').value.split('\n').map((s) => s.trim()).filter((s) => s);
  if (!file) return showError('classify-error', 'choose an image first');
  try {
    const reply = await postJson('/v1/classify', { images: [{ encoded: await base64Of(file) }], labels });
    for (const score of reply.results[0].labels) {
      const li = document.createElement('li');
      li.dataset.label = score.label;
      const text = document.createElement('span');
      text.textContent = `${score.label}: ${percent(score.probability || 0)}`;
      const bar = document.createElement('div');
      bar.className = 'bar';
      bar.style.width = percent(score.probability || 0).replace(' ', '');
      li.append(text, bar);
      list.append(li);
    }
  } catch (e) {
    showError('classify-error', e);
  }
});

// ---- Search --------------------------------------------------------------------------------------------------

$('search-run').addEventListener('click', async () => {
  showError('search-error', null);
  const gallery = $('search-results');
  gallery.replaceChildren();
  const files = Array.from($('search-files').files);
  const query = $('search-query').value.trim();
  if (files.length === 0) return showError('search-error', 'choose some images first');
  try {
    const images = await Promise.all(files.map(async (f) => ({ encoded: await base64Of(f) })));
    const reply = await postJson('/v1/rank', { query_text: query, candidate_images: images });
    reply.results.forEach((result, rank) => {
      const index = result.index || 0;
      const li = document.createElement('li');
      li.dataset.file = files[index].name;
      if (rank === 0) li.className = 'best';
      const img = document.createElement('img');
      img.src = URL.createObjectURL(files[index]);
      img.alt = files[index].name;
      const caption = document.createElement('div');
      caption.textContent = `${rank + 1}. ${files[index].name} (${(result.score || 0).toFixed(3)})`;
      li.append(img, caption);
      gallery.append(li);
    });
  } catch (e) {
    showError('search-error', e);
  }
});

// ---- Generate ------------------------------------------------------------------------------------------------

const MIME = { IMAGE_FORMAT_JPEG: 'image/jpeg', IMAGE_FORMAT_WEBP: 'image/webp' };
let generation = null;  // the AbortController of the running generation

function showFrame(frame) {
  if (!frame || !frame.data) return;
  const img = $('generate-frame');
  img.src = `data:${MIME[frame.format] || 'image/png'};base64,${frame.data}`;
  img.hidden = false;
  img.dataset.frames = String(Number(img.dataset.frames || 0) + 1);
}

// Calls onEvent(name, data) for each Server-Sent Event of a fetch() response body.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(name, JSON.parse(data.join('\n')));
    }
  }
}

function setGenerationState(state) {
  document.body.dataset.generation = state;
  $('generate-run').disabled = state === 'running';
  $('generate-cancel').disabled = state !== 'running';
}

$('generate-run').addEventListener('click', async () => {
  showError('generate-error', null);
  const status = $('generate-status');
  const progress = $('generate-progress');
  const frame = $('generate-frame');
  frame.dataset.frames = '0';
  progress.value = 0;
  const request = {
    prompt: $('generate-prompt').value,
    steps: Number($('generate-steps').value),
    frame_every: Number($('generate-frame-every').value),
  };
  if ($('generate-seed').value !== '') request.seed = $('generate-seed').value;
  generation = new AbortController();
  setGenerationState('running');
  status.textContent = 'sending…';
  let finished = false;
  try {
    const response = await fetch('/v1/generate', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...authHeaders() },
      body: JSON.stringify(request),
      signal: generation.signal,
    });
    if (!response.ok) throw await errorOf(response);
    await readEvents(response, (name, data) => {
      if (name === 'accepted') {
        const a = data.accepted;
        status.textContent = a.queue_position ? `queued (position ${a.queue_position})` : `running, seed ${a.seed}`;
      } else if (name === 'progress') {
        const p = data.progress;
        progress.value = p.step / p.total_steps;
        const rate = p.elapsed_seconds > 0 ? (p.step / p.elapsed_seconds).toFixed(1) : '…';
        status.textContent = `step ${p.step}/${p.total_steps}, loss ${(p.loss || 0).toFixed(3)}, ` +
            `similarity ${(p.similarity || 0).toFixed(3)}, ${rate} steps/s`;
        showFrame(p.frame);
      } else if (name === 'completed') {
        const c = data.completed;
        finished = true;
        progress.value = 1;
        showFrame(c.image);
        status.textContent = `done: ${c.steps} steps in ${(c.elapsed_seconds || 0).toFixed(1)} s, ` +
            `similarity ${(c.similarity || 0).toFixed(3)}, seed ${c.seed}`;
      } else if (name === 'error') {
        const e = data.error;
        throw new Error(`${e.status} (HTTP ${e.code}): ${e.message}`);
      }
    });
    if (!finished) throw new Error('the stream ended without a result');
    setGenerationState('done');
  } catch (e) {
    if (e.name === 'AbortError') {
      status.textContent = 'cancelled';
      setGenerationState('cancelled');
    } else {
      showError('generate-error', e);
      setGenerationState('failed');
    }
  } finally {
    generation = null;
  }
});

$('generate-cancel').addEventListener('click', () => {
  if (generation) generation.abort();
});

loadModels();
