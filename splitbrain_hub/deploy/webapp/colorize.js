// The split-brain colorizer in the browser, with onnxruntime-web served from this folder: the photo is decoded,
// colorized and shown on this machine; nothing is fetched from anywhere but this folder, nothing is sent.
//
// Three ONNX graphs written by `splitbrain-hub export web` (see splitbrain_hub/export.py):
//   prepare:   photo RGB (1, 3, H, W) in [0, 1] -> the network input (1, 3, h, w), grey of the photo's L resized
//   colorize:  network input, temperature -> ab (1, 2, h', w') on the conv5 grid
//   recombine: photo, ab -> RGB (1, 3, H, W): the photo's own L, ab upsampled by the guided filter
import * as ort from './ort/ort.wasm.min.mjs';

ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href;
// Threads need a cross-origin isolated page (COOP/COEP headers), which a plain static host does not give.
ort.env.wasm.numThreads = 1;

const $ = (id) => document.getElementById(id);
const say = (text) => { $('status').textContent = text; };

let sessions = null;
let photo = null; // {tensor, image}: the last photo, so a new temperature re-runs without decoding it again

async function loadSessions(config) {
  const entries = await Promise.all(Object.entries(config.graphs).map(async ([name, file]) =>
    [name, await ort.InferenceSession.create(file, { executionProviders: ['wasm'] })]));
  return Object.fromEntries(entries);
}

async function decode(file) {
  // No colour-space conversion: the pixels are the file's own, as Pillow decodes them.
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext('2d');
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height);
}

function toTensor(image) {
  // RGBA bytes, row-major -> float32 (1, 3, H, W) in [0, 1]
  const plane = image.width * image.height;
  const rgb = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) rgb[c * plane + i] = image.data[4 * i + c] / 255;
  }
  return new ort.Tensor('float32', rgb, [1, 3, image.height, image.width]);
}

function toImageData(tensor, alphaFrom) {
  // float32 (1, 3, H, W) in [0, 1] -> RGBA bytes, the photo's own alpha kept
  const [, , height, width] = tensor.dims;
  const plane = width * height;
  const out = new ImageData(width, height);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) out.data[4 * i + c] = tensor.data[c * plane + i] * 255; // clamped and rounded
    out.data[4 * i + 3] = alphaFrom.data[4 * i + 3];
  }
  return out;
}

async function colorize() {
  const temperature = Number($('temperature').value);
  document.body.dataset.state = 'running';
  say(`Colorizing ${photo.image.width}×${photo.image.height}…`);
  const start = performance.now();
  const { rgb: networkInput } = await sessions.prepare.run({ photo: photo.tensor });
  const { ab } = await sessions.colorize.run({
    rgb: networkInput, temperature: new ort.Tensor('float32', new Float32Array([temperature]), []) });
  const { rgb } = await sessions.recombine.run({ photo: photo.tensor, ab });
  const result = $('result');
  result.width = photo.image.width;
  result.height = photo.image.height;
  result.getContext('2d').putImageData(toImageData(rgb, photo.image), 0, 0);
  const seconds = (performance.now() - start) / 1000;
  result.toBlob((blob) => {
    const link = $('download');
    if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.setAttribute('aria-disabled', 'false');
    say(`Done: ${result.width}×${result.height}, temperature ${temperature}, ${seconds.toFixed(2)} s on this machine.`);
    document.body.dataset.state = 'done';
  }, 'image/png');
}

async function openPhoto(file) {
  if (!file || !sessions) return;
  try {
    const image = await decode(file);
    photo = { image, tensor: toTensor(image) };
    await colorize();
  } catch (error) {
    say(`Could not colorize ${file.name}: ${error.message || error}`);
    document.body.dataset.state = 'error';
  }
}

function wire(config) {
  const drop = $('drop');
  const slider = $('temperature');
  slider.value = config.temperature;
  $('temperature-value').textContent = slider.value;
  slider.addEventListener('input', () => { $('temperature-value').textContent = slider.value; });
  slider.addEventListener('change', () => { if (photo) colorize(); });
  $('file').addEventListener('change', (event) => openPhoto(event.target.files[0]));
  drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    openPhoto(event.dataTransfer.files[0]);
  });
}

try {
  const config = await (await fetch('config.json')).json();
  wire(config);
  sessions = await loadSessions(config);
  say('Ready: drop a photo.');
  document.body.dataset.state = 'ready';
} catch (error) {
  say(`Could not load the model: ${error.message || error}`);
  document.body.dataset.state = 'error';
}
