"""The ``splitbrain-hub`` command line: the only place in the package that prints or sets exit codes.

Subcommands are the rows of ``COMMANDS``: a new one is one entry (a help line, a function adding its
arguments, a function running it and returning the exit status).

The image commands (colorize, lightness, features) share one resumable batch runner: inputs are files,
folders (``--recursive`` for subfolders), glob patterns, list files (``--from-file``) and WebDataset tar
shards (``--shards``), see ``jobs.py``; DataLoader workers decode the next batches while the network
runs (``loader.py``). An input whose outputs all exist is skipped unless ``--overwrite``; each output
is written to a temporary file and renamed into place, so a killed run never leaves half a file and a
rerun does the rest. A file that cannot be read is reported (path and reason) and skipped. Exit
status: 0 all done, 1 some inputs failed, 2 bad usage or no model.

Started by ``torchrun``, the same command is one job over several processes (``distributed.py``): each
takes its share of the inputs and its own GPU, and rank 0 prints the summary of all of them; every
process returns exit status 1 if any of them had failures.
"""
import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import __version__, distributed, jobs, loader
from .errors import InputError, SplitBrainError
from .files import atomic_write
from .images import DEFAULT_MAX_PIXELS
from .inference import (
    DEFAULT_TEMPERATURE,
    FEATURE_LAYERS,
    colorize,
    extract_features,
    load_model,
    predict_lightness,
    resolve_device,
)
from .precision import AMP_SETTINGS
from .serve import command as serve_command  # argparse only; the web stack is imported when serve runs
from .upsample import DEFAULT_UPSAMPLE, UPSAMPLERS
from .weights import sha256_of, weights_file

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


# --- writing outputs ------------------------------------------------------------------------------

def _write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file renamed over ``path`` (see ``files.atomic_write``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def _save_image(image: Image.Image, path: Path) -> None:
    _write(path, lambda tmp: image.save(tmp, format='PNG'))


def _save_npy(array: np.ndarray, path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, 'wb') as f:  # a file object: np.save would append .npy to a path
            np.save(f, array)
    _write(path, write)


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file
    _write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata))


class _ShardRows:
    """Features of the images of one shard, gathered batch by batch, written as one file when the shard ends.

    safetensors: one (N, C, h, w) tensor per layer, the N image keys in the metadata (``keys``, a JSON
    list, row order). npy: one structured array of N rows with fields ``key`` and one per layer.
    """

    def __init__(self, layers: Sequence[str], file_format: str) -> None:
        self.layers, self.format = list(layers), file_format
        self.keys: dict[Path, list[str]] = defaultdict(list)
        self.rows: dict[Path, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))

    def add(self, output: Path, keys: list[str], features: dict[str, torch.Tensor]) -> None:
        self.keys[output] += keys
        for layer in self.layers:
            self.rows[output][layer].append(features[layer].cpu())

    def write(self, output: Path) -> None:
        keys, rows = self.keys.pop(output, []), self.rows.pop(output, {})
        if not keys:
            return  # no image of the shard could be read: its failures are reported, there is nothing to write
        stacked = {layer: torch.cat(rows[layer]).contiguous() for layer in self.layers}
        if self.format == 'safetensors':
            _save_safetensors(stacked, output, metadata={'keys': json.dumps(keys)})
            return
        fields = [('key', f'U{max(1, max(map(len, keys)))}')]
        fields += [(layer, '<f4', tuple(stacked[layer].shape[1:])) for layer in self.layers]
        table = np.empty(len(keys), dtype=fields)
        table['key'] = keys
        for layer in self.layers:
            table[layer] = stacked[layer].numpy()
        _save_npy(table, output)


# --- the batch runner -----------------------------------------------------------------------------

Process = Callable[[loader.Decoded], None]


def _rank_and_device(args: argparse.Namespace):
    """This process's rank (torchrun's, or the only one) and its device (GPU ``LOCAL_RANK`` under torchrun)."""
    if not (args.inputs or args.from_file or args.shards):
        raise InputError('inputs: expected image files, folders or patterns, --from-file or --shards, got none')
    rank = distributed.from_environment()
    return rank, distributed.local_device(resolve_device(args.device), rank)


