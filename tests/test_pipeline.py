"""Image pipeline: preprocessing, the decoded-image cache, augmentation and the loader."""

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data.distributed import DistributedSampler

from mtfap.backbones.base import InputSpec
from mtfap.data.dataset import FaceDataset
from mtfap.errors import DataError
from mtfap.data.images import ImageSource
from mtfap.data.cache import build_cache, cache_folder, find_cache
from mtfap.data.loader import FaceImageDataset, make_loader
from mtfap.data.transforms import (Augmentation, centre_zoom, gaussian_blur, normalize,
                                   preprocess)

SPEC = InputSpec(size=(16, 16), crop=0.9)
N_IMAGES = 12


def _write_images(folder, n=N_IMAGES, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(n):
        shape = (30, 24, 3) if i % 2 else (22, 28, 3)  # portrait and landscape
        key = f"img/{i:03d}.png"
        (folder / "img").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / key)
        keys.append(key)
    return keys


def _zip_folder(folder, zip_path):
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, path.relative_to(folder).as_posix())
    return zip_path


def _dataset(root, keys, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (len(keys), 3))
    mask = rng.random((len(keys), 3)) > 0.2
    split = np.arange(len(keys)) % 3
    return FaceDataset("toy", ImageSource(root), list(keys), ["Male", "Smiling", "Young"], labels,
                       mask, identities=np.arange(len(keys)) // 2, split=split)


@pytest.fixture()
def toy(tmp_path):
    keys = _write_images(tmp_path / "images")
    return _dataset(tmp_path / "images", keys)


def _entries(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".u8", ".json"))


def test_preprocess_crops_the_centre_square_and_resizes():
    # 40 wide, 60 high: the centre square is rows 10..50. Paint rows outside it red.
    image = np.zeros((60, 40, 3), np.uint8)
    image[:, :, 1] = 200
    image[:10, :, :] = (255, 0, 0)
    image[50:, :, :] = (255, 0, 0)
    out = preprocess(Image.fromarray(image), InputSpec(size=(20, 10), crop=1.0))
    assert out.shape == (20, 10, 3) and out.dtype == np.uint8
    assert out[2:-2, :, 0].max() == 0  # away from the filter's reach of the border: no red
    assert abs(int(out[:, :, 1].mean()) - 200) < 25
    half = preprocess(Image.fromarray(image), InputSpec(size=(20, 20), crop=0.5))
    assert half[:, :, 0].max() == 0 and half[:, :, 1].min() == 200
    with pytest.raises(ValueError, match="crop"):
        preprocess(Image.fromarray(image), InputSpec(size=(20, 20), crop=1.5))


