"""The trainer: every objective spec learns, exact resume after SIGKILL, export round trip, the data readers."""
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from PIL import Image

import splitbrain_hub  # noqa: F401
from splitbrain_hub.errors import InputError
from splitbrain_hub.hub import load_safetensors, sha256_of
from splitbrain_hub.models.splitbrain_alexnet import ALEXNET_LAYERS
from splitbrain_hub.ops.bins import ab_bin_count
from splitbrain_hub.ops.color import rgb_to_lab
from training.config import parse_args
from training.data import BatchStream, build_index, make_loader, read_bytes
from training.export import main as export_main
from training.export import parse_export_args
from training.objectives import OBJECTIVES, Objective, get_objective
from training.train import CHECKPOINT, load_init_weights

REPO = Path(__file__).resolve().parents[1]
SHARD = REPO.parent / 'shared' / 'datasets' / 'tiny-imagenet' / 'train-000000.tar'
# The real AlexNet has 30-60 M parameters: too slow for a test on a shared CPU. Another layer table, every
# width divided by 8 (kernels, strides, grid unchanged), keeps each tiny run under a second.
TINY_LAYERS = {'convs': [[name, chs // 8, *rest] for name, chs, *rest in ALEXNET_LAYERS['convs']],
               'fcs': [[name, chs // 64, *rest] for name, chs, *rest in ALEXNET_LAYERS['fcs']]}
TINY = f'--layers={json.dumps(TINY_LAYERS)}'


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """RGB in [0, 1] with structure a network can learn: random 4x4 colour fields upsampled."""
    generator = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=generator), size=size, mode='bilinear', align_corners=False)


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory) -> Path:
    """3 classes x 8 PNGs of 64x64, one of them greyscale."""
    root = tmp_path_factory.mktemp('folder')
    images = (smooth_images(24, 64, seed=1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, array in enumerate(images):
        (root / f'class{i % 3}').mkdir(exist_ok=True)
        image = Image.fromarray(array).convert('L') if i == 5 else Image.fromarray(array)
        image.save(root / f'class{i % 3}' / f'{i:03d}.png')
    return root


@pytest.mark.parametrize('name', sorted(OBJECTIVES))
def test_each_objective_learns_a_fixed_batch(name):
    torch.manual_seed(0)
    spec = get_objective(name)
    model = timm.create_model(spec.architecture, **spec.model_kwargs(), layers=TINY_LAYERS)
    objective = Objective(model, spec, ab_prior=torch.rand(ab_bin_count()) + 0.1)
    lab = rgb_to_lab(smooth_images(4, 96))
    labels, colour = torch.tensor([0, 1, 2, 3]), torch.ones(4, dtype=torch.bool)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(8):
        torch.manual_seed(1)  # the same input dropout every step: a fixed problem
        loss, per_term = objective(lab, labels, colour)
        assert per_term and all(torch.isfinite(v) for v in per_term.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(dict({k: v.item() for k, v in per_term.items()}, total=loss.item()))
    first, last = history[0], history[-1]
    assert all(last[k] < first[k] for k in first), history  # every term learns, not only the sum
    assert last['total'] < 0.98 * first['total'], history


def test_greyscale_photos_weigh_nothing_in_colour_terms():
    spec = get_objective('split_brain_cl')
    objective = Objective(timm.create_model(spec.architecture, **spec.model_kwargs(), layers=TINY_LAYERS), spec)
    lab = rgb_to_lab(smooth_images(2, 96))
    labels = torch.zeros(2, dtype=torch.long)
    _, both = objective(lab, labels, torch.tensor([True, False]))
    _, first = objective(lab[:1], labels[:1], torch.tensor([True]))
    for name in both:
        torch.testing.assert_close(both[name], first[name])


def test_spec_errors():
    with pytest.raises(InputError, match='objective'):
        get_objective('nope')
    with pytest.raises(InputError, match='--nope'):
        parse_args(['--nope=1'])
    with pytest.raises(InputError, match='--max_steps: expected a int'):
        parse_args(['--max_steps=lots'])
    config, actions = parse_args(['--max_steps=3', '--rebalance=false', '--resume'])
    assert (config.max_steps, config.rebalance, actions) == (3, False, {'resume': 'true'})


def test_batch_stream_is_the_same_for_any_workers_start_and_rank(image_folder):
    samples = build_index(str(image_folder))
    assert len(samples) == 24 and sorted({s.label for s in samples}) == [0, 1, 2]

    def batches(count, workers=0, start=0, rank=0, world=1):
        stream = BatchStream(samples, 4, 32, (0.25, 1.0), seed=3, start_batch=start, rank=rank, world_size=world)
        loader = iter(make_loader(stream, workers, False))
        return [next(loader) for _ in range(count)]

    reference = batches(8)  # 6 batches per epoch: crosses into epoch 1
    assert [b[0] for b in reference] == list(range(8))
    assert reference[0][1].dtype == torch.uint8 and reference[0][1].shape == (4, 3, 32, 32)
    assert not torch.equal(reference[0][1], reference[6][1])  # another epoch, another order and crops
    for got, want in zip(batches(5, workers=2, start=3), reference[3:]):
        assert got[0] == want[0] and all(torch.equal(g, w) for g, w in zip(got[1:], want[1:]))
    for rank in (0, 1):
        for got in batches(3, rank=rank, world=2):
            want = reference[got[0]]
            assert got[0] % 2 == rank and torch.equal(got[1], want[1])
    greys = torch.cat([b[3] for b in reference[:6]])
    assert int((~greys).sum()) == 1  # the one greyscale photo of the epoch is flagged


def _train_command(out_dir: Path, data: Path, steps: int, *extra: str):
    return [sys.executable, '-m', 'training.train', f'--out_dir={out_dir}', f'--data={data}', TINY,
            f'--max_steps={steps}', '--batch_size=4', '--input_size=96', '--num_workers=0', '--threads=1',
            '--prior_images=8', '--checkpoint_every=2', '--log_every=1', '--warmup_steps=2',
            '--progress=false', *extra]


# Long enough that the run is still going when the test kills it, even on an idle machine.
RESUME_STEPS = 24


@pytest.fixture(scope='module')
def resumed_runs(image_folder, tmp_path_factory):
    """An uninterrupted run, and one SIGKILLed once it has logged 3 steps then resumed (side by side)."""
    root = tmp_path_factory.mktemp('runs')
    whole, killed = root / 'whole', root / 'killed'
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first = subprocess.Popen(_train_command(whole, image_folder, RESUME_STEPS), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    second = subprocess.Popen(_train_command(killed, image_folder, RESUME_STEPS), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    metrics = killed / 'metrics.jsonl'
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert second.poll() is None and time.monotonic() < deadline, 'the run to kill ended or hung'
        time.sleep(0.05)
    second.send_signal(signal.SIGKILL)
    second.wait()
    killed_at = torch.load(killed / CHECKPOINT, weights_only=True)['step']
    resume = subprocess.run(_train_command(killed, image_folder, RESUME_STEPS, '--resume'), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert resume.returncode == 0, resume.stderr
    assert first.wait(timeout=120) == 0, first.stderr.read()
    return whole, killed, killed_at


def test_resume_after_sigkill_matches_an_uninterrupted_run(resumed_runs):
    whole, killed, killed_at = resumed_runs
    assert 2 <= killed_at < RESUME_STEPS
    a = torch.load(whole / CHECKPOINT, weights_only=True)
    b = torch.load(killed / CHECKPOINT, weights_only=True)
    assert a['step'] == b['step'] == RESUME_STEPS and a['images_seen'] == b['images_seen'] == 4 * RESUME_STEPS
    for key, value in a['model'].items():
        assert torch.equal(value, b['model'][key]), key
    for x, y in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        assert all(torch.equal(x[k], y[k]) for k in x)
    rows_a = [json.loads(r) for r in (whole / 'metrics.jsonl').read_text().splitlines()]
    rows_b = [json.loads(r) for r in (killed / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows_b] == list(range(1, RESUME_STEPS + 1))
    assert [r['loss'] for r in rows_a] == [r['loss'] for r in rows_b]


def test_export_round_trip_through_timm(resumed_runs, tmp_path):
    whole, _, _ = resumed_runs
    export_main([f'--out_dir={whole}', f'--export_dir={tmp_path}'])
    weights = tmp_path / 'model.safetensors'
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['training']['step'] == RESUME_STEPS and config['pretrained_cfg']['input_size'] == [3, 96, 96]
    readme = (tmp_path / 'README.md').read_text()
    assert readme.startswith((REPO / 'MODEL_CARD.md').read_text()), 'the export README is the model card...'
    assert f'sha256 `{sha256_of(weights)}`' in readme, '...followed by the figures of this run'
    assert ModelCard.load(tmp_path / 'README.md').data.to_dict() == ModelCard.load(REPO / 'MODEL_CARD.md').data.to_dict()
    model = timm.create_model('splitbrain_alexnet', pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)),
                              layers=TINY_LAYERS)
    trained = torch.load(whole / CHECKPOINT, weights_only=True)['model']
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, trained[key].half().float(), rtol=0, atol=0)
    model.eval()
    x = smooth_images(1, 96)
    reference = timm.create_model('splitbrain_alexnet', layers=TINY_LAYERS)
    reference.load_state_dict(trained)
    reference.eval()
    with torch.no_grad():
        got, want = model.forward_pretext(x), reference.forward_pretext(x)
    for name in want:  # fp16 storage changes the logits by far less than their spread
        assert (got[name] - want[name]).abs().max() < 1e-2 * want[name].std()


def test_init_weights_starts_from_an_export(resumed_runs, image_folder, tmp_path):
    """--init_weights loads an export (fp16 widened to fp32); at lr 0 one step leaves those weights as they were."""
    whole, _, _ = resumed_runs
    export_main([f'--out_dir={whole}', f'--export_dir={tmp_path / "export"}'])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run(_train_command(tmp_path / 'continued', image_folder, 1, f'--init_weights={tmp_path / "export"}',
                                        '--lr=0'), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    continued = torch.load(tmp_path / 'continued' / CHECKPOINT, weights_only=True)
    assert continued['step'] == 1 and continued['config']['init_weights'] == str(tmp_path / 'export')
    exported = load_safetensors(tmp_path / 'export' / 'model.safetensors')
    for key, value in continued['model'].items():
        assert value.dtype == torch.float32 and torch.equal(value, exported[key].float()), key


def test_init_weights_of_another_model_is_refused(resumed_runs, tmp_path):
    whole, _, _ = resumed_runs
    export_main([f'--out_dir={whole}', f'--export_dir={tmp_path}'])
    wider = {'convs': TINY_LAYERS['convs'], 'fcs': [[name, chs * 2, *rest] for name, chs, *rest in TINY_LAYERS['fcs']]}
    model = timm.create_model('splitbrain_alexnet', layers=wider)
    with pytest.raises(InputError, match=rf"--init_weights={tmp_path}: expected the weights of this run's model, "
                                         r"got others \(Error\(s\) in loading state_dict(?s:.*)size mismatch for"):
        load_init_weights(model, str(tmp_path))


def test_push_to_hub_then_load_by_hf_hub_id(resumed_runs, tmp_path, fake_hub, hf_env):
    """training.export --push_to_hub through huggingface_hub to a loopback Hub, then timm loads it by hf_hub_id."""
    whole, _, _ = resumed_runs
    export_dir = tmp_path / 'export'
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_ENDPOINT=fake_hub.url, HF_TOKEN='hf_token_for_a_fake_hub',
               HF_HOME=str(tmp_path / 'hf-home-of-the-pusher'))
    push = subprocess.run([sys.executable, '-m', 'training.export', f'--out_dir={whole}', f'--export_dir={export_dir}',
                           '--push_to_hub=someone/splitbrain-tiny'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert push.returncode == 0, push.stderr
    assert f'pushed to {fake_hub.url}/someone/splitbrain-tiny/commit/' in push.stdout
    [(_, files)] = fake_hub.repos['someone/splitbrain-tiny']
    assert sorted(files) == ['README.md', 'config.json', 'model.safetensors']
    for name, content in files.items():
        assert content == (export_dir / name).read_bytes(), name

    hf_env(HF_ENDPOINT=fake_hub.url)
    model = timm.create_model('splitbrain_alexnet', pretrained=True,
                              pretrained_cfg_overlay=dict(hf_hub_id='someone/splitbrain-tiny'), layers=TINY_LAYERS)
    assert Path(model.pretrained_cfg['file']).is_relative_to(tmp_path / 'hf-home' / 'hub')
    exported = load_safetensors(export_dir / 'model.safetensors')
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, exported[key].to(value.dtype), rtol=0, atol=0)


def test_push_to_hub_needs_a_repo_id():
    with pytest.raises(InputError, match=r"--push_to_hub: expected a Hub repo id 'owner/name', got 'a/b/c'"):
        parse_export_args(['--out_dir=run', '--push_to_hub=a/b/c'])


@pytest.mark.skipif(not SHARD.is_file(), reason=f'shared Tiny ImageNet shard not found at {SHARD}')
def test_tar_reader_on_a_shared_shard():
    samples = build_index(str(SHARD))
    with tarfile.open(SHARD) as tar:  # the README's reference reader
        members = tar.getmembers()
        first_jpg = tar.extractfile(members[0]).read()
        first_cls = int(tar.extractfile(members[1]).read())
    assert len(samples) == 2667 and {s.label for s in samples} <= set(range(200))
    assert samples[0].label == first_cls
    assert read_bytes(samples[0]) == first_jpg
    stream = BatchStream(samples, 4, 128, (0.25, 1.0), seed=0)
    _, images, labels, colour = next(iter(make_loader(stream, 0, False)))
    assert images.shape == (4, 3, 128, 128) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert Image.open(io.BytesIO(first_jpg)).size == (64, 64)
