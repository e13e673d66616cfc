"""images.py: every kind of input read and handed back, every bad input refused with a typed, named error.

Each bad-input test builds its own file or array.
"""
import io
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splitbrain_hub.errors import (
    CorruptImageError,
    EmptyImageError,
    InputError,
    TooManyPixelsError,
    UnsupportedFormatError,
)
from splitbrain_hub.images import DEFAULT_MAX_PIXELS, decode_image, greyscale_mask, load_batch, load_batches, to_output


def _photo(height=24, width=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height, with a tiny (incomplete) image stream: a bomb's shape."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64))
                     + chunk(b'IEND', b''))
    return path


# --- the decoder: files and bytes under the same rules ---------------------------------------------

def _encoded(fmt, image=None, **options):
    buffer = io.BytesIO()
    (image or Image.fromarray(_photo())).save(buffer, fmt, **options)
    return buffer.getvalue()


def _both(tmp_path, data, name='x.img'):
    """The same bytes as a file and as bytes: the decoder must treat them alike."""
    (tmp_path / name).write_bytes(data)
    return [(tmp_path / name, str(tmp_path / name)), (data, 'upload')]


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match=r'nothere\.jpg: expected an image file, but no such file exists'):
        decode_image(tmp_path / 'nothere.jpg')


def test_directory(tmp_path):
    with pytest.raises(InputError, match='expected an image file, got a directory'):
        load_batch(tmp_path)


@pytest.mark.parametrize('fmt, options', [('JPEG', {}), ('PNG', {}), ('GIF', {}), ('BMP', {}), ('TIFF', {}),
                                          ('WEBP', {'lossless': True}), ('PPM', {})])
def test_every_allowed_format_decodes_from_a_file_and_from_bytes(tmp_path, fmt, options):
    data = _encoded(fmt, **options)
    decoded = [decode_image(source, name=name) for source, name in _both(tmp_path, data)]
    assert decoded[0].size == decoded[1].size == (32, 24)
    np.testing.assert_array_equal(np.asarray(decoded[0]), np.asarray(decoded[1]))


@pytest.mark.parametrize('data, error, message', [
    (b'', EmptyImageError, r'expected image data, got an empty \(0-byte\) file'),
    (b'this is not a photo\n', UnsupportedFormatError, r"expected JPEG, PNG, .* data, got bytes starting b'this is '"),
    (_encoded('ICO'), UnsupportedFormatError, 'expected JPEG'),  # Pillow reads ICO; the allow-list does not
    (_encoded('JPEG', Image.fromarray(_photo(64, 64)), quality=95)[:2000], CorruptImageError,
     r'truncated or corrupt JPEG data \(OSError: image file is truncated'),
    (_encoded('PNG')[:30], CorruptImageError, 'truncated or corrupt PNG data, its header unreadable'),
])
def test_refusals_are_the_same_for_files_and_bytes(tmp_path, data, error, message):
    for source, name in _both(tmp_path, data, 'notes.jpg'):
        with pytest.raises(error, match=rf'^{re.escape(name)}: {message}'):
            decode_image(source, name=name)


