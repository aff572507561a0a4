//! Typed host-op methods: `z.narrow(1, a, 1)?`, `za.sub(&zb)?.mul(&d)?.sum_axis(-1, false)?`.
//! Each is a call of the string-named ABI op (`Host::op`) with the attributes the table
//! (`table.rs`) defines; a test runs every method against the table's schema, and no op of the
//! table is without one. Errors are the host's messages, naming the op. Scalars are taken as
//! f64 (what plugin options usually are) and read by the host as f32, as every scalar attribute.

use crate::{Host, HostTensor};
use serde_json::{json, Value};

type R<'h> = Result<HostTensor<'h>, String>;

/// The distribution of [`Host::random`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// Uniform in [a, b).
    Uniform(f64, f64),
    /// Normal with this mean and standard deviation.
    Normal(f64, f64),
}

/// Outside the image, [`HostTensor::resample_affine`] reads zeros or the nearest border pixel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Padding {
    Zeros,
    Border,
}

/// Which keys are a query's positives in [`HostTensor::similarity_lse`].
#[derive(Clone, Copy)]
pub enum Positives<'a, 'h> {
    None,
    /// The key index of each query's positive, [M] (integer or integral f32).
    Index(&'a HostTensor<'h>),
    /// Query labels [M] and key labels [P]: a key is a positive when the labels are equal.
    Labels(&'a HostTensor<'h>, &'a HostTensor<'h>),
}

/// The options of [`HostTensor::similarity_lse`].
#[derive(Clone, Copy)]
pub struct SimilarityLse<'a, 'h> {
    pub temperature: f64,
    /// Leave key j = i out of query i's sums (NT-Xent, SupCon).
    pub exclude_self: bool,
    pub positives: Positives<'a, 'h>,
    /// An extra positive logit per query, [M] (MoCo's q·k₊/τ).
    pub external: Option<&'a HostTensor<'h>>,
}

macro_rules! no_attrs {
    ($($name:ident),* $(,)?) => {$(
        #[doc = concat!("Host op `", stringify!($name), "` (see the table in docs/writing-a-plugin.md).")]
        pub fn $name(&self) -> R<'h> {
            self.call(stringify!($name), &[], json!({}))
        }
    )*};
}
macro_rules! scalar {
    ($($name:ident),* $(,)?) => {$(
        #[doc = concat!("Host op `", stringify!($name), "` with scalar `s`.")]
        pub fn $name(&self, s: impl Into<f64>) -> R<'h> {
            self.call(stringify!($name), &[], json!({ "s": s.into() }))
        }
    )*};
}
macro_rules! binary {
    ($($name:ident),* $(,)?) => {$(
        #[doc = concat!("Host op `", stringify!($name), "` (broadcasting).")]
        pub fn $name(&self, other: &HostTensor) -> R<'h> {
            self.call(stringify!($name), &[other], json!({}))
        }
    )*};
}
macro_rules! reduce {
    ($(($all:ident, $axis:ident, $op:literal)),* $(,)?) => {$(
        #[doc = concat!("Host op `", $op, "` over all elements (a one-element result).")]
        pub fn $all(&self) -> R<'h> {
            self.call($op, &[], json!({}))
        }
        #[doc = concat!("Host op `", $op, "` over `axis` (negative counts from the end).")]
        pub fn $axis(&self, axis: isize, keepdim: bool) -> R<'h> {
            self.call($op, &[], json!({ "axis": axis, "keepdim": keepdim }))
        }
    )*};
}

