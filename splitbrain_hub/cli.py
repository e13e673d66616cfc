"""The ``splitbrain-hub`` command line: the only place in the package that prints or sets exit codes.

Subcommands are the rows of ``COMMANDS``: a new one is one entry (a help line, a function adding its
arguments, a function running it and returning the exit status).

The image commands (colorize, lightness, features) share one resumable batch runner: inputs are files,
folders (``--recursive`` for subfolders) and glob patterns; an input whose outputs all exist is skipped
unless ``--overwrite``; each output is written to a temporary file and renamed into place, so a killed
run never leaves half a file and a rerun does the rest. A file that cannot be read is reported (path
and reason) and skipped. Exit status: 0 all done, 1 some inputs failed, 2 bad usage or no model.
"""
import argparse
import glob
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from . import __version__
from .errors import SplitBrainError
from .images import read_image
from .inference import (DEFAULT_MODEL, DEFAULT_TEMPERATURE, FEATURE_LAYERS, colorize, extract_features, load_model,
                        predict_lightness, resolve_device)
from .serve import command as serve_command  # argparse only; the web stack is imported when serve runs
from .upsample import DEFAULT_UPSAMPLE, UPSAMPLERS
from .weights import WEIGHTS_NAME, atomic_write, resolve_pretrained_cfg_file, sha256_of

# What a folder contributes: files with these suffixes (files named explicitly are always tried).
IMAGE_SUFFIXES = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm'})
EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2

# What ``splitbrain-hub --help`` tells a user (the module docstring above is for developers).
DESCRIPTION = ('Colorize photos from their lightness, predict lightness from colour and extract self-supervised '
               'features with the split-brain autoencoder (Zhang, Isola, Efros, CVPR 2017); convert the '
               "authors' Caffe weights; serve the model over HTTP.")
EPILOG = ('Weights: the pretrained model unless --weights names a save_pretrained folder or a .safetensors '
          "file ('splitbrain-hub info' says which file). Options of a command: splitbrain-hub COMMAND --help.")


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Job:
    """One input file and the output files it produces (all must exist for it to count as done)."""
    source: Path
    outputs: Tuple[Path, ...]


# --- inputs and outputs ---------------------------------------------------------------------------

