//! The lazy graph and its fused kernels (`engine/src/lazy`): random DAGs of elementwise ops
//! give bit-identical values and gradients fused and one kernel per op (each op is proven
//! against the f64 reference by its own property test, so equality carries that proof over to
//! every fused tree); and the rules of what fuses.

use proptest::prelude::*;
use vkgrad::lazy::set_fusion;
use vkgrad::{device, Tensor, REDUCE_OPS, ROWWISE_OPS};
use vkgrad_tests::dag::{dag, Dag};
use vkgrad_tests::*;

/// What a DAG computes: the last node, the probed node, the inputs' gradients of
/// sum(last × a fixed probe) (empty when no gradient reaches them), and, from the DAG evaluated
/// again, its last node read first (a product in its tree is then the base of a fused
/// epilogue) and the product read after it (which that kernel stored).
#[derive(Debug)]
struct Run {
    last: Vec<f32>,
    direct: Vec<f32>,
    product: Vec<f32>,
    reduced: Vec<f32>,
    reduced_view: Vec<f32>,
    rowed: Vec<f32>,
    probed: Vec<f32>,
    grads: Vec<Option<Vec<f32>>>,
    kernels: u64,
}

fn run(d: &Dag, fused: bool) -> vkgrad::Result<Run> {
    set_fusion(Some(fused));
    let out = (|| {
        let before = device::dispatch_count();
        let xs: Vec<Tensor> = d.inputs().iter().map(|t| gpu(t).requires_grad()).collect();
        let vals = d.eval(&xs)?;
        let nl = d.first_node();
        let probed_t = vals[nl + d.probe_at % d.nodes.len()].clone();
        let last_t = vals.last().expect("one node at least").clone();
        let reduced = reduce(d, &last_t)?;
        // The same pending value again, reduced through a reshape (whose axes are not the
        // value's own): a fused prologue must index the value's shape.
        let again = d.eval(&xs)?;
        let reduced_view = reduce(d, &view(again.last().expect("one node at least"))?)?;
        let rowed = rowwise(d, &xs)?;
        let (probed, last) = if d.probe_first {
            let p = probed_t.to_vec()?;
            (p, last_t.to_vec()?)
        } else {
            let l = last_t.to_vec()?;
            (probed_t.to_vec()?, l)
        };
        if last_t.is_requires_grad() {
            let w = gpu(&probe(last_t.shape(), 0.3));
            last_t.mul(&w)?.sum_all()?.backward()?;
        }
        let grads = xs
            .iter()
            .map(|x| x.grad().map(|g| g.to_vec()).transpose())
            .collect::<vkgrad::Result<_>>()?;
        let again = d.eval(&xs)?;
        let direct = again.last().expect("one node at least").to_vec()?;
        let product = match d.product {
            Some(_) => again[d.leaves.len()].to_vec()?,
            None => Vec::new(),
        };
        Ok(Run {
            last,
            direct,
            product,
            reduced,
            reduced_view,
            rowed,
            probed,
            grads,
            kernels: device::dispatch_count() - before,
        })
    })();
    set_fusion(None);
    out
}

/// A row-wise op (softmax, log_softmax, logsumexp, l2_normalize) of the DAG's last node,
/// evaluated again so that it is pending (a fused prologue); a probe's gradient through it is
/// added to the leaves' gradients.
fn rowwise(d: &Dag, xs: &[Tensor]) -> vkgrad::Result<Vec<f32>> {
    let vals = d.eval(xs)?;
    let last = vals.last().expect("one node at least");
    if last.rank() == 0 {
        return Ok(Vec::new());
    }
    let op = &ROWWISE_OPS[d.reduce_op % ROWWISE_OPS.len()];
    let y = (op.call)(last, op.eps.map_or(0.0, |e| e.1))?;
    if y.is_requires_grad() {
        let w = gpu(&probe(y.shape(), 0.7));
        y.mul(&w)?.sum_all()?.backward()?;
    }
    y.to_vec()
}