impl<'h> HostTensor<'h> {
    fn call(&self, name: &str, others: &[&HostTensor], attrs: Value) -> R<'h> {
        let mut inputs: Vec<&HostTensor> = vec![self];
        inputs.extend_from_slice(others);
        self.host.op(name, &inputs, attrs)
    }

    no_attrs!(
        neg,
        exp,
        log,
        sqrt,
        rsqrt,
        abs,
        relu,
        sigmoid,
        tanh,
        sin,
        cos,
        softmax,
        log_softmax,
        logsumexp,
        detach,
        replica_sum,
        global_avg_pool,
        to_f32,
    );
    scalar!(
        add_scalar,
        sub_scalar,
        mul_scalar,
        div_scalar,
        rsub_scalar,
        rdiv_scalar,
        maximum_scalar,
        minimum_scalar,
        gt_scalar,
        ge_scalar,
        eq_scalar,
    );
    binary!(add, sub, mul, div, maximum, minimum, eq, gt, ge);
    reduce!(
        (sum_all, sum_axis, "sum"),
        (mean_all, mean_axis, "mean"),
        (max_all, max_axis, "max"),
        (min_all, min_axis, "min"),
    );

    /// xᵖ.
    pub fn powf(&self, p: impl Into<f64>) -> R<'h> {
        self.call("powf", &[], json!({ "p": p.into() }))
    }
    /// x / max(‖x‖, 1e-12) over the last axis.
    pub fn l2_normalize(&self) -> R<'h> {
        self.call("l2_normalize", &[], json!({}))
    }
    /// x / max(‖x‖, eps) over the last axis.
    pub fn l2_normalize_eps(&self, eps: impl Into<f64>) -> R<'h> {
        self.call("l2_normalize", &[], json!({ "eps": eps.into() }))
    }
    /// `a` where `mask` is nonzero, `b` where it is 0 (broadcasting); the gradient reaches each
    /// only where it was chosen, so a masked −inf never turns a gradient into NaN.
    pub fn where_(mask: &HostTensor<'h>, a: &HostTensor, b: &HostTensor) -> R<'h> {
        mask.call("where", &[a, b], json!({}))
    }
    /// Index of the largest value along `axis` (an integer tensor).
    pub fn argmax(&self, axis: isize, keepdim: bool) -> R<'h> {
        self.call("argmax", &[], json!({ "axis": axis, "keepdim": keepdim }))
    }
    /// Index of the smallest value along `axis` (an integer tensor).
    pub fn argmin(&self, axis: isize, keepdim: bool) -> R<'h> {
        self.call("argmin", &[], json!({ "axis": axis, "keepdim": keepdim }))
    }
    /// self · other over the last two axes; batch axes equal, or one operand 2-D (used with
    /// every matrix of the other; ABI 1.7).
    pub fn matmul(&self, other: &HostTensor) -> R<'h> {
        self.call("matmul", &[other], json!({}))
    }
    /// op(self) · op(other), `ta`/`tb` transposing an operand first (no copy).
    pub fn matmul_t(&self, other: &HostTensor, ta: bool, tb: bool) -> R<'h> {
        self.call("matmul", &[other], json!({ "ta": ta, "tb": tb }))
    }
    pub fn reshape(&self, shape: &[usize]) -> R<'h> {
        self.call("reshape", &[], json!({ "shape": shape }))
    }
    /// Broadcast to `shape` (a copy).
    pub fn expand(&self, shape: &[usize]) -> R<'h> {
        self.call("expand", &[], json!({ "shape": shape }))
    }
    /// Axis i of the result is axis `dims[i]` of self.
    pub fn permute(&self, dims: &[usize]) -> R<'h> {
        self.call("permute", &[], json!({ "dims": dims }))
    }
    pub fn transpose(&self, a: isize, b: isize) -> R<'h> {
        self.call("transpose", &[], json!({ "a": a, "b": b }))
    }
    /// The slice `start..start + len` along `axis`.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> R<'h> {
        self.call(
            "narrow",
            &[],
            json!({ "axis": axis, "start": start, "len": len }),
        )
    }
    /// The slices `idx[k]` along `axis` (`idx` an integer tensor).
    pub fn index_select(&self, axis: isize, idx: &HostTensor) -> R<'h> {
        self.call("index_select", &[idx], json!({ "axis": axis }))
    }
    /// PyTorch's gather: out[.., j, ..] = self[.., idx[.., j, ..], ..].
    pub fn gather(&self, axis: isize, idx: &HostTensor) -> R<'h> {
        self.call("gather", &[idx], json!({ "axis": axis }))
    }
    /// Self with src[.., j, ..] added at idx[.., j, ..] along `axis`.
    pub fn scatter_add(&self, axis: isize, idx: &HostTensor, src: &HostTensor) -> R<'h> {
        self.call("scatter_add", &[idx, src], json!({ "axis": axis }))
    }
    /// 2-D cross-correlation with weight [O, C, K, K] and an optional bias [O].
    pub fn conv2d(
        &self,
        weight: &HostTensor,
        bias: Option<&HostTensor>,
        stride: usize,
        padding: usize,
        dilation: usize,
    ) -> R<'h> {
        let mut others = vec![weight];
        others.extend(bias);
        let attrs = json!({ "stride": stride, "padding": padding, "dilation": dilation });
        self.call("conv2d", &others, attrs)
    }
    /// Maximum over each `kernel`² window; `stride` `None` = the kernel.
    pub fn max_pool2d(
        &self,
        kernel: usize,
        stride: Option<usize>,
        padding: usize,
        dilation: usize,
    ) -> R<'h> {
        self.call("max_pool2d", &[], window(kernel, stride, padding, dilation))
    }
    /// Mean over each `kernel`² window (padding counted); `stride` `None` = the kernel.
    pub fn avg_pool2d(
        &self,
        kernel: usize,
        stride: Option<usize>,
        padding: usize,
        dilation: usize,
    ) -> R<'h> {
        self.call("avg_pool2d", &[], window(kernel, stride, padding, dilation))
    }
    /// Images [N, C, H, W] resampled bilinearly through affine grids `theta` [N, 2, 3] to
    /// `size` (no gradient).
    pub fn resample_affine(&self, theta: &HostTensor, size: [usize; 2], padding: Padding) -> R<'h> {
        let padding = match padding {
            Padding::Zeros => "zeros",
            Padding::Border => "border",
        };
        let attrs = json!({ "size": size, "padding": padding });
        self.call("resample_affine", &[theta], attrs)
    }
    /// Row statistics of self · keysᵀ / τ without building the matrix: [M, 4] = log-sum-exp
    /// over the allowed keys, sum of positive logits, positive count, log-sum-exp over the
    /// positives (see docs/writing-a-plugin.md).
    pub fn similarity_lse(&self, keys: &HostTensor, o: &SimilarityLse<'_, '_>) -> R<'h> {
        let mut others: Vec<&HostTensor> = vec![keys];
        let positives = match o.positives {
            Positives::None => "none",
            Positives::Index(i) => {
                others.push(i);
                "index"
            }
            Positives::Labels(a, b) => {
                others.extend([a, b]);
                "labels"
            }
        };
        others.extend(o.external);
        let attrs = json!({
            "temperature": o.temperature,
            "exclude_self": o.exclude_self,
            "positives": positives,
            "external": o.external.is_some(),
        });
        self.call("similarity_lse", &others, attrs)
    }
}

