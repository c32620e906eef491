import io

import numpy as np
import pytest
from PIL import Image

from brgen_build.decode import UnreadableImage, decode_photo

MAX_PIXELS = 10_000_000


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def test_rgb_jpeg_needs_no_fix():
    data = encode(Image.new("RGB", (8, 6), (10, 200, 30)), "PNG")
    photo = decode_photo(data, "a.png", MAX_PIXELS)
    assert photo.array.shape == (6, 8, 3)
    assert photo.fixes == []
    assert photo.array[0, 0].tolist() == [10, 200, 30]


def test_grayscale_becomes_three_equal_channels():
    gray = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8) * 5)
    photo = decode_photo(encode(gray, "PNG"), "gray.png", MAX_PIXELS)
    assert photo.array.shape == (6, 8, 3)
    assert photo.mode == "L"
    assert np.array_equal(photo.array[:, :, 0], np.asarray(gray))
    assert np.array_equal(photo.array[:, :, 1], photo.array[:, :, 2])
    assert photo.fixes == ["mode: L converted to RGB"]


def test_cmyk_jpeg_converts_colours_not_channels():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # full magenta + yellow, no black: red
    photo = decode_photo(encode(cmyk, "JPEG", quality=100), "n01440764_1.JPEG", MAX_PIXELS)
    assert photo.mode == "CMYK"
    assert photo.array.shape == (16, 16, 3)
    red, green, blue = photo.array[8, 8].astype(int)
    assert red > 240
    assert green < 15
    assert blue < 15
    assert any(fix.startswith("mode: CMYK converted") for fix in photo.fixes)


def test_png_named_jpg_is_decoded_and_recorded():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    photo = decode_photo(encode(Image.fromarray(pixels), "PNG"), "n02105855_2933.JPEG", MAX_PIXELS)
    assert photo.format == "PNG"
    assert np.array_equal(photo.array, pixels)
    assert "format: named .jpeg but the content is PNG" in photo.fixes


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (8, 4), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo = decode_photo(encode(image, "JPEG", exif=exif, quality=100), "r.jpg", MAX_PIXELS)
    assert photo.array.shape == (8, 4, 3)
    assert photo.array[0, 3].min() > 200
    assert "exif_orientation: 6 applied" in photo.fixes


def test_sixteen_bit_gray_is_scaled():
    values = np.array([[0, 65535], [257 * 128, 257]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    photo = decode_photo(data, "deep.png", MAX_PIXELS)
    assert photo.array[:, :, 0].tolist() == [[0, 255], [128, 1]]


def test_rgba_drops_alpha_and_records_it():
    rgba = Image.new("RGBA", (4, 4), (50, 60, 70, 0))
    photo = decode_photo(encode(rgba, "PNG"), "t.png", MAX_PIXELS)
    assert photo.array[0, 0].tolist() == [50, 60, 70]
    assert photo.fixes == ["mode: RGBA converted to RGB, alpha dropped (100.0% of pixels not opaque)"]


def test_palette_converts_to_rgb():
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    photo = decode_photo(encode(palette, "PNG"), "p.png", MAX_PIXELS)
    assert photo.array[1, 1].tolist() == [200, 100, 50]


def test_empty_file_is_unreadable():
    with pytest.raises(UnreadableImage, match="empty file"):
        decode_photo(b"", "empty.jpg", MAX_PIXELS)


def test_truncated_jpeg_is_unreadable():
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "JPEG")
    with pytest.raises(UnreadableImage, match="decoding failed"):
        decode_photo(data[: len(data) // 2], "cut.jpg", MAX_PIXELS)


def test_too_many_pixels_is_rejected():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(UnreadableImage, match="max_pixels"):
        decode_photo(data, "big.png", max_pixels=9_999)


def test_garbage_is_unreadable():
    with pytest.raises(UnreadableImage, match="not a recognised image format"):
        decode_photo(b"this is not an image", "x.jpg", MAX_PIXELS)
