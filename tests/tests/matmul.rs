//! Matrix products (2-D, batched, and a single matrix with a batch; every transpose
//! combination) vs the reference.

use proptest::prelude::*;
use vkgrad::Tensor;
use vkgrad_tests::*;

fn stored(rows: usize, cols: usize, t: bool) -> (usize, usize) {
    if t {
        (cols, rows)
    } else {
        (rows, cols)
    }
}

/// Half the sizes are multiples of 4, so the vec4 kernel path (all of M, K, N aligned) and
/// the scalar path are both exercised.
fn mdim() -> impl Strategy<Value = usize> {
    prop_oneof![dim(), (1usize..=17).prop_map(|d| 4 * d)]
}

/// Batched cases draw whether both operands are batched or one is a single matrix used with
/// every matrix of the other (`single`: 0 neither, 1 A, 2 B; drawn last so the saved seeds keep
/// their cases; up to two batch dimensions).
fn matmul_case() -> impl Strategy<Value = (RefTensor, RefTensor, bool, bool)> {
    (
        prop::collection::vec(1usize..=3, 0..=2),
        mdim(),
        mdim(),
        mdim(),
        any::<bool>(),
        any::<bool>(),
        0u8..3,
    )
        .prop_flat_map(|(batch, m, k, n, ta, tb, single)| {
            let (ar, ac) = stored(m, k, ta);
            let (br, bc) = stored(k, n, tb);
            let mut sa = if single == 1 { vec![] } else { batch.clone() };
            sa.extend([ar, ac]);
            let mut sb = if single == 2 { vec![] } else { batch };
            sb.extend([br, bc]);
            (tensor_of(sa), tensor_of(sb), Just(ta), Just(tb))
        })
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn matmul_matches_reference((a, b, ta, tb) in matmul_case()) {
        let name = format!("matmul ta={ta} tb={tb}");
        let k = if ta { a.shape[a.shape.len() - 2] } else { a.shape[a.shape.len() - 1] };
        let (_, scale) = r::matmul(&a, &b, ta, tb);
        let gpu_f = |xs: &[Tensor]| Tensor::matmul_t(&xs[0], &xs[1], ta, tb);
        let ref_f = |xs: &[RefTensor]| r::matmul(&xs[0], &xs[1], ta, tb).0;
        let vjp_f = |xs: &[RefTensor], g: &RefTensor| { let (ga, gb) = r::matmul_vjp(&xs[0], &xs[1], ta, tb, g); vec![ga, gb] };
        OpCase::new(&name, vec![a, b], &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::ACCUMULATE).scale(scale, k).check()?;
    }
}

#[test]
fn larger_than_one_tile_in_every_direction() {
    // 67 x 131 x 45: not a multiple of any tile size.
    let (m, k, n) = (67, 131, 45);
    let a = RefTensor::new(
        &[m, k],
        (0..m * k)
            .map(|i| ((i * 7 % 13) as f64 - 6.0) / 4.0)
            .collect(),
    );
    let b = RefTensor::new(
        &[k, n],
        (0..k * n)
            .map(|i| ((i * 5 % 11) as f64 - 5.0) / 8.0)
            .collect(),
    );
    let got = gpu(&a).matmul(&gpu(&b)).unwrap().to_vec().unwrap();
    let (want, scale) = r::matmul(&a, &b, false, false);
    assert_close(
        "matmul 67x131x45",
        &got,
        &want,
        Some(&scale),
        k,
        tol::ACCUMULATE,
    )
    .unwrap();
}

#[test]
fn shape_errors_name_both_shapes() {
    let a = Tensor::zeros(&[3, 4]).unwrap();
    let b = Tensor::zeros(&[5, 6]).unwrap();
    assert_eq!(
        a.matmul(&b).unwrap_err().to_string(),
        "matmul: [3, 4] x [5, 6]: inner dimensions differ (4 vs 5)"
    );
    let c = Tensor::zeros(&[2, 3, 4]).unwrap();
    let d = Tensor::zeros(&[3, 4, 5]).unwrap();
    assert_eq!(
        c.matmul(&d).unwrap_err().to_string(),
        "matmul: [2, 3, 4] x [3, 4, 5]: batch dimensions differ (they must be equal, or one operand a single matrix)"
    );
    // A single matrix with a batch is fine (broadcast, as in PyTorch).
    let w = Tensor::zeros(&[2, 3]).unwrap();
    assert_eq!(w.matmul(&c).unwrap().shape(), &[2, 2, 4]);
    let v = Tensor::zeros(&[4]).unwrap();
    assert!(a
        .matmul(&v)
        .unwrap_err()
        .to_string()
        .contains("at least 2 dimensions"));
    // transposed: [4, 3]ᵀ x [4, 5] is fine
    let at = Tensor::zeros(&[4, 3]).unwrap();
    assert_eq!(
        Tensor::matmul_t(&at, &Tensor::zeros(&[4, 5]).unwrap(), true, false)
            .unwrap()
            .shape(),
        &[3, 5]
    );
}

#[test]
fn a_long_inner_dimension_is_summed_in_chunks() {
    // K past llvmpipe's 65,535 loop iterations per invocation for every kernel: the product is
    // summed over chunks of K there, Aᵀ · B as conv2d's weight gradient uses (colsᵀ · g).
    // K = 150,001 has no divisor into chunks that fit: chunks in sequence, copied out. K =
    // 150,000 = 3 × 50,000 (also in a batch of two; and for the vec4 kernel's M and N, K =
    // 300,000 = 2 × 150,000): the chunks are row blocks, a batch of products in one dispatch.
    // The vec4 kernel also splits a K within the loop budget into blocks that stay in cache
    // (K = 16,384 in 8 blocks; 12,300 in 15 of 820 rows, a multiple of 4).
    for (batch, m, k, n) in [
        (1, 3, 150_001, 5),
        (1, 3, 150_000, 5),
        (2, 3, 150_000, 5),
        (1, 4, 300_000, 8),
        (1, 16, 16_384, 72),
        (2, 12, 12_300, 8),
    ] {
        let lead: Vec<usize> = if batch > 1 { vec![batch] } else { vec![] };
        // Positive values: every chunk's partial sum is a large part of the whole, so a chunk
        // lost, doubled or combined other than by a sum shows far beyond the tolerance (sines
        // would cancel to partial sums within it).
        let positive = |shape: Vec<usize>, salt: f64| {
            let p = probe(&shape, salt);
            RefTensor::new(&shape, p.data.iter().map(|v| 1.0 + v.abs()).collect())
        };
        let a = positive([lead.clone(), vec![k, m]].concat(), 0.3);
        let b = positive([lead, vec![k, n]].concat(), 1.7);
        let got = Tensor::matmul_t(&gpu(&a), &gpu(&b), true, false)
            .unwrap()
            .to_vec()
            .unwrap();
        let (want, scale) = r::matmul(&a, &b, true, false);
        assert_close(
            &format!("matmul batch {batch}, M {m}, K {k}, N {n}"),
            &got,
            &want,
            Some(&scale),
            k,
            tol::ACCUMULATE,
        )
        .unwrap();
    }
}
