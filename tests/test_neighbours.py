"""NearestNeighbours against scipy's cKDTree: same index for every key, except exact ties (either index accepted)."""
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from offrl.neighbours import NearestNeighbours

N, Q = 100_000, 1024


def _random(rng, n, d):
    return rng.standard_normal((n, d)).astype(np.float32)


def _trajectories(rng, n, d, length=1000):
    """Random walks: episodes of `length` small steps from near a common start, then standardised."""
    steps = 0.05 * rng.standard_normal((n // length, length, d))
    steps[:, 0] = 0.3 * rng.standard_normal((n // length, d))
    x = np.cumsum(steps, axis=1).reshape(n, d)
    return ((x - x.mean(0)) / (x.std(0) + 1e-3)).astype(np.float32)


def _case(kind, d, seed):
    rng = np.random.default_rng(seed)
    x = (_random if kind == "random" else _trajectories)(rng, N, d)
    x[rng.integers(0, N, 200)] = x[rng.integers(0, N, 200)]  # duplicated rows -> exact ties
    src = rng.integers(0, N, Q)
    keys = x[src].copy()
    scale = rng.choice([1e-3, 1e-2, 1e-1], size=(Q, 1)).astype(np.float32)
    keys[: 3 * Q // 4] += scale[: 3 * Q // 4] * rng.standard_normal((3 * Q // 4, d)).astype(np.float32)
    return x, keys  # the last quarter of the keys are exactly data points


CASES = {"random14": ("random", 14, 0), "random23": ("random", 23, 1), "walks14": ("walks", 14, 2)}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    x, keys = _case(*CASES[request.param])
    ref_d, ref_i = cKDTree(x.astype(np.float64)).query(keys.astype(np.float64), k=1)
    return x, keys, ref_d ** 2, ref_i


def _check(x, keys, ref_d2, ref_i, idx):
    idx = idx.numpy()
    assert idx.shape == ref_i.shape and idx.dtype == np.int64
    mismatch = idx != ref_i
    got_d2 = ((keys.astype(np.float64) - x[idx].astype(np.float64)) ** 2).sum(1)
    # a different index is accepted only when its distance equals the reference's within float32 tolerance
    tie = np.abs(got_d2 - ref_d2) <= 1e-5 * ref_d2 + 1e-10
    assert np.all(~mismatch | tie), f"{(mismatch & ~tie).sum()} keys got a farther neighbour"


@pytest.mark.parametrize("method", ["kdtree", "brute", "blocks"])
def test_matches_ckdtree(case, method):
    x, keys, ref_d2, ref_i = case
    # chunk_rows 30 000 leaves a padded last chunk (100 000 = 3 x 30 000 + 10 000); "blocks" sends every key to
    # the kdtree method's block scan (near_radius 0), in 1 024-row blocks (the last one padded)
    nn = NearestNeighbours(torch.from_numpy(x), method="kdtree" if method == "blocks" else method,
                           chunk_rows=30_000, **({"near_radius": 0.0, "block_rows": 1024} if method == "blocks" else {}))
    _check(x, keys, ref_d2, ref_i, nn.query(torch.from_numpy(keys)))


@pytest.mark.parametrize("kind,d", [("random", 23), ("walks", 14)])
@pytest.mark.parametrize("near_radius", [None, np.inf, 0.0], ids=["tree+blocks", "tree", "blocks"])
def test_keys_far_from_the_data_match_ckdtree(kind, d, near_radius):
    """Keys a standard deviation away from the data in every coordinate (an actor at its action bounds puts PRDC's
    keys there): the default (the tree for keys within near_radius, the block scan for the rest), the tree alone
    and the block scan alone find the same neighbours."""
    rng = np.random.default_rng(5)
    x = (_random if kind == "random" else _trajectories)(rng, 20_000, d)
    keys = (x[rng.integers(0, len(x), 256)] + rng.standard_normal((256, d))).astype(np.float32)
    keys[:64] = x[:64] + 1e-3  # and some near it
    ref_d, ref_i = cKDTree(x.astype(np.float64)).query(keys.astype(np.float64), k=1)
    nn = NearestNeighbours(torch.from_numpy(x), "kdtree", near_radius=near_radius)
    if near_radius is None:
        assert 0 < nn._search.near_radius < ref_d.max()  # the block scan gets keys (approx >= exact distance)
    _check(x, keys, ref_d ** 2, ref_i, nn.query(torch.from_numpy(keys)))


def test_calls_after_near_keys_skip_the_sorting_until_keys_are_far():
    rng = np.random.default_rng(8)
    x = _random(rng, 20_000, 23)
    near = x[:256] + 1e-3
    far = (x[rng.integers(0, len(x), 256)] + 3 * rng.standard_normal((256, 23))).astype(np.float32)
    nn = NearestNeighbours(torch.from_numpy(x), "kdtree")
    for keys, near_after in [(near, True), (near, True), (far, False), (far, False), (near, True)]:
        ref_d, ref_i = cKDTree(x.astype(np.float64)).query(keys.astype(np.float64), k=1)
        _check(x, keys, ref_d ** 2, ref_i, nn.query(torch.from_numpy(keys)))
        assert nn._search.keys_were_near == near_after


def test_block_scan_gives_an_exact_tie_to_the_lowest_row():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5_000, 3)).astype(np.float32)
    copies = rng.choice(len(x), size=(200, 3), replace=False)  # triples of rows holding the same point
    for a, b, c in copies:
        x[b] = x[c] = x[a]
    nn = NearestNeighbours(torch.from_numpy(x), "kdtree", near_radius=0.0, block_rows=64)
    # the tree stores the points in its own order, so the lowest copy is often not the first one scanned
    order = nn._search.order
    position = np.empty_like(order)
    position[order] = np.arange(len(x))
    assert sum(position[c].argmin() != c.argmin() for c in copies) > 50
    got = nn.query(torch.from_numpy(x[copies[:, 0]] + 1e-4)).numpy()
    np.testing.assert_array_equal(got, copies.min(1))


def test_leading_dims_and_query_blocks(case):
    x, keys, ref_d2, ref_i = case
    pts, k = torch.from_numpy(x), torch.from_numpy(keys).view(4, Q // 4, -1)  # [S, B, D]
    # max_chunk_floats forces the keys through several static query blocks of 100 rows
    for nn in (NearestNeighbours(pts, "kdtree"),
               NearestNeighbours(pts, "brute", chunk_rows=40_000, max_chunk_floats=100 * 40_000)):
        idx = nn.query(k)
        assert idx.shape == (4, Q // 4) and idx.dtype == torch.int64
        _check(x, keys, ref_d2, ref_i, idx.reshape(-1))


def test_auto_and_small_sets():
    rng = np.random.default_rng(3)
    x = _random(rng, 5, 3)
    assert NearestNeighbours(torch.from_numpy(x)).method == "kdtree"  # CPU
    one = NearestNeighbours(torch.zeros(1, 3), "kdtree")  # no spacing to measure: every key to the tree
    assert one._search.near_radius == np.inf and one.query(torch.ones(2, 3)).tolist() == [0, 0]
    nn = NearestNeighbours(torch.from_numpy(x), "brute", candidates=8, chunk_rows=2)  # N < m, padded chunks
    keys = torch.from_numpy(x[[4, 0, 2]] + 1e-3)
    assert nn.query(keys).tolist() == [4, 0, 2]
    assert nn.query(keys[0]).shape == ()
    with pytest.raises(ValueError):
        NearestNeighbours(torch.from_numpy(x), "ball")


def test_brute_traces_as_one_graph():
    """The brute path has no host synchronisation and no data-dependent shape: Dynamo captures it whole."""
    rng = np.random.default_rng(4)
    x = _random(rng, 3000, 14)
    nn = NearestNeighbours(torch.from_numpy(x), "brute", chunk_rows=1000)
    keys = torch.from_numpy(x[:64] + 0.01)
    compiled = torch.compile(nn.query, backend="eager", fullgraph=True)
    assert torch.equal(compiled(keys.view(2, 32, 14)).reshape(-1), nn.query(keys))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_brute_matches_ckdtree(case):
    x, keys, ref_d2, ref_i = case
    torch.backends.cuda.matmul.allow_tf32 = True  # the query must switch it off for its own matmuls
    try:
        nn = NearestNeighbours(torch.from_numpy(x).cuda(), chunk_rows=30_000)
        assert nn.method == "brute"
        idx = nn.query(torch.from_numpy(keys).cuda().view(4, Q // 4, -1))
        assert idx.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
        _check(x, keys, ref_d2, ref_i, idx.reshape(-1).cpu())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
