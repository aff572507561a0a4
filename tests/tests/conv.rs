//! Image ops: conv2d, max / average / global pooling, unfold / fold and affine resampling,
//! against the direct-loop f64 reference (engine/src/reference/conv.rs).

use proptest::prelude::*;
use vkgrad::reference::conv::{self as rc, Geometry};
use vkgrad::{Padding, Tensor, Window};
use vkgrad_tests::*;

/// A window and an input size it fits: kernel 1..=3, stride 1..=2, padding 0..=1, dilation
/// 1..=2.
fn geometry() -> impl Strategy<Value = (Window, usize, usize)> {
    (
        1usize..=3,
        1usize..=2,
        0usize..=1,
        1usize..=2,
        1usize..=3,
        1usize..=3,
    )
        .prop_flat_map(|(k, s, p, d, kh_extra, kw_extra)| {
            let span = d * (k - 1) + 1;
            let lo = span.saturating_sub(2 * p).max(1);
            let w = Window {
                kernel: [k, k.min(kh_extra.max(1))],
                stride: [s, 1 + s % 2],
                padding: [p, p],
                dilation: [d, 1],
            };
            let _ = kw_extra;
            let lo_w = (w.kernel[1]).saturating_sub(2 * p).max(1);
            (Just(w), lo..=lo + 6, lo_w..=lo_w + 6)
        })
}

