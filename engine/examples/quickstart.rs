//! A first look at vkgrad: tensors on the Vulkan device, ops, and gradients.
//! Run with `cargo run --release --example quickstart`.

use vkgrad::{Rng, Tensor};

fn main() -> vkgrad::Result<()> {
    println!("device: {}", vkgrad::device::context()?.info.name);
    let a = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3])?.requires_grad();
    let b = Tensor::from_vec(vec![1., 0., 0., 1., 1., 1.], &[3, 2])?;
    let c = a.matmul(&b)?; // recorded, not yet run
    let loss = c.logsumexp()?.sum_all()?;
    loss.backward()?; // the backward pass runs on the device too
    println!("c = {:?}", c.to_vec()?); // a read-back submits the recorded work
    println!("loss = {}", loss.item()?);
    println!(
        "dloss/da = {:?}",
        a.grad().expect("a requires grad").to_vec()?
    );
    let mut rng = Rng::new(42);
    let z = rng.normal(&[4, 8], 0.0, 1.0)?.l2_normalize(1e-12)?;
    println!(
        "row norms = {:?}",
        z.square()?.sum_axis(-1, false)?.sqrt()?.to_vec()?
    );
    Ok(())
}
