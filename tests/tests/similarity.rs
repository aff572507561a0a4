//! `similarity_lse` (the tiled similarity–log-sum-exp behind the contrastive losses) against
//! its f64 reference, forward and gradients, on awkward sizes: M, P not multiples of the tile,
//! P = 1, D = 1, tiles of one row, τ from 0.05 to 20, every key excluded but one, rows without
//! a positive, an external positive; and the reference's gradient against finite differences.

use proptest::prelude::*;
use vkgrad::reference::similarity::{similarity_lse, similarity_lse_vjp, SimSpec};
use vkgrad::{Positives, SimilarityLse, Tensor};
use vkgrad_tests::*;

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    p: usize,
    d: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    ext: Option<Vec<f32>>,
    temperature: f32,
    exclude_self: bool,
    /// 0: none, 1: index, 2: labels.
    mode: u8,
    index: Vec<u32>,
    labels_q: Vec<u32>,
    labels_k: Vec<u32>,
    tile_rows: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=9,
        0usize..=12,
        1usize..=6,
        any::<bool>(),
        0u8..3,
        any::<bool>(),
    )
        .prop_flat_map(|(m, extra, d, exclude_self, mode, with_ext)| {
            // exclude_self pairs query i with key i, so then P >= M; P = 1 happens with M = 1.
            let p = if exclude_self { m + extra } else { 1 + extra };
            let vals = |n: usize| proptest::collection::vec(-2.0f32..2.0, n);
            (
                vals(m * d),
                vals(p * d),
                vals(m).prop_map(move |e| with_ext.then_some(e)),
                prop_oneof![Just(0.05f32), Just(0.5), Just(1.0), Just(20.0)],
                proptest::collection::vec(0u32..p as u32, m),
                proptest::collection::vec(0u32..3, m),
                proptest::collection::vec(0u32..3, p),
                1usize..=m,
            )
                .prop_map(
                    move |(q, k, ext, temperature, index, labels_q, labels_k, tile_rows)| Case {
                        m,
                        p,
                        d,
                        q,
                        k,
                        ext,
                        temperature,
                        exclude_self,
                        mode,
                        index,
                        labels_q,
                        labels_k,
                        tile_rows,
                    },
                )
        })
}