fn geo(w: &Window) -> Geometry {
    Geometry {
        kernel: w.kernel,
        stride: w.stride,
        padding: w.padding,
        dilation: w.dilation,
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn conv2d_matches_reference(
        ((win, h, w), n, c, o, bias) in (geometry(), 1usize..=3, 1usize..=3, 1usize..=4, any::<bool>()),
        seed in any::<u64>(),
    ) {
        let [kh, kw] = win.kernel;
        let x = probe(&[n, c, h, w], seed as f64 % 7.0);
        let wt = probe(&[o, c, kh, kw], 0.3 + seed as f64 % 5.0);
        let b = probe(&[o], 1.1);
        let g = geo(&win);
        let (_, scale) = rc::conv2d(&x, &wt, bias.then_some(&b), &g);
        let mut inputs = vec![x, wt];
        if bias { inputs.push(b); }
        let gpu_f = |xs: &[Tensor]| xs[0].conv2d(&xs[1], xs.get(2), &win);
        let ref_f = |xs: &[RefTensor]| rc::conv2d(&xs[0], &xs[1], xs.get(2), &g).0;
        let vjp_f = |xs: &[RefTensor], gy: &RefTensor| {
            let (dx, dw, db) = rc::conv2d_vjp(&xs[0], &xs[1], &g, gy);
            if xs.len() == 3 { vec![dx, dw, db] } else { vec![dx, dw] }
        };
        OpCase::new("conv2d", inputs, &gpu_f, &ref_f).vjp(&vjp_f).tol(tol::ACCUMULATE).scale(scale, c * kh * kw + 1).check()?;
    }

    #[test]
    fn pooling_matches_reference(
        (k, s, p) in (1usize..=3, 1usize..=3, 0usize..=1),
        (n, c, h, w) in (1usize..=2, 1usize..=3, 3usize..=9, 3usize..=9),
        max in any::<bool>(),
        x in tensor_of(vec![18 * 81]),
        dil in 1usize..=2,
    ) {
        let p = p.min(k / 2);
        let win = Window::new(k).stride(s).padding(p).dilation(dil);
        // The dilated window must fit: span d(k-1)+1 <= size + 2p.
        let span = dil * (k - 1) + 1;
        let (h, w) = (h.max(span), w.max(span));
        let x = RefTensor::new(&[n, c, h, w], x.data[..n * c * h * w].to_vec());
        let g = geo(&win);
        let gpu_f = |xs: &[Tensor]| if max { xs[0].max_pool2d(&win) } else { xs[0].avg_pool2d(&win) };
        let ref_f = |xs: &[RefTensor]| rc::pool2d(&xs[0], &g, max);
        let vjp_f = |xs: &[RefTensor], gy: &RefTensor| vec![rc::pool2d_vjp(&xs[0], &g, max, gy)];
        let abs = RefTensor::new(&x.shape, x.data.iter().map(|v| v.abs()).collect());
        let scale = rc::pool2d(&abs, &g, false);
        let scale = RefTensor::new(&scale.shape, scale.data.iter().map(|v| v * (k * k) as f64).collect());
        // Max pooling sits on a kink wherever two taps tie (value classes repeat magnitudes).
        OpCase::new(if max { "max_pool2d" } else { "avg_pool2d" }, vec![x], &gpu_f, &ref_f)
            .vjp(&vjp_f).tol(tol::ACCUMULATE).scale(scale, k * k).check()?;
    }

    /// fold is the adjoint of unfold: <unfold(x), c> = <x, fold(c)>.
    #[test]
    fn fold_is_the_adjoint_of_unfold(((win, h, w), n, c) in (geometry(), 1usize..=2, 1usize..=3), salt in 0.0f64..3.0) {
        let x = probe(&[n, c, h, w], salt);
        let cols = gpu(&x).unfold(&win, 0.0).unwrap();
        let cp = probe(cols.shape(), salt + 1.0);
        let folded = gpu(&cp).fold(&win, [n, c, h, w]).unwrap().to_vec().unwrap();
        let lhs: f64 = cols.to_vec().unwrap().iter().zip(&cp.data).map(|(a, b)| *a as f64 * b).sum();
        let rhs: f64 = folded.iter().zip(&x.data).map(|(a, b)| *a as f64 * b).sum();
        let mag: f64 = cp.data.iter().map(|v| v.abs()).sum::<f64>() * 4.0;
        prop_assert!((lhs - rhs).abs() <= 1e-5 * mag, "{lhs} vs {rhs}");
    }

    #[test]
    fn resample_matches_reference(
        (n, c, h, w, oh, ow) in (1usize..=3, 1usize..=3, 1usize..=9, 1usize..=9, 1usize..=9, 1usize..=9),
        theta in prop::collection::vec(-1.5f32..1.5, 18),
        border in any::<bool>(),
        salt in 0.0f64..3.0,
    ) {
        let x = probe(&[n, c, h, w], salt);
        let th = RefTensor::from_f32(&[n, 2, 3], &theta[..n * 6]);
        let pad = if border { Padding::Border } else { Padding::Zeros };
        let got = gpu(&x).resample_affine(&gpu(&th), [oh, ow], pad).unwrap();
        let want = rc::resample_affine(&x, &th, [oh, ow], border);
        prop_assert_eq!(got.shape(), &want.shape[..]);
        let ones = RefTensor::new(&want.shape, vec![4.0; want.len()]);
        // Coordinates go through a few float operations: the bound is that of the rounding of
        // a sample position (~1e-6 of the image size) times the largest pixel slope (<= 2).
        assert_close("resample_affine", &got.to_vec().unwrap(), &want, Some(&ones), 8 * h.max(w), tol::ACCUMULATE)?;
    }
}

#[test]
fn identity_theta_resamples_to_the_same_image() {
    let x = probe(&[2, 3, 5, 7], 0.4);
    let theta = RefTensor::new(&[2, 2, 3], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0].repeat(2));
    for pad in [Padding::Zeros, Padding::Border] {
        let got = gpu(&x)
            .resample_affine(&gpu(&theta), [5, 7], pad)
            .unwrap()
            .to_vec()
            .unwrap();
        for (g, w) in got.iter().zip(&x.data) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}

#[test]
fn a_mirror_theta_flips_rows() {
    // Coordinates pass through float arithmetic, so a mirror is exact only to rounding; the
    // augmentation plugin flips with an index gather, which is exact.
    let x = probe(&[1, 2, 4, 6], 0.9);
    let flip = gpu(&RefTensor::new(
        &[1, 2, 3],
        vec![-1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    ));
    let once = gpu(&x)
        .resample_affine(&flip, [4, 6], Padding::Zeros)
        .unwrap();
    let v = once.to_vec().unwrap();
    for row in 0..8 {
        for col in 0..6 {
            let want = x.data[row * 6 + 5 - col];
            assert!((v[row * 6 + col] as f64 - want).abs() < 1e-5, "{row} {col}");
        }
    }
}

#[test]
fn conv_over_many_samples_runs_in_chunks_and_matches() {
    // At most 2^25 floats of columns per chunk: 64 samples of 3 x 3 over 64 channels at
    // 32 x 32 (37.7 M) need two chunks.
    let (n, c, h, o) = (64, 64, 32, 2);
    let x = probe(&[n, c, h, h], 0.1);
    let w = probe(&[o, c, 3, 3], 0.7);
    let win = Window::new(3).padding(1);
    let got = gpu(&x).conv2d(&gpu(&w), None, &win).unwrap();
    let (want, scale) = rc::conv2d(&x, &w, None, &geo(&win));
    assert_close(
        "chunked conv2d",
        &got.to_vec().unwrap(),
        &want,
        Some(&scale),
        c * 9,
        tol::ACCUMULATE,
    )
    .unwrap();
}

#[test]
fn bad_shapes_are_errors_naming_the_op() {
    let x = Tensor::zeros(&[1, 2, 4, 4]).unwrap();
    let w = Tensor::zeros(&[3, 5, 3, 3]).unwrap();
    let e = x.conv2d(&w, None, &Window::new(3)).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("[3, 5, 3, 3]"), "{e}");
    let e = x.max_pool2d(&Window::new(5)).unwrap_err().to_string();
    assert!(
        e.contains("max_pool2d") && e.contains("does not fit"),
        "{e}"
    );
    let e = Tensor::zeros(&[4, 4])
        .unwrap()
        .avg_pool2d(&Window::new(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("NCHW"), "{e}");
    let e = x
        .resample_affine(&Tensor::zeros(&[2, 2, 3]).unwrap(), [2, 2], Padding::Zeros)
        .unwrap_err()
        .to_string();
    assert!(e.contains("theta"), "{e}");
    let e = x
        .max_pool2d(&Window::new(2).padding(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("half the kernel"), "{e}");
}

#[test]
fn global_average_pool_is_the_mean_over_pixels() {
    let x = probe(&[2, 3, 4, 5], 0.2);
    let got = gpu(&x).global_avg_pool().unwrap().to_vec().unwrap();
    for (i, g) in got.iter().enumerate() {
        let want: f64 = x.data[i * 20..(i + 1) * 20].iter().sum::<f64>() / 20.0;
        assert!((*g as f64 - want).abs() < 1e-6);
    }
}

#[test]
fn resample_refuses_inputs_that_need_a_gradient() {
    let x = gpu(&probe(&[1, 1, 3, 3], 0.1));
    let theta = Tensor::from_slice(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], &[1, 2, 3]).unwrap();
    // Without a gradient it runs; asked through the graph it is an error, not a silent stop.
    assert!(x.resample_affine(&theta, [3, 3], Padding::Zeros).is_ok());
    for (img, th) in [
        (x.requires_grad(), theta.clone()),
        (x.clone(), theta.requires_grad()),
    ] {
        let e = img
            .resample_affine(&th, [3, 3], Padding::Zeros)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("resample_affine") && e.contains("has no gradient"),
            "{e}"
        );
        // Under no_grad the same call is fine (augmentations run there).
        assert!(vkgrad::no_grad(|| img.resample_affine(&th, [3, 3], Padding::Zeros)).is_ok());
    }
}
