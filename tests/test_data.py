"""The data pipeline: sizes, dtypes, splits, shuffles, augmentation, the reader's checks.

The augmentation's shared formula (``core.draws``, applied by both frameworks) is tested
against torch's own ops (``F.pad`` in both modes, slicing, ``flip``), an independent
reference. Faults these tests were checked against: reflect padding replaced by edge
replication (``F.pad(mode="replicate")``'s result: the reference test fails); cutout
writing uint8 0 instead of the mean; the split's left-over images always given to the
lowest class numbers; the reader accepting a copy with a batch file missing rows.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifar_lightning import CIFARDataError, CIFARDataModule
from cifar_lightning.core.data import EpochSampler, stratified_split
from cifar_lightning.core.draws import Augmentation, draw_epoch
from cifar_lightning.data import augment, cutout, normalize


def apply(images, draws, aug):
    """The torch pipeline's crop and flip of `images` (rows 0..B-1 of the draws)."""
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    return augment(images, t(draws.shift), t(draws.flip), aug)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("padding", [2, 4])
def test_crop_and_flip_equal_torchs_own_pad_crop_and_flip(pad_mode, padding):
    """Each image equals torch's reference: F.pad (reflect, or zeros), the 32x32 window at
    its drawn shift, mirrored where its flip is 1."""
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    aug = Augmentation(crop_padding=padding, pad_mode=pad_mode, flip="random")
    draws = draw_epoch(aug, 64, seed=3, epoch=1)
    out = apply(images, draws, aug)
    padded = F.pad(images.float(), (padding,) * 4, mode=pad_mode).to(torch.uint8)
    for i in range(64):
        dy, dx = draws.shift[i]
        expected = padded[i, :, dy : dy + 32, dx : dx + 32]
        expected = expected.flip(-1) if draws.flip[i] else expected
        assert torch.equal(out[i], expected), f"image {i}, shift {(dy, dx)}, flip {draws.flip[i]}"


def make_dm(root, **kw):
    kw.setdefault("batch_size", 32)
    dm = CIFARDataModule("cifar10", root, download=False, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_prepare_data_sets_no_state(cifar10_dir):
    dm = CIFARDataModule("cifar10", cifar10_dir, download=False)
    before = dict(vars(dm))
    dm.prepare_data()
    assert dict(vars(dm)) == before


def test_batches_sizes_dtypes_and_normalisation(cifar10_dir):
    dm = make_dm(cifar10_dir)
    assert dm.num_classes == 10 and dm.classes[0] == "class0"
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 200 // 32  # last partial batch dropped
    x, y = batches[0]
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    test = list(dm.test_dataloader())
    assert sum(len(b[1]) for b in test) == 50  # default: evaluate on the test set, nothing dropped
    assert len(list(dm.val_dataloader())) == len(test)
    # normalised with CIFAR-10's own statistics: un-normalising gives back the raw uint8 test images
    raw = dm.split("test")[0][:50].float() / 255
    mean, std = torch.tensor(dm.info.mean).view(1, 3, 1, 1), torch.tensor(dm.info.std).view(1, 3, 1, 1)
    assert torch.allclose(test[0][0] * std + mean, raw, atol=1e-5)


def test_val_size_holds_out_a_stratified_fixed_split(cifar10_dir):
    dm = make_dm(cifar10_dir, val_size=50, seed=3)
    assert len(dm.split("train")[0]) == 150 and len(dm.split("val")[0]) == 50
    assert torch.bincount(dm.split("val")[1], minlength=10).tolist() == [5] * 10
    again = make_dm(cifar10_dir, val_size=50, seed=3)
    assert torch.equal(again.split("val")[0], dm.split("val")[0])
    other = make_dm(cifar10_dir, val_size=50, seed=4)
    assert not torch.equal(other.split("val")[0], dm.split("val")[0])


def test_stratified_split_rejects_bad_size():
    with pytest.raises(ValueError, match="val_size must lie in"):
        stratified_split(np.zeros(10, dtype=int), 10, 0)


def test_same_seed_same_batches_other_seed_other_batches(cifar10_dir):
    first = [b[0] for b in make_dm(cifar10_dir, seed=1).train_dataloader()]
    second = [b[0] for b in make_dm(cifar10_dir, seed=1).train_dataloader()]
    third = [b[0] for b in make_dm(cifar10_dir, seed=2).train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], third[0])


