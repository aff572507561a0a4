//! Unary, tensor-scalar, binary (broadcast), compare and `where` ops vs the f64 reference.

use proptest::prelude::*;
use vkgrad::reference::Binary;
use vkgrad::{unary_op, BinaryOp, Tensor, UnaryOp, BINARY_OPS, UNARY_OPS};
use vkgrad_tests::*;

/// Moves values at least `gap` away from `kink` (non-differentiable points).
fn away_from(mut t: RefTensor, kink: f64, gap: f64) -> RefTensor {
    for v in &mut t.data {
        if (*v - kink).abs() < gap {
            *v = kink + if *v < kink { -gap } else { gap };
            *v = *v as f32 as f64;
        }
    }
    t
}

/// A unary op of the engine's table, one of its scalars, and an input from its domain (kept
/// away from its kink).
fn unary_case() -> impl Strategy<Value = (&'static UnaryOp, f64, RefTensor)> {
    let ops: Vec<&'static UnaryOp> = UNARY_OPS.iter().collect();
    (prop::sample::select(ops), shape(0..=4, 3000))
        .prop_flat_map(|(op, s)| (Just(op), prop::sample::select(op.scalars.to_vec()), Just(s)))
        .prop_flat_map(|(op, s, sh)| {
            let t = match (op.domain)(s) {
                Some((lo, hi)) => tensor_in(sh, lo..hi).boxed(),
                None => tensor_of(sh).boxed(),
            };
            (
                Just(op),
                Just(s),
                t.prop_map(move |t| match op.kink {
                    Some(k) => away_from(t, k(s), 1e-3),
                    None => t,
                }),
            )
        })
}

/// One unary case: the table's call against its reference entry (and gradient).
fn check_unary(op: &UnaryOp, s: f64, x: RefTensor) -> Result<(), TestCaseError> {
    let r_op = (op.reference)(s);
    let name = format!("{} ({r_op:?})", op.name);
    let gpu_f = |xs: &[Tensor]| (op.call)(&xs[0], s as f32);
    let ref_f = |xs: &[RefTensor]| r::unary(r_op, &xs[0]);
    let vjp_f = |xs: &[RefTensor], g: &RefTensor| vec![r::unary_vjp(r_op, &xs[0], g)];
    let mut case = OpCase::new(&name, vec![x], &gpu_f, &ref_f);
    if r_op.derivative(1.0).is_some() {
        case = case.vjp(&vjp_f);
    }
    if op.transcendental {
        case = case.tol(tol::TRANSCENDENTAL);
    }
    // Finite differences are meaningful at moderate magnitudes only (see tol.rs).
    if case.inputs[0]
        .data
        .iter()
        .any(|v| v.abs() > 1e3 || (v.abs() < 1e-6 && *v != 0.0))
    {
        case = case.no_finite_differences();
    }
    case.check()
}

/// The shrunk failures proptest kept for the unary and binary properties (in
/// `elementwise.proptest-regressions`, written when cases were drawn as reference entries),
/// replayed as they were: the op by its reference entry, the exact inputs.
#[test]
fn kept_failures_still_pass() {
    let file = include_str!("elementwise.proptest-regressions");
    let mut replayed = 0;
    for line in file.lines() {
        if let Some(at) = line.find("shrinks to (op, x) = (") {
            let rest = &line[at + "shrinks to (op, x) = (".len()..];
            let op_text = &rest[..rest.find(", RefTensor").unwrap()];
            let s: f64 = op_text
                .split_once('(')
                .map(|(_, v)| v.trim_end_matches(')').parse().unwrap())
                .unwrap_or(0.0);
            let op = UNARY_OPS
                .iter()
                .find(|o| format!("{:?}", (o.reference)(s)) == op_text)
                .unwrap_or_else(|| panic!("no unary op for {op_text}"));
            let x = kept_tensors(rest).remove(0);
            check_unary(op, s, x).unwrap();
            replayed += 1;
        } else if let Some(at) = line.find("shrinks to op = ") {
            let rest = &line[at + "shrinks to op = ".len()..];
            let op_text = &rest[..rest.find(',').unwrap()];
            let op = BINARY_OPS
                .iter()
                .find(|o| format!("{:?}", o.reference) == op_text)
                .unwrap_or_else(|| panic!("no binary op for {op_text}"));
            let ts = kept_tensors(rest);
            check_binary(op, ts[0].clone(), ts[1].clone()).unwrap();
            replayed += 1;
        }
    }
    assert!(replayed >= 3, "{replayed} kept failures replayed");
}

