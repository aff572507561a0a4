//! A test plugin whose fault is chosen by the `VKGRAD_FIXTURE` environment variable, read when the
//! host loads it (tests run the `vkgrad` binary as a subprocess per fault):
//! `ok` (default), `wrong_major`, `newer_minor`, `duplicate`, `bad_name`, `no_reference`,
//! `panic_init`, `panic_forward`, `panic_n5` (forward panics at batch 5 only),
//! `panic_reference`, `nan`, `wrong_gpu`, `ignores_lambda` (`cross_correlation`'s forward
//! ignores its sampled option `lambda`), `bad_attr` (a mistyped host-op
//! attribute), `unknown_attr` (an attribute the op does not take), `segfault` (a crash inside
//! plugin code), `cpu_draws` (`jitter` declares `draws_on_device` but draws on the CPU).
//! The loss itself is the mean of squared features, with a correct CPU reference. Beside it,
//! always registered and correct: `cross_correlation` (`cross_correlation.rs`), whose gradient
//! vanishes at its minimum batch — it keeps `vkgrad verify`'s loss gradient floor tested; and
//! the augmentation `jitter` (`jitter.rs`).

mod cross_correlation;
mod jitter;

use serde::Deserialize;
use vkgrad_plugin::abi::{self, HostApi, PluginDescriptor, Registrar, Str, TextSink};
use vkgrad_plugin::{
    guard, json, trampolines, Host, HostTensor, Loss, LossInputs, OptionSpec, RefInputs,
};

fn fault() -> String {
    std::env::var("VKGRAD_FIXTURE").unwrap_or_else(|_| "ok".into())
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    pub scale: f64,
}

pub struct MeanSquare {
    fault: String,
}

impl Loss for MeanSquare {
    type Options = Options;
    const NAME: &'static str = "mean_square";
    const DESCRIPTION: &'static str = "mean of the squared features (a test fixture)";

    fn options() -> Vec<OptionSpec> {
        vec![OptionSpec {
            name: "scale",
            ty: "float",
            default: json!(0.0),
            doc: "unused",
        }]
    }

    fn new(_: Options) -> Result<Self, String> {
        Ok(MeanSquare { fault: fault() })
    }

    fn forward<'h>(&self, host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let sq = host.op("mul", &[&x.features, &x.features], json!({}))?;
        let m = host.op("mean", &[&sq], json!({}))?;
        let n = x.features.shape()?[0];
        match self.fault.as_str() {
            "panic_forward" => panic!("fixture: forward panics on purpose"),
            "panic_n5" if n == 5 => panic!("fixture: forward panics at N = 5"),
            "nan" => host
                .op("mul_scalar", &[&m], json!({ "s": f64::NAN.to_string() }))
                .or_else(|_| {
                    let neg = host.op("rsub_scalar", &[&m], json!({ "s": -1.0 }))?; // -1 - m < 0
                    host.op("sqrt", &[&neg], json!({}))
                }),
            "wrong_gpu" => host.op("mul_scalar", &[&m], json!({ "s": 2.0 })),
            "bad_attr" => host.op("sum", &[&sq], json!({ "axis": "1" })),
            "unknown_attr" => host.op("mean", &[&sq], json!({ "axis": 0, "keep_dims": true })),
            "segfault" => {
                // Safety: none; this fixture exists to crash the process inside plugin code.
                unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
                Ok(m)
            }
            _ => Ok(m),
        }
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        if self.fault == "panic_reference" {
            panic!("fixture: the reference panics on purpose");
        }
        let d = x.features.data;
        Ok(d.iter().map(|v| v * v).sum::<f64>() / d.len() as f64)
    }
}

unsafe extern "C" fn init(
    _host: *const HostApi,
    registrar: *const Registrar,
    err: *mut TextSink,
) -> i32 {
    let body = || {
        let fault = fault();
        if fault == "panic_init" {
            panic!("fixture: init panics on purpose");
        }
        let reg = unsafe { &*registrar };
        let mut vt = trampolines::loss_vtable::<MeanSquare>("fixture");
        if fault == "no_reference" || fault == "bad_name" {
            let mut copy = abi::ComponentVTable {
                reference: None,
                ..*vt
            };
            if fault == "bad_name" {
                copy.reference = vt.reference;
                copy.name = Str::new("mean_square");
            }
            vt = Box::leak(Box::new(copy));
        }
        let times = if fault == "duplicate" { 2 } else { 1 };
        for _ in 0..times {
            if unsafe { (reg.register)(reg.ctx, vt) } != abi::OK {
                return Err("the host refused the component".into());
            }
        }
        let cc = trampolines::loss_vtable::<cross_correlation::CrossCorrelation>("fixture");
        let jitter = trampolines::augmentation_vtable::<jitter::Jitter>("fixture");
        for vt in [cc, jitter] {
            if unsafe { (reg.register)(reg.ctx, vt) } != abi::OK {
                return Err("the host refused the component".into());
            }
        }
        Ok(())
    };
    unsafe { guard(err, body) }
}

static NAME: &str = "fixture";
static VERSION: &str = "0.0.1";

/// # Safety
/// Called by the host as the plugin entry point.
#[no_mangle]
pub extern "C" fn vkgrad_plugin_entry_v1() -> *const PluginDescriptor {
    let (major, minor) = match fault().as_str() {
        "wrong_major" => (abi::ABI_MAJOR + 1, 0),
        "newer_minor" => (abi::ABI_MAJOR, abi::ABI_MINOR + 1),
        _ => (abi::ABI_MAJOR, abi::ABI_MINOR),
    };
    Box::leak(Box::new(PluginDescriptor {
        struct_size: std::mem::size_of::<PluginDescriptor>(),
        abi_major: major,
        abi_minor: minor,
        name: Str::new(NAME),
        version: Str::new(VERSION),
        init,
    }))
}
