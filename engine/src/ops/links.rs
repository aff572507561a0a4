//! The op table of the families whose ops differ in signature — movement, index, matmul,
//! convolution and pooling, random, resampling, similarity, collectives, and the ops of the
//! other families with a signature of their own (`where`, argmax/argmin, `detach`). The uniform families have tables that also drive their property tests
//! (`UNARY_OPS`, `BINARY_OPS`, `REDUCE_OPS`, `ROWWISE_OPS`); here each op names where it is
//! implemented, the kernel that runs it, its independent f64 reference and the properties
//! that prove it. A test checks that every host op (`vkgrad_plugin::ops::HOST_OPS`) is in
//! exactly one table and that every file, kernel, reference function and property named here
//! exists. The reference stays written independently of the engine: this table only points
//! at it.

/// Where one op lives and what proves it.
pub struct OpLinks {
    /// The host-op name (`vkgrad_plugin::ops::HOST_OPS`).
    pub name: &'static str,
    /// The file of `engine/src/` holding the op and its backward rule, and the method there
    /// that runs it (`file#method`; the op's name when no `#`).
    pub source: &'static str,
    /// The kernels (files of `shaders/`) it dispatches; none for ops that only reinterpret
    /// a buffer or go through the host.
    pub kernels: &'static [&'static str],
    /// Its f64 reference: `file::function` of `engine/src/reference/` (value, then the
    /// vector-Jacobian product where it has a gradient); empty where the op is the identity
    /// on values (`reshape`, `detach`, `replica_sum` in one process).
    pub reference: &'static [&'static str],
    /// The properties that prove it: `file::test` of `tests/tests/` or `engine/tests/`.
    pub properties: &'static [&'static str],
}

const fn op(
    name: &'static str,
    source: &'static str,
    kernels: &'static [&'static str],
    reference: &'static [&'static str],
    properties: &'static [&'static str],
) -> OpLinks {
    OpLinks {
        name,
        source,
        kernels,
        reference,
        properties,
    }
}

const COPY: &[&str] = &["copy.comp"];
const INDEX: &[&str] = &["index.comp"];
const MATMULS: &[&str] = &["matmul.comp", "matmul_lanes.comp", "matmul_tiled.comp"];

