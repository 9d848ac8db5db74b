//! Runs side by side, as the paper's tables compare methods: top-1 error and
//! many/medium/few-shot error of each run (read from its `report.json`), and
//! one plot of every run's per-class accuracy over the classes sorted by their
//! training count, so the long tail reads left to right.

use crate::error::{Error, Result};
use crate::train::report::{
    accuracy_mesh, draw_legend, draw_png, short_label, ClassResult, Report, FONT_FAMILY,
    REPORT_JSON,
};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// One run's report and what to call it.
#[derive(Debug, Clone)]
pub struct Run {
    /// The run folder's name.
    pub name: String,
    pub report: Report,
}

/// Reads `path/report.json` (or `path` itself when it is a file).
pub fn read_run(path: &Path) -> Result<Run> {
    let file = if path.is_dir() {
        path.join(REPORT_JSON)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let report: Report = serde_json::from_str(&text).map_err(|e| {
        Error::config(format!(
            "{}: not a report.json of `train` or `eval` ({e})",
            file.display()
        ))
    })?;
    // A run is named by its folder, also when its report.json is given.
    let folder = if path.is_dir() {
        Some(path)
    } else {
        path.parent()
    };
    let name = folder.and_then(Path::file_name).map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Run { name, report })
}

/// The per-class entries of a report; reports written before they existed
/// get them from the per-class accuracy and counts.
fn classes_of(report: &Report) -> Vec<ClassResult> {
    if !report.per_class.is_empty() {
        return report.per_class.clone();
    }
    let count = |v: &[u64], c: usize| v.get(c).copied().unwrap_or(0);
    report
        .per_class_accuracy
        .iter()
        .enumerate()
        .map(|(c, &accuracy)| {
            let train = count(&report.class_counts.train, c);
            ClassResult {
                name: c.to_string(),
                accuracy,
                train,
                test: count(&report.class_counts.test, c),
                shot: crate::train::metrics::Shot::of(train).as_str().to_string(),
            }
        })
        .collect()
}

/// Checks that every run has the first run's classes.
pub fn check_same_classes(runs: &[Run]) -> Result<()> {
    let Some(first) = runs.first() else {
        return Err(Error::config("no run to compare"));
    };
    let classes = first.report.per_class_accuracy.len();
    for run in &runs[1..] {
        let n = run.report.per_class_accuracy.len();
        if n != classes {
            return Err(Error::config(format!(
                "{} has {n} classes, but {} has {classes}; compare runs on the same classes",
                run.name, first.name
            )));
        }
    }
    Ok(())
}

/// The table: one row per run, the top-1 error and the error of the many-,
/// medium- and few-shot classes in %, as the paper reports them.
pub fn table(runs: &[Run]) -> String {
    let group = |g: Option<f64>| {
        g.map_or("-".to_string(), |accuracy| {
            format!("{:.2}", 100.0 - accuracy)
        })
    };
    let width = runs
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut text = format!(
        "{:<width$}  {:>11}  {:>7}  {:>7}  {:>7}\n",
        "run", "top-1 error", "many", "medium", "few"
    );
    for run in runs {
        let r = &run.report;
        text.push_str(&format!(
            "{:<width$}  {:>11.2}  {:>7}  {:>7}  {:>7}\n",
            run.name,
            r.top1_error,
            group(r.groups.many),
            group(r.groups.medium),
            group(r.groups.few)
        ));
    }
    text
}

/// Class order for the plot: by the first run's training count, most first
/// (ties keep class order).
pub fn order_by_training_count(runs: &[Run]) -> Vec<usize> {
    let classes = runs
        .first()
        .map(|r| classes_of(&r.report))
        .unwrap_or_default();
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by_key(|&c| std::cmp::Reverse(classes[c].train));
    order
}

const RUN_COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Writes the per-class accuracy of every run to the PNG `path`: one line per
/// run over the classes sorted by training count (the first run's).
pub fn plot(runs: &[Run], path: &Path) -> Result<PathBuf> {
    check_same_classes(runs)?;
    let order = order_by_training_count(runs);
    let first = classes_of(&runs[0].report);
    let classes = order.len();
    let width = (200 + 14 * classes as u32).clamp(1000, 3000);
    draw_png(path, (width, 650), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Per-class test accuracy, classes by training count (most to fewest)",
                (FONT_FAMILY, 24),
            )
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..(classes as f64 - 0.5), 0.0..110.0)
            .map_err(|e| e.to_string())?;
        let label = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < classes {
                let class = order[i as usize];
                format!(
                    "{} ({})",
                    short_label(&first[class].name),
                    first[class].train
                )
            } else {
                String::new()
            }
        };
        accuracy_mesh(
            chart
                .configure_mesh()
                .x_labels(classes.min(20))
                .x_label_formatter(&label)
                .x_desc("class (training images)"),
        )
        .draw()
        .map_err(|e| e.to_string())?;
        for (k, run) in runs.iter().enumerate() {
            let color = RUN_COLORS[k % RUN_COLORS.len()];
            let accuracy = &run.report.per_class_accuracy;
            let points: Vec<(f64, f64)> = order
                .iter()
                .enumerate()
                .filter_map(|(x, &c)| accuracy[c].map(|a| (x as f64, a)))
                .collect();
            let error = run.report.top1_error;
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(format!("{} (top-1 error {error:.2}%)", run.name))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })?;
    Ok(path.to_path_buf())
}
