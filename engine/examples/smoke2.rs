use std::time::Instant;
use vkgrad::*;
fn main() -> Result<()> {
    let ctx = device::context()?;
    let n = 16 * 1024 * 1024;
    let a = Tensor::ones(&[n])?;
    let b = Tensor::ones(&[n])?;
    ctx.sync()?;
    for _ in 0..3 {
        let t = Instant::now();
        let _z = Tensor::zeros(&[n])?;
        ctx.sync()?;
        let fill = t.elapsed();
        let t = Instant::now();
        let _c = a.add(&b)?;
        ctx.sync()?;
        let add = t.elapsed();
        let t = Instant::now();
        let _c = a.mul_scalar(2.0)?;
        ctx.sync()?;
        let un = t.elapsed();
        let t = Instant::now();
        ctx.sync()?;
        println!("fill {:?} add {:?} unary {:?} empty sync {:?}", fill, add, un, t.elapsed());
    }
    Ok(())
}