fn window(kernel: usize, stride: Option<usize>, padding: usize, dilation: usize) -> Value {
    let mut a = json!({ "kernel": kernel, "padding": padding, "dilation": dilation });
    if let Some(s) = stride {
        a["stride"] = json!(s);
    }
    a
}

impl Host {
    /// Tensors joined along `axis` (at least one).
    pub fn concat(&self, tensors: &[&HostTensor], axis: isize) -> Result<HostTensor<'_>, String> {
        self.op("concat", tensors, json!({ "axis": axis }))
    }
    /// A Philox 4×32-10 stream: `seed` from element `offset`, in `shape`.
    pub fn random(
        &self,
        seed: u64,
        offset: u32,
        shape: &[usize],
        dist: Dist,
    ) -> Result<HostTensor<'_>, String> {
        let (name, a, b) = match dist {
            Dist::Uniform(a, b) => ("uniform", a, b),
            Dist::Normal(a, b) => ("normal", a, b),
        };
        let attrs =
            json!({ "seed": seed, "offset": offset, "shape": shape, "dist": name, "a": a, "b": b });
        self.op("random", &[], attrs)
    }
}

#[cfg(test)]
mod tests {
    //! Every typed method against the table, through a recording host that checks each call's
    //! attributes with the host's own check.
    use super::*;
    use crate::abi::{self, Handle, HostApi, Str, TextSink};
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::ffi::c_void;

