//! A created component and the calls into it: describe, forward, reference, state.

use super::*;

/// What an instance says about its shapes (encoders and augmentations).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Description {
    #[serde(default)]
    pub input_shape: Vec<usize>,
    #[serde(default)]
    pub parameters: Vec<vkgrad_plugin::ParamSpec>,
    /// Losses: named extra inputs shaped like the features (e.g. BYOL's targets).
    #[serde(default)]
    pub extra_inputs: Vec<String>,
    #[serde(default)]
    pub needs_labels: bool,
    /// Losses: the numbers of views taken, (min, max).
    #[serde(default)]
    pub views: Option<(usize, usize)>,
    /// Losses: the smallest batch N (ABI 1.3; absent before, which means 2).
    #[serde(default)]
    pub min_batch: Option<usize>,
    /// Augmentations: every random number is drawn on the device from the given stream, so a
    /// replayed step may record it with its seed as a device value (ABI 1.6; absent before,
    /// which means no).
    #[serde(default)]
    pub draws_on_device: bool,
}

/// A created component.
pub struct Instance {
    pub(super) comp: Component,
    pub(super) inst: *mut c_void,
}

/// A parameter's starting value, drawn from `rng` as its spec says.
pub fn init_parameter(p: &vkgrad_plugin::ParamSpec, rng: &mut crate::Rng) -> Result<Tensor> {
    use vkgrad_plugin::Init;
    match p.init {
        Init::Uniform { bound } => rng.uniform(&p.shape, -bound as f32, bound as f32),
        Init::Normal { std } => rng.normal(&p.shape, 0.0, std as f32),
        Init::Constant { value } => Tensor::full(&p.shape, value as f32),
    }
}

/// What a CPU reference returned.
pub struct RefOutput {
    pub data: Vec<f64>,
    pub dims: Vec<usize>,
}

impl Instance {
    pub fn component(&self) -> &Component {
        &self.comp
    }

    /// The instance's input shape and parameters.
    pub fn describe(&self) -> Result<Description> {
        self.comp.check_alive()?;
        let mut msg = String::new();
        let mut out = sink(&mut msg);
        let _entered = crash::enter(self.comp.slot);
        let st = unsafe { (self.comp.vtable.describe)(self.inst, &mut out) };
        if st != abi::OK {
            return self.comp.status(st, msg).map(|_| Description::default());
        }
        serde_json::from_str(&msg)
            .map_err(|e| self.comp.err(format!("describe returned bad JSON: {e}")))
    }

    /// Calls the component's device path on host values; it leaves `n_out` results.
    fn call_forward_n(
        &self,
        inputs: Vec<Option<Held>>,
        stream: u64,
        n_out: usize,
    ) -> Result<Vec<Tensor>> {
        self.comp.check_alive()?;
        let mut state = CallState::default();
        let handles: Vec<abi::Handle> = inputs
            .into_iter()
            .map(|v| v.map_or(0, |v| state.insert(v)))
            .collect();
        let api = host_api::api(&mut state);
        let (mut out, mut msg) = (vec![0; n_out.max(1)], String::new());
        let mut err = sink(&mut msg);
        let _entered = crash::enter(self.comp.slot);
        let st = unsafe {
            (self.comp.vtable.forward)(
                self.inst,
                &api,
                handles.as_ptr(),
                handles.len(),
                stream,
                out.as_mut_ptr(),
                &mut err,
            )
        };
        self.comp.status(st, msg)?;
        out.iter()
            .take(n_out)
            .map(|&h| match state.take(h) {
                Some(Held::F(t)) => Ok(t),
                _ => Err(self.comp.err("forward returned no f32 tensor")),
            })
            .collect()
    }

    fn call_forward(&self, inputs: Vec<Option<Held>>, stream: u64) -> Result<Tensor> {
        Ok(self.call_forward_n(inputs, stream, 1)?.remove(0))
    }

    /// Calls the component's CPU reference; `None` inputs are passed as absent (null data).
    pub fn call_reference(
        &self,
        inputs: &[Option<(&[f64], &[usize])>],
        stream: u64,
    ) -> Result<RefOutput> {
        self.comp.check_alive()?;
        let reference = self
            .comp
            .vtable
            .reference
            .ok_or_else(|| self.comp.err("no CPU reference"))?;
        let arrays: Vec<RefArray> = inputs
            .iter()
            .map(|a| match a {
                Some((d, s)) => RefArray {
                    data: d.as_ptr(),
                    len: d.len(),
                    dims: s.as_ptr(),
                    rank: s.len(),
                },
                None => RefArray {
                    data: std::ptr::null(),
                    len: 0,
                    dims: std::ptr::null(),
                    rank: 0,
                },
            })
            .collect();
        let mut got: Option<RefOutput> = None;
        let mut out = RefSink {
            ctx: &mut got as *mut Option<RefOutput> as *mut c_void,
            put: put_output,
        };
        let mut msg = String::new();
        let mut err = sink(&mut msg);
        let _entered = crash::enter(self.comp.slot);
        let st = unsafe {
            reference(
                self.inst,
                arrays.as_ptr(),
                arrays.len(),
                stream,
                &mut out,
                &mut err,
            )
        };
        self.comp.status(st, msg)?;
        let got = got.ok_or_else(|| self.comp.err("the CPU reference returned no value"))?;
        if got.data.len() != got.dims.iter().product::<usize>() {
            return Err(self.comp.err(format!(
                "the CPU reference returned {} values for shape {:?}",
                got.data.len(),
                got.dims
            )));
        }
        Ok(got)
    }