/// The DAG's reduction of `x` (argmax as its indices' bit patterns). Max, min and argmax of
/// an empty extent are refused alike fused and unfused, so they become sums there.
fn reduce(d: &Dag, x: &Tensor) -> vkgrad::Result<Vec<f32>> {
    let axis = (d.reduce_axis < x.rank()).then_some(d.reduce_axis);
    let extent = axis.map_or(x.numel(), |a| x.shape()[a]);
    let op = if extent == 0 { 0 } else { d.reduce_op };
    if op == REDUCE_OPS.len() {
        let idx = match axis {
            Some(a) => x.argmax(a as isize, false)?,
            None => x.reshape(&[x.numel()])?.argmax(0, false)?,
        };
        return Ok(idx.to_vec()?.into_iter().map(f32::from_bits).collect());
    }
    let r = &REDUCE_OPS[op];
    match axis {
        Some(a) => (r.axis)(x, a as isize, false)?.to_vec(),
        None => (r.all)(x)?.to_vec(),
    }
}

/// `x` reshaped so that its axes are not its value's: the first two merged (rank ≥ 2: a
/// reduction over a later axis is one of the value's, over the merged one is not), else a
/// leading 1 (the value's axis 0 is the view's axis 1).
fn view(x: &Tensor) -> vkgrad::Result<Tensor> {
    let s = x.shape();
    if s.len() >= 2 {
        let mut v = vec![s[0] * s[1]];
        v.extend_from_slice(&s[2..]);
        x.reshape(&v)
    } else {
        x.reshape(&[1, x.numel()])
    }
}

/// Equal bit for bit; any NaN equals any NaN (payloads are not specified).
fn same(what: &str, a: &[f32], b: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len(), "{}: lengths", what);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let ok = x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        prop_assert!(
            ok,
            "{}: element {}: fused {:e} vs one kernel per op {:e}",
            what,
            i,
            x,
            y
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(40))]

    #[test]
    fn random_dags_fused_equal_one_kernel_per_op(d in dag()) {
        let fused = run(&d, true).map_err(|e| TestCaseError::fail(format!("fused: {e}")))?;
        let plain = run(&d, false).map_err(|e| TestCaseError::fail(format!("unfused: {e}")))?;
        same("last node", &fused.last, &plain.last)?;
        same("reduction of the last node", &fused.reduced, &plain.reduced)?;
        same("reduction of a reshaped view", &fused.reduced_view, &plain.reduced_view)?;
        same("row-wise op of the last node", &fused.rowed, &plain.rowed)?;
        same("probed node", &fused.probed, &plain.probed)?;
        same("last node read first", &fused.direct, &plain.direct)?;
        same("product", &fused.product, &plain.product)?;
        prop_assert_eq!(fused.grads.len(), plain.grads.len());
        for (i, (f, p)) in fused.grads.iter().zip(&plain.grads).enumerate() {
            prop_assert_eq!(f.is_some(), p.is_some(), "leaf {} gradient presence", i);
            if let (Some(f), Some(p)) = (f, p) {
                same(&format!("gradient of leaf {i}"), f, p)?;
            }
        }
        // Fusion never adds kernels (a value is computed at most twice: inlined once, then on
        // its own when read).
        prop_assert!(fused.kernels <= plain.kernels + 1, "{} fused vs {} kernels", fused.kernels, plain.kernels);
    }
}

