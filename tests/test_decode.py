"""Decoding every form of image a user may have: orientation, modes, bit depths, broken files."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mtfap.data.decode import (
    DEFAULT_MAX_PIXELS,
    as_rgb_array,
    decode_image,
    max_pixels_limit,
    read_image_file,
    to_rgb,
)
from mtfap.errors import DataError


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def quadrants(width=40, height=24) -> Image.Image:
    """An RGB image whose four quadrants have four colours: any rotation or flip shows."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = (220, 30, 30)
    pixels[: height // 2, width // 2:] = (30, 220, 30)
    pixels[height // 2:, : width // 2] = (30, 30, 220)
    pixels[height // 2:, width // 2:] = (230, 230, 40)
    return Image.fromarray(pixels)


def quadrant_colours(image: Image.Image) -> np.ndarray:
    """The colour at the centre of each quadrant, (4, 3): away from the edges JPEG blurs."""
    pixels = np.asarray(image, float)
    height, width = pixels.shape[:2]
    rows, cols = (height // 4, 3 * height // 4), (width // 4, 3 * width // 4)
    return np.array([pixels[r, c] for r in rows for c in cols])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but that holds (almost) no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + chunk(b"IEND", b""))


def test_a_plain_rgb_jpeg_decodes_to_rgb_of_the_same_size():
    image = decode_image(encode(quadrants(), "JPEG", quality=95), "plain.jpg")
    assert image.mode == "RGB" and image.size == (40, 24)
    assert np.abs(quadrant_colours(image) - quadrant_colours(quadrants())).max() < 8


@pytest.mark.parametrize("orientation, stored", [
    (3, Image.Transpose.ROTATE_180),
    (6, Image.Transpose.ROTATE_90),
    (8, Image.Transpose.ROTATE_270),
])
def test_exif_orientation_is_applied_so_the_photo_stands_upright(orientation, stored):
    upright = quadrants()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(upright.transpose(stored), "JPEG", quality=95, exif=exif)
    decoded = decode_image(data, "rotated.jpg")
    assert decoded.size == upright.size
    assert np.abs(quadrant_colours(decoded) - quadrant_colours(upright)).max() < 8


def test_grayscale_decodes_to_three_equal_channels():
    gray = Image.fromarray(np.arange(200, dtype=np.uint8).reshape(10, 20))
    decoded = np.asarray(decode_image(encode(gray, "PNG"), "gray.png"))
    assert decoded.shape == (10, 20, 3)
    assert (decoded == np.asarray(gray)[:, :, None]).all()


def test_transparent_pixels_become_white_not_black():
    pixels = np.zeros((4, 4, 2), np.uint8)
    pixels[:, :2] = (40, 255)   # opaque dark gray
    pixels[:, 2:] = (40, 0)     # fully transparent
    image = Image.fromarray(pixels, "LA")
    decoded = np.asarray(decode_image(encode(image, "PNG"), "alpha.png"))
    assert (decoded[:, :2] == 40).all() and (decoded[:, 2:] == 255).all()


def test_half_transparent_rgba_is_blended_onto_white():
    image = Image.new("RGBA", (3, 3), (255, 0, 0, 128))
    decoded = decode_image(encode(image, "PNG"), "half.png")
    red, green, blue = decoded.getpixel((1, 1))
    assert red == 255 and abs(green - 127) <= 1 and abs(blue - 127) <= 1


def test_a_palette_image_with_a_transparent_index_shows_white_there():
    image = Image.new("P", (4, 2), 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((3, 1), 1)
    decoded = decode_image(encode(image, "PNG", transparency=0), "palette.png")
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((3, 1)) == (200, 100, 50)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_images_keep_their_colours(fmt):
    original = quadrants()
    data = encode(original.convert("CMYK"), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    decoded = decode_image(data, f"cmyk.{fmt.lower()}")
    assert np.abs(quadrant_colours(decoded) - quadrant_colours(original)).max() < 8


def test_sixteen_bit_png_is_scaled_by_its_bit_depth_not_clipped():
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    decoded = np.asarray(decode_image(data, "deep.png"))[0, :, 0]
    assert decoded.tolist() == [0, 64, 128, 255]


def test_thirty_two_bit_and_float_tiffs_are_scaled_to_eight_bits():
    integers = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.int32), "I")
    assert np.asarray(decode_image(encode(integers, "TIFF"), "i32.tif"))[0, :, 0].tolist() == [
        0, 100, 255]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert np.asarray(decode_image(encode(floats, "TIFF"), "f32.tif"))[0, :, 0].tolist() == [
        0, 128, 255]


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"this is a text file, not a photo", "not an image"),
])
def test_empty_or_non_image_bytes_raise_a_one_line_data_error(data, reason):
    with pytest.raises(DataError, match=reason) as caught:
        decode_image(data, "notes.jpg")
    assert "cannot decode image 'notes.jpg'" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_truncated_jpeg_raises_a_data_error_naming_the_file():
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90)
    with pytest.raises(DataError, match=r"cannot decode image 'cut\.jpg': the file is truncated"):
        decode_image(data[: len(data) // 2], "cut.jpg")


def test_a_png_with_damaged_pixel_data_raises_a_data_error():
    data = bytearray(encode(quadrants(), "PNG"))
    start = data.index(b"IDAT") + 8
    data[start:start + 16] = b"\xff" * 16
    with pytest.raises(DataError, match="cannot decode image 'damaged.png'"):
        decode_image(bytes(data), "damaged.png")


def test_a_tiny_file_claiming_a_gigantic_size_is_refused_from_its_header():
    data = png_header_only(100_000, 100_000)
    assert len(data) < 100
    with pytest.raises(DataError) as caught:
        decode_image(data, "bomb.png")
    text = str(caught.value)
    assert "'bomb.png'" in text and "10,000,000,000 pixels" in text
    assert f"{DEFAULT_MAX_PIXELS:,}" in text
    assert "--max-pixels" in text and "MTFAP_MAX_PIXELS" in text


def test_an_image_above_the_given_limit_is_refused_with_its_size():
    data = encode(quadrants(100, 60), "PNG")
    with pytest.raises(DataError, match=r"100 x 60 = 6,000 pixels is more than the limit of "
                                        r"5,000 pixels"):
        decode_image(data, "big.png", max_pixels=5000)
    assert decode_image(data, "big.png", max_pixels=6000).size == (100, 60)


def test_the_limit_comes_from_the_environment_when_not_given(monkeypatch):
    monkeypatch.setenv("MTFAP_MAX_PIXELS", "100")
    assert max_pixels_limit() == 100
    with pytest.raises(DataError, match="limit of 100 pixels"):
        decode_image(encode(quadrants(), "PNG"), "env.png")
    monkeypatch.setenv("MTFAP_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="MTFAP_MAX_PIXELS"):
        max_pixels_limit()


def test_pillows_own_bomb_warning_becomes_the_same_data_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(quadrants(40, 40), "PNG")  # 1600 pixels: Pillow warns (error above 2000)
    with pytest.raises(DataError, match="limit of 500 pixels"):
        decode_image(data, "warned.png", max_pixels=500)
    with pytest.raises(DataError, match="Pillow's own limit of 1,000 pixels"):
        decode_image(data, "warned.png", max_pixels=10_000)


def test_reading_a_missing_file_or_a_folder_says_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="image file not found"):
        read_image_file(tmp_path / "absent.jpg")
    with pytest.raises(DataError, match="is a folder"):
        read_image_file(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="file permissions do not bind the superuser")
def test_reading_an_unreadable_file_names_the_permission_problem(tmp_path):
    path = tmp_path / "locked.png"
    path.write_bytes(encode(quadrants(), "PNG"))
    path.chmod(0)
    with pytest.raises(DataError, match="permission denied"):
        read_image_file(path)


def test_a_file_read_from_disk_is_decoded_like_its_bytes(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(encode(quadrants(), "PNG"))
    assert np.array_equal(np.asarray(read_image_file(path)), np.asarray(quadrants()))


def test_arrays_and_pil_images_of_any_mode_become_uint8_rgb_arrays():
    assert as_rgb_array(Image.new("L", (3, 2), 7)).shape == (2, 3, 3)
    assert as_rgb_array(np.zeros((2, 3), np.uint8)).shape == (2, 3, 3)
    assert to_rgb(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError, match="uint8"):
        as_rgb_array(np.zeros((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        as_rgb_array(np.zeros((2, 3, 4), np.uint8))
