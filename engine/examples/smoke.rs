use vkgrad::*;
fn main() -> Result<()> {
    let a = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3])?.requires_grad();
    let b = Tensor::from_vec(vec![1., 0., 0., 1., 1., 1.], &[3, 2])?;
    let c = a.matmul(&b)?;
    println!("c = {:?}", c.to_vec()?);
    let s = c.exp()?.sum_all()?.log()?;
    println!("s = {}", s.item()?);
    s.backward()?;
    println!("grad = {:?}", a.grad().unwrap().to_vec()?);
    println!("softmax = {:?}", a.softmax()?.to_vec()?);
    println!("lse = {:?}", a.logsumexp()?.to_vec()?);
    println!("sum0 = {:?}", a.sum_axis(0, false)?.to_vec()?);
    println!("max1 = {:?} arg {:?}", a.max_axis(1, false)?.to_vec()?, a.argmax(1, false)?.to_vec()?);
    println!("perm = {:?}", a.transpose(0, 1)?.to_vec()?);
    let mut r = Rng::new(1);
    println!("rand = {:?}", r.normal(&[5], 0.0, 1.0)?.to_vec()?);
    println!("stats = {:?}", device::context()?.stats());
    Ok(())
}
