"""The position-seeded training stream and its batch sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from deeplab_resnet.data.lists import read_list
from deeplab_resnet.data.stream import StreamBatchSampler, TrainStream, epoch_permutation
from deeplab_resnet.data.transforms import TrainTransform
from deeplab_resnet.dataset_info import IMG_MEAN_BGR


def test_every_epoch_visits_every_image_once_in_a_new_order(voc_fixture):
    pairs = read_list(voc_fixture, voc_fixture / "list_train.txt")
    stream = TrainStream(pairs, TrainTransform((33, 33), IMG_MEAN_BGR), seed=1234)
    n = len(pairs)
    epochs = [[stream.pair_at(e * n + i).image for i in range(n)] for e in range(3)]
    for order in epochs:
        assert Counter(order) == Counter(p.image for p in pairs)
    assert epochs[0] != epochs[1] != epochs[2]
    # The order is a function of the seed only.
    assert epoch_permutation(1234, 1, n).tolist() == epoch_permutation(1234, 1, n).tolist()
    assert epoch_permutation(1234, 1, n).tolist() != epoch_permutation(1235, 1, n).tolist()


def test_a_sample_depends_only_on_seed_and_position(voc_fixture):
    pairs = read_list(voc_fixture, voc_fixture / "list_train.txt")
    t = TrainTransform((41, 41), IMG_MEAN_BGR, random_scale=True, random_mirror=True)
    a, b = TrainStream(pairs, t, seed=7), TrainStream(pairs, t, seed=7)
    for position in (0, 5, 23):
        xa, ya = a[position]
        xb, yb = b[position]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Loaded by DataLoader workers (another process each), the samples are the same.
    loader = torch.utils.data.DataLoader(a, batch_sampler=[[0, 5], [23]], num_workers=1)
    got = list(loader)
    assert torch.equal(got[0][0][1], b[5][0]) and torch.equal(got[1][1][0], b[23][1])


def test_sampler_slices_the_same_global_batches_for_any_world_size():
    one = list(StreamBatchSampler(global_batch=4, accum=2, start_step=0, num_steps=3))
    assert one[0] == [0, 1, 2, 3] and one[1] == [4, 5, 6, 7] and len(one) == 6
    ranks = [list(StreamBatchSampler(4, 2, 0, 3, rank=r, world=2)) for r in range(2)]
    for i, batch in enumerate(one):
        assert ranks[0][i] + ranks[1][i] == batch
    # Resuming at step 2 continues the same stream.
    assert list(StreamBatchSampler(4, 2, 2, 3)) == one[4:]


def test_sampler_rejects_a_batch_that_does_not_split():
    import pytest

    with pytest.raises(ValueError, match="divisible"):
        StreamBatchSampler(5, 1, 0, 2, world=2)


def test_samples_have_crop_size_and_valid_labels(voc_fixture):
    pairs = read_list(voc_fixture, voc_fixture / "list_train.txt")
    stream = TrainStream(pairs, TrainTransform((65, 49), IMG_MEAN_BGR, random_scale=True), seed=1)
    x, y = stream[3]
    assert x.shape == (3, 65, 49) and y.shape == (65, 49)
    values = set(np.unique(y.numpy()).tolist())
    assert values <= set(range(21)) | {255}