def _run_batches(args: argparse.Namespace, name: str, layout: jobs.Layout, process: Process, rank: distributed.Rank,
                 device: torch.device, shard_rows: _ShardRows | None = None) -> int:
    """Run ``process`` over this rank's batches, decoded ahead; print failures; rank 0 prints the summary."""
    from tqdm import tqdm
    start = time.perf_counter()
    with distributed.process_group(rank, device):
        args.output_dir.mkdir(parents=True, exist_ok=True)
        parts, missing = jobs.plan(args.inputs, args.from_file, args.shards, args.recursive, layout, args.batch_size)
        batches, skipped, failures = jobs.batches_to_run(distributed.share(parts, rank), layout, args.batch_size,
                                                         args.overwrite)
        failures = (missing if rank.rank == 0 else []) + failures  # every rank finds the same missing inputs
        done, waiting = 0, 0.0
        workers = loader.default_workers(rank.local_world_size) if args.workers is None else args.workers
        decoded_batches = iter(loader.decoded_batches(batches, workers, device.type == 'cuda', args.max_pixels))
        desc = name if rank.world_size == 1 else f'{name} ({rank})'
        with tqdm(total=sum(len(b.jobs) for b in batches), unit='img', desc=desc, file=sys.stderr,
                  disable=None if rank.rank == 0 else True) as bar:
            for _, message in failures:
                bar.write(f'failed: {message}', file=sys.stderr)
            while True:
                before = time.perf_counter()
                decoded = next(decoded_batches, None)
                waiting += time.perf_counter() - before  # the network idles while it waits for images
                if decoded is None:
                    break
                for job, message in decoded.failures:
                    failures.append((job.name, message))
                    bar.write(f'failed: {message}', file=sys.stderr)
                if decoded.images:
                    try:
                        process(decoded)
                        done += len(decoded.jobs)
                    except SplitBrainError as e:  # e.g. a model that cannot take these images
                        failures += [(job.name, f'{job.name}: {e}') for job in decoded.jobs]
                        bar.write(f'failed: {", ".join(job.name for job in decoded.jobs)}: {e}', file=sys.stderr)
                if shard_rows is not None and decoded.batch.last:
                    shard_rows.write(decoded.batch.shard_output)
                bar.update(len(decoded.batch.jobs))
        mine = [done, skipped, len(failures), waiting, time.perf_counter() - start]
        ranks = distributed.every_rank(mine, rank, device)
    done, skipped, failed, waiting, seconds = (sum(column) for column in zip(*ranks))
    if rank.rank == 0:
        wall = max(row[4] for row in ranks)  # the job ends with its slowest rank
        unit = 'shards skipped (outputs exist)' if layout.shard_suffix else 'skipped (outputs exist)'
        processes = '' if rank.world_size == 1 else f' by {rank.world_size} processes'
        speed = (f' in {wall:.1f} s ({done / wall:.1f} img/s, {100 * waiting / seconds:.0f} % of the time waiting '
                 'for images)') if done else ''
        print(f'{name}: {done:.0f} done, {skipped:.0f} {unit}, {failed:.0f} failed{processes}{speed}; '
              f'outputs in {args.output_dir}')
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


def _amp(args: argparse.Namespace) -> dict:
    """``amp=`` for the inference call when --amp was given (otherwise each function's own default)."""
    return {} if args.amp is None else {'amp': args.amp}


def _image_command(predict: Callable) -> Callable[[argparse.Namespace], int]:
    """colorize / lightness: each input -> one PNG (alpha kept)."""
    def run(args: argparse.Namespace) -> int:
        rank, device = _rank_and_device(args)
        model = load_model(args.weights, device)
        # Only colorize has --upsample (predict_lightness always interpolates bilinearly).
        extra = dict(_amp(args), **({'upsample': args.upsample} if 'upsample' in args else {}))

        def process(decoded: loader.Decoded) -> None:
            results = predict(decoded.images, temperature=args.temperature, model=model, size=args.size, **extra)
            for result, job in zip(results, decoded.jobs):
                _save_image(result, job.outputs[0])
        return _run_batches(args, args.command, jobs.Layout(args.output_dir, ('.png',)), process, rank, device)
    return run


