import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

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


def png_sixteen_bit_rgb(pixels: np.ndarray) -> bytes:
    """Encode an HxWx3 uint16 array as a 48-bit RGB PNG (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def without_adobe_marker(jpeg: bytes) -> bytes:
    """Remove the APP14 (Adobe) segments of a JPEG."""
    output, position = bytearray(jpeg[:2]), 2
    while jpeg[position + 1] != 0xDA:  # start of scan: entropy-coded data follows
        length = struct.unpack(">H", jpeg[position + 2 : position + 4])[0]
        if jpeg[position + 1] != 0xEE:
            output += jpeg[position : position + 2 + length]
        position += 2 + length
    return bytes(output + jpeg[position:])


def cmyk_icc_profile(lab: tuple[int, int, int]) -> bytes:
    """Build an ICC v2 CMYK profile whose lookup table maps every colour to one Lab value (8-bit encoding)."""

    def fixed(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    description = b"brgen test CMYK\x00"
    tags = [
        (b"desc", b"desc" + bytes(4) + struct.pack(">I", len(description)) + description + bytes(79)),
        (b"wtpt", b"XYZ " + bytes(4) + fixed(0.9642) + fixed(1.0) + fixed(0.8249)),
        (b"cprt", b"text" + bytes(4) + b"none\x00"),
        (
            b"A2B0",
            b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(fixed(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
            + bytes(range(256)) * 4 + bytes(lab) * 2**4 + bytes(range(256)) * 3,
        ),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        data += bytes(-(offset + len(data)) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = struct.pack(">I", offset + len(data)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"prtrCMYKLab " + bytes(12)
    header += b"acsp" + bytes(28) + fixed(0.9642) + fixed(1.0) + fixed(0.8249) + bytes(48)
    return header + struct.pack(">I", len(tags)) + table + data


def test_sixteen_bit_rgb_keeps_high_byte():
    pixels = np.array([[[0, 1000, 65535], [257 * 128, 300, 255]]], dtype=np.uint16)
    photo = decode_photo(png_sixteen_bit_rgb(pixels), "deep.png", MAX_PIXELS)
    assert photo.array.shape == (1, 2, 3)
    assert photo.array.tolist() == [[[0, 3, 255], [128, 1, 0]]]
    assert photo.fixes == ["depth: 16 bits per channel reduced to 8 (high byte kept)"]


def test_dark_sixteen_bit_gray_is_not_stretched():
    values = np.array([[0, 256], [512, 1024]], dtype=np.uint16)
    photo = decode_photo(encode(Image.fromarray(values), "PNG"), "dark.png", MAX_PIXELS)
    assert photo.array.shape == (2, 2, 3)
    assert photo.array[:, :, 1].tolist() == [[0, 1], [2, 4]]
    assert photo.fixes == ["mode: I;16 (16-bit gray) reduced to 8 bits (high byte kept), then RGB"]


def test_cmyk_without_profile_uses_formula():
    cmyk = Image.new("CMYK", (3, 2), (100, 50, 0, 100))
    photo = decode_photo(encode(cmyk, "TIFF"), "c.tif", MAX_PIXELS)
    assert photo.array.shape == (2, 3, 3)
    assert photo.array[1, 2].tolist() == [94, 125, 155]  # (255 - C) * (255 - K) / 255, rounded
    assert photo.fixes[-1].startswith("mode: CMYK converted to RGB without an ICC profile")


def test_cmyk_jpeg_without_adobe_marker_plain():
    # Pillow stores CMYK JPEGs inverted with an Adobe marker, so saving 255 - v stores v.
    stored = (255, 0, 0, 255)
    image = Image.new("CMYK", (16, 16), tuple(255 - value for value in stored))
    data = without_adobe_marker(encode(image, "JPEG", quality=100))
    photo = decode_photo(data, "plain.jpg", MAX_PIXELS)
    assert photo.array.shape == (16, 16, 3)
    assert photo.array[8, 8].max() < 5  # C = 255 and K = 255 is black
    assert photo.fixes[0] == "cmyk: JPEG without Adobe marker read as plain (not inverted) CMYK"


def test_cmyk_with_profile_converts_through_it():
    profile = cmyk_icc_profile((200, 128, 128))
    image = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    photo = decode_photo(encode(image, "TIFF", icc_profile=profile), "p.tif", MAX_PIXELS)
    expected = ImageCms.profileToProfile(
        image, ImageCms.ImageCmsProfile(io.BytesIO(profile)), ImageCms.createProfile("sRGB"), outputMode="RGB"
    ).getpixel((0, 0))
    assert photo.array.shape == (4, 4, 3)
    assert photo.array[2, 2].tolist() == list(expected)
    assert expected[0] == expected[1] == expected[2]  # the profile maps every colour to a gray, unlike plain red
    assert photo.fixes == ["mode: CMYK converted to sRGB through the embedded ICC profile"]
    assert photo.icc_profile == "brgen test CMYK"


def test_rgb_profile_is_recorded_not_applied():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = decode_photo(encode(Image.new("RGB", (2, 2), (10, 20, 30)), "PNG", icc_profile=srgb), "s.png", MAX_PIXELS)
    assert photo.array[1, 1].tolist() == [10, 20, 30]
    assert photo.fixes == []
    assert "sRGB" in photo.icc_profile


def test_exif_rotation_by_180_degrees():
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 3
    photo = decode_photo(encode(image, "PNG", exif=exif), "r.png", MAX_PIXELS)
    assert photo.array.shape == (2, 4, 3)
    assert photo.array[1, 3].tolist() == [255, 255, 255]
    assert photo.array[0, 0].tolist() == [0, 0, 0]


def test_gray_with_alpha_drops_alpha():
    image = Image.new("LA", (2, 2), (90, 128))
    photo = decode_photo(encode(image, "PNG"), "la.png", MAX_PIXELS)
    assert photo.array[0, 1].tolist() == [90, 90, 90]
    assert photo.fixes == ["mode: LA converted to RGB, alpha dropped (100.0% of pixels not opaque)"]


def test_palette_with_transparency_drops_alpha():
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)
    photo = decode_photo(encode(palette, "PNG", transparency=1), "pt.png", MAX_PIXELS)
    assert photo.array[0, 0].tolist() == [30, 60, 90]
    assert photo.fixes == ["mode: P converted to RGB, alpha dropped (100.0% of pixels not opaque)"]


def test_bilevel_becomes_black_and_white():
    image = Image.new("1", (3, 1), 0)
    image.putpixel((1, 0), 1)
    photo = decode_photo(encode(image, "PNG"), "b.png", MAX_PIXELS)
    assert photo.array[0].tolist() == [[0, 0, 0], [255, 255, 255], [0, 0, 0]]
    assert photo.fixes == ["mode: 1 converted to RGB"]


def test_animation_uses_first_frame():
    frames = [Image.new("P", (2, 2), index) for index in (1, 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    photo = decode_photo(data, "anim.gif", MAX_PIXELS)
    assert photo.array[0, 0].tolist() == [255, 0, 0]
    assert photo.fixes[0] == "frames: 2 frames, the first one used"


def test_jpeg_named_png_is_recorded():
    photo = decode_photo(encode(Image.new("RGB", (8, 8), (0, 128, 255)), "JPEG", quality=100), "x.png", MAX_PIXELS)
    assert photo.format == "JPEG"
    assert photo.fixes == ["format: named .png but the content is JPEG"]


@pytest.mark.parametrize("mode, value", [("F", 0.5), ("I", 70000)])
def test_float_and_32_bit_pixels_are_unreadable(mode, value):
    data = encode(Image.new(mode, (2, 2), value), "TIFF")
    with pytest.raises(UnreadableImage, match=f"cannot convert mode {mode} to RGB"):
        decode_photo(data, "deep.tif", MAX_PIXELS)


def test_truncated_png_is_unreadable():
    pixels = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "PNG")
    with pytest.raises(UnreadableImage, match="decoding failed"):
        decode_photo(data[: len(data) - 40], "cut.png", MAX_PIXELS)


def test_pillow_bomb_limit_is_reported(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(Image.new("RGB", (50, 50)), "PNG")
    with pytest.raises(UnreadableImage, match="decompression bomb rejected by Pillow"):
        decode_photo(data, "bomb.png", MAX_PIXELS)
