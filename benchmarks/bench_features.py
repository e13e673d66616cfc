"""Feature-extraction throughput: extract_features (conv1..conv5, batch 64, 227x227) vs torchvision's AlexNet.

    python benchmarks/bench_features.py [--rounds 5] [--batch 64]

Baseline: ``torchvision.models.alexnet().features`` (conv1..pool5) on the same batch, eval mode,
``torch.inference_mode``, in channels_last (its faster layout on CPU). Our conv1..conv5 need 0.82x its
multiply-adds (about 538 M vs 655 M per 227x227 image), so the goal (issue 11) is >= 1.2x its images/s.
``extract_features`` is fp32 by default; ``amp='bf16'`` is timed beside it.

Rows: the public call (RGB in [0, 1] -> Lab inside the model -> all five taps; the model runs its towers in
channels_last), its
parts (the RGB->Lab conversion alone; the two towers alone on precomputed Lab, NCHW and channels_last),
and torchvision in channels_last for reference.
"""
import argparse

import timm
import torch
import torchvision
from _timing import add_threads_argument, apply_threads, machine, measure

from splitbrain_hub import extract_features
from splitbrain_hub.hub import DEFAULT_ARCHITECTURE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--batch', type=int, default=64)
    add_threads_argument(parser)
    args = parser.parse_args()
    apply_threads(args)
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, 227, 227)
    model = timm.create_model(DEFAULT_ARCHITECTURE).eval()
    alexnet = torchvision.models.alexnet().features.eval()
    alexnet_cl = torchvision.models.alexnet().features.eval().to(memory_format=torch.channels_last)
    images_cl = images.contiguous(memory_format=torch.channels_last)
    lab_input_cl = model.data_lab(images)  # the model hands its towers channels_last
    lab_input = lab_input_cl.contiguous()

    def towers_only(lab):
        return model.features.forward_each(lab)

    with torch.inference_mode():
        times = measure({
            'torchvision alexnet().features': lambda: alexnet(images),
            'extract_features (public call)': lambda: extract_features(images, model=model, size=227, batch_size=args.batch),
            'extract_features, amp=bf16': lambda: extract_features(images, model=model, size=227, batch_size=args.batch,
                                                                   amp='bf16'),
            'RGB -> Lab alone (data_lab)': lambda: model.data_lab(images),
            'towers conv1..pool5 on Lab, NCHW': lambda: towers_only(lab_input),
            'towers conv1..pool5, channels_last': lambda: towers_only(lab_input_cl),
            'torchvision, channels_last': lambda: alexnet_cl(images_cl),
        }, rounds=args.rounds)
    print(f'# features, batch {args.batch} x 3 x 227 x 227, float32 CPU; {machine()}')
    for name, seconds in times.items():
        print(f'{name:34s} {seconds * 1e3:8.0f} ms  {args.batch / seconds:7.1f} img/s')
    base = times['torchvision, channels_last']
    for name in ('extract_features (public call)', 'extract_features, amp=bf16'):
        ratio = base / times[name]
        print(f'{name} img/s / torchvision channels_last img/s: {ratio:.2f}x '
              f'(goal >= 1.2x: {"met" if ratio >= 1.2 else "missed"})')
    for name in ('towers conv1..pool5 on Lab, NCHW', 'towers conv1..pool5, channels_last'):
        print(f'{name} / torchvision: {base / times[name]:.2f}x img/s')
    print(f'RGB -> Lab alone takes {times["RGB -> Lab alone (data_lab)"] / base:.2f}x torchvision\'s whole forward')


if __name__ == '__main__':
    main()