def test_the_pixel_limit_is_the_argument_not_pillows_global(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', None)  # Pillow's own guard off: only max_pixels can refuse
    for source, name in _both(tmp_path, _encoded('PNG')):
        with pytest.raises(TooManyPixelsError, match=rf'^{re.escape(name)}: image is 32x24 = 768 pixels, more than '
                                                      r'the limit of 767 pixels .*--max-pixels'):
            decode_image(source, 767, name)
        assert decode_image(source, 768, name).size == (32, 24)


def test_errors_are_input_errors_the_service_maps_to_a_status():
    from splitbrain_hub.serve.errors import ERROR_CODES, INPUT_ERROR_CODES, refused_image
    assert all(issubclass(kind, InputError) for kind in INPUT_ERROR_CODES)
    statuses = {kind.__name__: refused_image(kind('x')).status for kind in INPUT_ERROR_CODES}
    assert statuses == {'EmptyImageError': 400, 'UnsupportedFormatError': 415, 'CorruptImageError': 400,
                        'TooManyPixelsError': 413}
    assert refused_image(InputError('too small')).error == 'invalid_image' and ERROR_CODES['invalid_image'][0] == 422


def test_zero_byte_file(tmp_path):
    (tmp_path / 'empty.png').touch()
    with pytest.raises(InputError, match=r'empty\.png: expected image data, got an empty \(0-byte\) file'):
        load_batch(tmp_path / 'empty.png')


def test_an_image_batch_is_taken_as_it_is():
    batch = load_batch(_photo(), 'decoded in a worker')
    assert load_batches([batch, _photo()])[0] is batch


@pytest.mark.parametrize('width, height', [(1, 5), (5, 1), (1, 1)])
def test_file_with_side_of_one(tmp_path, width, height):
    Image.new('RGB', (width, height)).save(tmp_path / 'thin.png')
    with pytest.raises(InputError, match=rf'thin\.png: expected width and height of at least 2 pixels, got {width}x{height}'):
        load_batch(tmp_path / 'thin.png')


def test_decompression_bomb_between_one_and_two_pillow_limits(tmp_path):
    # 100 M pixels: Pillow would only warn (its hard error is at twice its limit); the default limit refuses.
    path = _png_header_only(tmp_path / 'bomb.png', 10_000, 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # and no DecompressionBombWarning escapes: the refusal says it all
        with pytest.raises(TooManyPixelsError) as info:
            load_batch(path)
    message = str(info.value)
    assert 'bomb.png: image is 10000x10000 = 100,000,000 pixels' in message
    assert f'more than the limit of {DEFAULT_MAX_PIXELS:,} pixels' in message and '--max-pixels' in message


def test_decompression_bomb_over_pillows_hard_limit(tmp_path):
    path = _png_header_only(tmp_path / 'bomb.png', 20_000, 20_000)
    with pytest.raises(TooManyPixelsError, match=r'bomb\.png: refused as a possible decompression bomb by Pillow'):
        decode_image(path, max_pixels=None)


def test_raising_the_limit_lets_the_size_check_pass(tmp_path):
    # With the limit raised the header is accepted, and decoding then finds the data missing.
    path = _png_header_only(tmp_path / 'bomb.png', 10_000, 10_000)
    with pytest.raises(CorruptImageError, match='truncated or corrupt PNG data'):
        decode_image(path, max_pixels=200_000_000)


# --- bad arrays and tensors -----------------------------------------------------------------------

@pytest.mark.parametrize('value, what', [(np.nan, 'NaN or infinity'), (np.inf, 'NaN or infinity'),
                                         (1.5, r'values in \[0, 1\] .*max 1.5'), (-0.25, r'min -0.25')])
def test_bad_float_array_values(value, what):
    array = np.full((8, 8, 3), 0.5, dtype=np.float32)
    array[3, 4, 1] = value
    with pytest.raises(InputError, match=rf'image: expected .*{what}'):
        load_batch(array)


@pytest.mark.parametrize('value, what', [(float('nan'), 'NaN or infinity'), (float('-inf'), 'NaN or infinity'),
                                         (2.0, 'max 2')])
def test_bad_float_tensor_values(value, what):
    tensor = torch.full((2, 3, 8, 8), 0.5)
    tensor[1, 2, 0, 0] = value
    with pytest.raises(InputError, match=rf'image: expected .*{what}'):
        load_batch(tensor)


@pytest.mark.parametrize('shape', [(8, 8, 5), (3, 8, 8), (2, 8, 8, 3), (8,)])
def test_wrong_array_shape_or_channels(shape):
    with pytest.raises(InputError, match=r'expected an HxW or HxWxC array with C = 1, 2, 3 or 4 .*got shape'):
        load_batch(np.zeros(shape, dtype=np.uint8))


@pytest.mark.parametrize('shape', [(5, 8, 8), (1, 8, 8, 3), (8, 8), (0, 3, 8, 8)])
def test_wrong_tensor_shape_or_channels(shape):
    with pytest.raises(InputError, match=r'image: expected .*(tensor with C = 1, 2, 3 or 4|at least one image)'):
        load_batch(torch.zeros(shape))


@pytest.mark.parametrize('dtype', [np.int64, np.int32, np.bool_, np.complex64])
def test_wrong_array_dtype(dtype):
    with pytest.raises(InputError, match=rf'expected dtype uint8, uint16 or floating point in \[0, 1\], got {np.dtype(dtype)}'):
        load_batch(np.zeros((8, 8, 3), dtype=dtype))


@pytest.mark.parametrize('dtype', [torch.int64, torch.int32, torch.bool])
def test_wrong_tensor_dtype(dtype):
    with pytest.raises(InputError, match=rf'expected dtype uint8 or floating point in \[0, 1\], got {dtype}'):
        load_batch(torch.zeros(3, 8, 8, dtype=dtype))


@pytest.mark.parametrize('image', [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 1), np.uint8),
                                   torch.zeros(3, 1, 8), Image.new('L', (1, 1))])
