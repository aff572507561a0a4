//! index_select, gather and scatter_add vs the reference, with gradients.

use proptest::prelude::*;
use vkgrad::{IntTensor, Tensor};
use vkgrad_tests::*;

/// A tensor, an axis, and indices valid along that axis.
fn indexed(
    idx_len: impl Strategy<Value = usize> + Clone + 'static,
) -> impl Strategy<Value = (RefTensor, usize, usize, Vec<u32>)> {
    shape(1..=4, 2000)
        .prop_flat_map(move |s| {
            let r = s.len();
            (Just(s), 0..r, idx_len.clone())
        })
        .prop_flat_map(|(s, ax, m)| {
            let d = s[ax] as u32;
            (
                tensor_of(s),
                Just(ax),
                Just(m),
                prop::collection::vec(0..d, 1..=1),
            )
                .prop_flat_map(move |(x, ax, m, _)| {
                    let count = {
                        let mut sh = x.shape.clone();
                        sh[ax] = m;
                        sh.iter().product::<usize>()
                    };
                    (
                        Just(x),
                        Just(ax),
                        Just(m),
                        prop::collection::vec(0..d, count),
                    )
                })
        })
}

proptest! {
    #![proptest_config(config(192))]

    #[test]
    fn index_select_matches_reference((x, axis, m, idx) in indexed(1usize..=12)) {
        let idx = idx[..m].to_vec();
        let it = IntTensor::from_vec(idx.clone(), &[m]).unwrap();
        let gpu_f = |xs: &[Tensor]| xs[0].index_select(axis as isize, &it);
        let ref_f = |xs: &[RefTensor]| r::index_select(&xs[0], axis, &idx);
        let vjp_f = |xs: &[RefTensor], g: &RefTensor| vec![r::index_select_vjp(&xs[0].shape, axis, &idx, g)];
        OpCase::new("index_select", vec![x], &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::EXACT).check()?;
    }

    #[test]
    fn gather_matches_reference((x, axis, m, idx) in indexed(1usize..=12)) {
        let mut ishape = x.shape.clone();
        ishape[axis] = m;
        let it = IntTensor::from_vec(idx.clone(), &ishape).unwrap();
        let gpu_f = |xs: &[Tensor]| xs[0].gather(axis as isize, &it);
        let ref_f = |xs: &[RefTensor]| r::gather(&xs[0], axis, &ishape, &idx);
        let vjp_f = |xs: &[RefTensor], g: &RefTensor| vec![r::gather_vjp(&xs[0].shape, axis, &idx, g)];
        OpCase::new("gather", vec![x], &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::EXACT).check()?;
    }

    #[test]
    fn scatter_add_matches_reference((base, axis, m, idx) in indexed(1usize..=12), seed in any::<u8>()) {
        let mut ishape = base.shape.clone();
        ishape[axis] = m;
        let n: usize = ishape.iter().product();
        let src = RefTensor::new(&ishape, (0..n).map(|i| ((i * 31 + seed as usize) % 17) as f64 - 8.0).collect());
        let it = IntTensor::from_vec(idx.clone(), &ishape).unwrap();
        let gpu_f = |xs: &[Tensor]| xs[0].scatter_add(axis as isize, &it, &xs[1]);
        let ref_f = |xs: &[RefTensor]| r::scatter_add(&xs[0], axis, &idx, &xs[1]);
        let vjp_f = |xs: &[RefTensor], g: &RefTensor| { let (gb, gs) = r::scatter_add_vjp(axis, &idx, &xs[1].shape, g); vec![gb, gs] };
        let scale = r::scatter_add(&RefTensor::new(&base.shape, base.data.iter().map(|v| v.abs()).collect()), axis, &idx,
            &RefTensor::new(&ishape, src.data.iter().map(|v| v.abs()).collect()));
        OpCase::new("scatter_add", vec![base, src], &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::ACCUMULATE).scale(scale, m + 1).check()?;
    }

    /// Integers (labels, indices) as floats: exact up to 2^24, where every integer is an f32.
    #[test]
    fn to_f32_is_exact_up_to_2_pow_24(v in prop::collection::vec(0u32..=1 << 24, 1..300)) {
        let got = IntTensor::from_vec(v.clone(), &[v.len()]).unwrap().to_f32().unwrap().to_vec().unwrap();
        let want: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn out_of_range_indices_are_errors() {
    let x = Tensor::zeros(&[4, 3]).unwrap();
    let idx = IntTensor::from_vec(vec![0, 4], &[2]).unwrap();
    assert_eq!(
        x.index_select(0, &idx).unwrap_err().to_string(),
        "index_select: index 4 is out of range for axis 0 of [4, 3] (size 4)"
    );
    let g = IntTensor::from_vec(vec![0, 1, 2, 3, 0, 1], &[2, 3]).unwrap();
    assert!(x
        .gather(1, &g)
        .unwrap_err()
        .to_string()
        .contains("must match [4, 3] in every dimension but 1"));
    let labels = IntTensor::from_vec(vec![3, 1, 2], &[3]).unwrap();
    assert_eq!(
        labels.to_f32().unwrap().to_vec().unwrap(),
        vec![3.0, 1.0, 2.0]
    );
}