def test_epochs_reshuffle(cifar10_dir):
    loader = make_dm(cifar10_dir).train_dataloader()
    y0 = torch.cat([b[1] for b in loader])
    loader.sampler.set_epoch(1)  # as Lightning does at each epoch start
    y1 = torch.cat([b[1] for b in loader])
    assert not torch.equal(y0, y1)


def test_crop_and_flip_happen_and_keep_pixels():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    aug = Augmentation(crop_padding=4, flip="random")
    draws = draw_epoch(aug, 64, seed=0, epoch=0)
    out = apply(images, draws, aug)
    assert out.shape == images.shape and out.dtype == torch.uint8
    # an image with no shift is either itself or its mirror, as its flip says
    centred = np.flatnonzero((draws.shift == 4).all(1))
    for i in centred.tolist():
        expected = images[i].flip(-1) if draws.flip[i] else images[i]
        assert torch.equal(out[i], expected)
    assert 10 < int(draws.flip.sum()) < 54
    assert (draws.shift != 4).any(1).mean() > 0.5  # most images are shifted
    # a shift of (0, 0) moves the image down-right by the padding, zeros fill in
    shifted = np.flatnonzero((draws.shift == 0).all(1) & (draws.flip == 0))
    for i in shifted.tolist():
        assert torch.equal(out[i, :, 4:, 4:], images[i, :, :28, :28]) and out[i, :, :4].eq(0).all()


def test_alternating_flip_mirrors_every_image_once_per_two_epochs():
    aug = Augmentation(crop_padding=2, pad_mode="reflect", flip="alternating")
    even, odd = draw_epoch(aug, 1000, 0, 4).flip, draw_epoch(aug, 1000, 0, 5).flip
    assert np.array_equal(even, 1 - odd)
    assert 400 < int(even.sum()) < 600


def test_cutout_writes_the_mean_in_a_square():
    """airbench's batch_cutout sets the square to 0 after normalising: the dataset's mean,
    not black. The loader's batches hold an 8x8 square of exact zeros per image, at the
    drawn corner, and nothing else changed."""
    images = torch.full((8, 3, 32, 32), 200, dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    draws = draw_epoch(Augmentation(crop_padding=0, flip="none", cutout=8), 8, 0, 0)
    out = cutout(normalize(images, mean, std), torch.from_numpy(draws.cutout), 8)
    plain = normalize(images, mean, std)
    for i, (y, x) in enumerate(draws.cutout):
        assert out[i, :, y : y + 8, x : x + 8].eq(0).all()
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[y : y + 8, x : x + 8] = False
        assert torch.equal(out[i][:, outside], plain[i][:, outside])


def test_the_loader_applies_cutout_after_normalising(cifar10_dir):
    dm = make_dm(cifar10_dir, crop_padding=0, flip="none", cutout=12)
    images, _ = next(iter(dm.train_dataloader()))
    zeros = (images == 0).all(dim=1).sum(dim=(1, 2))  # pixels equal to the mean in every channel
    assert zeros.min() >= 144  # the 12x12 square in each image


def test_split_leftovers_go_to_classes_chosen_by_the_seed():
    """5,005 of a balanced 10-class set: five classes hold out one more image; which five
    depends on the seed (it was always classes 0-4)."""
    labels = np.repeat(np.arange(10), 1000)
    extra = set()
    for seed in range(6):
        _, held = stratified_split(labels, 5005, seed)
        counts = np.bincount(labels[held], minlength=10)
        assert sorted(counts.tolist()) == [500] * 5 + [501] * 5
        extra.add(tuple(np.flatnonzero(counts == 501)))
    assert len(extra) > 1


def test_the_reader_checks_the_official_image_counts(cifar10_dir, monkeypatch):
    """A copy with fewer images than CIFAR-10's 50,000/10,000 is refused, naming the folder
    and both counts, unless CIFAR_ALLOW_PARTIAL_DATA=1 says it is meant."""
    from cifar_lightning.core.datasets import read_split

    monkeypatch.delenv("CIFAR_ALLOW_PARTIAL_DATA")
    with pytest.raises(
        CIFARDataError, match=r"cifar-10-batches-py: the training split holds 200 images, expected 50,000"
    ):
        read_split(cifar10_dir, "cifar10", train=True)
    monkeypatch.setenv("CIFAR_ALLOW_PARTIAL_DATA", "1")
    assert len(read_split(cifar10_dir, "cifar10", train=True)[1]) == 200


def test_bad_augmentation_settings():
    with pytest.raises(ValueError, match="flip must be"):
        Augmentation(flip="sometimes")


def test_epoch_sampler_shards_disjointly():
    shards = [EpochSampler(103, shuffle=True, seed=5, rank=r, world_size=2) for r in range(2)]
    a, b = (set(s.indices().tolist()) for s in shards)
    assert not a & b and len(a) == len(b) == 51
    with pytest.raises(ValueError, match="rank must lie"):
        EpochSampler(10, True, rank=2, world_size=2)


def test_missing_data_without_download_names_the_folder(tmp_path):
    dm = CIFARDataModule("cifar100", tmp_path / "nowhere", download=False)
    with pytest.raises(CIFARDataError, match="cifar-100-python/"):
        dm.prepare_data()


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    import urllib.request

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(CIFARDataError, match="download of cifar10 .* failed .*--data-dir"):
        CIFARDataModule("cifar10", tmp_path, download=True).prepare_data()


def archive_of(folder: Path, out: Path, member_name=None) -> str:
    """A .tar.gz of `folder` (as the official archive holds its one folder) at `out`; its md5."""
    import hashlib
    import tarfile

    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=member_name or folder.name)
    return hashlib.md5(out.read_bytes()).hexdigest()


