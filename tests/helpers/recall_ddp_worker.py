"""Run by tests/losses/test_recall.py under torchrun (2 CPU ranks, gloo): recall loss with and
without ``sync_counts`` on each rank's shard of a fixed stream of batches.

Each rank saves, per batch: the module's weights (moving average, counts synchronised or not)
and the functional's value and gradient (plain and focal) on its shard."""

import sys
from pathlib import Path

import torch

NUM_CLASSES = 5
IGNORE = 255
#: rank r gets images SHARDS[r]: uneven shards, as the last batch of an epoch may be
SHARDS = (slice(0, 2), slice(2, 5))


def batches():
    """Five batches of 5 images whose label sets change (classes appear and disappear), with
    ignored pixels; the shards hold different classes, so local and global counts differ."""
    g = torch.Generator().manual_seed(0)
    label_sets = [[0, 1, 2], [1, 3], [0, 4], [2, 3, 4], [0, 1, 2, 3, 4]]
    out = []
    for labels in label_sets:
        logits = torch.randn(5, NUM_CLASSES, 4, 5, generator=g, dtype=torch.float64)
        target = torch.tensor(labels)[torch.randint(0, len(labels), (5, 4, 5), generator=g)]
        target[0] = labels[0]  # image 0 (rank 0) holds one class only
        logits += 1.5 * torch.nn.functional.one_hot(target, NUM_CLASSES).permute(0, 3, 1, 2)
        target[torch.rand(5, 4, 5, generator=g) < 0.2] = IGNORE
        out.append((logits, target))
    return out


def main(out: Path) -> None:
    import torch.distributed as dist

    from pixelweight.losses import RecallLoss, recall_loss

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    shard = SHARDS[rank]
    synced = RecallLoss(NUM_CLASSES, momentum=0.5, ignore_index=IGNORE).double()
    local = RecallLoss(NUM_CLASSES, momentum=0.5, ignore_index=IGNORE, sync_counts=False).double()
    record = {"synced": [], "local": [], "loss": [], "grad": [], "focal_loss": [], "focal_grad": []}
    for logits, target in batches():
        x, t = logits[shard], target[shard]
        synced(x, t)
        local(x, t)
        record["synced"].append(synced.weights.clone())
        record["local"].append(local.weights.clone())
        for key, gamma in (("", 0.0), ("focal_", 1.0)):
            z = x.clone().requires_grad_(True)
            loss = recall_loss(z, t, gamma, IGNORE)
            loss.backward()
            record[key + "loss"].append(loss.detach())
            record[key + "grad"].append(z.grad)
    torch.save(record, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