def test_side_of_zero_or_one_in_memory(image):
    with pytest.raises(InputError, match=r'expected width and height of at least 2 pixels, got \d+x\d+'):
        load_batch(image)


def test_unsupported_type_and_empty_list():
    with pytest.raises(InputError, match='image: expected a path, PIL image, numpy array or torch tensor, got int'):
        load_batch(42)
    with pytest.raises(InputError, match='images: expected at least one image, got an empty list'):
        load_batches([])


def test_list_names_the_bad_element():
    with pytest.raises(InputError, match=r'image\[1\]: expected finite'):
        load_batches([np.zeros((4, 4), np.float32), np.full((4, 4), np.nan, np.float32)])


def test_pil_float_and_integer_modes_out_of_range():
    with pytest.raises(InputError, match=r'image: expected values in \[0, 1\] .*max 3'):
        load_batch(Image.fromarray(np.full((4, 4), 3.0, np.float32)))  # mode F
    with pytest.raises(InputError, match=r'image: expected mode I values in \[0, 65535\], got \[-5, -5\]'):
        load_batch(Image.fromarray(np.full((4, 4), -5, np.int32)))  # mode I


# --- accepted modes -------------------------------------------------------------------------------

def _saved(tmp_path, image, name, **kwargs):
    image.save(tmp_path / name, **kwargs)
    return tmp_path / name


@pytest.mark.parametrize('mode, channels, alpha', [
    ('L', 1, False), ('LA', 1, True), ('RGB', 3, False), ('RGBA', 3, True), ('1', 1, False),
])
def test_png_modes(tmp_path, mode, channels, alpha):
    image = Image.fromarray(_photo()).convert(mode)
    batch = load_batch(_saved(tmp_path, image, 'x.png'))
    assert batch.pixels.shape == (1, channels, 24, 32) and batch.pixels.dtype == torch.float32
    assert (batch.alpha is not None) == alpha
    assert 0 <= batch.pixels.min() and batch.pixels.max() <= 1


def test_palette_with_and_without_transparency(tmp_path):
    palette = Image.fromarray(_photo()).convert('P')
    assert load_batch(_saved(tmp_path, palette, 'p.png')).alpha is None
    batch = load_batch(_saved(tmp_path, palette, 'pt.png', transparency=0))
    assert batch.pixels.shape[1] == 3 and batch.alpha is not None