    /// The state the component keeps across calls (e.g. a MoCo queue), if any.
    pub fn save_state(&self) -> Result<Option<RefOutput>> {
        self.comp.check_alive()?;
        let mut got: Option<RefOutput> = None;
        let mut out = RefSink {
            ctx: &mut got as *mut Option<RefOutput> as *mut c_void,
            put: put_output,
        };
        let mut msg = String::new();
        let mut err = sink(&mut msg);
        let _entered = crash::enter(self.comp.slot);
        let st = unsafe { (self.comp.vtable.state_save)(self.inst, &mut out, &mut err) };
        self.comp.status(st, msg)?;
        Ok(got)
    }

    /// Restores what `save_state` returned.
    pub fn load_state(&self, state: &RefOutput) -> Result<()> {
        self.comp.check_alive()?;
        let a = RefArray {
            data: state.data.as_ptr(),
            len: state.data.len(),
            dims: state.dims.as_ptr(),
            rank: state.dims.len(),
        };
        let mut msg = String::new();
        let mut err = sink(&mut msg);
        let _entered = crash::enter(self.comp.slot);
        let st = unsafe { (self.comp.vtable.state_load)(self.inst, &a, &mut err) };
        self.comp.status(st, msg)
    }

    /// A loss on the device, recording gradients: features `[N, V, D]`, optional labels `[N]`.
    pub fn forward(&self, features: &Tensor, labels: Option<&IntTensor>) -> Result<Tensor> {
        self.forward_with(features, labels, &[])
    }

    /// A loss with its named extra inputs (in `describe().extra_inputs` order).
    pub fn forward_with(
        &self,
        features: &Tensor,
        labels: Option<&IntTensor>,
        extra: &[Tensor],
    ) -> Result<Tensor> {
        let mut inputs = vec![
            Some(Held::F(features.clone())),
            labels.map(|l| Held::I(l.clone())),
        ];
        inputs.extend(extra.iter().map(|e| Some(Held::F(e.clone()))));
        let t = self.call_forward(inputs, 0)?;
        if t.numel() != 1 {
            return Err(self.comp.err(format!(
                "forward returned shape {:?}; a loss returns one value",
                t.shape()
            )));
        }
        t.reshape(&[])
    }

    /// A loss's CPU reference value.
    pub fn reference(
        &self,
        features: &[f64],
        dims: &[usize],
        labels: Option<&[f64]>,
    ) -> Result<f64> {
        self.reference_with(features, dims, labels, &[])
    }

    /// A loss's CPU reference value with extra inputs (each shaped like the features).
    pub fn reference_with(
        &self,
        features: &[f64],
        dims: &[usize],
        labels: Option<&[f64]>,
        extra: &[&[f64]],
    ) -> Result<f64> {
        let ldims = [labels.map_or(0, |l| l.len())];
        let mut inputs = vec![Some((features, dims)), labels.map(|l| (l, &ldims[..]))];
        inputs.extend(extra.iter().map(|e| Some((*e, dims))));
        let out = self.call_reference(&inputs, 0)?;
        match out.data[..] {
            [v] => Ok(v),
            _ => Err(self.comp.err(format!(
                "the CPU reference returned {} values; a loss returns one",
                out.data.len()
            ))),
        }
    }

    /// An encoder on the device: `x` `[B, ...input_shape]`, parameters (buffers included) in
    /// declared order. Returns the output and, in training mode, the buffers' new values (in
    /// declaration order; empty in evaluation mode).
    pub fn encode(
        &self,
        x: &Tensor,
        params: &[Tensor],
        training: bool,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let buffers = if training {
            self.describe()?
                .parameters
                .iter()
                .filter(|p| p.buffer)
                .count()
        } else {
            0
        };
        let mut inputs = vec![Some(Held::F(x.clone()))];
        inputs.extend(params.iter().map(|p| Some(Held::F(p.clone()))));
        let flags = if training { abi::ENCODER_TRAINING } else { 0 };
        let mut out = self.call_forward_n(inputs, flags, 1 + buffers)?;
        let y = out.remove(0);
        Ok((y, out))
    }

    /// An augmentation on the device, drawing from `stream`.
    pub fn augment(&self, batch: &Tensor, stream: u64) -> Result<Tensor> {
        self.call_forward(vec![Some(Held::F(batch.clone()))], stream)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.comp.poisoned.load(Ordering::SeqCst) {
            let _entered = crash::enter(self.comp.slot);
            unsafe { (self.comp.vtable.destroy)(self.inst) };
        }
    }
}
