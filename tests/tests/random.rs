//! The device's Philox generator: bit-exact against the CPU reference, independent of the
//! dispatch size, and with the right moments.

use vkgrad::reference::philox;
use vkgrad::Rng;

#[test]
fn bits_match_the_reference_generator() {
    let mut rng = Rng::new(0x1234_5678_9abc_def0);
    let _ = rng.bits(&[3]).unwrap(); // advance the stream once
    let got = rng.bits(&[1000]).unwrap().to_vec().unwrap();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(
            *g,
            philox::bits(0x1234_5678_9abc_def0, 1, i as u32)[0],
            "element {i}"
        );
    }
}

#[test]
fn values_depend_on_seed_offset_and_index_only() {
    // A draw of 10 and a draw of 100 000 (another dispatch shape) share their first 10 values.
    let small = Rng::new(7)
        .uniform(&[10], -1.0, 1.0)
        .unwrap()
        .to_vec()
        .unwrap();
    let large = Rng::new(7)
        .uniform(&[100_000], -1.0, 1.0)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(small[..], large[..10]);
    for (i, v) in small.iter().enumerate() {
        let want = philox::uniform(7, 0, i as u32, -1.0, 1.0);
        assert!(
            (*v as f64 - want).abs() <= 2.0 * f32::EPSILON as f64,
            "{v} vs {want}"
        );
    }
    let n = Rng::new(7)
        .normal(&[10], 1.0, 2.0)
        .unwrap()
        .to_vec()
        .unwrap();
    for (i, v) in n.iter().enumerate() {
        let want = philox::normal(7, 0, i as u32, 1.0, 2.0);
        assert!(
            (*v as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "{v} vs {want}"
        );
    }
    assert_ne!(
        Rng::new(8)
            .uniform(&[10], -1.0, 1.0)
            .unwrap()
            .to_vec()
            .unwrap(),
        small
    );
}

#[test]
fn moments_are_right() {
    let n = 200_000;
    let u = Rng::new(3)
        .uniform(&[n], 2.0, 4.0)
        .unwrap()
        .to_vec()
        .unwrap();
    let mean = u.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    assert!(u.iter().all(|&v| (2.0..4.0).contains(&v)));
    // standard error of the mean: (2/sqrt(12))/sqrt(n) = 0.0013; 5 sigma
    assert!((mean - 3.0).abs() < 0.0065, "uniform mean {mean}");
    let z = Rng::new(4)
        .normal(&[n], 0.0, 1.0)
        .unwrap()
        .to_vec()
        .unwrap();
    let m = z.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = z.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n as f64;
    assert!(m.abs() < 5.0 / (n as f64).sqrt(), "normal mean {m}");
    // standard error of the variance: sqrt(2/n) = 0.0032; 5 sigma
    assert!((var - 1.0).abs() < 0.016, "normal variance {var}");
    assert!(z.iter().all(|v| v.is_finite()));
}

#[test]
fn bad_parameters_are_errors() {
    let mut r = Rng::new(1);
    assert!(r
        .uniform(&[2], 1.0, 0.0)
        .unwrap_err()
        .to_string()
        .contains("needs finite lo <= hi"));
    assert!(r
        .normal(&[2], 0.0, -1.0)
        .unwrap_err()
        .to_string()
        .contains("std >= 0"));
}