/// One binary case: the table's call against its reference entry (and gradients).
fn check_binary(op: &BinaryOp, a: RefTensor, b: RefTensor) -> Result<(), TestCaseError> {
    let mut b = b;
    if op.reference == Binary::Div {
        b = away_from(b, 0.0, 0.05);
    }
    if a.shape == b.shape {
        // exercise ties and equality
        for i in (0..b.len()).step_by(3) {
            b.data[i] = a.data[i];
        }
    }
    let r_op = op.reference;
    let gpu_f = |xs: &[Tensor]| (op.call)(&xs[0], &xs[1]);
    let ref_f = |xs: &[RefTensor]| r::binary(r_op, &xs[0], &xs[1]);
    let vjp_f = |xs: &[RefTensor], g: &RefTensor| {
        let (ga, gb) = r::binary_vjp(r_op, &xs[0], &xs[1], g);
        vec![ga, gb]
    };
    let mut case = OpCase::new(op.name, vec![a, b], &gpu_f, &ref_f);
    if !op.compare {
        // broadcast gradients are sums over the broadcast dimensions
        case = case.vjp(&vjp_f).tol(tol::ELEMENTWISE);
    }
    let big = case.inputs.iter().any(|t| {
        t.data
            .iter()
            .any(|v| v.abs() > 1e3 || (v.abs() < 1e-6 && *v != 0.0))
    });
    if big || op.ties {
        case = case.no_finite_differences();
    }
    case.check()
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn unary_matches_reference((op, s, x) in unary_case()) {
        check_unary(op, s, x)?;
    }

    #[test]
    fn binary_matches_reference(
        op in prop::sample::select(BINARY_OPS.iter().collect::<Vec<&'static BinaryOp>>()),
        (a, b) in broadcast_tensors(3000),
    ) {
        check_binary(op, a, b)?;
    }

    #[test]
    fn where_matches_reference(((sm, sa), sb, seed) in (broadcast_pair(2000), shape(0..=2, 8), any::<u64>())) {
        let n: usize = sm.iter().product();
        let m = RefTensor::new(&sm, (0..n).map(|i| ((seed >> (i % 64)) & 1) as f64).collect());
        let na: usize = sa.iter().product();
        let a = RefTensor::new(&sa, (0..na).map(|i| i as f64 * 0.5 - 3.0).collect());
        // b broadcasts against the others only when it fits; fall back to a scalar
        let sb = if vkgrad::reference::broadcast_shapes(&[&sm, &sa, &sb]).is_some() { sb } else { vec![] };
        let nb: usize = sb.iter().product();
        let b = RefTensor::new(&sb, (0..nb).map(|i| 10.0 - i as f64).collect());
        let mg = gpu(&m);
        let gpu_f = |xs: &[Tensor]| Tensor::where_(&mg, &xs[0], &xs[1]);
        let ref_f = |xs: &[RefTensor]| r::where_(&m, &xs[0], &xs[1]);
        let vjp_f = |xs: &[RefTensor], g: &RefTensor| { let (ga, gb) = r::where_vjp(&m, &xs[0], &xs[1], g); vec![ga, gb] };
        OpCase::new("where", vec![a, b], &gpu_f, &ref_f).vjp(&vjp_f).check()?;
    }
}

/// Special values where each op is defined (IEEE semantics, as PyTorch).
#[test]
fn special_values() {
    let inf = f32::INFINITY;
    let cases: Vec<(&str, f64, Vec<f32>)> = vec![
        ("neg", 0.0, vec![inf, -inf, 0.0]),
        ("exp", 0.0, vec![-inf, inf, 0.0, -200.0, 200.0]),
        ("log", 0.0, vec![0.0, inf, 1.0]),
        ("sqrt", 0.0, vec![0.0, inf]),
        ("rsqrt", 0.0, vec![inf]),
        ("abs", 0.0, vec![-inf, inf, -0.0]),
        ("relu", 0.0, vec![-inf, inf, 0.0]),
        ("sigmoid", 0.0, vec![-inf, inf, -1000.0, 1000.0]),
        ("tanh", 0.0, vec![-inf, inf, -1000.0, 1000.0, 0.0]),
        ("powf", 2.0, vec![-inf, 0.0, -3.0]),
        ("powf", 3.0, vec![-2.0, -0.0]),
        ("powf", -1.0, vec![0.0, inf, -4.0]),
        ("powf", 0.5, vec![-1.0, 0.0, inf]),
        ("powf", 0.0, vec![0.0, -inf, 5.0]),
    ];
    for (name, s, xs) in cases {
        let op = unary_op(name).unwrap();
        let t = Tensor::from_slice(&xs, &[xs.len()]).unwrap();
        let got = (op.call)(&t, s as f32).unwrap().to_vec().unwrap();
        let want = r::unary((op.reference)(s), &RefTensor::from_f32(&[xs.len()], &xs));
        assert_close(
            &format!("{name} {s} on {xs:?}"),
            &got,
            &want,
            None,
            1,
            tol::TRANSCENDENTAL,
        )
        .unwrap();
    }
}

#[test]
fn broadcast_errors_name_the_shapes() {
    let a = Tensor::zeros(&[3, 4]).unwrap();
    let b = Tensor::zeros(&[5]).unwrap();
    let e = a.add(&b).unwrap_err().to_string();
    assert_eq!(
        e,
        "add: [3, 4] and [5] cannot be broadcast together (dimension 1: 4 vs 5)"
    );
    let e = Tensor::from_vec(vec![1.0; 5], &[2, 3])
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 values do not fill shape [2, 3]"), "{e}");
}

#[test]
fn row_broadcasts_of_four_wide_rows() {
    // Kept from a failing property (a [51, 40] + b [1] read b as if contiguous): the
    // four-per-invocation broadcast path, with the broadcast input constant along rows and
    // along columns.
    let f32s = |t: RefTensor| RefTensor::from_f32(&t.shape, &t.to_f32());
    let a = f32s(probe(&[51, 40], 0.2));
    for bshape in [vec![1], vec![51, 1], vec![1, 40], vec![40]] {
        let b = f32s(probe(&bshape, 1.3));
        let got = gpu(&a).add(&gpu(&b)).unwrap().to_vec().unwrap();
        let want = r::binary(r::Binary::Add, &a, &b);
        assert_close("add", &got, &want, None, 1, tol::ELEMENTWISE).unwrap();
    }
}