def _run_features(args: argparse.Namespace) -> int:
    if args.per_shard and (args.inputs or args.from_file or not args.shards):
        raise InputError(f'--per-shard: expected --shards as the only inputs (one output file per shard), got '
                         f'{len(args.inputs)} other inputs, {len(args.from_file)} list files, {len(args.shards)} --shards')
    rank, device = _rank_and_device(args)
    model = load_model(args.weights, device)
    layers = list(args.layers)
    suffixes = ('.safetensors',) if args.format == 'safetensors' else tuple(f'.{layer}.npy' for layer in layers)
    layout = jobs.Layout(args.output_dir, suffixes, f'.{args.format}' if args.per_shard else None)
    shard_rows = _ShardRows(layers, args.format) if args.per_shard else None

    def process(decoded: loader.Decoded) -> None:
        features = extract_features(decoded.images, layers, pool=args.pool, size=args.size, model=model,
                                    batch_size=args.batch_size, **_amp(args))
        if shard_rows is not None:
            shard_rows.add(decoded.batch.shard_output, [job.member.key for job in decoded.jobs], features)
            return
        for i, job in enumerate(decoded.jobs):
            per_image = {layer: features[layer][i].cpu() for layer in layers}
            if args.format == 'safetensors':
                _save_safetensors(per_image, job.outputs[0])
            else:
                for layer, output in zip(layers, job.outputs):
                    _save_npy(per_image[layer].numpy(), output)
    return _run_batches(args, 'features', layout, process, rank, device, shard_rows)


def _run_info(args: argparse.Namespace) -> int:
    print(f'splitbrain-hub {__version__} (torch {torch.__version__})')
    print(f'device: {resolve_device(args.device)}')
    try:
        source = weights_file(args.weights)
        if args.weights is not None:
            load_model(args.weights, 'cpu')  # proves the file loads
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


def _run_export(args: argparse.Namespace) -> int:
    from . import export
    model = load_model(args.weights, 'cpu')
    if args.format == 'onnx':
        paths = list(export.export_onnx(model, args.output_dir, args.opset).values())
    elif args.format == 'torch':
        paths = list(export.export_programs(model, args.output_dir).values())
    else:
        paths = export.export_web(model, args.output_dir, args.ort_dist, args.opset)
    for path in paths:
        print(f'{path} ({path.stat().st_size / 1e6:.1f} MB)')
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
    parser.add_argument('--device', help='cpu, cuda, cuda:N or mps (default: cuda, then mps, then cpu); '
                                         "under torchrun cuda means each process's GPU LOCAL_RANK")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0, got {text}')
    return value