/// Every host op without a uniform family table.
pub const LINKED_OPS: &[OpLinks] = &[
    // `l2_normalize` is in `ROWWISE_OPS` (its eps is the attribute).
    op(
        "reshape",
        "ops/movement.rs",
        &[],
        &[],
        &["movement::reshape_keeps_elements", "movement::movement_errors"],
    ),
    op(
        "expand",
        "ops/movement.rs",
        COPY,
        &["ops::expand", "ops::expand_vjp"],
        &["movement::expand_matches_reference"],
    ),
    op(
        "permute",
        "ops/movement.rs",
        COPY,
        &["ops::permute", "ops::permute_vjp"],
        &["movement::permute_matches_reference"],
    ),
    op(
        "transpose",
        "ops/movement.rs",
        COPY,
        &["ops::permute", "ops::permute_vjp"],
        &["movement::permute_matches_reference"],
    ),
    op(
        "narrow",
        "ops/movement.rs",
        COPY,
        &["ops::narrow", "ops::narrow_vjp"],
        &["movement::narrow_matches_reference"],
    ),
    op(
        "concat",
        "ops/movement.rs",
        COPY,
        &["ops::concat", "ops::concat_vjp"],
        &["movement::concat_matches_reference"],
    ),
    op(
        "index_select",
        "ops/index.rs",
        INDEX,
        &["ops::index_select", "ops::index_select_vjp"],
        &[
            "index::index_select_matches_reference",
            "index::out_of_range_indices_are_errors",
        ],
    ),
    op(
        "gather",
        "ops/index.rs",
        INDEX,
        &["ops::gather", "ops::gather_vjp"],
        &["index::gather_matches_reference"],
    ),
    op(
        "scatter_add",
        "ops/index.rs",
        INDEX,
        &["ops::scatter_add", "ops::scatter_add_vjp"],
        &["index::scatter_add_matches_reference"],
    ),
    op(
        "to_f32",
        "ops/index.rs",
        INDEX,
        &[],
        &["index::to_f32_is_exact_up_to_2_pow_24"],
    ),
    op(
        "where",
        "ops/binary.rs#where_",
        &["where.comp"],
        &["ops::where_", "ops::where_vjp"],
        &["elementwise::where_matches_reference"],
    ),
    op(
        "argmax",
        "ops/reduce.rs",
        &["reduce.comp"],
        &["ops::arg_extreme"],
        &["reduce::argmax_argmin_match_reference"],
    ),
    op(
        "argmin",
        "ops/reduce.rs",
        &["reduce.comp"],
        &["ops::arg_extreme"],
        &["reduce::argmax_argmin_match_reference"],
    ),
    op(
        "matmul",
        "ops/matmul.rs",
        MATMULS,
        &["ops::matmul", "ops::matmul_vjp"],
        &[
            "matmul::matmul_matches_reference",
            "matmul::larger_than_one_tile_in_every_direction",
            "matmul::a_long_inner_dimension_is_summed_in_chunks",
        ],
    ),
    op(
        "conv2d",
        "ops/conv.rs",
        &["im2col.comp", "matmul_lanes.comp"],
        &["conv::conv2d", "conv::conv2d_vjp"],
        &[
            "conv::conv2d_matches_reference",
            "conv::conv_over_many_samples_runs_in_chunks_and_matches",
        ],
    ),
    op(
        "max_pool2d",
        "ops/conv.rs",
        &["pool.comp"],
        &["conv::pool2d", "conv::pool2d_vjp"],
        &["conv::pooling_matches_reference"],
    ),
    op(
        "avg_pool2d",
        "ops/conv.rs",
        &["im2col.comp", "reduce.comp"],
        &["conv::pool2d", "conv::pool2d_vjp"],
        &["conv::pooling_matches_reference"],
    ),
    op(
        "global_avg_pool",
        "ops/conv.rs",
        &["reduce.comp"],
        &["ops::reduce"],
        &["conv::global_average_pool_is_the_mean_over_pixels"],
    ),
    op(
        "resample_affine",
        "ops/resample.rs",
        &["resample.comp"],
        &["conv::resample_affine"],
        &[
            "conv::resample_matches_reference",
            "conv::resample_refuses_inputs_that_need_a_gradient",
        ],
    ),
    op(
        "random",
        "ops/random.rs#uniform",
        &["random.comp"],
        &["philox::uniform", "philox::normal", "philox::bits"],
        &[
            "random::bits_match_the_reference_generator",
            "random::values_depend_on_seed_offset_and_index_only",
            "random::moments_are_right",
            "replay::draws_with_a_device_seed_follow_the_seed_written_before_each_replay",
        ],
    ),
    op(
        "similarity_lse",
        "ops/similarity.rs",
        &["similarity.comp"],
        &["similarity::similarity_lse", "similarity::similarity_lse_vjp"],
        &[
            "similarity::similarity_lse_matches_reference",
            "similarity::the_reference_gradient_matches_finite_differences",
            "similarity::positives_as_device_codes_equal_host_positives",
        ],
    ),
    op(
        "detach",
        "tensor.rs",
        &[],
        &[],
        &["autograd::no_grad_records_nothing_and_detach_stops_gradients"],
    ),
    op(
        "replica_sum",
        "ops/collective.rs",
        &[],
        &[],
        &[
            "distributed::two_ranks_take_the_one_process_steps_on_digits_with_global_batch_norm_for_every_method",
            "distributed::without_sync_batch_norm_each_rank_normalises_its_own_shard",
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{
        binary::BINARY_OPS, reduce::REDUCE_OPS, rowwise::ROWWISE_OPS, unary::UNARY_OPS,
    };
    use std::path::Path;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every host op is in exactly one op table.
    #[test]
    fn every_host_op_is_in_exactly_one_table() {
        let mut names: Vec<&str> = UNARY_OPS.iter().map(|o| o.name).collect();
        names.extend(BINARY_OPS.iter().map(|o| o.name));
        names.extend(REDUCE_OPS.iter().map(|o| o.name));
        names.extend(ROWWISE_OPS.iter().map(|o| o.name));
        names.extend(LINKED_OPS.iter().map(|o| o.name));
        let mut sorted = names.clone();
        sorted.sort();
        let twice: Vec<&&str> = sorted
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| &w[0])
            .collect();
        assert!(twice.is_empty(), "in two tables: {twice:?}");
        let host: Vec<&str> = vkgrad_plugin::ops::HOST_OPS
            .iter()
            .map(|o| o.name)
            .collect();
        let missing: Vec<&&str> = host.iter().filter(|n| !names.contains(n)).collect();
        let extra: Vec<&&str> = names.iter().filter(|n| !host.contains(n)).collect();
        assert!(missing.is_empty(), "host ops in no table: {missing:?}");
        assert!(
            extra.is_empty(),
            "table entries that are not host ops: {extra:?}"
        );
    }

    /// Every file, kernel, reference function and property the table names exists.
    #[test]
    fn every_link_points_at_something_that_exists() {
        let engine = Path::new(env!("CARGO_MANIFEST_DIR"));
        let repo = engine.parent().unwrap();
        for o in LINKED_OPS {
            let (file, method) = o.source.split_once('#').unwrap_or((o.source, o.name));
            let source = read(&engine.join("src").join(file));
            let shaders = o.kernels.iter().map(|k| repo.join("shaders").join(k));
            for k in shaders {
                assert!(k.is_file(), "{}: no kernel {}", o.name, k.display());
            }
            assert!(
                source.contains(&format!("pub fn {method}(")),
                "{}: {} has no `pub fn {method}(`",
                o.name,
                o.source
            );
            for r in o.reference {
                let (file, f) = r.split_once("::").unwrap();
                let text = read(&engine.join("src/reference").join(format!("{file}.rs")));
                assert!(
                    text.contains(&format!("pub fn {f}("))
                        || text.contains(&format!("pub fn {f}<")),
                    "{}: no reference function {r}",
                    o.name
                );
            }
            assert!(!o.properties.is_empty(), "{}: no property", o.name);
            for p in o.properties {
                let (file, f) = p.split_once("::").unwrap();
                let found = [repo.join("tests/tests"), engine.join("tests")]
                    .iter()
                    .map(|d| d.join(format!("{file}.rs")))
                    .filter(|path| path.is_file())
                    .any(|path| read(&path).contains(&format!("fn {f}(")));
                assert!(found, "{}: no property test {p}", o.name);
            }
        }
    }
}
