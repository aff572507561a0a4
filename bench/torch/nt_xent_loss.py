"""PyTorch-CPU side of `vkgrad bench --filter contrastive_loss`: NT-Xent (tau = 0.5, as
contrastive::nt_xent's default) forward + backward on [N, 2, 128] normal features, the way
PyTorch Metric Learning and lightly compute it (the whole 2N x 2N similarity matrix).

    python3 bench/torch/nt_xent_loss.py [--threads 2]

Prints one JSON line per N with the median milliseconds of 3 runs after 1 warm-up (the same
protocol as vkgrad bench), and the peak resident memory of the process so far.
"""
import argparse, json, resource, time

import torch
import torch.nn.functional as F


def nt_xent(x, tau=0.5):
    n, v, d = x.shape
    z = F.normalize(x, dim=-1).transpose(0, 1).reshape(n * v, d)  # view-major rows
    sim = z @ z.t() / tau
    eye = torch.eye(n * v, dtype=torch.bool)
    sim = sim.masked_fill(eye, float("-inf"))
    pos = (torch.arange(n * v) + n) % (n * v)
    return (torch.logsumexp(sim, dim=1) - sim[torch.arange(n * v), pos]).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="1024,4096")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    for n in [int(s) for s in a.sizes.split(",")]:
        x = torch.randn(n, 2, 128, generator=g)
        ts = []
        for i in range(4):
            xg = x.clone().requires_grad_(True)
            t = time.perf_counter()
            loss = nt_xent(xg)
            loss.backward()
            ts.append((time.perf_counter() - t) * 1e3)
        ms = sorted(ts[1:])[1]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"name": "contrastive_loss", "batch": n, "ms": ms,
                          "loss": loss.item(), "peak_mib": round(peak)}))


if __name__ == "__main__":
    main()
