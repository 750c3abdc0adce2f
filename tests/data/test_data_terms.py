"""WithWFMTerms: the Weighted-F-measure terms of every mask, computed once and served with the batch."""

import pytest
import torch

from pixelweight.data import SalientDigits, WithWFMTerms
from pixelweight.losses import WeightedFMeasureLoss
from pixelweight.metrics import wfm_gt_terms


def _tiny_salient(n=12):
    return SalientDigits("train", n, size=32, salient_size=(16, 24), distractor_size=(8, 12), seed=5, cache_dir=False)


def test_cached_terms_give_the_loss_it_would_compute_itself():
    data = WithWFMTerms(_tiny_salient(6))
    batch = torch.utils.data.default_collate([data[i] for i in range(6)])
    images, targets = batch
    logits = torch.randn(6, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    cached = WeightedFMeasureLoss(reduction="none")(logits, targets["mask"], targets["terms"])
    fresh = WeightedFMeasureLoss(reduction="none")(logits, targets["mask"])
    torch.testing.assert_close(cached, fresh, rtol=0, atol=1e-6)
    direct = wfm_gt_terms(targets["mask"] == 1, dtype=torch.float32)
    for name in direct._fields:
        assert torch.equal(getattr(targets["terms"], name), getattr(direct, name)), name


def test_with_wfm_terms_validates_and_delegates():
    data = WithWFMTerms(_tiny_salient(3))
    assert data.config["size"] == 32 and data.labels.shape == (3, 32, 32) and len(data) == 3
    assert data[-1][1]["terms"].nearest.dtype == torch.long
    with pytest.raises(IndexError):
        data[3]
    with pytest.raises(TypeError, match="map-style"):
        WithWFMTerms(5)
    with pytest.raises(ValueError, match="empty"):
        WithWFMTerms([])
    with pytest.raises(ValueError, match="only 0 and 1"):
        WithWFMTerms([(torch.zeros(1, 4, 4), torch.full((4, 4), 2))])
    with pytest.raises(ValueError, match="one shape"):
        WithWFMTerms([(torch.zeros(1, 4, 4), torch.zeros(4, 4)), (torch.zeros(1, 5, 5), torch.zeros(5, 5))])
    with pytest.raises(ValueError, match="floating"):
        WithWFMTerms(_tiny_salient(2), dtype=torch.int64)
