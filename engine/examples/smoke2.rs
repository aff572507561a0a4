use vkgrad::*;
fn main() -> Result<()> {
    // matmul with long K: do the TM/TN loops count against llvmpipe's budget?
    for k in [1000usize, 10000, 20000, 59000] {
        let a = Tensor::ones(&[8, k])?;
        let b = Tensor::ones(&[k, 8])?;
        let c = a.matmul(&b)?.to_vec()?;
        println!("K={k}: c[0]={} (want {k})", c[0]);
    }
    for n in [1000usize, 30000, 100000] {
        let x = Tensor::zeros(&[2, n])?;
        let s = x.softmax()?.sum_axis(-1, false)?.to_vec()?;
        println!("softmax n={n}: row sums {:?}", s);
    }
    Ok(())
}