def _expand_inputs(inputs: Sequence[str], recursive: bool) -> Tuple[List[Tuple[Path, Path]], List[str]]:
    """Inputs -> (file, its output path relative to the output folder) and the inputs that matched nothing.

    Files in a folder keep their path relative to it (so same-named files in subfolders do not clash);
    files named directly or by a glob keep their name.
    """
    found: List[Tuple[Path, Path]] = []
    missing: List[str] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = path.rglob('*') if recursive else path.iterdir()
            found += sorted((f, f.relative_to(path)) for f in files if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists() or not glob.has_magic(text):
            found.append((path, Path(path.name)))
        else:
            matches = sorted(Path(m) for m in glob.glob(text, recursive=recursive) if Path(m).is_file())
            found += [(m, Path(m.name)) for m in matches]
            if not matches:
                missing.append(text)
    return found, missing


def _jobs(args: argparse.Namespace, suffixes: Sequence[str]) -> Tuple[List[Job], List[str]]:
    found, missing = _expand_inputs(args.inputs, args.recursive)
    jobs, owner = [], {}
    for source, relative in found:
        outputs = tuple(args.output_dir / relative.with_suffix(suffix) for suffix in suffixes)
        if outputs[0] in owner:
            if owner[outputs[0]] == source:
                continue  # the same file named twice
            raise SplitBrainError(f'{source} and {owner[outputs[0]]}: both would be written to {outputs[0]}; '
                                  'give them separately or rename one')
        owner[outputs[0]] = source
        jobs.append(Job(source, outputs))
    return jobs, missing


def _remove_stale_temporaries(jobs: Sequence[Job]) -> None:
    """Temporary files a killed run left next to its outputs (``weights.atomic_write`` names them)."""
    for job in jobs:
        for output in job.outputs:
            for stale in output.parent.glob(f'.{glob.escape(output.name)}.*.tmp'):
                stale.unlink(missing_ok=True)


def _write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file renamed over ``path`` (see ``weights.atomic_write``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def _save_image(image: Image.Image, path: Path) -> None:
    _write(path, lambda tmp: image.save(tmp, format='PNG'))


def _save_npy(array: np.ndarray, path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, 'wb') as f:  # a file object: np.save would append .npy to a path
            np.save(f, array)
    _write(path, write)


def _save_safetensors(tensors: Dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file
    _write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp))


# --- the batch runner -----------------------------------------------------------------------------

Process = Callable[[List[Image.Image], List[Job]], None]


def _run_batches(args: argparse.Namespace, name: str, suffixes: Sequence[str], process: Process) -> int:
    """Run ``process(images, jobs)`` over batches of readable inputs; print failures and the summary."""
    from tqdm import tqdm
    args.output_dir.mkdir(parents=True, exist_ok=True)
    jobs, missing = _jobs(args, suffixes)
    _remove_stale_temporaries(jobs)
    pending = [job for job in jobs if args.overwrite or not all(p.exists() for p in job.outputs)]
    skipped, done = len(jobs) - len(pending), 0
    failures = [(text, 'no such file, folder or matching file') for text in missing]
    with tqdm(total=len(pending), unit='img', desc=name, disable=None, file=sys.stderr) as bar:
        for failure in failures:
            bar.write(f'failed: {failure[0]}: {failure[1]}', file=sys.stderr)
        for start in range(0, len(pending), args.batch_size):
            readable, images = [], []
            for job in pending[start:start + args.batch_size]:
                try:
                    images.append(read_image(job.source))
                    readable.append(job)
                except SplitBrainError as e:
                    failures.append((str(job.source), str(e)))
                    bar.write(f'failed: {e}', file=sys.stderr)
                    bar.update(1)
            if images:
                try:
                    process(images, readable)
                    done += len(readable)
                except SplitBrainError as e:  # e.g. a model that cannot take these images
                    failures += [(str(job.source), str(e)) for job in readable]
                    bar.write(f'failed: {", ".join(str(job.source) for job in readable)}: {e}', file=sys.stderr)
                bar.update(len(readable))
    print(f'{name}: {done} done, {skipped} skipped (outputs exist), {len(failures)} failed; outputs in {args.output_dir}')
    return EXIT_FAILED_INPUTS if failures else EXIT_OK


def _image_command(predict: Callable) -> Callable[[argparse.Namespace], int]:
    """colorize / lightness: each input -> one PNG (alpha kept)."""
    def run(args: argparse.Namespace) -> int:
        model = load_model(args.weights, args.device)
        # Only colorize has --upsample (predict_lightness always interpolates bilinearly).
        extra = {'upsample': args.upsample} if 'upsample' in args else {}

        def process(images: List[Image.Image], jobs: List[Job]) -> None:
            results = predict(images, temperature=args.temperature, model=model, size=args.size, **extra)
            for result, job in zip(results, jobs):
                _save_image(result, job.outputs[0])
        return _run_batches(args, args.command, ['.png'], process)
    return run


def _run_features(args: argparse.Namespace) -> int:
    model = load_model(args.weights, args.device)
    layers = list(args.layers)
    suffixes = ['.safetensors'] if args.format == 'safetensors' else [f'.{layer}.npy' for layer in layers]

    def process(images: List[Image.Image], jobs: List[Job]) -> None:
        features = extract_features(images, layers, pool=args.pool, size=args.size, model=model,
                                    batch_size=args.batch_size)
        for i, job in enumerate(jobs):
            per_image = {layer: features[layer][i].cpu() for layer in layers}
            if args.format == 'safetensors':
                _save_safetensors(per_image, job.outputs[0])
            else:
                for layer, output in zip(layers, job.outputs):
                    _save_npy(per_image[layer].numpy(), output)
    return _run_batches(args, 'features', suffixes, process)


def _run_info(args: argparse.Namespace) -> int:
    print(f'splitbrain-hub {__version__} (torch {torch.__version__})')
    print(f'device: {resolve_device(args.device)}')
    try:
        if args.weights is not None:
            weights = Path(args.weights)
            source = weights / WEIGHTS_NAME if weights.is_dir() else weights
            load_model(args.weights, 'cpu')  # proves the file loads
        else:
            source = Path(resolve_pretrained_cfg_file(DEFAULT_MODEL).file)
    except SplitBrainError as e:
        print(f'weights: none usable: {e}')
        return EXIT_USAGE
    print(f'weights: {source}')
    print(f'sha256: {sha256_of(source)}')
    return EXIT_OK


def _run_convert_caffe(args: argparse.Namespace) -> int:
    from .caffe import convert_caffe
    report = convert_caffe(args.caffemodel, args.output_dir, force=args.force, pool5_stride=args.pool5_stride)
    print('\n'.join(report.lines()))
    return EXIT_OK


# --- arguments ------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected an integer >= 1, got {text}')
    return value


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--weights', metavar='PATH',
                        help='a save_pretrained folder or .safetensors file (default: the pretrained model)')
    parser.add_argument('--device', help='cpu, cuda, cuda:N or mps (default: cuda, then mps, then cpu)')