def test_the_download_checks_the_archives_md5_and_extracts_it(tmp_path, monkeypatch):
    """With the standard library only (no torchvision): an archive whose md5 is the
    published one extracts and reads; one with another md5 is refused in one line naming
    both sums and nothing is extracted; a member that would leave the folder is refused.
    The archives are served from file:// addresses (urllib reads them as it reads https)."""
    from dataclasses import replace

    from conftest import write_cifar

    from cifar_lightning.core import datasets
    from cifar_lightning.core.data import CIFARData

    source = write_cifar(tmp_path / "src", "cifar10", n_train=100, n_test=20)
    md5 = archive_of(source / "cifar-10-batches-py", tmp_path / "c10.tar.gz")
    url = (tmp_path / "c10.tar.gz").as_uri()
    info = datasets.DATASETS["cifar10"]
    monkeypatch.setitem(datasets.DATASETS, "cifar10", replace(info, url=url, md5=md5))
    data = CIFARData("cifar10", tmp_path / "got", batch_size=10, download=True)
    assert data.training_set_size() == 100 and (tmp_path / "got/cifar-10-batches-py/test_batch").is_file()
    assert [p.name for p in (tmp_path / "got").iterdir()] == ["cifar-10-batches-py"]  # no archive left behind

    monkeypatch.setitem(datasets.DATASETS, "cifar10", replace(info, url=url, md5="0" * 32))
    with pytest.raises(CIFARDataError) as refused:
        datasets.download("cifar10", tmp_path / "bad")
    assert f"the archive's md5 is {md5}, the published one {'0' * 32}" in str(refused.value)
    assert "\n" not in str(refused.value) and not (tmp_path / "bad").exists()  # the folder it made is gone

    evil_md5 = archive_of(source / "cifar-10-batches-py", tmp_path / "evil.tar.gz", member_name="../escaped")
    monkeypatch.setitem(
        datasets.DATASETS, "cifar10", replace(info, url=(tmp_path / "evil.tar.gz").as_uri(), md5=evil_md5)
    )
    with pytest.raises(CIFARDataError, match="download of cifar10 .* failed"):
        datasets.download("cifar10", tmp_path / "evil")
    assert not (tmp_path / "escaped").exists()


def test_batch_larger_than_dataset(cifar10_dir):
    with pytest.raises(ValueError, match="batch_size 512 exceeds the 200 training images"):
        make_dm(cifar10_dir, batch_size=512).train_dataloader()


def test_sampler_length_matches_its_indices():
    for shuffle in (True, False):
        for world in (1, 2, 3):
            for rank in range(world):
                s = EpochSampler(103, shuffle=shuffle, seed=1, rank=rank, world_size=world)
                assert len(s) == len(s.indices()), (shuffle, world, rank)


def test_each_epoch_draws_anew():
    aug = Augmentation(crop_padding=4, flip="random", cutout=8)
    e0, e1, again = draw_epoch(aug, 500, 3, 0), draw_epoch(aug, 500, 3, 1), draw_epoch(aug, 500, 3, 0)
    for name in ("shift", "flip", "cutout"):
        assert not np.array_equal(getattr(e0, name), getattr(e1, name)), name
        assert np.array_equal(getattr(e0, name), getattr(again, name)), name
