//! Encoders for vkgrad, each a list of layers (`layers.rs`) with a device forward built from
//! host ops and an f64 CPU reference (`reference.rs`):
//! - `mlp`: Linear layers with an activation and optional batch norm between them;
//! - `convnet`: 3x3 conv → batch norm → ReLU → 2x2 max pool per width, then global average
//!   pooling (for 8x8 to 32x32 images), or with `fc` the classic MNIST net's flatten → Linear;
//! - `resnet`: a CIFAR-style ResNet (3x3 stem, basic blocks, stride-2 stages, global pooling);
//! - `projection_head`: SimCLR's g, Linear → BatchNorm → ReLU → Linear;
//! - `predictor`: BYOL's q, the same shape;
//! - `batch_norm`: batch normalisation alone (training statistics, running averages).
//!
//! Parameters start as PyTorch's defaults (uniform ±1/sqrt(fan_in) for Linear and Conv2d,
//! batch norm weight 1, bias 0, running mean 0, running variance 1).

mod layers;
mod reference;

use layers::{Act, Layer};
use vkgrad_plugin::{
    export_plugin, options, Array, Domain, Encoder, Host, HostTensor, OptionDomain, OptionSpec,
    Output, ParamSpec, Pass,
};

/// The shared body of every component: input shape + layers.
fn run_forward<'h>(
    layers: &[Layer],
    x: &HostTensor<'h>,
    p: &[HostTensor<'h>],
    pass: &mut Pass<'h>,
) -> Result<HostTensor<'h>, String> {
    let x = x.reshape(&x.shape()?)?;
    let mut next = 0;
    layers::forward(layers, x, p, &mut next, pass)
}

fn run_reference(
    layers: &[Layer],
    x: &Array,
    p: &[Array],
    training: bool,
) -> Result<Output, String> {
    let mut next = 0;
    layers::reference(layers, reference::T::of(x), p, &mut next, training).map(layers::to_output)
}

fn all_params(layers: &[Layer]) -> Vec<ParamSpec> {
    let mut out = Vec::new();
    layers::params(layers, "", &mut out);
    out
}

fn positive(what: &str, values: &[usize]) -> Result<(), String> {
    if values.is_empty() || values.contains(&0) {
        return Err(format!(
            "{what}: sizes must be a non-empty list of integers >= 1, got {values:?}"
        ));
    }
    Ok(())
}