    thread_local! {
        static CALLS: RefCell<Vec<(String, usize)>> = const { RefCell::new(Vec::new()) };
    }

    unsafe extern "C" fn op(
        _: *mut c_void,
        name: Str,
        _: *const Handle,
        n: usize,
        attrs: Str,
        out: *mut Handle,
        err: *mut TextSink,
    ) -> i32 {
        let name = unsafe { name.as_str() }.unwrap().to_string();
        let attrs: Value = serde_json::from_str(unsafe { attrs.as_str() }.unwrap()).unwrap();
        if let Err(e) = crate::ops::check(&name, &attrs) {
            unsafe { crate::report(err, &e) };
            return abi::ERROR;
        }
        CALLS.with(|c| c.borrow_mut().push((name, n)));
        unsafe { *out = 7 };
        abi::OK
    }
    unsafe extern "C" fn shape(
        _: *mut c_void,
        _: Handle,
        _: *mut usize,
        _: usize,
        _: *mut usize,
    ) -> i32 {
        abi::ERROR
    }
    unsafe extern "C" fn release(_: *mut c_void, _: Handle) {}
    unsafe extern "C" fn tensor(
        _: *mut c_void,
        _: *const f32,
        _: usize,
        _: *const usize,
        _: usize,
        out: *mut Handle,
        _: *mut TextSink,
    ) -> i32 {
        unsafe { *out = 3 };
        abi::OK
    }
    unsafe extern "C" fn log(_: *mut c_void, _: u32, _: Str) {}
    unsafe extern "C" fn read(
        _: *mut c_void,
        _: Handle,
        _: *mut f32,
        _: usize,
        _: *mut usize,
    ) -> i32 {
        abi::ERROR
    }

    /// Runs `f`, returning the op calls it made (name, input count), or the error.
    fn calls(f: impl FnOnce(&Host) -> Result<(), String>) -> Vec<(String, usize)> {
        let api = HostApi {
            struct_size: std::mem::size_of::<HostApi>(),
            abi_minor: abi::ABI_MINOR,
            ctx: std::ptr::null_mut(),
            op,
            shape,
            release,
            tensor,
            log,
            read,
        };
        let host = Host { api: &api };
        CALLS.with(|c| c.borrow_mut().clear());
        f(&host).unwrap();
        CALLS.with(|c| c.borrow().clone())
    }