/// Values of the DAG (the last node and `picks`), computed by `Tensor::realize_all` (`joint`)
/// or one `realize` each, with fusion on; and the kernels it took.
fn realized(d: &Dag, picks: &[usize], joint: bool) -> vkgrad::Result<(Vec<Vec<f32>>, u64)> {
    set_fusion(Some(true));
    let out = (|| {
        let xs: Vec<Tensor> = d.inputs().iter().map(gpu).collect();
        for x in &xs {
            x.realize()?;
        }
        let vals = d.eval(&xs)?;
        let nl = d.first_node();
        let mut ts: Vec<&Tensor> = picks
            .iter()
            .map(|p| &vals[nl + p % d.nodes.len()])
            .collect();
        ts.push(vals.last().expect("one node at least"));
        let before = device::dispatch_count();
        if joint {
            Tensor::realize_all(&ts)?;
        } else {
            for t in &ts {
                t.realize()?;
            }
        }
        let kernels = device::dispatch_count() - before;
        let values = ts
            .iter()
            .map(|t| t.to_vec())
            .collect::<vkgrad::Result<_>>()?;
        Ok((values, kernels))
    })();
    set_fusion(None);
    out
}

proptest! {
    #![proptest_config(config(40))]

    /// Several values computed by one multi-output kernel (shared subtrees once, a value inside
    /// another's tree stored and used) are those each computes alone, bit for bit.
    #[test]
    fn values_computed_together_equal_values_computed_one_by_one(
        d in dag(),
        picks in prop::collection::vec(any::<usize>(), 1..4),
    ) {
        let (joint, k_joint) = realized(&d, &picks, true).map_err(|e| TestCaseError::fail(format!("together: {e}")))?;
        let (alone, k_alone) = realized(&d, &picks, false).map_err(|e| TestCaseError::fail(format!("alone: {e}")))?;
        for (i, (a, b)) in joint.iter().zip(&alone).enumerate() {
            same(&format!("value {i}"), a, b)?;
        }
        prop_assert!(k_joint <= k_alone, "{} kernels together vs {} alone", k_joint, k_alone);
    }
}

/// An optimiser-like update — a moment, and a parameter whose tree reads it — is one kernel
/// writing both.
#[test]
fn a_value_and_one_it_reads_are_one_kernel() {
    set_fusion(Some(true));
    let g = gpu(&probe(&[3, 5], 0.4));
    let p = gpu(&probe(&[3, 5], 0.9));
    let m = gpu(&probe(&[3, 5], 0.2));
    for x in [&g, &p, &m] {
        x.realize().unwrap();
    }
    let nm = m
        .mul_scalar(0.9)
        .unwrap()
        .add(&g.mul_scalar(0.1).unwrap())
        .unwrap();
    let np = p.sub(&nm.mul_scalar(0.5).unwrap()).unwrap();
    let before = device::dispatch_count();
    Tensor::realize_all(&[&nm, &np]).unwrap();
    assert_eq!(device::dispatch_count() - before, 1);
    let (gv, pv, mv) = (
        g.to_vec().unwrap(),
        p.to_vec().unwrap(),
        m.to_vec().unwrap(),
    );
    let want_m: Vec<f32> = mv.iter().zip(&gv).map(|(m, g)| m * 0.9 + g * 0.1).collect();
    let want_p: Vec<f32> = pv.iter().zip(&want_m).map(|(p, m)| p - m * 0.5).collect();
    assert_eq!(nm.to_vec().unwrap(), want_m);
    assert_eq!(np.to_vec().unwrap(), want_p);
    set_fusion(None);
}

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

/// A chain of elementwise ops with broadcast leaves runs as one kernel when read, and as one
/// kernel per op without fusion; both give the same values.
#[test]
fn a_chain_is_one_kernel() {
    let x = t(
        &(0..24).map(|i| i as f32 * 0.25 - 3.0).collect::<Vec<_>>(),
        &[4, 6],
    );
    let b = t(&[0.5, -1.0, 2.0, 0.0, 1.5, -0.25], &[6]);
    let c = t(&[2.0, 3.0, -1.0, 0.5], &[4, 1]);
    let chain = || {
        let y = x.mul(&b).unwrap().exp().unwrap().add(&c).unwrap();
        let y = y.mul_scalar(0.5).unwrap().sigmoid().unwrap();
        let before = device::dispatch_count();
        let v = y.to_vec().unwrap();
        (v, device::dispatch_count() - before)
    };
    set_fusion(Some(true));
    let (fused, k_fused) = chain();
    set_fusion(Some(false));
    let (plain, _) = chain();
    set_fusion(None);
    assert_eq!(k_fused, 1, "five elementwise ops, one kernel");
    assert_eq!(fused, plain);
}