/// Implements `Encoder` for a component holding `input: Vec<usize>` and `layers`.
macro_rules! layered_encoder {
    ($ty:ident, $opts:ident, $name:literal, $desc:literal, $build:expr) => {
        impl Encoder for $ty {
            type Options = $opts;
            const NAME: &'static str = $name;
            const DESCRIPTION: &'static str = $desc;
            fn options() -> Vec<OptionSpec> {
                $opts::specs()
            }
            fn option_domains() -> Vec<OptionDomain> {
                $opts::domains()
            }
            fn new(o: $opts) -> Result<Self, String> {
                let build: fn($opts) -> Result<(Vec<usize>, Vec<Layer>), String> = $build;
                let (input, layers) = build(o)?;
                Ok($ty { input, layers })
            }
            fn input_shape(&self) -> Vec<usize> {
                self.input.clone()
            }
            fn parameters(&self) -> Vec<ParamSpec> {
                all_params(&self.layers)
            }
            fn forward<'h>(
                &self,
                _host: &'h Host,
                x: &HostTensor<'h>,
                p: &[HostTensor<'h>],
                pass: &mut Pass<'h>,
            ) -> Result<HostTensor<'h>, String> {
                let shape = x.shape()?;
                if shape.len() != self.input.len() + 1 || shape[1..] != self.input[..] {
                    return Err(format!(
                        "{}: input must be [B, {}], got {shape:?}",
                        $name,
                        self.input
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                run_forward(&self.layers, x, p, pass)
            }
            fn reference(&self, x: &Array, p: &[Array], training: bool) -> Result<Output, String> {
                run_reference(&self.layers, x, p, training)
            }
        }
    };
}

// ---------------------------------------------------------------- mlp

options! {
    pub struct MlpOptions {
        /// widths: input, hidden..., output
        pub sizes: Vec<usize> = vec![8, 16, 4], "list of integers >= 1, at least 2", domain = Domain::choice([vec![8, 16, 4], vec![3, 5], vec![4, 6, 6, 2]]);
        /// activation between layers
        pub activation: String = "relu".into(), "relu | tanh | sigmoid", domain = Domain::choice(["relu", "tanh", "sigmoid"]);
        /// batch norm before each hidden activation
        pub batch_norm: bool = false, "bool", domain = Domain::Bool;
    }
}

pub struct Mlp {
    input: Vec<usize>,
    layers: Vec<Layer>,
}

/// Linear layers over `sizes`, with (batch norm and) the activation between them, none after
/// the last. A Linear followed by batch norm has no bias (as in lightly's heads): the
/// normalisation subtracts it again, so it would only be a parameter with zero gradient.
fn mlp_layers(sizes: &[usize], act: Act, bn: bool) -> Vec<Layer> {
    let mut layers = Vec::new();
    for (i, w) in sizes.windows(2).enumerate() {
        let hidden = i + 2 < sizes.len();
        layers.push(Layer::Linear {
            inp: w[0],
            out: w[1],
            bias: !(bn && hidden),
        });
        if hidden {
            if bn {
                layers.push(Layer::BatchNorm { c: w[1] });
            }
            layers.push(Layer::Act(act));
        }
    }
    layers
}

layered_encoder!(
    Mlp,
    MlpOptions,
    "mlp",
    "Multilayer perceptron: Linear layers over `sizes` with an activation (and optional batch norm) between them",
    |o| {
        positive("mlp", &o.sizes)?;
        if o.sizes.len() < 2 {
            return Err(format!("mlp: sizes needs an input and an output width, got {:?}", o.sizes));
        }
        let act = Act::parse(&o.activation, "mlp")?;
        Ok((vec![o.sizes[0]], mlp_layers(&o.sizes, act, o.batch_norm)))
    }
);

// ---------------------------------------------------------------- heads

options! {
    pub struct HeadOptions {
        /// input width (the encoder's output)
        pub in_features: usize = 8, "integer >= 1", domain = Domain::int(1, 8);
        /// hidden width
        pub hidden: usize = 16, "integer >= 1", domain = Domain::int(1, 12);
        /// output width
        pub out_features: usize = 4, "integer >= 1", domain = Domain::int(1, 6);
        /// batch norm after the hidden Linear
        pub batch_norm: bool = true, "bool", domain = Domain::Bool;
    }
}

fn head(o: HeadOptions) -> Result<(Vec<usize>, Vec<Layer>), String> {
    let sizes = [o.in_features, o.hidden, o.out_features];
    positive("head", &sizes)?;
    Ok((
        vec![o.in_features],
        mlp_layers(&sizes, Act::Relu, o.batch_norm),
    ))
}

pub struct ProjectionHead {
    input: Vec<usize>,
    layers: Vec<Layer>,
}
pub struct Predictor {
    input: Vec<usize>,
    layers: Vec<Layer>,
}

layered_encoder!(
    ProjectionHead,
    HeadOptions,
    "projection_head",
    "SimCLR's projection head g: Linear → BatchNorm → ReLU → Linear",
    head
);
layered_encoder!(
    Predictor,
    HeadOptions,
    "predictor",
    "BYOL's predictor q: Linear → BatchNorm → ReLU → Linear",
    head
);

// ---------------------------------------------------------------- convnet

options! {
    pub struct ConvNetOptions {
        /// input channels
        pub channels: usize = 1, "integer >= 1", domain = Domain::int(1, 3);
        /// input height and width
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// channels of each conv layer
        pub widths: Vec<usize> = vec![8, 16], "list of integers >= 1", domain = Domain::choice([vec![8, 16], vec![4], vec![2, 3]]);
        /// batch norm after each conv (convs then have no bias)
        pub batch_norm: bool = true, "bool", domain = Domain::Bool;
        /// 0: global average pooling; > 0: pool, flatten and a Linear layer of this width (keeps where features are)
        pub fc: usize = 0, "integer >= 0", domain = Domain::choice([0, 6]);
    }
}

pub struct ConvNet {
    input: Vec<usize>,
    layers: Vec<Layer>,
}

layered_encoder!(
    ConvNet,
    ConvNetOptions,
    "convnet",
    "Small ConvNet: per width a 3x3 conv → batch norm → ReLU, with 2x2 max pooling between widths, then global average pooling → [B, last width]; or with fc > 0, the classic MNIST net: a 2x2 max pool after every width, flatten, Linear → batch norm → ReLU → [B, fc]",
    |o| {
        positive("convnet", &o.widths)?;
        positive("convnet", &[o.channels, o.size])?;
        let pools = o.widths.len() - usize::from(o.fc == 0);
        if o.size >> pools == 0 {
            return Err(format!(
                "convnet: size {} is too small for {} widths and fc {} ({pools} 2x2 poolings)",
                o.size,
                o.widths.len(),
                o.fc
            ));
        }
        let mut layers = Vec::new();
        let mut c = o.channels;
        for (i, &w) in o.widths.iter().enumerate() {
            layers.push(Layer::Conv { inp: c, out: w, k: 3, stride: 1, pad: 1, bias: !o.batch_norm });
            if o.batch_norm {
                layers.push(Layer::BatchNorm { c: w });
            }
            layers.push(Layer::Act(Act::Relu));
            if i < pools {
                layers.push(Layer::MaxPool { k: 2 });
            }
            c = w;
        }
        if o.fc == 0 {
            layers.push(Layer::GlobalAvgPool);
        } else {
            let side = o.size >> pools;
            layers.push(Layer::Flatten);
            layers.push(Layer::Linear { inp: c * side * side, out: o.fc, bias: !o.batch_norm });
            if o.batch_norm {
                layers.push(Layer::BatchNorm { c: o.fc });
            }
            layers.push(Layer::Act(Act::Relu));
        }
        Ok((vec![o.channels, o.size, o.size], layers))
    }
);

// ---------------------------------------------------------------- resnet

options! {
    pub struct ResNetOptions {
        /// input channels
        pub channels: usize = 3, "integer >= 1", domain = Domain::int(1, 3);
        /// input height and width
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// channels of the stem and first stage
        pub width: usize = 4, "integer >= 1", domain = Domain::int(2, 4);
        /// stages (each after the first halves the resolution)
        pub stages: usize = 2, "integer >= 1", domain = Domain::int(1, 2);
        /// basic blocks per stage
        pub blocks: usize = 1, "integer >= 1", domain = Domain::int(1, 2);
    }
}

pub struct ResNet {
    input: Vec<usize>,
    layers: Vec<Layer>,
}

/// ResNet's basic block: two 3x3 convs with batch norm, plus a projection shortcut (1x1 conv
/// + batch norm) where the shape changes.
fn basic_block(inp: usize, out: usize, stride: usize) -> Layer {
    let main = vec![
        Layer::Conv {
            inp,
            out,
            k: 3,
            stride,
            pad: 1,
            bias: false,
        },
        Layer::BatchNorm { c: out },
        Layer::Act(Act::Relu),
        Layer::Conv {
            inp: out,
            out,
            k: 3,
            stride: 1,
            pad: 1,
            bias: false,
        },
        Layer::BatchNorm { c: out },
    ];
    let shortcut = if stride != 1 || inp != out {
        vec![
            Layer::Conv {
                inp,
                out,
                k: 1,
                stride,
                pad: 0,
                bias: false,
            },
            Layer::BatchNorm { c: out },
        ]
    } else {
        vec![]
    };
    Layer::Residual { main, shortcut }
}

layered_encoder!(
    ResNet,
    ResNetOptions,
    "resnet",
    "CIFAR-style ResNet: 3x3 stem, `stages` stages of `blocks` basic blocks (width doubling, stride 2 from the second stage), global average pooling → [B, width * 2^(stages-1)]",
    |o| {
        positive("resnet", &[o.channels, o.size, o.width, o.stages, o.blocks])?;
        if o.stages > 6 || o.size >> (o.stages - 1) == 0 {
            return Err(format!("resnet: {} stages do not fit size {}", o.stages, o.size));
        }
        let mut layers = vec![
            Layer::Conv { inp: o.channels, out: o.width, k: 3, stride: 1, pad: 1, bias: false },
            Layer::BatchNorm { c: o.width },
            Layer::Act(Act::Relu),
        ];
        let mut c = o.width;
        for s in 0..o.stages {
            let w = o.width << s;
            for b in 0..o.blocks {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                layers.push(basic_block(c, w, stride));
                c = w;
            }
        }
        layers.push(Layer::GlobalAvgPool);
        Ok((vec![o.channels, o.size, o.size], layers))
    }
);

// ---------------------------------------------------------------- batch_norm

options! {
    pub struct BatchNormOptions {
        /// channels C
        pub channels: usize = 3, "integer >= 1", domain = Domain::int(1, 4);
        /// trailing dimensions ([] for [B, C])
        pub spatial: Vec<usize> = vec![2, 2], "list of integers >= 1", domain = Domain::choice([vec![], vec![2, 2], vec![3]]);
    }
}

pub struct BatchNorm {
    input: Vec<usize>,
    layers: Vec<Layer>,
}

layered_encoder!(
    BatchNorm,
    BatchNormOptions,
    "batch_norm",
    "Batch normalisation over axis 1 of [B, C, ...spatial]: batch statistics and running averages (momentum 0.1, unbiased variance) in training, running statistics in evaluation",
    |o| {
        positive("batch_norm", &[o.channels])?;
        if o.spatial.contains(&0) {
            return Err(format!("batch_norm: spatial sizes must be >= 1, got {:?}", o.spatial));
        }
        let mut input = vec![o.channels];
        input.extend(&o.spatial);
        Ok((input, vec![Layer::BatchNorm { c: o.channels }]))
    }
);

export_plugin!(
    name: "encoders",
    version: "0.1.0",
    losses: [],
    encoders: [Mlp, ConvNet, ResNet, ProjectionHead, Predictor, BatchNorm],
    augmentations: [],
);
