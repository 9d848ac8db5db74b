//! The patched graph's loss, run in ONNX Runtime, against the paper's formulas.

mod common;

use common::tolerance::Accumulation;
use common::{assert_close, logits_model, run, Data, Rng};
use ldam_onnx::ldam::{batch_loss, LossConfig, LossKind, Reweight};
use ldam_onnx::patch::{patch, ContractNames, HeadMode, PatchOptions};

fn patched(classes: i64, config: LossConfig) -> ldam_onnx::onnx::ModelProto {
    let options = PatchOptions {
        batchnorm: Default::default(),
        config,
        head: HeadMode::Auto,
        logits: None,
        names: ContractNames::default(),
    };
    patch(&logits_model(classes, 17), &options)
        .expect("patch succeeds")
        .0
}

fn graph_loss(
    model: &ldam_onnx::onnx::ModelProto,
    logits: &[f32],
    labels: &[i64],
    epoch: i64,
) -> f64 {
    let n = labels.len() as i64;
    let classes = logits.len() as i64 / n;
    let outputs = run(
        model,
        &[
            ("z", Data::F32(vec![n, classes], logits.to_vec())),
            ("labels", Data::I64(vec![n], labels.to_vec())),
            ("epoch", Data::I64(vec![], vec![epoch])),
        ],
    );
    let loss = &outputs["loss"];
    assert!(
        loss.shape().is_empty(),
        "loss is a scalar, got shape {:?}",
        loss.shape()
    );
    loss.f32()[0] as f64
}

#[test]
fn reference_demo_loss_is_56_717560_in_onnx_runtime() {
    let config = LossConfig {
        reweight: Reweight::None,
        ..LossConfig::reference(vec![100, 10])
    };
    let model = patched(2, config);
    let loss = graph_loss(&model, &[-1.5, 0.5, 0.2, -0.8], &[0, 1], 0);
    // The golden value has 8 significant digits (5e-7 absolute); ONNX Runtime's
    // float32 evaluation differs from exact by the loss graph's rounding bound.
    let bound = Accumulation::of(&model, 2).forward_bound() + 5e-7 / 56.717560;
    assert_close(loss, 56.717560, bound, "reference demo loss");
}

/// Independent float64 computation of the loss, written from the paper's formulas
/// here rather than taken from the library.
fn formula_loss(config: &LossConfig, logits: &[f32], labels: &[i64], epoch: i64) -> f64 {
    let c = config.class_counts.len();
    let quarter: Vec<f64> = config
        .class_counts
        .iter()
        .map(|&n| (n as f64).powf(-0.25))
        .collect();
    let max_quarter = quarter.iter().cloned().fold(0.0, f64::max);
    let margin: Vec<f64> = quarter
        .iter()
        .map(|q| config.max_m * q / max_quarter)
        .collect();
    let balanced: Vec<f64> = {
        let raw: Vec<f64> = config
            .class_counts
            .iter()
            .map(|&n| (1.0 - config.beta) / (1.0 - config.beta.powi(n as i32)))
            .collect();
        let sum: f64 = raw.iter().sum();
        raw.iter().map(|w| w * c as f64 / sum).collect()
    };
    let weight = |y: usize| match config.reweight {
        Reweight::None => 1.0,
        Reweight::Rw => balanced[y],
        Reweight::Drw => {
            if epoch >= config.drw_epoch {
                balanced[y]
            } else {
                1.0
            }
        }
    };
    // LA and VS: pi_j = n_j / sum n; LA adds tau log pi, VS scales by
    // (n_j / n_max)^gamma and adds its own tau log pi.
    let total: f64 = config.class_counts.iter().map(|&n| n as f64).sum();
    let n_max = config.class_counts.iter().copied().max().unwrap() as f64;
    let log_pi: Vec<f64> = config
        .class_counts
        .iter()
        .map(|&n| (n as f64).ln() - total.ln())
        .collect();
    let vs_delta: Vec<f64> = config
        .class_counts
        .iter()
        .map(|&n| ((n as f64).ln() - n_max.ln()) * config.vs_gamma)
        .map(f64::exp)
        .collect();
    let (mut num, mut den, mut focal) = (0.0, 0.0, 0.0);
    for (i, &y) in labels.iter().enumerate() {
        let y = y as usize;
        let row = &logits[i * c..(i + 1) * c];
        let z: Vec<f64> = (0..c)
            .map(|j| match config.loss {
                LossKind::Ldam => {
                    config.scale * (row[j] as f64 - if j == y { margin[j] } else { 0.0 })
                }
                LossKind::La => row[j] as f64 + config.la_tau * log_pi[j],
                LossKind::Vs => vs_delta[j] * row[j] as f64 + config.vs_tau * log_pi[j],
                LossKind::Ce | LossKind::Focal => row[j] as f64,
            })
            .collect();
        let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
        let ce = lse - z[y];
        num += weight(y) * ce;
        den += weight(y);
        let l = weight(y) * ce;
        focal += (1.0 - (-l).exp()).powf(config.gamma) * l;
    }
    match config.loss {
        LossKind::Focal => focal / labels.len() as f64,
        _ => num / den,
    }
}

