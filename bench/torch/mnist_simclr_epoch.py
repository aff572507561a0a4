"""One SimCLR epoch on MNIST-10k in PyTorch: the workload of
`vkgrad train --config configs/mnist10k-simclr.toml --epochs 1` (the ConvNet 32-64 with batch
norm and a 128-wide Linear, the projection head 128 -> 128 (BN, ReLU) -> 64, NT-Xent at
temperature 0.2, AdamW lr 1e-3, batch 256 over the 8,000 training images, the SimCLR
augmentation adapted to digits), then the per-epoch kNN pass (k 20, temperature 0.1, cosine,
2,000 held-out images against the 8,000) that vkgrad's epoch `seconds` includes.

Usage: python bench/torch/mnist_simclr_epoch.py [--epochs E]     CPU, 2 threads
Prints JSON: seconds per epoch with and without the kNN pass, and the kNN accuracy.
Needs torch and numpy (a venv outside the repo: pip install torch numpy).

The augmentation is written with tensor ops here (torchvision is not needed): a random resized
crop (area 0.5-1, ratio 3/4-4/3) by affine resampling, brightness and contrast jitter 0.4 with
p 0.8, Gaussian blur (3x3, sigma 0.1-2) with p 0.5; no flips (digits), grayscale is a no-op on
one channel. It costs about what vkgrad's does; the point is the time of the same work, not
identical random views."""
import gzip, json, math, os, sys, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.manual_seed(0)
root = os.path.join(os.path.dirname(__file__), "..", "..", "data")


def idx(name):
    raw = gzip.open(os.path.join(root, name)).read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


x_all = torch.tensor(idx("mnist10k-images-idx3-ubyte.gz"), dtype=torch.float32)[:, None] / 255
y_all = torch.tensor(idx("mnist10k-labels-idx1-ubyte.gz").astype(np.int64))
held = torch.arange(len(x_all)) % 5 == 0
x_train, y_train, x_test, y_test = x_all[~held], y_all[~held], x_all[held], y_all[held]


def encoder():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(7 * 7 * 64, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU())


def augment(x):
    n = x.shape[0]
    area = torch.empty(n).uniform_(0.5, 1.0)
    ratio = torch.exp(torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3)))
    w, h = torch.sqrt(area * ratio).clamp(max=1), torch.sqrt(area / ratio).clamp(max=1)
    cx, cy = (torch.rand(n) * 2 - 1) * (1 - w), (torch.rand(n) * 2 - 1) * (1 - h)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    x = F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), align_corners=False)
    jit = (torch.rand(n) < 0.8)[:, None, None, None]
    b = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4)
    c = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    x = torch.where(jit, (((x * b).clamp(0, 1) - m) * c + m).clamp(0, 1), x)
    sigma = torch.empty(n).uniform_(0.1, 2.0)
    g = torch.exp(-torch.tensor([-1.0, 0.0, 1.0])[None] ** 2 / (2 * sigma[:, None] ** 2))
    g = g / g.sum(1, keepdim=True)
    k = (g[:, :, None] * g[:, None, :])[:, None]  # [n, 1, 3, 3]
    blurred = F.conv2d(F.pad(x.transpose(0, 1), (1, 1, 1, 1), mode="replicate"), k, groups=n)
    return torch.where((torch.rand(n) < 0.5)[:, None, None, None], blurred.transpose(0, 1), x)


def nt_xent(z1, z2, tau=0.2):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    s = (z @ z.t() / tau).fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    return F.cross_entropy(s, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]))


def knn(enc, k=20, t=0.1):
    enc.eval()
    with torch.no_grad():
        f_tr = F.normalize(torch.cat([enc(b) for b in x_train.split(1000)]), dim=1)
        f_te = F.normalize(torch.cat([enc(b) for b in x_test.split(1000)]), dim=1)
        sim = f_te @ f_tr.t()
        top, at = sim.topk(k, dim=1)
        votes = torch.zeros(len(f_te), 10).scatter_add_(1, y_train[at], (top / t).exp())
    enc.train()
    return (votes.argmax(1) == y_test).float().mean().item()


enc = encoder()
head = nn.Sequential(nn.Linear(128, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU(),
                     nn.Linear(128, 64))
opt = torch.optim.AdamW(list(enc.parameters()) + list(head.parameters()), lr=1e-3)
epochs = int(sys.argv[sys.argv.index("--epochs") + 1]) if "--epochs" in sys.argv else 1
rows = []
for epoch in range(epochs):
    t0 = time.perf_counter()
    order = torch.randperm(len(x_train))
    for i in range(len(order) // 256):
        xb = x_train[order[256 * i:256 * (i + 1)]]
        loss = nt_xent(head(enc(augment(xb))), head(enc(augment(xb))))
        opt.zero_grad()
        loss.backward()
        opt.step()
    t1 = time.perf_counter()
    acc = knn(enc)
    t2 = time.perf_counter()
    rows.append({"epoch": epoch + 1, "seconds": t2 - t0, "train_seconds": t1 - t0,
                 "knn_seconds": t2 - t1, "knn_accuracy": acc, "loss": loss.item()})
print(json.dumps(rows))