    #[test]
    fn every_typed_method_makes_a_call_the_table_accepts_and_every_op_has_one() {
        let all = calls(|h| {
            let x = h.tensor(&[1.0], &[1])?;
            let (y, i) = (h.tensor(&[1.0], &[1])?, h.tensor(&[0.0], &[1])?);
            for t in [
                x.neg()?,
                x.exp()?,
                x.log()?,
                x.sqrt()?,
                x.rsqrt()?,
                x.abs()?,
                x.relu()?,
                x.sigmoid()?,
                x.tanh()?,
                x.sin()?,
                x.cos()?,
                x.softmax()?,
                x.log_softmax()?,
                x.logsumexp()?,
                x.detach()?,
                x.replica_sum()?,
                x.global_avg_pool()?,
                i.to_f32()?,
                x.add_scalar(1.0)?,
                x.sub_scalar(1.0)?,
                x.mul_scalar(1.0)?,
                x.div_scalar(1.0)?,
                x.rsub_scalar(1.0)?,
                x.rdiv_scalar(1.0)?,
                x.maximum_scalar(1.0)?,
                x.minimum_scalar(1.0)?,
                x.gt_scalar(1.0)?,
                x.ge_scalar(1.0)?,
                x.eq_scalar(1.0)?,
                x.add(&y)?,
                x.sub(&y)?,
                x.mul(&y)?,
                x.div(&y)?,
                x.maximum(&y)?,
                x.minimum(&y)?,
                x.eq(&y)?,
                x.gt(&y)?,
                x.ge(&y)?,
                HostTensor::where_(&i, &x, &y)?,
                x.sum_all()?,
                x.sum_axis(-1, true)?,
                x.mean_all()?,
                x.mean_axis(0, false)?,
                x.max_all()?,
                x.max_axis(0, false)?,
                x.min_all()?,
                x.min_axis(0, false)?,
                x.argmax(0, false)?,
                x.argmin(-1, true)?,
                x.matmul(&y)?,
                x.matmul_t(&y, true, false)?,
                x.reshape(&[1, 1])?,
                x.expand(&[2, 1])?,
                x.permute(&[0])?,
                x.transpose(0, -1)?,
                x.narrow(0, 0, 1)?,
                h.concat(&[&x, &y], 0)?,
                x.index_select(0, &i)?,
                x.gather(0, &i)?,
                x.scatter_add(0, &i, &y)?,
                h.random(u64::MAX, 5, &[2], Dist::Uniform(0.0, 1.0))?,
                h.random(1, 0, &[2], Dist::Normal(0.0, 1.0))?,
                x.conv2d(&y, None, 1, 0, 1)?,
                x.conv2d(&y, Some(&i), 2, 1, 1)?,
                x.max_pool2d(2, None, 0, 1)?,
                x.avg_pool2d(3, Some(1), 1, 2)?,
                x.resample_affine(&y, [4, 4], Padding::Border)?,
                x.l2_normalize()?,
                x.l2_normalize_eps(1e-6)?,
                x.powf(2.0)?,
                x.similarity_lse(
                    &y,
                    &SimilarityLse {
                        temperature: 0.1,
                        exclude_self: true,
                        positives: Positives::Labels(&i, &i),
                        external: Some(&y),
                    },
                )?,
                x.similarity_lse(
                    &y,
                    &SimilarityLse {
                        temperature: 0.1,
                        exclude_self: false,
                        positives: Positives::Index(&i),
                        external: None,
                    },
                )?,
            ] {
                drop(t);
            }
            Ok(())
        });
        let called: BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        let table: BTreeSet<&str> = crate::ops::names().collect();
        assert_eq!(
            called, table,
            "ops without a typed method, or methods without an op"
        );
        // Inputs travel as the table says.
        let inputs = |name: &str| -> Vec<usize> {
            all.iter()
                .filter(|(n, _)| n == name)
                .map(|(_, k)| *k)
                .collect()
        };
        assert_eq!(inputs("where"), [3]);
        assert_eq!(inputs("conv2d"), [2, 3]);
        assert_eq!(inputs("scatter_add"), [3]);
        assert_eq!(inputs("similarity_lse"), [5, 3]);
        assert_eq!(inputs("random"), [0, 0]);
        assert_eq!(inputs("concat"), [2]);
    }

    #[test]
    fn a_typed_call_the_host_refuses_reports_the_hosts_message() {
        let api_err = std::panic::catch_unwind(|| {
            calls(|h| {
                let x = h.tensor(&[1.0], &[1])?;
                x.mul_scalar(f32::INFINITY).map(drop)
            })
        });
        // ∞ does not fit the `s` attribute (a finite f32): the check refuses it, by name.
        let msg = api_err.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("mul_scalar: attribute `s` must be a number"),
            "{msg}"
        );
    }
}
