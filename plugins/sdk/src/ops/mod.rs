//! The host ops: the table that defines them (`table`), the attribute check the host runs on
//! every call (`check`), and the typed methods plugins call them through (`typed`).

mod check;
mod table;
mod typed;

pub use check::check;
pub use table::{attrs, describe, markdown, names, spec, Attr, Need, OpSpec, Ty, HOST_OPS};
pub use typed::{Dist, Padding, Positives, SimilarityLse};