/// A pending value with two consumers is computed once, in its own kernel, and read by both.
#[test]
fn reductions_and_row_wise_ops_compute_their_pending_input() {
    // Batch norm's statistics: sums of (x - s) and (x - s)² over the batch.
    let x = t(
        &(0..24)
            .map(|i| (i as f32 * 0.37).sin() * 4.0)
            .collect::<Vec<_>>(),
        &[4, 6],
    );
    let s = t(&[0.5, -1.0, 2.0, 0.0, 1.5, -0.25], &[6]);
    let stats = || {
        let before = device::dispatch_count();
        let sq = x
            .sub(&s)
            .unwrap()
            .square()
            .unwrap()
            .sum_axis(0, false)
            .unwrap();
        let m = x
            .sub(&s)
            .unwrap()
            .mul_scalar(0.25)
            .unwrap()
            .max_all()
            .unwrap();
        // And NT-Xent's masked, scaled logits into log_softmax.
        let mask = x.gt_scalar(1.0).unwrap();
        let minus_inf = t(&[f32::NEG_INFINITY], &[1]);
        let logits = Tensor::where_(&mask, &minus_inf, &x.mul_scalar(2.0).unwrap()).unwrap();
        let ls = logits.log_softmax().unwrap();
        let (sq, m) = (sq.to_vec().unwrap(), m.to_vec().unwrap());
        let ls: Vec<u32> = ls.to_vec().unwrap().iter().map(|v| v.to_bits()).collect();
        (sq, m, ls, device::dispatch_count() - before)
    };
    set_fusion(Some(true));
    let (sq, m, ls, k_fused) = stats();
    set_fusion(Some(false));
    let (sq_plain, m_plain, ls_plain, k_plain) = stats();
    set_fusion(None);
    assert_eq!(
        (k_fused, k_plain),
        (3, 10),
        "one kernel per reduction or row-wise op fused"
    );
    assert_eq!(sq, sq_plain);
    assert_eq!(m, m_plain);
    assert_eq!(ls, ls_plain);
}

/// A Linear layer's product, bias and activation are one matmul kernel (a fused epilogue), for
/// the shapes of each CPU-driver variant (vec4 lanes: K and N multiples of 4; scalar: not),
/// and the same bits as one kernel per op. A product still held elsewhere is stored by that
/// kernel too, so reading it computes nothing again.
#[test]
fn a_product_and_its_elementwise_consumer_are_one_kernel() {
    let vals = |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * f).sin()).collect() };
    for (m, k, n) in [(8, 12, 16), (5, 7, 3)] {
        let x = t(&vals(m * k, 0.37), &[m, k]);
        let w = t(&vals(k * n, 0.91), &[k, n]);
        let b = t(&vals(n, 1.7), &[n]);
        let layer = || {
            let before = device::dispatch_count();
            let y = x.matmul(&w).unwrap().add(&b).unwrap().relu().unwrap();
            let y = y.mul_scalar(0.5).unwrap().to_vec().unwrap();
            (y, device::dispatch_count() - before)
        };
        set_fusion(Some(true));
        let (fused, k_fused) = layer();
        let before = device::dispatch_count();
        let p = x.matmul(&w).unwrap();
        let y = p.add(&b).unwrap().to_vec().unwrap();
        let p_fused = p.to_vec().unwrap();
        let k_held = device::dispatch_count() - before;
        set_fusion(Some(false));
        let (plain, k_plain) = layer();
        let p_plain = x.matmul(&w).unwrap().to_vec().unwrap();
        let y_plain = x.matmul(&w).unwrap().add(&b).unwrap().to_vec().unwrap();
        set_fusion(None);
        assert_eq!(
            (k_fused, k_plain),
            (1, 4),
            "{m}x{k}x{n}: product, bias, relu, scale"
        );
        assert_eq!(
            k_held, 1,
            "{m}x{k}x{n}: the held product is stored, not computed again"
        );
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&plain), "{m}x{k}x{n}");
        assert_eq!(bits(&p_fused), bits(&p_plain), "{m}x{k}x{n}");
        assert_eq!(bits(&y), bits(&y_plain), "{m}x{k}x{n}");
    }
}