impl Case {
    fn op(&self) -> SimilarityLse {
        SimilarityLse {
            temperature: self.temperature,
            exclude_self: self.exclude_self,
            positives: match self.mode {
                0 => Positives::None,
                1 => Positives::Index(self.index.clone()),
                _ => Positives::Labels(self.labels_q.clone(), self.labels_k.clone()),
            },
            tile_rows: Some(self.tile_rows),
        }
    }
    fn spec(&self) -> SimSpec<'_> {
        SimSpec {
            temperature: self.temperature as f64,
            exclude_self: self.exclude_self,
            index: (self.mode == 1).then_some(&self.index[..]),
            labels: (self.mode == 2).then_some((&self.labels_q[..], &self.labels_k[..])),
        }
    }
    fn refs(&self) -> (RefTensor, RefTensor, Option<Vec<f64>>) {
        (
            RefTensor::from_f32(&[self.m, self.d], &self.q),
            RefTensor::from_f32(&[self.p, self.d], &self.k),
            self.ext
                .as_ref()
                .map(|e| e.iter().map(|&v| v as f64).collect()),
        )
    }
    /// Per query: 1 + Σ_j Σ_c |q_ic k_jc| / τ (+ |e_i|), the magnitude every output of the row
    /// is computed from.
    fn row_scale(&self) -> Vec<f64> {
        (0..self.m)
            .map(|i| {
                let dots: f64 = (0..self.p)
                    .map(|j| {
                        (0..self.d)
                            .map(|c| (self.q[i * self.d + c] * self.k[j * self.d + c]).abs() as f64)
                            .sum::<f64>()
                    })
                    .sum();
                1.0 + dots / self.temperature as f64
                    + self.ext.as_ref().map_or(0.0, |e| e[i].abs() as f64)
            })
            .collect()
    }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn similarity_lse_matches_reference(c in case()) {
        let (qr, kr, er) = c.refs();
        let want = similarity_lse(&qr, &kr, er.as_deref(), &c.spec());
        let q = Tensor::from_slice(&c.q, &[c.m, c.d]).unwrap().requires_grad();
        let k = Tensor::from_slice(&c.k, &[c.p, c.d]).unwrap().requires_grad();
        let e = c.ext.as_ref().map(|e| Tensor::from_slice(e, &[c.m]).unwrap().requires_grad());
        let y = q.similarity_lse(&k, e.as_ref(), &c.op()).unwrap();
        prop_assert_eq!(y.shape(), &[c.m, 4][..]);
        let rows = c.row_scale();
        let scale = RefTensor::new(&[c.m, 4], (0..c.m * 4).map(|i| rows[i / 4] + want.data[i].abs()).collect());
        let n_terms = c.p + c.d;
        assert_close("similarity_lse forward", &y.to_vec().unwrap(), &want, Some(&scale), n_terms, tol::ROWWISE)?;

        // Gradients for a probe upstream gradient (the count column gets none).
        let g = probe(&[c.m, 4], 0.3);
        y.backward_with(&gpu(&g)).unwrap();
        let (dq, dk, de) = similarity_lse_vjp(&qr, &kr, er.as_deref(), &c.spec(), &g);
        let grad_scale = |r: &RefTensor| {
            let gmax = r.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            RefTensor::new(&r.shape, r.data.iter().map(|v| v.abs() + gmax + 1e-6).collect())
        };
        for (name, t, want, n) in [("dq", &q, &dq, c.p + c.d), ("dk", &k, &dk, c.m + c.d)] {
            let got = t.grad().expect("a gradient").to_vec().unwrap();
            assert_close(&format!("similarity_lse {name}"), &got, want, Some(&grad_scale(want)), n, tol::GRADIENT)?;
        }
        if let (Some(e), false) = (&e, de.is_empty()) {
            let want = RefTensor::new(&[c.m], de);
            let got = e.grad().expect("a gradient for e").to_vec().unwrap();
            assert_close("similarity_lse de", &got, &want, Some(&grad_scale(&want)), c.p, tol::GRADIENT)?;
        }
    }

    #[test]
    fn the_reference_gradient_matches_finite_differences(c in case()) {
        let (qr, kr, er) = c.refs();
        let g = probe(&[c.m, 4], 0.7);
        let spec = c.spec();
        let f = |q: &RefTensor, k: &RefTensor| -> f64 {
            let y = similarity_lse(q, k, er.as_deref(), &spec);
            // Rows with an lse of -inf contribute nothing (their gradient is 0 by definition).
            y.data.iter().zip(&g.data).enumerate()
                .filter(|(i, (v, _))| i % 4 != 2 && v.is_finite())
                .map(|(_, (v, w))| v * w).sum()
        };
        let (dq, dk, _) = similarity_lse_vjp(&qr, &kr, er.as_deref(), &spec, &g);
        for (which, base, grad) in [(0, &qr, &dq), (1, &kr, &dk)] {
            for i in 0..base.len() {
                let h = 1e-6 * (1.0 + base.data[i].abs());
                let (mut up, mut down) = (base.clone(), base.clone());
                up.data[i] += h;
                down.data[i] -= h;
                let fd = if which == 0 { (f(&up, &kr) - f(&down, &kr)) / (2.0 * h) } else { (f(&qr, &up) - f(&qr, &down)) / (2.0 * h) };
                let scale = 1.0 + grad.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                prop_assert!((fd - grad.data[i]).abs() <= 1e-5 * scale,
                    "input {} element {}: finite difference {} vs analytic {}", which, i, fd, grad.data[i]);
            }
        }
    }
}

/// The positives as device codes (what a step recorded for replay passes) against the same
/// positives given on the host: the same bits forward and backward, since the tile masks
/// depend only on which codes are equal.
fn device_codes_equal_host_positives(c: &Case) -> Result<(), TestCaseError> {
    let codes = |v: Vec<f32>| Tensor::from_vec(v.clone(), &[v.len()]).unwrap();
    let device = match c.mode {
        1 => Positives::Codes(
            codes(c.index.iter().map(|&j| j as f32).collect()),
            codes((0..c.p).map(|j| j as f32).collect()),
        ),
        2 => Positives::Codes(
            codes(c.labels_q.iter().map(|&l| l as f32).collect()),
            codes(c.labels_k.iter().map(|&l| l as f32).collect()),
        ),
        _ => return Ok(()),
    };
    let run = |positives: Positives| {
        let q = Tensor::from_slice(&c.q, &[c.m, c.d])
            .unwrap()
            .requires_grad();
        let k = Tensor::from_slice(&c.k, &[c.p, c.d])
            .unwrap()
            .requires_grad();
        let o = SimilarityLse {
            positives,
            ..c.op()
        };
        let y = q.similarity_lse(&k, None, &o).unwrap();
        y.backward_with(&gpu(&probe(&[c.m, 4], 0.3))).unwrap();
        [
            y.to_vec().unwrap(),
            q.grad().unwrap().to_vec().unwrap(),
            k.grad().unwrap().to_vec().unwrap(),
        ]
        .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>())
    };
    prop_assert_eq!(run(device), run(c.op().positives));
    Ok(())
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn positives_as_device_codes_equal_host_positives(c in case()) {
        device_codes_equal_host_positives(&c)?;
    }
}

