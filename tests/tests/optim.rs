//! Optimisers against f64 transcriptions of PyTorch's update rules (AdamW, SGD) and of LARS as
//! SimCLR / BYOL use it, over a few steps with gradients of a quadratic.

use vkgrad::optim::{AdamW, Lars, Sgd};
use vkgrad::Tensor;

/// loss = ½ Σ c ⊙ p², so the gradient is c ⊙ p.
fn grad_step(p: &Tensor, c: &[f32]) {
    let ct = Tensor::from_slice(c, p.shape()).unwrap();
    p.mul(p)
        .unwrap()
        .mul(&ct)
        .unwrap()
        .sum_all()
        .unwrap()
        .mul_scalar(0.5)
        .unwrap()
        .backward()
        .unwrap();
}

fn close(got: &[f32], want: &[f64]) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{g} vs {w}"
        );
    }
}

const P0: [f32; 6] = [0.5, -1.25, 2.0, 0.0, -0.75, 1.5];
const C: [f32; 6] = [1.0, 0.5, -0.25, 2.0, 1.5, 0.75];

#[test]
fn adamw_matches_pytorch_formulas() {
    let (lr, wd, b1, b2, eps) = (0.05, 0.1, 0.9f64, 0.999f64, 1e-8);
    let mut p = Tensor::from_slice(&P0, &[2, 3]).unwrap().requires_grad();
    let mut opt = AdamW::new(lr as f32, wd as f32);
    let mut w: Vec<f64> = P0.iter().map(|&v| v as f64).collect();
    let (mut m, mut v) = (vec![0.0; 6], vec![0.0; 6]);
    for t in 1..=4 {
        grad_step(&p, &C);
        opt.step(&mut [&mut p]).unwrap();
        for i in 0..6 {
            let g = C[i] as f64 * w[i];
            w[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let (mh, vh) = (m[i] / (1.0 - b1.powi(t)), v[i] / (1.0 - b2.powi(t)));
            w[i] -= lr * mh / (vh.sqrt() + eps);
        }
        close(&p.to_vec().unwrap(), &w);
    }
}

#[test]
fn lars_adapts_weights_and_leaves_vectors_plain() {
    let (lr, mu, wd, eta) = (0.5, 0.9, 1e-2, 0.001);
    let mut w2 = Tensor::from_slice(&P0, &[2, 3]).unwrap().requires_grad(); // a weight
    let mut b1 = Tensor::from_slice(&P0, &[6]).unwrap().requires_grad(); // a bias
    let mut opt = Lars::new(lr as f32, mu as f32, wd as f32);
    let (mut w, mut b): (Vec<f64>, Vec<f64>) = (
        P0.iter().map(|&v| v as f64).collect(),
        P0.iter().map(|&v| v as f64).collect(),
    );
    let (mut vw, mut vb) = (vec![0.0; 6], vec![0.0; 6]);
    for _ in 0..3 {
        grad_step(&w2, &C);
        grad_step(&b1, &C);
        opt.step(&mut [&mut w2, &mut b1]).unwrap();
        let g: Vec<f64> = (0..6).map(|i| C[i] as f64 * w[i] + wd * w[i]).collect();
        let (pn, gn) = (
            w.iter().map(|x| x * x).sum::<f64>().sqrt(),
            g.iter().map(|x| x * x).sum::<f64>().sqrt(),
        );
        let ratio = eta * pn / gn;
        for i in 0..6 {
            vw[i] = mu * vw[i] + g[i] * ratio;
            w[i] -= lr * vw[i];
            vb[i] = mu * vb[i] + C[i] as f64 * b[i];
            b[i] -= lr * vb[i];
        }
        close(&w2.to_vec().unwrap(), &w);
        close(&b1.to_vec().unwrap(), &b);
    }
}

#[test]
fn lars_leaves_the_update_unscaled_when_a_norm_is_zero() {
    let mut p = Tensor::zeros(&[2, 2]).unwrap().requires_grad();
    p.sum_all().unwrap().backward().unwrap(); // gradient 1, ‖p‖ = 0
    let mut opt = Lars::new(0.1, 0.0, 0.0);
    opt.step(&mut [&mut p]).unwrap();
    close(&p.to_vec().unwrap(), &[-0.1; 4]);
}

#[test]
fn sgd_state_round_trips() {
    let mut p = Tensor::from_slice(&P0, &[6]).unwrap().requires_grad();
    let mut a = Sgd::new(0.1, 0.9);
    grad_step(&p, &C);
    a.step(&mut [&mut p]).unwrap();
    let state = a.state();
    assert_eq!(state.len(), 1);
    let mut b = Sgd::new(0.1, 0.9);
    b.load_state(1, 1, &|n| {
        Ok(state.iter().find(|(k, _)| k == n).map(|(_, t)| t.clone()))
    })
    .unwrap();
    let mut q = p.detach().requires_grad();
    grad_step(&p, &C);
    grad_step(&q, &C);
    a.step(&mut [&mut p]).unwrap();
    b.step(&mut [&mut q]).unwrap();
    assert_eq!(p.to_vec().unwrap(), q.to_vec().unwrap());
}

#[test]
fn non_finite_hyperparameters_are_errors() {
    let mut p = Tensor::zeros(&[2]).unwrap().requires_grad();
    let e = AdamW::new(f32::NAN, 0.0)
        .step(&mut [&mut p])
        .unwrap_err()
        .to_string();
    assert!(e.contains("lr must be finite"), "{e}");
    let e = Lars::new(0.1, 0.9, f32::INFINITY)
        .step(&mut [&mut p])
        .unwrap_err()
        .to_string();
    assert!(e.contains("weight decay must be finite"), "{e}");
}
