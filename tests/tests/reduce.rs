//! Reductions (sum, mean, max, min along one axis or all; argmax/argmin) vs the reference.

use proptest::prelude::*;
use vkgrad::reference::Reduce;
use vkgrad::{ReduceOp, Tensor, REDUCE_OPS};
use vkgrad_tests::*;

/// Shape, an axis (or all), keepdim.
fn reduce_case() -> impl Strategy<Value = (RefTensor, Option<usize>, bool)> {
    shape(1..=4, 4000).prop_flat_map(|s| {
        let r = s.len();
        (
            tensor_of(s),
            prop::option::weighted(0.8, 0..r),
            any::<bool>(),
        )
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn reductions_match_reference(
        op in prop::sample::select(REDUCE_OPS.iter().collect::<Vec<&'static ReduceOp>>()),
        (x, axis, keepdim) in reduce_case(),
    ) {
        let keepdim = keepdim && axis.is_some();
        let r_op = op.reference;
        let name = format!("{} axis {axis:?} keepdim {keepdim}", op.name);
        let gpu_f = |xs: &[Tensor]| match axis {
            Some(a) => (op.axis)(&xs[0], a as isize, keepdim),
            None => (op.all)(&xs[0]),
        };
        let ref_f = |xs: &[RefTensor]| r::reduce(r_op, &xs[0], axis, keepdim);
        let vjp_f = |xs: &[RefTensor], g: &RefTensor| vec![r::reduce_vjp(r_op, &xs[0], axis, g)];
        let n_terms = axis.map_or(x.len(), |a| x.shape[a]);
        let mut scale = r::reduce_abs_scale(&x, axis, keepdim);
        if r_op == Reduce::Mean {
            for v in &mut scale.data { *v /= n_terms as f64; }
        }
        // max/min are exact; a tie makes them non-differentiable, so no finite differences.
        let mut case = OpCase::new(&name, vec![x], &gpu_f, &ref_f).vjp(&vjp_f);
        case = if op.exact { case.tol(tol::ELEMENTWISE).no_finite_differences() } else { case.tol(tol::ACCUMULATE).scale(scale, n_terms) };
        case.check()?;
    }

    #[test]
    fn argmax_argmin_match_reference((x, axis, keepdim) in reduce_case(), max in any::<bool>()) {
        let axis = axis.unwrap_or(0);
        // quantise so that ties (first index wins) occur
        let x = RefTensor::new(&x.shape, x.data.iter().map(|v| (v * 2.0).round()).collect());
        let t = gpu(&x);
        let got = if max { t.argmax(axis as isize, keepdim) } else { t.argmin(axis as isize, keepdim) }.unwrap();
        let (shape, want) = r::arg_extreme(&x, axis, keepdim, max);
        prop_assert_eq!(got.shape(), &shape[..]);
        prop_assert_eq!(got.to_vec().unwrap(), want);
    }
}

#[test]
fn ties_share_the_gradient_of_max() {
    let x = Tensor::from_vec(vec![1.0, 3.0, 3.0, 2.0], &[4])
        .unwrap()
        .requires_grad();
    x.max_all().unwrap().backward().unwrap();
    assert_eq!(
        x.grad().unwrap().to_vec().unwrap(),
        vec![0.0, 0.5, 0.5, 0.0]
    );
}

#[test]
fn long_rows_use_the_whole_row() {
    // 70 000 elements: more than one workgroup's worth in every kernel variant.
    let n = 70_000;
    let x = Tensor::ones(&[n]).unwrap();
    assert_eq!(x.sum_all().unwrap().item().unwrap(), n as f32);
    let y = Tensor::from_vec((0..n).map(|i| i as f32).collect(), &[1, n]).unwrap();
    assert_eq!(
        y.argmax(1, false).unwrap().to_vec().unwrap(),
        vec![n as u32 - 1]
    );
    assert_eq!(
        y.max_axis(-1, false).unwrap().item().unwrap(),
        (n - 1) as f32
    );
}

#[test]
fn reduction_errors() {
    let x = Tensor::zeros(&[2, 3]).unwrap();
    assert_eq!(
        x.sum_axis(2, false).unwrap_err().to_string(),
        "sum: axis 2 is out of range for rank 2"
    );
    assert_eq!(x.sum_axis(-1, false).unwrap().shape(), &[2]);
    let e = Tensor::zeros(&[0])
        .unwrap()
        .max_all()
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("max: cannot reduce an empty axis"), "{e}");
    let e = Tensor::zeros(&[0])
        .unwrap()
        .mean_all()
        .unwrap_err()
        .to_string();
    assert_eq!(e, "mean: mean of an empty tensor");
}
