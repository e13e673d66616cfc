// The page's only script: pick or drop a photo, POST it to /v1/colorize, show the three panels.
// Moving the temperature slider re-runs the request (an older one still running is aborted).
'use strict';

const $ = (id) => document.getElementById(id);
let photo = null;          // the File being shown
let running = null;        // AbortController of the request in flight
let resultUrl = null;      // object URL of the current result, revoked when replaced

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

// The lightness panel: Rec. 709 luma of the original, drawn at its full size.
function drawGrey(img) {
  const canvas = $('grey');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  const d = pixels.data;
  for (let i = 0; i < d.length; i += 4) {
    const y = 0.2126 * d[i] + 0.7152 * d[i + 1] + 0.0722 * d[i + 2];
    d[i] = d[i + 1] = d[i + 2] = y;
  }
  context.putImageData(pixels, 0, 0);
}

async function colorize() {
  if (!photo) return;
  if (running) running.abort();
  const controller = new AbortController();
  running = controller;
  const temperature = $('temperature').value;
  const form = new FormData();
  form.append('image', photo);
  form.append('temperature', temperature);
  setStatus(`Colorizing at temperature ${temperature}…`);
  const started = performance.now();
  try {
    const response = await fetch('/v1/colorize', { method: 'POST', body: form, signal: controller.signal });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ error: response.status, detail: response.statusText }));
      setStatus(`Refused (${problem.error}): ${problem.detail}`, true);
      return;
    }
    const blob = await response.blob();
    if (resultUrl) URL.revokeObjectURL(resultUrl);
    resultUrl = URL.createObjectURL(blob);
    $('result').src = resultUrl;
    $('download').href = resultUrl;
    $('download').download = photo.name.replace(/\.[^.]*$/, '') + '.colorized.png';
    $('download').setAttribute('aria-disabled', 'false');
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(`Colorized at temperature ${temperature} in ${seconds} s.`);
  } catch (error) {
    if (error.name !== 'AbortError') setStatus(`Request failed: ${error.message}`, true);
  } finally {
    if (running === controller) running = null;
  }
}

function show(file) {
  if (!file) return;
  photo = file;
  const url = URL.createObjectURL(file);
  const original = $('original');
  original.onload = () => drawGrey(original);
  original.onerror = () => setStatus('This browser cannot show the file; the server may still read it.', true);
  original.src = url;
  colorize();
}

$('file').addEventListener('change', (event) => show(event.target.files[0]));
const drop = $('drop');
['dragenter', 'dragover'].forEach((name) => drop.addEventListener(name, (event) => {
  event.preventDefault();
  drop.classList.add('over');
}));
['dragleave', 'drop'].forEach((name) => drop.addEventListener(name, (event) => {
  event.preventDefault();
  drop.classList.remove('over');
}));
drop.addEventListener('drop', (event) => show(event.dataTransfer.files[0]));

$('temperature').addEventListener('input', () => { $('temperature-value').textContent = $('temperature').value; });
$('temperature').addEventListener('change', colorize);

fetch('/v1/info').then((r) => (r.ok ? r.json() : null)).then((info) => {
  if (info) {
    $('info').textContent = `splitbrain-hub ${info.version} · ${info.architecture} · weights sha256 ` +
      `${info.weights_sha256.slice(0, 12)}… · ${info.device} · network input ${info.input_size.join('×')}`;
  }
}).catch(() => {});