#[test]
fn a_shared_value_is_computed_once() {
    set_fusion(Some(true));
    let x = t(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5]);
    let before = device::dispatch_count();
    let e = x.exp().unwrap().add_scalar(1.0).unwrap(); // pending
    let a = e.log().unwrap(); // inlines e
    let b = e.sqrt().unwrap(); // second consumer: e is computed now (1 kernel)
    assert_eq!(device::dispatch_count() - before, 1);
    let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
    // a and b each one kernel, reading the computed e.
    assert_eq!(device::dispatch_count() - before, 3);
    set_fusion(None);
    let want: Vec<f32> = (1..=5).map(|i| ((i as f32).exp() + 1.0).ln()).collect();
    for (g, w) in av.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * w.abs(), "{g} vs {w}");
    }
    assert_eq!(bv.len(), 5);
}

/// A fused kernel depends on the structure and the rank, not on sizes or scalars: the same
/// chain at other sizes and scalars compiles nothing new.
#[test]
fn generated_kernels_are_reused_across_sizes_and_scalars() {
    set_fusion(Some(true));
    let chain = |n: usize, s: f32| {
        let x = Tensor::ones(&[n, 3]).unwrap();
        let b = Tensor::ones(&[3]).unwrap();
        // Unusual ops, so no other test in this binary makes the same kernel.
        x.mul_scalar(s)
            .unwrap()
            .cos()
            .unwrap()
            .mul(&b)
            .unwrap()
            .powf(3.0)
            .unwrap()
            .minimum_scalar(s)
            .unwrap()
            .to_vec()
            .unwrap()
    };
    chain(5, 0.5);
    let ctx = device::context().unwrap();
    let compiled = ctx.generated_kernels();
    let v = chain(77, 2.0);
    let _ = chain(1, -1.0);
    assert_eq!(ctx.generated_kernels(), compiled, "no new kernel");
    set_fusion(None);
    let want = (2.0f32.cos()).powi(3).min(2.0);
    assert!(
        v.iter().all(|g| (g - want).abs() <= 1e-6),
        "{:?} vs {want}",
        &v[..3]
    );
}

/// The random-DAG property's first shrunk failure, kept: a comparison's 0/1 result times -0,
/// inf or NaN. Compilers may rewrite `(c ? 1 : 0) * y` as `c ? y : 0` (+0 for y = -0, 0 for
/// y = inf) unless each op's value is hidden as if it went through memory (`opaque()`).
#[test]
fn a_mask_times_signed_zero_inf_and_nan_is_a_product() {
    let y = [-0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    let run = |fused: bool| {
        set_fusion(Some(fused));
        let x = t(&[0.0; 4], &[4]);
        let v = x
            .gt(&x)
            .unwrap()
            .mul(&t(&y, &[4]))
            .unwrap()
            .to_vec()
            .unwrap();
        set_fusion(None);
        v
    };
    let (f, p) = (run(true), run(false));
    assert_eq!(f[0].to_bits(), (-0.0f32).to_bits(), "0 * -0 = -0: {f:?}");
    assert!(
        f[1..].iter().all(|v| v.is_nan()),
        "0 * ±inf, 0 * NaN = NaN: {f:?}"
    );
    assert_eq!(f[0].to_bits(), p[0].to_bits());
    assert!(p[1..].iter().all(|v| v.is_nan()), "{p:?}");
}
