"""CNA under DDP: 2 gloo processes, all-gathered features, local anchors.

Each rank gathers the global batch with `all_gather_with_grad`, computes the loss for its own
anchors only, and DDP averages the parameter gradients. That must equal one process computing
the mean loss over the concatenated batch; the local feature gradients, averaged the same way
(divided by the world size), must equal the corresponding rows of the one-process gradient.
"""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from conftest import free_port
from pct_pipeline.distributed import all_gather_with_grad
from pct_pipeline.losses import LossConfig, cna, pct_loss

WORLD, LOCAL_BATCH, CLASSES = 2, 3, 4
CFG = LossConfig(mode="cna", kd_alpha=0.6, kd_loss_weight=2.0, cna_temperature=0.1,
                 kd_filter="old_correct", filter_base=1.0, filter_scale=2.0, bct_loss_weight=0.5)


class Net(nn.Module):
    """Returns (logits [B, CLASSES], features [B, 5])."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(6, 5), nn.Linear(5, CLASSES)

    def forward(self, x):
        features = torch.tanh(self.body(x))
        return self.head(features), features


def global_batch():
    g = torch.Generator().manual_seed(7)
    n = WORLD * LOCAL_BATCH
    return dict(x=torch.randn(n, 6, generator=g),
                labels=torch.randint(CLASSES, (n,), generator=g),
                old_logits=torch.randn(n, CLASSES, generator=g),
                old_feats=torch.randn(n, 7, generator=g),
                bct_w=torch.randn(CLASSES, 5, generator=g),
                bct_b=torch.randn(CLASSES, generator=g))


def make_net():
    torch.manual_seed(0)
    return Net()


def worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    data, rows = global_batch(), slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    model = DistributedDataParallel(make_net())
    # 1) the full loss through DDP: parameter gradients are averaged over ranks
    logits, feats = model(data["x"][rows])
    old_feats = all_gather_with_grad(data["old_feats"][rows])
    total, _ = pct_loss(CFG, logits, data["labels"][rows], data["old_logits"][rows],
                        all_gather_with_grad(feats), old_feats,
                        bct_head=(data["bct_w"], data["bct_b"]), cna_anchors=rows)
    total.backward()
    grads = {name: p.grad for name, p in model.module.named_parameters()}
    # 2) plain cna on leaf features: the gradient of this rank's rows, before averaging
    local = torch.randn(WORLD * LOCAL_BATCH, 5, generator=torch.Generator().manual_seed(3))[rows]
    local.requires_grad_(True)
    cna(all_gather_with_grad(local), old_feats, 0.1, anchors=rows).mean().backward()
    torch.save({"params": grads, "features": local.grad / WORLD}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_cna_ddp_gradients_equal_single_process(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    data = global_batch()
    model = make_net()
    logits, feats = model(data["x"])
    total, _ = pct_loss(CFG, logits, data["labels"], data["old_logits"], feats,
                        data["old_feats"], bct_head=(data["bct_w"], data["bct_b"]))
    total.backward()
    features = torch.randn(WORLD * LOCAL_BATCH, 5, generator=torch.Generator().manual_seed(3))
    features.requires_grad_(True)
    cna(features, data["old_feats"], 0.1).mean().backward()
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, param in model.named_parameters():
            assert torch.allclose(got["params"][name], param.grad, atol=1e-6), (rank, name)
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        assert torch.allclose(got["features"], features.grad[rows], atol=1e-6), rank
        assert got["features"].abs().sum() > 0