def _batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('inputs', nargs='*', metavar='IN', help='image files, folders or glob patterns')
    parser.add_argument('-o', '--output-dir', type=Path, required=True, metavar='OUTDIR')
    parser.add_argument('-r', '--recursive', action='store_true', help='include subfolders of folder inputs')
    parser.add_argument('--from-file', type=Path, action='append', default=[], metavar='LIST',
                        help='a text file of image paths, one a line; outputs mirror the listed paths (repeatable)')
    parser.add_argument('--shards', action='append', default=[], metavar='PATTERN',
                        help="WebDataset tar shards, e.g. 'train-{000000..000146}.tar' (braces and globs; repeatable); "
                             'outputs go to OUTDIR/<shard name>/<key>')
    parser.add_argument('--workers', type=_non_negative_int, metavar='N',
                        help='processes decoding images ahead of the model, per process of the job '
                             '(default: the cores shared among the processes on this machine, at most 8; 0: none)')
    parser.add_argument('--batch-size', type=_positive_int, default=8, help='images per forward pass (default 8)')
    parser.add_argument('--size', type=_positive_int, help="network input side (default: the model's)")
    parser.add_argument('--overwrite', action='store_true', help='redo inputs whose outputs exist (default: skip)')
    parser.add_argument('--max-pixels', type=_positive_int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images of more pixels (default {DEFAULT_MAX_PIXELS:,}, Pillow's own limit)")
    _model_arguments(parser)


def _prediction_arguments(parser: argparse.ArgumentParser) -> None:
    _batch_arguments(parser)
    parser.add_argument('--temperature', type=float, default=DEFAULT_TEMPERATURE,
                        help=f'annealed-mean temperature (default {DEFAULT_TEMPERATURE}; lower is more vivid)')
    _amp_argument(parser, 'colorize: auto, bf16 where native; lightness: off')


def _amp_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument('--amp', choices=AMP_SETTINGS,
                        help=f'precision of the network: auto (bf16 where the CPU or GPU runs it natively), '
                             f'bf16 or off (fp32) (default: {default})')


def _colorize_arguments(parser: argparse.ArgumentParser) -> None:
    _prediction_arguments(parser)
    parser.add_argument('--upsample', choices=tuple(UPSAMPLERS), default=DEFAULT_UPSAMPLE,
                        help=f'how the coarse colour grid reaches full resolution (default {DEFAULT_UPSAMPLE}): guided '
                             "follows the edges of the photo's lightness, bilinear blurs colour across them")


def _feature_arguments(parser: argparse.ArgumentParser) -> None:
    _batch_arguments(parser)
    parser.add_argument('--layers', nargs='+', choices=FEATURE_LAYERS, default=list(FEATURE_LAYERS))
    parser.add_argument('--pool', type=_positive_int, help='resize each map to POOL x POOL (default: keep)')
    parser.add_argument('--format', choices=('safetensors', 'npy'), default='safetensors',
                        help='one .safetensors per image (all layers) or one .npy per image and layer')
    parser.add_argument('--per-shard', action='store_true',
                        help='with --shards: one file per shard (OUTDIR/<shard name>.safetensors or .npy), '
                             'the image keys inside, instead of one per image')
    _amp_argument(parser, 'off, fp32')


def _convert_caffe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('caffemodel', type=Path, metavar='FILE', help='the binary .caffemodel')
    parser.add_argument('-o', '--output-dir', type=Path, required=True, metavar='DIR',
                        help='where model.safetensors and config.json go')
    parser.add_argument('--force', action='store_true',
                        help='convert even if weights connect the L and ab halves (they are dropped)')
    parser.add_argument('--pool5-stride', type=int, choices=(1, 2), default=1,
                        help="1 keeps the conv5 grid (default); 2 is the release's pool5 (needed for its fc6/fc7)")


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    from .export import DEFAULT_OPSET, GRAPHS, PHOTO_GRAPHS, WEB_GRAPHS
    parser.add_argument('format', choices=('onnx', 'torch', 'web'),
                        help=f'onnx: {", ".join(GRAPHS + PHOTO_GRAPHS)} as .onnx; torch: {", ".join(GRAPHS)} as '
                             f'torch.export .pt2; web: a static folder that colorizes in the browser '
                             f'({", ".join(WEB_GRAPHS)} with onnxruntime-web)')
    parser.add_argument('-o', '--output-dir', type=Path, required=True, metavar='DIR')
    parser.add_argument('--weights', metavar='PATH',
                        help='a save_pretrained folder or .safetensors file (default: the pretrained model)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, metavar='N',
                        help=f'ONNX opset of onnx and web (default {DEFAULT_OPSET})')
    parser.add_argument('--ort-dist', type=Path, metavar='DIR',
                        help="web: onnxruntime-web's dist folder (default: web/node_modules/onnxruntime-web/dist "
                             'of the source checkout, filled by npm ci in web/)')


COMMANDS: dict[str, Command] = {
    'colorize': Command('colorize images from their lightness (L half): PNG per image',
                        _colorize_arguments, _image_command(colorize)),
    'lightness': Command('predict lightness from colour (ab half): greyscale PNG per image',
                         _prediction_arguments, _image_command(predict_lightness)),
    'features': Command('extract conv1..conv5 features per image (.safetensors or .npy)',
                        _feature_arguments, _run_features),
    'info': Command('version, weights file and sha256, device', _model_arguments, _run_info),
    'convert-caffe': Command("convert the authors' Caffe .caffemodel to a save_pretrained folder",
                             _convert_caffe_arguments, _run_convert_caffe),
    'export': Command('export the model for use without PyTorch: ONNX, torch.export, or a static browser page',
                      _export_arguments, _run_export),
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
