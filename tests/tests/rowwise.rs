//! softmax, log_softmax, logsumexp and L2 normalisation over the last axis vs the reference.

use proptest::prelude::*;
use vkgrad::reference::Rowwise;
use vkgrad::{RowwiseOp, Tensor, ROWWISE_OPS};
use vkgrad_tests::*;

/// A row-wise op of the engine's table and one of its eps values.
fn op() -> impl Strategy<Value = (&'static RowwiseOp, f64)> {
    let ops: Vec<&'static RowwiseOp> = ROWWISE_OPS.iter().collect();
    prop::sample::select(ops)
        .prop_flat_map(|op| (Just(op), prop::sample::select(op.eps_values.to_vec())))
}

/// One case: the table's call against its reference entry and gradient.
fn check_rowwise(op: &RowwiseOp, eps: f64, x: RefTensor) -> Result<(), TestCaseError> {
    let r_op = (op.reference)(eps);
    let name = format!("{} ({r_op:?})", op.name);
    let n = *x.shape.last().unwrap();
    let gpu_f = |xs: &[Tensor]| (op.call)(&xs[0], eps as f32);
    let ref_f = |xs: &[RefTensor]| r::rowwise(r_op, &xs[0]);
    let vjp_f = |xs: &[RefTensor], g: &RefTensor| vec![r::rowwise_vjp(r_op, &xs[0], g)];
    let want = r::rowwise(r_op, &x);
    // softmax-family values are O(1) or logs: scale |ref| + 1; a normalised vector's
    // entries are bounded by 1.
    let scale = RefTensor::new(
        &want.shape,
        want.data.iter().map(|v| v.abs() + 1.0).collect(),
    );
    let big = x.data.iter().any(|v| v.abs() > 30.0);
    // L2 normalisation has a kink where ||row|| = eps; steps from a near-zero row cross it.
    let near_kink = matches!(r_op, Rowwise::L2Normalize(_))
        && x.data
            .chunks(n)
            .any(|row| row.iter().map(|v| v * v).sum::<f64>().sqrt() < 1e-6);
    // The VJP sums terms c_j * dy_j/dx_i: at most max|c| (softmax, logsumexp), n max|c|
    // (log_softmax) or n max|c| / max(||x||, eps) (L2) in magnitude; they can cancel.
    let c_max = 1.0; // probe() values lie in [-1, 1]
    let grad_scale = match r_op {
        Rowwise::Softmax | Rowwise::LogSumExp => c_max,
        Rowwise::LogSoftmax => n as f64 * c_max,
        Rowwise::L2Normalize(eps) => {
            let min_norm = x
                .data
                .chunks(n)
                .map(|row| row.iter().map(|v| v * v).sum::<f64>().sqrt())
                .fold(f64::INFINITY, f64::min);
            n as f64 * c_max / min_norm.max(eps)
        }
    };
    let mut case = OpCase::new(&name, vec![x], &gpu_f, &ref_f)
        .vjp(&vjp_f)
        .tol(tol::ROWWISE)
        .scale(scale, n)
        .grad_scale(grad_scale);
    if big || near_kink {
        case = case.no_finite_differences();
    }
    case.check()
}

/// The shrunk failures proptest kept (in `rowwise.proptest-regressions`, written when cases
/// were drawn as reference entries), replayed as they were.
#[test]
fn kept_failures_still_pass() {
    let mut replayed = 0;
    for line in include_str!("rowwise.proptest-regressions").lines() {
        let Some(at) = line.find("shrinks to op = ") else {
            continue;
        };
        let rest = &line[at + "shrinks to op = ".len()..];
        let op_text = &rest[..rest.find(", x = ").unwrap()];
        let eps: f64 = op_text
            .split_once('(')
            .map(|(_, v)| v.trim_end_matches(')').parse().unwrap())
            .unwrap_or(0.0);
        let op = ROWWISE_OPS
            .iter()
            .find(|o| format!("{:?}", (o.reference)(eps)) == op_text)
            .unwrap_or_else(|| panic!("no row-wise op for {op_text}"));
        check_rowwise(op, eps, kept_tensors(rest).remove(0)).unwrap();
        replayed += 1;
    }
    assert!(replayed >= 3, "{replayed} kept failures replayed");
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rowwise_matches_reference((op, eps) in op(), x in shape(1..=4, 3000).prop_flat_map(tensor_of)) {
        check_rowwise(op, eps, x)?;
    }
}

#[test]
fn softmax_of_huge_logits_is_finite() {
    let x = Tensor::from_vec(vec![1e30, -1e30, 0.0, 88.0, 89.0, 90.0], &[2, 3]).unwrap();
    let y = x.softmax().unwrap().to_vec().unwrap();
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    assert_eq!(&y[..3], &[1.0, 0.0, 0.0]);
    let l = x.logsumexp().unwrap().to_vec().unwrap();
    assert_eq!(l[0], 1e30);
    assert!((l[1] - (90.0 + (1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln()) as f32).abs() < 1e-4);
}

#[test]
fn l2_normalize_handles_zero_and_extreme_rows() {
    let x = Tensor::from_vec(vec![0.0, 0.0, 3e30, 4e30, 3e-30, 4e-30], &[3, 2])
        .unwrap()
        .requires_grad();
    let y = x.l2_normalize(1e-12).unwrap();
    let v = y.to_vec().unwrap();
    assert_eq!(&v[..2], &[0.0, 0.0]); // a zero row stays zero, no NaN
    assert!(
        (v[2] - 0.6).abs() < 1e-6 && (v[3] - 0.8).abs() < 1e-6,
        "{v:?}"
    );
    // below eps the row is divided by eps: 3e-30 / 1e-12
    assert!((v[4] - 3e-18).abs() < 1e-23, "{v:?}");
    y.sum_all().unwrap().backward().unwrap();
    assert!(x
        .grad()
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .all(|g| g.is_finite()));
    assert!(x
        .l2_normalize(0.0)
        .unwrap_err()
        .to_string()
        .contains("eps must be positive"));
}
