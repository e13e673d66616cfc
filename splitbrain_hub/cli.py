"""The ``splitbrain-hub`` command line: argparse, and the one place that turns errors into exit codes.

Subcommands are the rows of ``COMMANDS``: a new one is one entry (a help line, a function adding its
arguments, a function running it and returning the exit status).

The image commands (colorize, lightness, features) share one resumable batch runner,
``splitbrain_hub.batch``: inputs are files, folders (``--recursive`` for subfolders), glob patterns, list
files (``--from-file``) and WebDataset tar shards (``--shards``); DataLoader workers decode the next batches
while the network runs; outputs that exist are skipped; under ``torchrun`` the same command is one job over
several processes. Every command ends through ``exits.run``: a failure is one line on stderr (the traceback
with ``--debug``) and a documented exit status: 0 all done, 1 some inputs failed, 2 bad usage, input or
weights, 3 a full disk, read-only or wrong output path, 4 a bug, 130 interrupted.
"""
import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import exits
from .batch import jobs, loader
from .batch.runner import (
    ShardRows,
    rank_and_device,
    run_batches,
    save_image,
    save_npy,
    save_safetensors,
)
from .errors import InputError, SplitBrainError
from .exits import EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE
from .hub import sha256_of, weights_file
from .images import DEFAULT_MAX_PIXELS
from .inference import FEATURE_LAYERS, colorize, extract_features, load_model, predict_lightness
from .ops import AMP_SETTINGS, DEFAULT_TEMPERATURE, DEFAULT_UPSAMPLE, UPSAMPLERS, resolve_device
from .serve import command as serve_command  # argparse only; the web stack is imported when serve runs
from .version import __version__

__all__ = ['COMMANDS', 'EXIT_FAILED_INPUTS', 'EXIT_OK', 'EXIT_USAGE', 'build_parser', 'main']

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


def _amp(args: argparse.Namespace) -> dict:
    """``amp=`` for the inference call when --amp was given (otherwise each function's own default)."""
    return {} if args.amp is None else {'amp': args.amp}


def _image_command(predict: Callable) -> Callable[[argparse.Namespace], int]:
    """colorize / lightness: each input -> one PNG (alpha kept)."""
    def run(args: argparse.Namespace) -> int:
        rank, device = rank_and_device(args)
        model = load_model(args.weights, device)
        # Only colorize has --upsample (predict_lightness always interpolates bilinearly).
        extra = dict(_amp(args), **({'upsample': args.upsample} if 'upsample' in args else {}))

        def process(decoded: loader.Decoded) -> None:
            results = predict(decoded.images, temperature=args.temperature, model=model, size=args.size, **extra)
            for result, job in zip(results, decoded.jobs):
                save_image(result, job.outputs[0])
        return run_batches(args, args.command, jobs.Layout(args.output_dir, ('.png',)), process, rank, device)
    return run


def _run_features(args: argparse.Namespace) -> int:
    if args.per_shard and (args.inputs or args.from_file or not args.shards):
        raise InputError(f'--per-shard: expected --shards as the only inputs (one output file per shard), got '
                         f'{len(args.inputs)} other inputs, {len(args.from_file)} list files, {len(args.shards)} --shards')
    rank, device = rank_and_device(args)
    model = load_model(args.weights, device)
    layers = list(args.layers)
    suffixes = ('.safetensors',) if args.format == 'safetensors' else tuple(f'.{layer}.npy' for layer in layers)
    layout = jobs.Layout(args.output_dir, suffixes, f'.{args.format}' if args.per_shard else None)
    shard_rows = ShardRows(layers, args.format) if args.per_shard else None

    def process(decoded: loader.Decoded) -> None:
        features = extract_features(decoded.images, layers, pool=args.pool, size=args.size, model=model,
                                    batch_size=args.batch_size, **_amp(args))
        if shard_rows is not None:
            shard_rows.add(decoded.batch.shard_output, [job.member.key for job in decoded.jobs], features)
            return
        for i, job in enumerate(decoded.jobs):
            per_image = {layer: features[layer][i].cpu() for layer in layers}
            if args.format == 'safetensors':
                save_safetensors(per_image, job.outputs[0])
            else:
                for layer, output in zip(layers, job.outputs):
                    save_npy(per_image[layer].numpy(), output)
    return run_batches(args, 'features', layout, process, rank, device, shard_rows)


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
    from .deploy.caffe import convert_caffe
    report = convert_caffe(args.caffemodel, args.output_dir, force=args.force, pool5_stride=args.pool5_stride)
    print('\n'.join(report.lines()))
    return EXIT_OK


def _run_export(args: argparse.Namespace) -> int:
    from .deploy import export
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
    from .deploy.export import DEFAULT_OPSET, GRAPHS, PHOTO_GRAPHS, WEB_GRAPHS
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
    every_command = argparse.ArgumentParser(add_help=False)
    every_command.add_argument('--debug', action='store_true',
                               help=f'on failure, print the traceback too (for a bug report; or set {exits.DEBUG_ENV}=1)')
    subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name, command in COMMANDS.items():
        command.add_arguments(subparsers.add_parser(name, help=command.help, description=command.help,
                                                    parents=[every_command]))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its failure is one line on stderr and an exit status (see ``splitbrain_hub.exits``)."""
    args = build_parser().parse_args(argv)
    return exits.run(lambda: COMMANDS[args.command].run(args), debug=args.debug,
                     interrupted='interrupted; rerun the same command to finish (done outputs are skipped)')


if __name__ == '__main__':
    sys.exit(main())
