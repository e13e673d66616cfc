"""Coverage-guided fuzzing (atheris: libFuzzer for Python) of the two readers of foreign bytes.

    python scripts/fuzz.py caffe --seconds 1200        # caffe.read_caffemodel on mutated .caffemodel bytes
    python scripts/fuzz.py image --seconds 1200        # the image decoders on mutated image bytes

Targets, both started from the small valid files in ``tests/fuzz_corpus/<target>/``:

* ``caffe``: the bytes as a file, read by ``splitbrain_hub.caffe.read_caffemodel``; allowed: ``ConversionError``.
* ``image``: the bytes through the package's one image decoder, ``images.decode_image``, at the service's
  default limit of 4096x4096 pixels and at the default limit of files; allowed: ``InputError``, which the
  service must map to a 4xx status (``serve.errors.refused_image``).

Anything else (another exception, a hang past ``--timeout`` seconds for one input, more than ``--rss-mb``
of memory) is a crash: libFuzzer stops and writes the input as ``crash-<sha1>`` (or ``timeout-``/``oom-``)
in ``--artifacts``. Each crash found becomes a regression input in ``tests/fuzz_corpus/<target>/`` that
``tests/test_fuzz.py`` replays. New inputs that reach new code go to ``--corpus-out`` (not the repository).
The closing line says how many inputs ran in how many seconds.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import atheris

# Coverage is tracked in our code and Pillow's Python parts only (instrumenting torch would take minutes).
with atheris.instrument_imports(include=['splitbrain_hub', 'PIL']):
    from splitbrain_hub.deploy.caffe import read_caffemodel
    from splitbrain_hub.errors import ConversionError, InputError
    from splitbrain_hub.images import DEFAULT_MAX_PIXELS, decode_image
    from splitbrain_hub.serve.config import ServeConfig
    from splitbrain_hub.serve.errors import refused_image

CORPUS = Path(__file__).resolve().parents[1] / 'tests' / 'fuzz_corpus'
SCRATCH = Path(tempfile.mkdtemp(prefix='splitbrain-fuzz-'))


def caffe(data: bytes) -> None:
    path = SCRATCH / 'input.caffemodel'
    path.write_bytes(data)
    try:
        read_caffemodel(path)
    except ConversionError:
        pass


def image(data: bytes) -> None:
    for max_pixels in (ServeConfig().max_pixels, DEFAULT_MAX_PIXELS):
        try:
            decode_image(data, max_pixels, 'fuzz input')
        except InputError as e:
            status = refused_image(e).status
            if not 400 <= status < 500:
                raise AssertionError(f'the service would answer {status} to {e}') from e


TARGETS = {'caffe': caffe, 'image': image}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('target', choices=TARGETS)
    parser.add_argument('--seconds', type=int, default=60, help='how long to fuzz (default 60)')
    parser.add_argument('--timeout', type=int, default=10, help='seconds one input may take (default 10)')
    parser.add_argument('--rss-mb', type=int, default=2048, help='memory limit of the process (default 2048)')
    parser.add_argument('--max-len', type=int, default=65536, help='largest input in bytes (default 64 KiB)')
    parser.add_argument('--artifacts', type=Path, default=Path('fuzz-artifacts'), help='where crashes are written')
    parser.add_argument('--corpus-out', type=Path, help='folder for the inputs that reach new code (default: a temp folder)')
    args = parser.parse_args()
    corpus_out = args.corpus_out or Path(tempfile.mkdtemp(prefix=f'splitbrain-fuzz-{args.target}-'))
    corpus_out.mkdir(parents=True, exist_ok=True)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    libfuzzer = [sys.argv[0], str(corpus_out), str(CORPUS / args.target), f'-max_total_time={args.seconds}',
                 f'-timeout={args.timeout}', f'-rss_limit_mb={args.rss_mb}', f'-max_len={args.max_len}',
                 f'-artifact_prefix={args.artifacts}{os.sep}', '-print_final_stats=1']
    start = time.monotonic()
    print(f'fuzzing {args.target} for {args.seconds} s; corpus {corpus_out}', file=sys.stderr, flush=True)
    atheris.Setup(libfuzzer, TARGETS[args.target])
    try:
        atheris.Fuzz()
    finally:
        print(f'{args.target}: {time.monotonic() - start:.0f} s', file=sys.stderr)


if __name__ == '__main__':
    main()
