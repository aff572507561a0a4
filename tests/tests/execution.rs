//! The execution model: batched submits, pooled buffers, sizes that cross workgroup edges.

use vkgrad::{device, Tensor};

#[test]
fn sizes_across_workgroup_edges() {
    // Regression: under Mesa 22.3's lavapipe gl_WorkGroupSize read 1 in specialised shaders,
    // so every element past the first workgroup was left unwritten.
    for n in [1usize, 255, 256, 257, 300, 65_537] {
        let x = Tensor::from_vec((0..n).map(|i| i as f32).collect(), &[n]).unwrap();
        let y = x.add_scalar(1.0).unwrap().to_vec().unwrap();
        assert!(
            y.iter().enumerate().all(|(i, v)| *v == i as f32 + 1.0),
            "n = {n}"
        );
    }
}

#[test]
fn sums_longer_than_the_lavapipe_loop_limit() {
    // Regression: llvmpipe ends an invocation's loops after 65535 iterations in total; long
    // reductions run in several passes.
    for n in [65_535usize, 65_536, 300_000, 5_000_000] {
        let x = Tensor::ones(&[n]).unwrap();
        assert_eq!(x.sum_all().unwrap().item().unwrap(), n as f32, "n = {n}");
    }
    let x = Tensor::ones(&[3, 200_000]).unwrap();
    assert_eq!(
        x.sum_axis(1, false).unwrap().to_vec().unwrap(),
        vec![200_000.0; 3]
    );
    let idx = x.argmax(1, false).unwrap().to_vec().unwrap();
    assert_eq!(idx, vec![0, 0, 0]); // all tied: first index
    let mut v = vec![0.0f32; 300_000];
    v[299_999] = 5.0;
    v[123_456] = 5.0;
    let y = Tensor::from_vec(v, &[1, 300_000]).unwrap();
    assert_eq!(y.argmax(1, false).unwrap().to_vec().unwrap(), vec![123_456]);
}

#[test]
fn buffers_are_reused() {
    let ctx = device::context().unwrap();
    // Dropped results return to the pool; a long loop must not grow memory without bound:
    // after the first iterations, every buffer comes from the pool. (Other tests of this
    // binary run in parallel and create buffers of their own, so the bound is loose, but a
    // pool that never reused would create 4,000 here.)
    let step = || {
        let a = Tensor::ones(&[1024, 257]).unwrap();
        let _ = a.add_scalar(1.0).unwrap();
    };
    for _ in 0..10 {
        step();
    }
    ctx.sync().unwrap();
    let before = ctx.buffers_created();
    for _ in 0..2000 {
        step();
    }
    ctx.sync().unwrap();
    let created = ctx.buffers_created() - before;
    assert!(
        created < 400,
        "{created} buffers created in 2,000 iterations"
    );
}
