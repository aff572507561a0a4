//! Autograd behaviour: accumulation on leaves, shared inputs, no_grad, detach, zeroing, errors.

use vkgrad::{no_grad, Tensor};

fn t(v: &[f32]) -> Tensor {
    Tensor::from_slice(v, &[v.len()]).unwrap()
}

#[test]
fn gradients_accumulate_across_backward_calls() {
    let x = t(&[1.0, 2.0]).requires_grad();
    x.mul_scalar(3.0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    x.mul_scalar(3.0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![6.0, 6.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn a_tensor_used_twice_gets_both_contributions() {
    // y = x*x + x  ->  dy/dx = 2x + 1 (a diamond in the graph)
    let x = t(&[1.0, -2.0, 3.0]).requires_grad();
    x.mul(&x)
        .unwrap()
        .add(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![3.0, -3.0, 7.0]);
}

#[test]
fn no_grad_records_nothing_and_detach_stops_gradients() {
    let x = t(&[1.0, 2.0]).requires_grad();
    let y = no_grad(|| x.mul_scalar(2.0).unwrap());
    assert!(!y.is_requires_grad());
    assert!(y
        .sum_all()
        .unwrap()
        .backward()
        .unwrap_err()
        .to_string()
        .contains("does not depend on any tensor that requires grad"));
    // z = x * detach(x): gradient flows only through the first factor
    let z = x.mul(&x.detach()).unwrap().sum_all().unwrap();
    z.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![1.0, 2.0]);
    assert!(vkgrad::is_grad_enabled());
}

#[test]
fn backward_with_an_upstream_gradient() {
    let x = t(&[1.0, 2.0, 3.0]).requires_grad();
    let y = x.exp().unwrap();
    y.backward_with(&t(&[1.0, 0.0, 2.0])).unwrap();
    let g = x.grad().unwrap().to_vec().unwrap();
    let want = [1f32.exp(), 0.0, 2.0 * 3f32.exp()];
    for (a, b) in g.iter().zip(want) {
        assert!((a - b).abs() <= 1e-5 * b.abs());
    }
    let e = y.backward_with(&t(&[1.0])).unwrap_err().to_string();
    assert_eq!(
        e,
        "backward: gradient shape [1] differs from output shape [3]"
    );
    assert!(y
        .backward()
        .unwrap_err()
        .to_string()
        .contains("needs a one-element output"));
}

#[test]
fn deep_chains_do_not_overflow_the_stack() {
    let x = t(&[0.5]).requires_grad();
    let mut y = x.clone();
    for _ in 0..5000 {
        y = y.add_scalar(0.0).unwrap();
    }
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![1.0]);
}

/// Kernels that `f` dispatches on this thread.
fn kernels(f: impl FnOnce()) -> u64 {
    let before = vkgrad::device::dispatch_count();
    f();
    vkgrad::device::dispatch_count() - before
}

/// The gradient of `x` through `op(x, y)` (summed), with `y` a constant or a leaf that also
/// needs a gradient; returns the gradient and the kernels the backward pass dispatched.
fn grad_through(
    op: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    x: &[f32],
    y: &[f32],
    y_needs: bool,
) -> (Vec<f32>, u64) {
    let x = t(x).requires_grad();
    let y = if y_needs { t(y).requires_grad() } else { t(y) };
    let loss = op(&x, &y).sum_all().unwrap();
    let n = kernels(|| loss.backward().unwrap());
    assert_eq!(y.grad().is_some(), y_needs);
    (x.grad().unwrap().to_vec().unwrap(), n)
}

#[test]
fn no_gradient_is_computed_for_an_input_that_needs_none() {
    // Kernels are counted one per op: with fusion a skipped gradient is an op fewer inside a
    // fused kernel, not a kernel fewer.
    vkgrad::lazy::set_fusion(Some(false));
    let x = [1.0, -2.0, 3.0, 0.5];
    let y = [2.0, 2.0, -1.0, 0.5];
    type Op = Box<dyn Fn(&Tensor, &Tensor) -> Tensor>;
    let ops: Vec<(&str, Op)> = vec![
        // (`add` passes the upstream gradient on as it is: no kernel either way.)
        ("sub", Box::new(|a, b| a.sub(b).unwrap())),
        ("mul", Box::new(|a, b| a.mul(b).unwrap())),
        ("div", Box::new(|a, b| a.div(b).unwrap())),
        ("maximum", Box::new(|a, b| a.maximum(b).unwrap())),
        ("minimum", Box::new(|a, b| a.minimum(b).unwrap())),
        (
            "where",
            Box::new(|a, b| Tensor::where_(&a.gt_scalar(0.0).unwrap(), a, b).unwrap()),
        ),
        (
            "matmul",
            Box::new(|a, b| {
                let (a, b) = (a.reshape(&[2, 2]).unwrap(), b.reshape(&[2, 2]).unwrap());
                a.matmul(&b).unwrap()
            }),
        ),
        (
            "concat",
            Box::new(|a, b| Tensor::concat(&[a, b], 0).unwrap().mul_scalar(2.0).unwrap()),
        ),
    ];
    for (name, op) in &ops {
        let (g_both, n_both) = grad_through(op.as_ref(), &x, &y, true);
        let (g_one, n_one) = grad_through(op.as_ref(), &x, &y, false);
        // The same gradient, bit for bit, from strictly fewer kernels.
        assert_eq!(g_one, g_both, "{name}");
        assert!(
            n_one < n_both,
            "{name}: {n_one} kernels vs {n_both} with both inputs"
        );
    }
}