def test_sixteen_bit_png_keeps_its_precision(tmp_path):
    values = np.array([[0, 1, 32768, 65535]] * 3, dtype=np.uint16)
    path = _saved(tmp_path, Image.fromarray(values), 'deep.png')
    assert Image.open(path).mode.startswith('I')
    pixels = load_batch(path).pixels[0, 0, 0]
    torch.testing.assert_close(pixels, torch.tensor([0, 1, 32768, 65535]) / 65535.0)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = _saved(tmp_path, Image.new('CMYK', (16, 8), (0, 255, 255, 0)), 'cmyk.jpg', quality=100)
    pixels = load_batch(path).pixels
    assert pixels.shape == (1, 3, 8, 16)
    red, green, blue = pixels[0, :, 4, 8].tolist()
    assert red > 0.9 and green < 0.1 and blue < 0.1  # C=0, M=Y=100 %: red


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new('RGB', (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = _saved(tmp_path, image, 'rotated.jpg', exif=exif, quality=100)
    pixels = load_batch(path).pixels
    assert pixels.shape == (1, 3, 40, 20)
    assert pixels[0, 2, 2, 10] > 0.9 and pixels[0, 0, -2, 10] > 0.9  # blue now on top, red below


# --- kinds in, same kinds out ---------------------------------------------------------------------

@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.float32, np.float64])
def test_array_round_trip(dtype):
    scale = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    array = (np.random.default_rng(1).random((6, 7, 4)) * scale).astype(dtype)
    batch = load_batch(array)
    assert batch.pixels.shape == (1, 3, 6, 7) and batch.alpha.shape == (1, 1, 6, 7)
    back = to_output(batch.pixels, batch)
    assert back.dtype == dtype and back.shape == (6, 7, 4)
    np.testing.assert_allclose(back, array, atol=1e-6 if scale == 1 else 0)


def test_grey_array_round_trip_keeps_rank():
    array = np.arange(30, dtype=np.uint8).reshape(5, 6)
    batch = load_batch(array)
    assert batch.pixels.shape == (1, 1, 5, 6)
    np.testing.assert_array_equal(to_output(batch.pixels, batch), array)


@pytest.mark.parametrize('shape', [(3, 5, 6), (2, 4, 5, 6)])
@pytest.mark.parametrize('dtype', [torch.uint8, torch.float32, torch.float16])
def test_tensor_round_trip(shape, dtype):
    tensor = (torch.rand(shape) * (255 if dtype == torch.uint8 else 1)).to(dtype)
    batch = load_batch(tensor)
    back = to_output(batch.pixels, batch)
    assert back.dtype == dtype and back.shape == tensor.shape
    torch.testing.assert_close(back, tensor)


def test_pil_round_trip_rgba():
    image = Image.fromarray(np.dstack([_photo(), np.full((24, 32), 128, np.uint8)]))
    back = to_output(load_batch(image).pixels, load_batch(image))
    assert back.mode == 'RGBA' and back.size == (32, 24)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(image))


def test_read_only_array_is_accepted():
    array = _photo()
    array.flags.writeable = False
    assert load_batch(array).pixels.shape == (1, 3, 24, 32)


def test_tiff_header_with_invalid_dimensions_is_an_input_error():
    """Found by scripts/fuzz.py: Pillow's TIFF plugin raised ValueError('Invalid dimensions') from open()."""
    data = (Path(__file__).parent / 'fuzz_corpus' / 'image' / 'crash-763ee7f75e574035fb518ddc78484675e2d5cfae').read_bytes()
    with pytest.raises(CorruptImageError, match='fuzz.tif: truncated or corrupt TIFF data'):
        decode_image(data, name='fuzz.tif')


def test_greyscale_mask_finds_images_without_colour():
    grey = torch.full((1, 3, 4, 4), 7, dtype=torch.uint8)
    colour = grey.clone()
    colour[0, 0, 0, 0] = 8
    assert greyscale_mask(torch.cat([grey, colour])).tolist() == [True, False]
    assert greyscale_mask(torch.rand(2, 1, 4, 4)).tolist() == [True, True]
