//! The learning-rate schedule: linear warm-up to the peak, then cosine decay to 0 — never above
//! the peak, also when the warm-up is shorter than one step.

mod common;

use vkgrad::train::{Config, Trainer};

#[test]
fn the_rate_never_exceeds_the_peak_and_decays_to_zero() {
    let plugins: Vec<_> = [
        "vkgrad-plugin-encoders",
        "vkgrad-plugin-augment",
        "vkgrad-plugin-contrastive",
    ]
    .iter()
    .map(|p| common::built_plugin(p))
    .collect();
    for warmup in [0.0, 0.05, 0.25, 2.55] {
        let cfg = Config {
            data: "digits".into(),
            epochs: 5,
            batch_size: 128,
            warmup_epochs: warmup,
            lr: Some(0.01),
            ..Config::default()
        };
        let out = std::env::temp_dir().join(format!("vkgrad-schedule-{}", std::process::id()));
        let t = Trainer::new(cfg, &plugins, out).unwrap();
        let total = t.steps_per_epoch() * 5;
        let rates: Vec<f64> = (0..total).map(|s| t.lr_at(s)).collect();
        assert!(
            rates.iter().all(|&r| r > 0.0 && r <= 0.01 + 1e-15),
            "warm-up {warmup}: {rates:?}"
        );
        assert!(rates.contains(&0.01), "warm-up {warmup}: never at the peak");
        assert!(rates[rates.len() - 1] < 1e-3, "warm-up {warmup}: {rates:?}");
    }
}
