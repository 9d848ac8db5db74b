//! The op registry: every op is defined once, with the facets the passes need of
//! it, looked up by (domain, op type) and opset. The coverage table (op, since,
//! shape rule, folding, gradient, libtorch kernel) is a snapshot: a diff means
//! an op gained or lost a facet.

use ldam_onnx::onnx::NodeProto;
use ldam_onnx::ops::registry::{self, Gradient};
use std::collections::HashSet;

fn node(domain: &str, op: &str) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        domain: Some(domain.into()),
        ..Default::default()
    }
}

#[test]
fn every_op_is_defined_once() {
    let mut seen = HashSet::new();
    for op in registry::all() {
        assert!(
            seen.insert((op.domain, op.op_type)),
            "{}:{} is defined twice",
            op.domain,
            op.op_type
        );
    }
    assert!(seen.len() > 100, "{} ops", seen.len());
}

/// The passes rely on these facets of an op that has another: autodiff and the
/// libtorch interpreter read the types of the values they handle, and a
/// non-differentiable op carries no rule.
#[test]
fn every_op_has_the_facets_its_others_need() {
    for op in registry::all() {
        let name = op.op_type;
        if op.gradient_rule().is_some() {
            assert!(
                op.shape.is_some(),
                "{name}: a gradient rule but no shape rule"
            );
        }
        if op.kernel.is_some() {
            assert!(
                op.shape.is_some(),
                "{name}: a libtorch kernel but no shape rule"
            );
        }
        if op.fold.is_some() {
            assert!(
                op.shape.is_some(),
                "{name}: folds contents but has no shape rule"
            );
        }
        if matches!(op.gradient, Gradient::NotDifferentiable) {
            assert!(op.gradient_rule().is_none());
        }
        assert!(op.since >= 1, "{name}: since {}", op.since);
    }
}

#[test]
fn lookup_is_by_domain_and_opset() {
    let relu = registry::find("", "Relu").expect("Relu is registered");
    assert_eq!(relu.op_type, "Relu");
    assert!(std::ptr::eq(
        relu,
        registry::find("ai.onnx", "Relu").expect("the default domain's other spelling")
    ));
    assert!(
        registry::find("com.example", "Relu").is_none(),
        "a custom-domain op with a standard name is not the standard op"
    );
    assert!(registry::for_node(&node("com.example", "Relu"), 20).is_none());
    // Gelu entered the default domain in opset 20, LayerNormalization in 17.
    assert!(registry::for_node(&node("", "Gelu"), 19).is_none());
    assert!(registry::for_node(&node("", "Gelu"), 20).is_some());
    assert!(registry::for_node(&node("", "LayerNormalization"), 16).is_none());
    assert!(registry::for_node(&node("", "LayerNormalization"), 17).is_some());
}

/// The coverage table, printed and locked.
#[cfg(feature = "torch")]
#[test]
fn coverage_table() {
    let mut ops: Vec<_> = registry::all().iter().collect();
    ops.sort_by_key(|op| (op.domain, op.op_type));
    let mut table =
        String::from("op                          since  shape  fold  gradient  libtorch\n");
    for op in &ops {
        let gradient = match op.gradient {
            Gradient::Rule(_) => "rule",
            Gradient::NotDifferentiable => "none",
            Gradient::Missing => "-",
        };
        let mark = |present: bool| if present { "yes" } else { "-" };
        table.push_str(&format!(
            "{:<28}{:>5}  {:<5}  {:<4}  {:<8}  {}\n",
            op.op_type,
            op.since,
            mark(op.shape.is_some()),
            mark(op.fold.is_some()),
            gradient,
            mark(op.kernel.is_some())
        ));
    }
    let count = |f: &dyn Fn(&&&registry::OpDef) -> bool| ops.iter().filter(f).count();
    table.push_str(&format!(
        "\n{} ops: {} with a shape rule, {} folding, {} with a gradient rule, {} not differentiable, {} with a libtorch kernel\n",
        ops.len(),
        count(&|o| o.shape.is_some()),
        count(&|o| o.fold.is_some()),
        count(&|o| o.gradient_rule().is_some()),
        count(&|o| matches!(o.gradient, Gradient::NotDifferentiable)),
        count(&|o| o.kernel.is_some()),
    ));
    println!("{table}");
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("op_registry_coverage", table);
    });
}