def _batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('inputs', nargs='+', metavar='IN', help='image files, folders or glob patterns')
    parser.add_argument('-o', '--output-dir', type=Path, required=True, metavar='OUTDIR')
    parser.add_argument('-r', '--recursive', action='store_true', help='include subfolders of folder inputs')
    parser.add_argument('--batch-size', type=_positive_int, default=8, help='images per forward pass (default 8)')
    parser.add_argument('--size', type=_positive_int, help='network input side (default: the model\'s)')
    parser.add_argument('--overwrite', action='store_true', help='redo inputs whose outputs exist (default: skip)')
    parser.add_argument('--max-pixels', type=_positive_int,
                        help=f'refuse larger images (default: Pillow\'s {Image.MAX_IMAGE_PIXELS:,})')
    _model_arguments(parser)


def _prediction_arguments(parser: argparse.ArgumentParser) -> None:
    _batch_arguments(parser)
    parser.add_argument('--temperature', type=float, default=DEFAULT_TEMPERATURE,
                        help=f'annealed-mean temperature (default {DEFAULT_TEMPERATURE}; lower is more vivid)')


def _colorize_arguments(parser: argparse.ArgumentParser) -> None:
    _prediction_arguments(parser)
    parser.add_argument('--upsample', choices=tuple(UPSAMPLERS), default=DEFAULT_UPSAMPLE,
                        help=f'how the coarse colour grid reaches full resolution (default {DEFAULT_UPSAMPLE}): guided '
                             'follows the edges of the photo\'s lightness, bilinear blurs colour across them')


def _feature_arguments(parser: argparse.ArgumentParser) -> None:
    _batch_arguments(parser)
    parser.add_argument('--layers', nargs='+', choices=FEATURE_LAYERS, default=list(FEATURE_LAYERS))
    parser.add_argument('--pool', type=_positive_int, help='resize each map to POOL x POOL (default: keep)')
    parser.add_argument('--format', choices=('safetensors', 'npy'), default='safetensors',
                        help='one .safetensors per image (all layers) or one .npy per image and layer')


def _convert_caffe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('caffemodel', type=Path, metavar='FILE', help='the binary .caffemodel')
    parser.add_argument('-o', '--output-dir', type=Path, required=True, metavar='DIR',
                        help='where model.safetensors and config.json go')
    parser.add_argument('--force', action='store_true',
                        help='convert even if weights connect the L and ab halves (they are dropped)')
    parser.add_argument('--pool5-stride', type=int, choices=(1, 2), default=1,
                        help="1 keeps the conv5 grid (default); 2 is the release's pool5 (needed for its fc6/fc7)")


COMMANDS: Dict[str, Command] = {
    'colorize': Command('colorize images from their lightness (L half): PNG per image',
                        _colorize_arguments, _image_command(colorize)),
    'lightness': Command('predict lightness from colour (ab half): greyscale PNG per image',
                         _prediction_arguments, _image_command(predict_lightness)),
    'features': Command('extract conv1..conv5 features per image (.safetensors or .npy)',
                        _feature_arguments, _run_features),
    'info': Command('version, weights file and sha256, device', _model_arguments, _run_info),
    'convert-caffe': Command("convert the authors' Caffe .caffemodel to a save_pretrained folder",
                             _convert_caffe_arguments, _run_convert_caffe),
    'serve': Command('HTTP API and web page on --host/--port (needs the serve extra)',
                     serve_command.add_arguments, serve_command.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='splitbrain-hub', description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name, command in COMMANDS.items():
        command.add_arguments(subparsers.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # Pillow warns between its limit and twice it; images.read_image refuses those with a clearer message.
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    if getattr(args, 'max_pixels', None) is not None:
        Image.MAX_IMAGE_PIXELS = args.max_pixels
    try:
        return COMMANDS[args.command].run(args)
    except SplitBrainError as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print('interrupted; rerun the same command to finish (done outputs are skipped)', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