/// Every key excluded but one, rows without positives, one key, large τ range: exact edges.
#[test]
fn edges_are_finite_where_defined_and_minus_infinity_where_empty() {
    // One query, one key, self excluded: nothing allowed, no positive.
    let q = Tensor::from_slice(&[1.0, 2.0], &[1, 2]).unwrap();
    let o = SimilarityLse {
        temperature: 0.5,
        exclude_self: true,
        positives: Positives::Labels(vec![0], vec![0]),
        tile_rows: None,
    };
    let y = q.similarity_lse(&q, None, &o).unwrap().to_vec().unwrap();
    assert_eq!(y, vec![f32::NEG_INFINITY, 0.0, 0.0, f32::NEG_INFINITY]);
    // Bad arguments are errors naming the op.
    let k = Tensor::from_slice(&[1.0, 2.0, 3.0], &[1, 3]).unwrap();
    let e = q.similarity_lse(&k, None, &o).err().unwrap().to_string();
    assert!(e.contains("similarity_lse") && e.contains("[1, 3]"), "{e}");
    let bad = SimilarityLse {
        temperature: 0.0,
        ..o.clone()
    };
    assert!(q.similarity_lse(&q, None, &bad).is_err());
    let idx = SimilarityLse {
        positives: Positives::Index(vec![5]),
        exclude_self: false,
        ..o
    };
    let e = q.similarity_lse(&q, None, &idx).err().unwrap().to_string();
    assert!(e.contains("out of range"), "{e}");
}

/// Sizes the property's small cases do not reach, against the reference: rows longer than a
/// 64-lane workgroup (each lane then strides over several keys) in several tiles, and rows of
/// more keys than one invocation may loop over on a CPU driver (the kernel then takes the
/// workgroup-per-row variant in either kernel family). Labels, exclusion and external
/// positives all on.
#[test]
fn long_rows_and_many_tiles_match_the_reference() {
    for (m, p, d, tile_rows) in [(130, 200, 8, 50), (3, 30_011, 2, 2)] {
        let q = probe(&[m, d], 0.1).to_f32();
        let k = probe(&[p, d], 0.2).to_f32();
        let ext: Vec<f32> = probe(&[m], 0.3)
            .data
            .iter()
            .map(|v| 2.0 * *v as f32)
            .collect();
        let c = Case {
            m,
            p,
            d,
            q,
            k,
            ext: Some(ext),
            temperature: 0.1,
            exclude_self: true,
            mode: 2,
            index: vec![],
            labels_q: (0..m as u32).map(|i| i % 7).collect(),
            labels_k: (0..p as u32).map(|j| j % 7).collect(),
            tile_rows,
        };
        let (qr, kr, er) = c.refs();
        let want = similarity_lse(&qr, &kr, er.as_deref(), &c.spec());
        let qt = Tensor::from_slice(&c.q, &[m, d]).unwrap().requires_grad();
        let kt = Tensor::from_slice(&c.k, &[p, d]).unwrap().requires_grad();
        let et = Tensor::from_slice(c.ext.as_ref().unwrap(), &[m])
            .unwrap()
            .requires_grad();
        let y = qt.similarity_lse(&kt, Some(&et), &c.op()).unwrap();
        let rows = c.row_scale();
        let scale = RefTensor::new(
            &[m, 4],
            (0..m * 4)
                .map(|i| rows[i / 4] + want.data[i].abs())
                .collect(),
        );
        assert_close(
            "similarity_lse forward",
            &y.to_vec().unwrap(),
            &want,
            Some(&scale),
            p + d,
            tol::ROWWISE,
        )
        .unwrap();
        let g = probe(&[m, 4], 0.3);
        y.backward_with(&gpu(&g)).unwrap();
        let (dq, dk, de) = similarity_lse_vjp(&qr, &kr, er.as_deref(), &c.spec(), &g);
        let de = RefTensor::new(&[m], de);
        for (name, t, want, n) in [
            ("dq", &qt, &dq, p + d),
            ("dk", &kt, &dk, m + d),
            ("de", &et, &de, p),
        ] {
            let gmax = want.data.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            let s = RefTensor::new(
                &want.shape,
                want.data.iter().map(|v| v.abs() + gmax + 1e-6).collect(),
            );
            let got = t.grad().expect("a gradient").to_vec().unwrap();
            assert_close(
                &format!("{name} ({m}x{p})"),
                &got,
                want,
                Some(&s),
                n,
                tol::GRADIENT,
            )
            .unwrap();
        }
    }
}
