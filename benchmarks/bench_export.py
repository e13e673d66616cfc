"""The exported ONNX graphs in onnxruntime (CPU) vs PyTorch: parity on real photos, file sizes, latency ratios.

    python benchmarks/bench_export.py [--weights PATH] [--onnx-dir DIR] [--photos DIR] [--rounds 7] [--skip-timing]

Exports the graphs of ``splitbrain_hub.deploy.export`` (into ``--onnx-dir``, reused when its files exist) and the web
page's float16 colorizer, then prints:

- parity (issue 14) at batch 1 and 5, at 128x128 and 192x256: colorize and lightness max |ab - ab_torch|
  (goal <= 0.05 Lab units), features max |f - f_torch| / max |f_torch| per layer (goal <= 1e-4), and the float16
  colorizer's max |ab - ab_torch|;
- latency, each against PyTorch measured in the same run: batch 1 at 128x128 (the colorize graph vs the same
  module in torch, fp32), and a 1024x768 photo end to end (prepare -> colorize -> recombine vs
  ``splitbrain_hub.colorize`` at its defaults and in fp32).

Photos: the images in ``--photos`` (e.g. the Kodak set), else the package's sample photo and scikit-image's.
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _timing import add_threads_argument, apply_threads, machine, measure
from PIL import Image

from splitbrain_hub import colorize, export
from splitbrain_hub.images import SAMPLE_PHOTO
from splitbrain_hub.inference import FEATURE_LAYERS, load_model

SIZES = ((128, 128), (192, 256))
T = 0.38


def photo_arrays(folder):
    if folder:
        return [np.asarray(Image.open(p).convert('RGB')) for p in sorted(Path(folder).glob('*.png'))[:5]]
    from skimage import data
    return [np.asarray(Image.open(SAMPLE_PHOTO).convert('RGB')), data.astronaut(), data.chelsea(), data.rocket(),
            data.hubble_deep_field()]


def batch_of(arrays, count, size):
    resized = [np.asarray(Image.fromarray(a).resize(size[::-1], Image.BILINEAR)) for a in arrays[:count]]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float().div(255)


def sessions(paths):
    return {name: ort.InferenceSession(str(path), providers=['CPUExecutionProvider']) for name, path in paths.items()}


def onnx_files(model, folder: Path):
    names = export.GRAPHS + export.PHOTO_GRAPHS
    paths = {name: folder / f'{name}.onnx' for name in names}
    if not all(path.is_file() for path in paths.values()):
        export.export_onnx(model, folder)
    fp16 = folder / 'web' / 'colorize.onnx'
    if not fp16.is_file():
        fp16.parent.mkdir(exist_ok=True)
        export.export_onnx(model, fp16.parent, graphs=('colorize',))
        export.to_fp16(fp16)
    return paths, fp16


def parity(model, graphs, fp16, arrays):
    colorizer = export.HalfPrediction(model, export.COLORIZE)
    lightness = export.HalfPrediction(model, export.LIGHTNESS)
    t = np.array(T, np.float32)
    print('# parity: onnxruntime CPU vs PyTorch (fp32), max |diff| (Lab units; features relative to max |f|)')
    for size in SIZES:
        for count in (1, 5):
            rgb = batch_of(arrays, count, size)
            with torch.no_grad():
                ab, light = colorizer(rgb, torch.tensor(T)), lightness(rgb, torch.tensor(T))
                features = model.forward_intermediates(rgb, intermediates_only=True)
            inputs = {'rgb': rgb.numpy(), 'temperature': t}
            row = {
                'colorize': np.abs(graphs['colorize'].run(None, inputs)[0] - ab.numpy()).max(),
                'colorize fp16 (web)': np.abs(fp16.run(None, inputs)[0] - ab.numpy()).max(),
                'lightness': np.abs(graphs['lightness'].run(None, inputs)[0] - light.numpy()).max(),
            }
            for layer, got, ref in zip(FEATURE_LAYERS, graphs['features'].run(None, {'rgb': rgb.numpy()}), features,
                                       strict=True):
                row[f'features {layer}'] = np.abs(got - ref.numpy()).max() / np.abs(ref.numpy()).max()
            print(f'batch {count}, {size[0]}x{size[1]}: ' + ', '.join(f'{k} {v:.2e}' for k, v in row.items()))


def pipeline(graphs, photo):
    network_input = graphs['prepare'].run(None, {'photo': photo})[0]
    ab = graphs['colorize'].run(None, {'rgb': network_input, 'temperature': np.array(T, np.float32)})[0]
    return graphs['recombine'].run(None, {'photo': photo, 'ab': ab})[0]


def latency(model, graphs, rounds):
    colorizer = export.HalfPrediction(model, export.COLORIZE)
    small = torch.rand(1, 3, 128, 128)
    inputs = {'rgb': small.numpy(), 'temperature': np.array(T, np.float32)}
    photo = np.asarray(Image.open(SAMPLE_PHOTO).convert('RGB').resize((1024, 768), Image.BICUBIC))
    photo_tensor = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float().div(255)
    times = measure({
        'torch: colorize graph, 128x128': lambda: colorizer(small, torch.tensor(T)),
        'onnxruntime: colorize graph, 128x128': lambda: graphs['colorize'].run(None, inputs),
        'torch: splitbrain_hub.colorize 1024x768': lambda: colorize(photo_tensor, model=model),
        'torch: colorize amp=off 1024x768': lambda: colorize(photo_tensor, model=model, amp='off'),
        'onnxruntime: prepare+colorize+recombine 1024x768': lambda: pipeline(graphs, photo_tensor.numpy()),
    }, rounds=rounds)
    print(f'# latency, median of {rounds} interleaved rounds; {machine()}, onnxruntime {ort.__version__}')
    for name, seconds in times.items():
        print(f'{name:50s} {seconds * 1e3:8.1f} ms')
    small_ratio = times['onnxruntime: colorize graph, 128x128'] / times['torch: colorize graph, 128x128']
    end = times['onnxruntime: prepare+colorize+recombine 1024x768']
    print(f'onnxruntime / torch, batch 1 at 128x128: {small_ratio:.2f}x')
    print(f'onnxruntime / torch colorize (defaults), 1024x768 end to end: '
          f'{end / times["torch: splitbrain_hub.colorize 1024x768"]:.2f}x')
    print(f'onnxruntime / torch colorize (amp=off), 1024x768 end to end: '
          f'{end / times["torch: colorize amp=off 1024x768"]:.2f}x')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', help='save_pretrained folder or .safetensors (default: the pretrained model)')
    parser.add_argument('--onnx-dir', type=Path, help='where the .onnx files are (exported there if missing)')
    parser.add_argument('--photos', help='a folder of .png photos for the parity check (the first 5)')
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--skip-timing', action='store_true', help='export, sizes and parity only')
    parser.add_argument('--skip-parity', action='store_true', help='sizes and timing only')
    add_threads_argument(parser)
    args = parser.parse_args()
    apply_threads(args)
    model = load_model(args.weights, 'cpu')
    folder = args.onnx_dir or Path(tempfile.mkdtemp(prefix='splitbrain-onnx-'))
    paths, fp16_path = onnx_files(model, folder)
    print('# files: ' + ', '.join(f'{p.name} {p.stat().st_size / 1e6:.1f} MB' for p in paths.values())
          + f', web colorize.onnx (fp16) {fp16_path.stat().st_size / 1e6:.1f} MB')
    graphs = sessions(paths)
    if not args.skip_parity:
        parity(model, graphs, sessions({'fp16': fp16_path})['fp16'], photo_arrays(args.photos))
    if not args.skip_timing:
        latency(model, graphs, args.rounds)


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    main()
