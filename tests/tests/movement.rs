//! Movement ops (reshape, permute, transpose, narrow, concat, expand) vs the reference.

use proptest::prelude::*;
use vkgrad::Tensor;
use vkgrad_tests::*;

fn permutation(r: usize) -> impl Strategy<Value = Vec<usize>> {
    Just((0..r).collect::<Vec<_>>()).prop_shuffle()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn permute_matches_reference((x, dims) in shape(0..=6, 3000).prop_flat_map(|s| { let r = s.len(); (tensor_of(s), permutation(r)) })) {
        let gpu_f = |xs: &[Tensor]| xs[0].permute(&dims);
        let ref_f = |xs: &[RefTensor]| r::permute(&xs[0], &dims);
        let vjp_f = |_: &[RefTensor], g: &RefTensor| vec![r::permute_vjp(&dims, g)];
        OpCase::new("permute", vec![x], &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::EXACT).check()?;
    }

    /// The permutes between NHWC and NCHW (and a plain transpose) with sizes that take the
    /// copy kernel's 4×4 block transpose (both moved sizes multiples of 4), forward and
    /// backward; random shapes reach it too rarely to rely on.
    #[test]
    fn block_transposes_match_reference((x, dims) in (1usize..=3, 1usize..=2, 1usize..=3, 1usize..=4, 0usize..3)
        .prop_flat_map(|(b, h, w4, c4, which)| {
            let (w, c) = (2 * w4, 4 * c4);
            let (shape, dims) = match which {
                0 => (vec![b, 2 * h, w, c], vec![0, 3, 1, 2]),   // NHWC -> NCHW
                1 => (vec![b, c, 2 * h, w], vec![0, 2, 3, 1]),   // NCHW -> NHWC
                _ => (vec![4 * b * h, c], vec![1, 0]),
            };
            (tensor_of(shape), Just(dims))
        })) {
        let gpu_f = |xs: &[Tensor]| xs[0].permute(&dims);
        let ref_f = |xs: &[RefTensor]| r::permute(&xs[0], &dims);
        let vjp_f = |_: &[RefTensor], g: &RefTensor| vec![r::permute_vjp(&dims, g)];
        OpCase::new("permute", vec![x], &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::EXACT).check()?;
    }

    #[test]
    fn reshape_keeps_elements((x, split) in shape(1..=4, 3000).prop_flat_map(|s| { let r = s.len(); (tensor_of(s), 0..=r) })) {
        // reshape to [prod(before split), prod(after split)]
        let a: usize = x.shape[..split].iter().product();
        let b: usize = x.shape[split..].iter().product();
        let gpu_f = |xs: &[Tensor]| xs[0].reshape(&[a, b]);
        let ref_f = |xs: &[RefTensor]| RefTensor::new(&[a, b], xs[0].data.clone());
        let vjp_f = |xs: &[RefTensor], g: &RefTensor| vec![RefTensor::new(&xs[0].shape, g.data.clone())];
        OpCase::new("reshape", vec![x], &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::EXACT).check()?;
    }

    #[test]
    fn narrow_matches_reference((x, axis, start, len) in shape(1..=4, 3000).prop_flat_map(|s| {
        let r = s.len();
        (Just(s), 0..r).prop_flat_map(|(s, ax)| { let d = s[ax]; (tensor_of(s), Just(ax), 0..d) })
            .prop_flat_map(|(x, ax, st)| { let d = x.shape[ax]; (Just(x), Just(ax), Just(st), 0..=d - st) })
    })) {
        let gpu_f = |xs: &[Tensor]| xs[0].narrow(axis as isize, start, len);
        let ref_f = |xs: &[RefTensor]| r::narrow(&xs[0], axis, start, len);
        let vjp_f = |xs: &[RefTensor], g: &RefTensor| vec![r::narrow_vjp(&xs[0].shape, axis, start, g)];
        OpCase::new("narrow", vec![x], &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::EXACT).check()?;
    }

    #[test]
    fn concat_matches_reference((parts, axis) in shape(1..=4, 1000).prop_flat_map(|s| {
        let r = s.len();
        (Just(s), 0..r, prop::collection::vec(1usize..=9, 1..=3))
    }).prop_flat_map(|(s, ax, sizes)| {
        let parts: Vec<_> = sizes.iter().map(|&n| { let mut p = s.clone(); p[ax] = n; tensor_of(p) }).collect();
        (parts, Just(ax))
    })) {
        let shapes: Vec<Vec<usize>> = parts.iter().map(|p| p.shape.clone()).collect();
        let gpu_f = |xs: &[Tensor]| Tensor::concat(&xs.iter().collect::<Vec<_>>(), axis as isize);
        let ref_f = |xs: &[RefTensor]| r::concat(&xs.iter().collect::<Vec<_>>(), axis);
        let vjp_f = |_: &[RefTensor], g: &RefTensor| r::concat_vjp(&shapes, axis, g);
        OpCase::new("concat", parts, &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::EXACT).check()?;
    }

    #[test]
    fn expand_matches_reference((small, out) in broadcast_pair(3000).prop_map(|(a, _)| a).prop_flat_map(|a| {
        // an output shape a broadcasts to: replace 1s by sizes and add leading dims
        let r = a.len();
        (Just(a), prop::collection::vec(1usize..=5, r), prop::collection::vec(1usize..=3, 0..=2))
    }).prop_flat_map(|(a, grow, lead)| {
        let mut out = lead;
        out.extend(a.iter().zip(&grow).map(|(&d, &g)| if d == 1 { g } else { d }));
        (tensor_of(a), Just(out))
    })) {
        let gpu_f = |xs: &[Tensor]| xs[0].expand(&out);
        let ref_f = |xs: &[RefTensor]| r::expand(&xs[0], &out);
        let vjp_f = |xs: &[RefTensor], g: &RefTensor| vec![r::expand_vjp(&xs[0].shape, g)];
        OpCase::new("expand", vec![small], &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::EXACT).check()?;
    }
}

#[test]
fn movement_errors() {
    let x = Tensor::zeros(&[2, 3]).unwrap();
    assert_eq!(
        x.reshape(&[4, 2]).unwrap_err().to_string(),
        "reshape: cannot reshape [2, 3] (6 elements) to [4, 2] (8 elements)"
    );
    assert!(x
        .permute(&[0, 0])
        .unwrap_err()
        .to_string()
        .contains("is not a permutation"));
    assert_eq!(
        x.narrow(1, 2, 2).unwrap_err().to_string(),
        "narrow: [2, 2+2) is outside axis 1 of [2, 3]"
    );
    let e = Tensor::concat(&[&x, &Tensor::zeros(&[3, 3]).unwrap()], 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("differ outside axis 1"), "{e}");
    assert!(x.expand(&[4, 3]).is_err());
    let big = Tensor::zeros(&[1, 1, 1, 1, 1, 1, 2]).unwrap();
    assert!(big
        .permute(&[6, 5, 4, 3, 2, 1, 0])
        .unwrap_err()
        .to_string()
        .contains("more than the supported 6"));
}
