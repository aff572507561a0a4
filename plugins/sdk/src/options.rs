//! What a component declares about its options (shown by `vkgrad plugins`).

use crate::*;

/// One option of a component: its name, type (as shown to users), default and documentation.
#[derive(Debug, Clone, Serialize)]
pub struct OptionSpec {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub default: Value,
    pub doc: &'static str,
}
