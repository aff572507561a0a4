use vkgrad::*;
fn main() -> Result<()> {
    for n in [255usize, 256, 257, 300, 600, 1000] {
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let t = Tensor::from_slice(&x, &[n])?;
        let back = t.to_vec()?;
        let y = t.add_scalar(1.0)?.to_vec()?;
        let bad_up = back.iter().enumerate().filter(|(i, v)| **v != *i as f32).count();
        let bad = y.iter().enumerate().filter(|(i, v)| **v != *i as f32 + 1.0).count();
        println!("n={n} bad_upload={bad_up} bad_add={bad}");
    }
    Ok(())
}