def test_normalize_matches_the_formula():
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    spec = InputSpec(size=(4, 5), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    expected = (images.numpy() / 255.0 - np.array(spec.mean)[:, None, None]) / np.array(spec.std)[:, None, None]
    np.testing.assert_allclose(normalize(images, spec).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(normalize(images.float() / 255, spec).numpy(), expected, atol=1e-6)


def test_cache_equals_direct_decoding_and_serves_subsets(toy, tmp_path):
    cache = build_cache(toy, SPEC, tmp_path / "cache", progress=False)
    direct = np.stack([preprocess(toy.source.load(k), SPEC) for k in toy.keys])
    np.testing.assert_array_equal(cache.array[cache.rows(toy.keys)], direct)
    sidecar = json.loads(next(cache_folder(toy, tmp_path / "cache").glob("*.json")).read_text())
    assert sidecar["size"] == [16, 16] and sidecar["crop"] == 0.9 and sidecar["count"] == N_IMAGES
    assert sidecar["fingerprint"] == toy.source.fingerprint() and sidecar["bad_keys"] == []

    # A split reuses the full cache (no new entry) and reads the right rows.
    before = _entries(cache_folder(toy, tmp_path / "cache"))
    test_split = toy.get_split("test")
    images = FaceImageDataset(test_split, SPEC, cache_dir=tmp_path / "cache", progress=False)
    assert images.cache.data_path == cache.data_path
    assert _entries(cache_folder(toy, tmp_path / "cache")) == before
    got = np.stack([images[i][0].permute(1, 2, 0).numpy() for i in range(len(images))])
    np.testing.assert_array_equal(got, direct[toy.split_indices("test")])
    # Another size is another entry.
    assert find_cache(toy, InputSpec(size=(8, 8), crop=0.9), tmp_path / "cache") is None


def test_cache_is_rebuilt_when_the_source_changes(tmp_path):
    folder = tmp_path / "images"
    keys = _write_images(folder, seed=0)
    zip_path = _zip_folder(folder, tmp_path / "faces.zip")
    first = build_cache(_dataset(zip_path, keys), SPEC, tmp_path / "cache", progress=False)
    old = np.array(first.array)

    _write_images(folder, seed=1)  # same keys, new pixels
    time.sleep(0.01)
    _zip_folder(folder, zip_path)
    changed = _dataset(zip_path, keys)
    assert find_cache(changed, SPEC, tmp_path / "cache") is None
    second = build_cache(changed, SPEC, tmp_path / "cache", progress=False)
    direct = np.stack([preprocess(changed.source.load(k), SPEC) for k in keys])
    np.testing.assert_array_equal(second.array[second.rows(keys)], direct)
    assert not np.array_equal(np.array(second.array), old)
    # The entry of the old zip is gone, not left to fill the disk.
    assert len(_entries(cache_folder(changed, tmp_path / "cache"))) == 2


def test_cache_of_a_folder_is_rebuilt_when_an_image_is_overwritten_in_place(tmp_path):
    folder = tmp_path / "images"
    keys = _write_images(folder, seed=0)
    dataset = _dataset(folder, keys)
    first = np.array(build_cache(dataset, SPEC, tmp_path / "cache", progress=False).array)
    folder_time = folder.stat().st_mtime_ns
    time.sleep(0.01)
    _write_images(folder, seed=1)  # same names, new pixels: the folder's own time stays
    assert folder.stat().st_mtime_ns == folder_time
    assert find_cache(dataset, SPEC, tmp_path / "cache") is None
    second = build_cache(dataset, SPEC, tmp_path / "cache", progress=False)
    direct = np.stack([preprocess(dataset.source.load(k), SPEC) for k in keys])
    np.testing.assert_array_equal(second.array[second.rows(keys)], direct)
    assert not np.array_equal(np.array(second.array), first)


def test_failed_build_leaves_no_cache(toy, tmp_path, monkeypatch):
    real_load, calls = ImageSource.load, []

    def interrupted(self, key):
        calls.append(key)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_load(self, key)

    monkeypatch.setattr(ImageSource, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_cache(toy, SPEC, tmp_path / "cache", num_threads=1, progress=False)
    assert find_cache(toy, SPEC, tmp_path / "cache") is None
    assert list(cache_folder(toy, tmp_path / "cache").glob("*.u8*")) == []


def test_killed_build_leaves_no_valid_looking_cache(toy, tmp_path):
    cache_dir = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import time
        import numpy as np
        from mtfap.backbones.base import InputSpec
        from mtfap.data.dataset import FaceDataset
        from mtfap.data.images import ImageSource
        from mtfap.data import cache as pipeline
        real = ImageSource.load
        def slow(self, key):
            time.sleep(0.3)
            return real(self, key)
        ImageSource.load = slow
        keys = {toy.keys!r}
        ds = FaceDataset("toy", ImageSource({str(toy.source.root)!r}), keys, ["Male"],
                         np.zeros((len(keys), 1)), np.ones((len(keys), 1)))
        pipeline.build_cache(ds, InputSpec(size=(16, 16), crop=0.9), {str(cache_dir)!r},
                             num_threads=1, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    folder = cache_folder(toy, cache_dir)
    try:
        deadline = time.time() + 300  # generous: importing torch is slow on a loaded machine
        while not list(folder.glob("*.tmp-*")) and time.time() < deadline:
            assert proc.poll() is None, "the build ended before it could be killed"
            time.sleep(0.05)
        assert list(folder.glob("*.tmp-*")), "the build never started writing"
    finally:
        proc.kill()
        proc.wait()
    assert find_cache(toy, SPEC, cache_dir) is None
    assert not list(folder.glob("*.json"))
    cache = build_cache(toy, SPEC, cache_dir, progress=False)  # a new build succeeds ...
    assert not list(folder.glob("*.tmp-*"))                      # ... and clears the leftovers
    assert find_cache(toy, SPEC, cache_dir).data_path == cache.data_path


def test_corrupt_image_fails_with_its_name_or_is_skipped_with_a_warning(toy, tmp_path):
    bad_key = toy.keys[4]
    (toy.source.root / bad_key).write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="003|004"):
        build_cache(toy, SPEC, tmp_path / "cache", progress=False)
    assert find_cache(toy, SPEC, tmp_path / "cache") is None

    with pytest.warns(UserWarning, match="004"):
        images = FaceImageDataset(toy, SPEC, cache_dir=tmp_path / "cache", skip_bad_images=True,
                                  progress=False)
    assert len(images) == N_IMAGES - 1 and 4 not in {images[i][3] for i in range(len(images))}
    assert not images.mask[4].any() and images.mask[5].equal(torch.from_numpy(toy.mask[5]))
    # The cache remembers the bad image: asking again without skipping names it.
    with pytest.raises(DataError, match="004"):
        FaceImageDataset(toy, SPEC, cache_dir=tmp_path / "cache", progress=False)

    uncached = FaceImageDataset(toy, SPEC, cache=False, skip_bad_images=True)
    with pytest.warns(UserWarning, match="004"):
        image, _, mask, index = uncached[4]
    assert index == 4 and not mask.any() and image.abs().sum() == 0


def test_loader_batches_are_normalised_with_labels_and_mask(toy, tmp_path):
    spec = InputSpec(size=(16, 16), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), crop=0.9)
    loader = make_loader(toy, spec, train=False, batch_size=5, cache_dir=tmp_path / "cache")
    batches = list(loader)
    assert [len(b.index) for b in batches] == [5, 5, 2]
    batch = batches[0]
    assert batch.images.shape == (5, 3, 16, 16) and batch.images.dtype == torch.float32
    assert batch.labels.dtype == torch.float32 and batch.mask.dtype == torch.bool
    assert batch.index.tolist() == [0, 1, 2, 3, 4]  # evaluation: in order, not shuffled
    raw = np.stack([preprocess(toy.source.load(toy.keys[i]), spec) for i in range(5)])
    expected = (raw.transpose(0, 3, 1, 2) / 255.0 - np.array(spec.mean)[:, None, None]) \
        / np.array(spec.std)[:, None, None]
    np.testing.assert_allclose(batch.images.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(batch.labels.numpy(), toy.labels[:5])
    np.testing.assert_array_equal(batch.mask.numpy(), toy.mask[:5])
    assert len(make_loader(toy, spec, train=False, batch_size=5, drop_last=True,
                           cache_dir=tmp_path / "cache")) == 2


def test_loader_accepts_a_distributed_sampler(toy, tmp_path):
    sampler = DistributedSampler(range(N_IMAGES), num_replicas=2, rank=1, shuffle=False)
    loader = make_loader(toy, SPEC, train=True, batch_size=4, sampler=sampler,
                         cache_dir=tmp_path / "cache")
    seen = torch.cat([b.index for b in loader]).tolist()
    assert seen == list(range(1, N_IMAGES, 2))
    with pytest.raises(ValueError, match="sampler"):
        make_loader(toy, SPEC, train=True, shuffle=True, sampler=sampler, cache=False)


def test_flip_flips_and_the_identity_settings_change_nothing():
    images = torch.rand(3, 3, 8, 10)
    flip = Augmentation(flip_prob=1.0, scale=(1.0, 1.0), max_shift=0.0, brightness=0.0, contrast=0.0)
    assert torch.equal(flip(images, [0, 1, 2], seed=0, epoch=0), images.flip(-1))
    none = Augmentation(flip_prob=0.0, scale=(1.0, 1.0), max_shift=0.0, brightness=0.0, contrast=0.0)
    assert torch.equal(none(images, [0, 1, 2], seed=0, epoch=0), images)
    with pytest.raises(ValueError, match="scale"):
        Augmentation(scale=(0.9, 1.2))


def test_centre_zoom_resamples_the_centre_square():
    images = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    assert centre_zoom(images, 1.0) is images
    # Side 0.5: pixels 5..14 upsampled to 20 x 20; F.interpolate clamps at the crop's border
    # where the zoom reads the neighbouring pixels, so the border rows and columns differ.
    by_hand = F.interpolate(images[..., 5:15, 5:15], size=(20, 20), mode="bilinear",
                            align_corners=False)
    torch.testing.assert_close(centre_zoom(images, 0.5)[..., 1:-1, 1:-1],
                               by_hand[..., 1:-1, 1:-1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="zoom side"):
        centre_zoom(images, 1.5)


def test_augmentation_is_seeded_per_image(toy, tmp_path):
    augment = Augmentation()
    images = torch.rand(4, 3, 16, 16)
    out = augment(images, [7, 8, 9, 10], seed=3, epoch=2)
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, images)
    again = augment(images[2:], [9, 10], seed=3, epoch=2)  # other batch, same draws per image
    assert torch.allclose(out[2:], again)
    assert not torch.allclose(augment(images, [7, 8, 9, 10], seed=3, epoch=3), out)

    def passes(loader, epochs=2):
        return [torch.cat([b.images for b in loader]) for _ in range(epochs)]

    one = passes(make_loader(toy, SPEC, train=True, batch_size=4, seed=5, cache_dir=tmp_path))
    two = passes(make_loader(toy, SPEC, train=True, batch_size=4, seed=5, cache_dir=tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    assert not torch.equal(one[0], one[1])  # new order and new draws each epoch
    other = passes(make_loader(toy, SPEC, train=True, batch_size=4, seed=6, cache_dir=tmp_path))
    assert not torch.equal(one[0], other[0])


@pytest.mark.slow
def test_workers_give_the_same_batches_as_the_main_process(toy, tmp_path):
    kwargs = dict(train=True, batch_size=4, seed=1, cache_dir=tmp_path)
    main = [b.images for b in make_loader(toy, SPEC, num_workers=0, **kwargs)]
    workers = [b.images for b in make_loader(toy, SPEC, num_workers=2, **kwargs)]
    assert all(torch.equal(a, b) for a, b in zip(main, workers)) and len(main) == len(workers)


def test_default_cache_dir_follows_the_environment(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("MTFAP_CACHE", str(tmp_path / "env-cache"))
    build_cache(toy, SPEC, progress=False)
    assert (tmp_path / "env-cache" / "decoded").is_dir()
    assert os.listdir(tmp_path / "env-cache" / "decoded")


def test_framing_shows_a_turned_window_and_leaves_the_other_draws_alone():
    images = torch.rand(64, 3, 40, 40) * 0.9 + 0.1  # no pixel is black before framing
    plain = Augmentation()(images, range(64), seed=3, epoch=1)
    framed = Augmentation(frame_prob=0.5, frame_side=(0.5, 0.5), frame_angle=0.0,
                          frame_jitter=0.0, frame_centre=(0.5, 0.5))
    out = framed(images, range(64), seed=3, epoch=1)
    black = (out == 0).all(dim=1)  # (N, H, W): pixels blacked out by the framing
    hit = black.flatten(1).any(dim=1)
    assert 16 < int(hit.sum()) < 48  # about half the images are framed
    # Outside the framing, every draw (flip, crop, shift, brightness, contrast) is the same.
    assert torch.equal(out[~hit], plain[~hit])
    inside = ~black[hit]
    # An upright centred window of half the side: rows and columns 10..29 are kept.
    assert inside[:, 10:30, 10:30].all() and not inside[:, :9].any() and not inside[:, 31:].any()
    assert torch.equal(out[hit][:, :, 10:30, 10:30], plain[hit][:, :, 10:30, 10:30])
    with pytest.raises(ValueError, match="frame_prob"):
        Augmentation(frame_prob=1.5)


def test_gaussian_blur_matches_pillow_and_keeps_the_mean():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    ours = gaussian_blur(x, 2.0)
    assert ours.shape == x.shape
    assert abs(ours.mean().item() - x.mean().item()) < 2e-3
    from PIL import ImageFilter
    pillow = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(2))) / 255
    inner = (ours[0].permute(1, 2, 0).numpy() - pillow)[8:-8, 8:-8]  # edges are handled apart
    assert np.abs(inner).mean() < 0.01 and ours.std() < 0.5 * x.std()


def test_blur_and_grey_hit_their_share_of_images_and_leave_the_other_draws_alone():
    images = torch.rand(200, 3, 40, 40)
    plain = Augmentation()(images, range(200), seed=3, epoch=1)
    out = Augmentation(blur_prob=0.3, grey_prob=0.2)(images, range(200), seed=3, epoch=1)
    changed = (out != plain).flatten(1).any(dim=1)
    grey = ((out[:, 0] == out[:, 1]) & (out[:, 1] == out[:, 2])).flatten(1).all(dim=1)
    assert 30 < int(grey.sum()) < 55  # about a fifth
    assert 60 < int(changed.sum()) < 110  # 1 - 0.7 * 0.8 = 44 % changed
    assert torch.equal(out[~changed], plain[~changed])  # flip, crop, colour: the same draws
    blurred = changed & ~grey
    # Blurs flatten the noise (the weakest ones, 0.16 px at 40 px, barely at all).
    ours, theirs = out[blurred].std(dim=(2, 3)), plain[blurred].std(dim=(2, 3))
    assert (ours <= theirs + 1e-6).all() and ours.mean() < 0.9 * theirs.mean()
    with pytest.raises(ValueError, match="blur_prob"):
        Augmentation(blur_prob=2.0)


def test_jpeg_hits_its_share_of_images_with_pillows_round_trip_and_leaves_the_rest_alone():
    import io
    images = torch.rand(100, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    plain = Augmentation(blur_prob=0.3)(images, range(100), seed=3, epoch=1)
    out = Augmentation(blur_prob=0.3, jpeg_prob=0.3, jpeg_quality=(20, 20))(
        images, range(100), seed=3, epoch=1)
    changed = (out != plain).flatten(1).any(dim=1)
    assert 15 < int(changed.sum()) < 45  # about 30
    assert torch.equal(out[~changed], plain[~changed])  # every other draw is the same
    for row in torch.nonzero(changed).flatten()[:5]:
        pixels = (plain[row] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
        buffer = io.BytesIO()
        Image.fromarray(pixels.numpy()).save(buffer, "JPEG", quality=20)
        expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")) / 255.0
        np.testing.assert_allclose(out[row].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="jpeg_quality"):
        Augmentation(jpeg_prob=0.5, jpeg_quality=(0, 50))


def test_cover_paints_one_rectangle_of_its_drawn_size_on_its_share_and_leaves_the_rest_alone():
    images = torch.rand(200, 3, 40, 50, generator=torch.Generator().manual_seed(2))
    settings = dict(blur_prob=0.3, grey_prob=0.1, jpeg_prob=0.2, frame_prob=0.5)
    plain = Augmentation(**settings)(images, range(200), seed=3, epoch=1)
    cover = Augmentation(**settings, cover_prob=0.4, cover_area=(0.1, 0.2), cover_aspect=(0.5, 2))
    out = cover(images, range(200), seed=3, epoch=1)
    changed = (out != plain).flatten(1).any(dim=1)
    assert 60 < int(changed.sum()) < 100  # about 80
    assert torch.equal(out[~changed], plain[~changed])  # every other draw is the same
    # Before the blur, grey, JPEG and framing: the bare step paints exact one-colour boxes.
    bare = Augmentation(cover_prob=0.4, cover_area=(0.1, 0.2), cover_aspect=(0.5, 2))
    base = Augmentation()(images, range(200), seed=3, epoch=1)
    painted = bare.cover(base, range(200), seed=3, epoch=1)
    diff = (painted != base).any(dim=1)  # (N, H, W)
    hit = diff.flatten(1).any(dim=1)
    assert not (changed & ~hit).any()  # every image changed above was painted here
    for row in torch.nonzero(hit).flatten()[:20]:
        rows_in, cols_in = torch.nonzero(diff[row].any(dim=1)), torch.nonzero(diff[row].any(dim=0))
        top, bottom = int(rows_in.min()), int(rows_in.max()) + 1
        left, right = int(cols_in.min()), int(cols_in.max()) + 1
        box = painted[row, :, top:bottom, left:right]
        assert torch.equal(box, box[:, :1, :1].expand_as(box))  # one colour
        area = (bottom - top) * (right - left) / (40 * 50)
        assert 0.08 < area < 0.23 and 0.4 < (right - left) / (bottom - top) < 2.5
    with pytest.raises(ValueError, match="cover_area"):
        Augmentation(cover_prob=0.5, cover_area=(0.3, 0.1))


def test_cover_centre_keeps_the_rectangles_in_their_box_and_covered_names_the_painted_images():
    images = torch.rand(300, 3, 40, 50, generator=torch.Generator().manual_seed(4))
    lower = Augmentation(cover_prob=0.5, cover_area=(0.05, 0.1), cover_aspect=(1, 2),
                         cover_centre=(0.4, 0.7, 0.6, 0.85))
    painted = lower.cover(images, range(300), seed=5, epoch=2)
    diff = (painted != images).any(dim=1)  # (N, H, W)
    hit = diff.flatten(1).any(dim=1).numpy()
    np.testing.assert_array_equal(hit, lower.covered(range(300), seed=5, epoch=2))
    assert 120 < hit.sum() < 180  # about 150
    for row in np.flatnonzero(hit):
        ys, xs = torch.nonzero(diff[row], as_tuple=True)
        centre_x = (int(xs.min()) + int(xs.max()) + 1) / 2 / 50
        centre_y = (int(ys.min()) + int(ys.max()) + 1) / 2 / 40
        # Centres drawn in the box, moved by at most a pixel in rounding, or pushed inside.
        assert 0.4 - 0.02 <= centre_x <= 0.6 + 0.02
        assert 0.7 - 0.03 <= centre_y <= 0.85 + 0.03 or int(ys.max()) == 39
    assert not Augmentation().covered(range(5), seed=5, epoch=2).any()
    with pytest.raises(ValueError, match="cover_centre"):
        Augmentation(cover_prob=0.5, cover_centre=(0.6, 0.7, 0.4, 0.8))
    with pytest.raises(ValueError, match="cover_unlabel"):
        Augmentation(cover_prob=0.5, cover_unlabel="Smiling")


def test_cover_unlabel_reads_the_named_labels_of_covered_images_as_missing(toy, tmp_path):
    cover = Augmentation(cover_prob=0.5, cover_unlabel=("Smiling",))
    loader = make_loader(toy, SPEC, train=True, batch_size=N_IMAGES, seed=1,
                         augmentation=cover, cache_dir=tmp_path / "cache")
    batch = next(iter(loader))
    index = batch.index.tolist()
    covered = cover.covered(index, seed=1, epoch=0)
    assert 0 < covered.sum() < N_IMAGES  # both kinds in the batch (seeded)
    expected = toy.mask[index].copy()
    expected[covered, 1] = False  # Smiling only; Male and Young keep their labels
    np.testing.assert_array_equal(batch.mask.numpy(), expected)
    with pytest.raises(ValueError, match="'Lipstick'.*Male, Smiling, Young"):
        make_loader(toy, SPEC, train=True, cache_dir=tmp_path / "cache",
                    augmentation=Augmentation(cover_prob=0.5, cover_unlabel=("Lipstick",)))
