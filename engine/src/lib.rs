//! vkgrad: a tensor engine on Vulkan with reverse-mode autograd, for contrastive and
//! self-supervised learning. Layers, bottom up: `device`, `tensor` + `ops`, `autograd`,
//! `reference` (the independent f64 CPU reference), `optim`, `bench`.

pub mod autograd;
pub mod device;
pub mod dist;
pub mod error;
mod grad_mode;
pub mod lazy;
pub(crate) mod ops;
pub mod replay;
pub mod tensor;

pub use autograd::{is_grad_enabled, no_grad, NoGradGuard};
pub use error::{Error, Result};
pub use ops::binary::{binary_op, BinaryOp, BINARY_OPS};
pub use ops::conv::Window;
pub use ops::links::{OpLinks, LINKED_OPS};
pub use ops::random::{seed_tensor, with_device_seeds, Rng};
pub use ops::reduce::{reduce_op, ReduceOp, REDUCE_OPS};
pub use ops::resample::Padding;
pub use ops::rowwise::{rowwise_op, RowwiseOp, ROWWISE_OPS};
pub use ops::similarity::{Positives, SimilarityLse};
pub use ops::unary::{unary_op, UnaryOp, UNARY_OPS};
pub use ops::MAX_RANK;
pub use replay::Replay;
pub use tensor::{IntTensor, Shape, Tensor};
pub mod bench;
pub mod data;
pub mod export;
pub mod nn;
pub mod npy;
pub mod optim;
pub mod plot;
pub mod plugin;
pub mod reference;
pub mod train;
