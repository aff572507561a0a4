"""The simclr_mlp_step workload of `vkgrad bench` in PyTorch; prints JSON {"N": ms} medians.
Usage: python bench/torch/simclr_mlp_step.py [N ...]        CPU, 2 threads (the build machine)
       TORCH_DEVICE=cuda python bench/torch/simclr_mlp_step.py [N ...]   on a GPU machine
Needs torch and numpy (on the build machine: a venv outside the repo, pip install torch numpy)."""
import json, os, sys, time, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
dev = torch.device(os.environ.get("TORCH_DEVICE", "cpu"))
if dev.type == "cpu": torch.set_num_threads(2)
torch.manual_seed(0)
def sync():
    if dev.type == "cuda": torch.cuda.synchronize()
def ntxent(z1, z2, tau=0.5):
    z = F.normalize(torch.cat([z1, z2]), dim=1); s = z @ z.t() / tau; n = z1.shape[0]
    s = s.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=dev), float("-inf"))
    return F.cross_entropy(s, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(dev))
out = {"device": str(dev)}
for N in [int(a) for a in sys.argv[1:]] or [256, 1024]:
    enc = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU()).to(dev)
    proj = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128)).to(dev)
    opt = torch.optim.SGD(list(enc.parameters()) + list(proj.parameters()), lr=0.1, momentum=0.9)
    x1, x2 = torch.randn(N, 64, device=dev), torch.randn(N, 64, device=dev)
    def step():
        opt.zero_grad(); l = ntxent(proj(enc(x1)), proj(enc(x2))); l.backward(); opt.step(); return l.item()
    for _ in range(3): step()
    ts = []
    for _ in range(20):
        sync(); t = time.perf_counter(); step(); sync(); ts.append(time.perf_counter() - t)
    out[str(N)] = 1e3 * float(np.median(ts))
print(json.dumps(out))