#[test]
fn patched_loss_matches_formulas_for_every_loss_and_reweighting() {
    for classes in [10usize, 100] {
        // Long-tailed counts, exp profile with ratio 100.
        let counts: Vec<u64> = (0..classes)
            .map(|i| (500.0 * 100f64.powf(-(i as f64) / (classes as f64 - 1.0))).floor() as u64)
            .collect();
        let losses = [
            LossKind::Ldam,
            LossKind::Ce,
            LossKind::Focal,
            LossKind::La,
            LossKind::Vs,
        ];
        for loss in losses {
            for reweight in [Reweight::None, Reweight::Rw, Reweight::Drw] {
                let config = LossConfig {
                    loss,
                    reweight,
                    gamma: if loss == LossKind::Focal { 2.0 } else { 1.0 },
                    drw_epoch: 5,
                    // Not the defaults, so a swapped or ignored setting shows.
                    la_tau: 0.7,
                    vs_gamma: 0.3,
                    vs_tau: 1.4,
                    ..LossConfig::reference(counts.clone())
                };
                let model = patched(classes as i64, config.clone());
                // ONNX Runtime's float32 against the float64 formula: the loss
                // graph's rounding bound (`common::tolerance`).
                let bound = Accumulation::of(&model, 16).forward_bound();
                for seed in 0..3u64 {
                    let mut rng = Rng::new(seed * 7919 + classes as u64);
                    let batch = 16;
                    // Cosine-range logits, as the LDAM head produces.
                    let logits = rng.floats(batch * classes, -1.0, 1.0);
                    let labels: Vec<i64> = (0..batch)
                        .map(|_| rng.below(classes as u64) as i64)
                        .collect();
                    for epoch in [0, 4, 5, 9] {
                        let what = format!(
                            "C={classes} loss={loss} reweight={reweight} seed={seed} epoch={epoch}"
                        );
                        let expected = formula_loss(&config, &logits, &labels, epoch);
                        assert_close(
                            graph_loss(&model, &logits, &labels, epoch),
                            expected,
                            bound,
                            &what,
                        );
                        assert_close(
                            batch_loss(&config, &logits, &labels, epoch),
                            expected,
                            1e-9,
                            &format!("library {what}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn la_and_vs_settings_are_recorded_and_read_back_from_the_metadata() {
    use ldam_onnx::ldam::contract::{keys, PatchRecord};
    for loss in [LossKind::La, LossKind::Vs] {
        let config = LossConfig {
            loss,
            la_tau: 0.7,
            vs_gamma: 0.3,
            vs_tau: 1.4,
            ..LossConfig::reference(vec![50, 20, 5])
        };
        let model = patched(3, config.clone());
        let recorded = PatchRecord::read(&model).unwrap().unwrap();
        // Only the loss's own settings are written; the others read as defaults.
        let expected = match loss {
            LossKind::La => LossConfig {
                vs_gamma: ldam_onnx::ldam::VS_GAMMA,
                vs_tau: ldam_onnx::ldam::VS_TAU,
                ..config
            },
            _ => LossConfig {
                la_tau: ldam_onnx::ldam::LA_TAU,
                ..config
            },
        };
        assert_eq!(recorded.config, expected, "{loss}");
        let has = |key| ldam_onnx::onnx::metadata(&model, key).is_some();
        assert_eq!(has(keys::LA_TAU), loss == LossKind::La);
        assert_eq!(has(keys::VS_GAMMA), loss == LossKind::Vs);
        assert_eq!(has(keys::VS_TAU), loss == LossKind::Vs);
    }
}
