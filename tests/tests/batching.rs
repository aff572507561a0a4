//! Batched submission: a thousand recorded ops take a handful of submits, not one each. Alone in
//! its own test binary, because the submit counter is process-wide and other tests would add to
//! it.

use vkgrad::{device, Tensor};

#[test]
fn a_thousand_ops_take_a_handful_of_submits() {
    // One kernel per op: fused, the chain would be 21 kernels (48 ops each).
    vkgrad::lazy::set_fusion(Some(false));
    let ctx = device::context().unwrap();
    let mut x = Tensor::ones(&[64]).unwrap();
    ctx.sync().unwrap();
    let before = ctx.stats();
    for _ in 0..1000 {
        x = x.mul_scalar(1.0001).unwrap();
    }
    let v = x.to_vec().unwrap();
    let after = ctx.stats();
    assert!((v[0] - 1.0001f32.powi(1000)).abs() < 1e-3, "{}", v[0]);
    // This file holds this one test, so no other test's work is counted.
    let submits = after.submits - before.submits;
    // 1000 ops: 4 threshold submits (every 256 commands) and the read-back
    assert!(submits <= 6, "{submits} submits for 1000 ops");
    assert!(after.dispatches - before.dispatches >= 1000);
}
