//! The files a training run leaves in its folder: `metrics.csv` (one row per
//! epoch, for spreadsheets and quick plots), `report.json` (the final evaluation
//! with everything needed to reproduce or compare it), and two PNG plots.
//!
//! Every file is written to a temporary file in the run folder and renamed into
//! place, so an interrupted run never leaves a half-written report; every error
//! names the file it concerns. The plots embed their font (DejaVu Sans, license in
//! `LICENSE-DejaVu.txt` next to it), so drawing needs no system font libraries.

use super::metrics::{Evaluation, GroupAccuracy, Shot};
use crate::error::{Error, Result};
use plotters::chart::MeshStyle;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const METRICS_CSV: &str = "metrics.csv";
pub const REPORT_JSON: &str = "report.json";
pub const CURVES_PNG: &str = "curves.png";
pub const PER_CLASS_PNG: &str = "per_class.png";
pub const CONFUSION_CSV: &str = "confusion.csv";

/// The header of `metrics.csv`, in column order.
pub const METRICS_HEADER: &str =
    "epoch,lr,train_loss,train_acc,test_acc,many,medium,few,images_per_s,seconds";

/// One epoch's line of `metrics.csv`. Accuracies are in %; `epoch` is 0-based like
/// every epoch in this crate (`LrSchedule::lr_at`, `LossConfig::drw_epoch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    /// `None` (an empty CSV field) for an epoch that was not evaluated
    /// (`eval_every`).
    pub test_acc: Option<f64>,
    /// Shot-group test accuracies; `None` (an empty CSV field) for an empty group.
    pub many: Option<f64>,
    pub medium: Option<f64>,
    pub few: Option<f64>,
    pub images_per_s: f64,
    /// Wall-clock seconds of the epoch (training and evaluation).
    pub seconds: f64,
}

impl EpochRecord {
    /// The CSV line, without newline. `{}` prints the shortest text that parses
    /// back to the same f64, so the file loses no precision.
    pub fn csv_row(&self) -> String {
        let group = |g: Option<f64>| g.map_or(String::new(), |v| v.to_string());
        format!(
            "{},{},{},{},{},{},{},{},{},{}",
            self.epoch,
            self.lr,
            self.train_loss,
            self.train_acc,
            group(self.test_acc),
            group(self.many),
            group(self.medium),
            group(self.few),
            self.images_per_s,
            self.seconds
        )
    }
}

/// The final evaluation, as stored in `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Top-1 test accuracy in %.
    pub top1: f64,
    /// `100 - top1`: the number in the paper's tables.
    pub top1_error: f64,
    /// Per-class test accuracy in %, `null` for a class without test examples.
    pub per_class_accuracy: Vec<Option<f64>>,
    /// One entry per class, in class order, with its name: what the plots and
    /// `compare` label classes with.
    #[serde(default)]
    pub per_class: Vec<ClassResult>,
    /// Mean per-class accuracy of the many/medium/few-shot classes, in %.
    pub groups: GroupAccuracy,
    /// `confusion[true][predicted]` on the test set.
    pub confusion: Vec<Vec<u64>>,
    pub class_counts: ClassCounts,
    /// The run's settings exactly as the caller recorded them.
    pub settings: serde_json::Value,
    pub versions: Versions,
    /// Image files left out as unreadable (`skip_bad_images`), training and
    /// test sets together.
    #[serde(default)]
    pub skipped_images: usize,
}

/// One class of [`Report::per_class`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassResult {
    /// The class's name, or its number when the data names no classes.
    pub name: String,
    /// Test accuracy in %, `null` without test examples.
    pub accuracy: Option<f64>,
    /// Training examples (the count that decides the shot group).
    pub train: u64,
    /// Test examples.
    pub test: u64,
    /// `many`, `medium` or `few`.
    pub shot: String,
}

/// Where [`Report::new`] finds class names and the skipped-image count in the
/// settings it records: under `resolved` (a training run) or at the top (`eval`).
const NAMES_AT: [&str; 2] = ["/resolved/class_names", "/class_names"];
const SKIPPED_AT: [&str; 2] = ["/resolved/skipped_images", "/skipped_images"];

/// The class counts the evaluation was grouped by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassCounts {
    /// Training examples per class (after any long-tail subsampling): the counts
    /// that decide shot groups, margins and weights.
    pub train: Vec<u64>,
    /// Test examples per class (confusion-matrix row sums).
    pub test: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    pub ldam_onnx: String,
    pub onnxruntime: String,
}

impl Report {
    /// Summarises `evaluation`; `train_counts` decides the shot groups. Class
    /// names and the count of skipped image files are taken from `settings`
    /// (`class_names` and `skipped_images`, at the top or under `resolved`).
    pub fn new(
        evaluation: &Evaluation,
        train_counts: &[u64],
        settings: serde_json::Value,
        onnxruntime_version: &str,
    ) -> Result<Report> {
        // JSON has no NaN: an empty evaluation would write `null` and not read back.
        if evaluation.total() == 0 {
            return Err(Error::config(
                "the test set is empty: there is no accuracy to report",
            ));
        }
        let lookup = |at: &[&str]| at.iter().find_map(|p| settings.pointer(p)).cloned();
        let names: Option<Vec<String>> =
            lookup(&NAMES_AT).and_then(|v| serde_json::from_value(v).ok());
        let skipped_images = lookup(&SKIPPED_AT)
            .and_then(|v| v.as_u64())
            .map_or(0, |v| v as usize);
        let accuracy = evaluation.per_class_accuracy();
        let test_counts = evaluation.class_totals();
        let per_class = accuracy
            .iter()
            .enumerate()
            .map(|(c, &accuracy)| {
                let train = train_counts.get(c).copied().unwrap_or(0);
                ClassResult {
                    name: class_name(names.as_deref(), c),
                    accuracy,
                    train,
                    test: test_counts.get(c).copied().unwrap_or(0),
                    shot: Shot::of(train).as_str().to_string(),
                }
            })
            .collect();
        Ok(Report {
            top1: evaluation.top1(),
            top1_error: evaluation.top1_error(),
            per_class_accuracy: accuracy,
            per_class,
            skipped_images,
            groups: evaluation.group_accuracy(train_counts)?,
            confusion: evaluation.confusion().to_vec(),
            class_counts: ClassCounts {
                train: train_counts.to_vec(),
                test: evaluation.class_totals(),
            },
            settings,
            versions: Versions {
                ldam_onnx: env!("CARGO_PKG_VERSION").to_string(),
                onnxruntime: onnxruntime_version.to_string(),
            },
        })
    }
}

/// The name of class `class`: from `names`, else its number.
pub fn class_name(names: Option<&[String]>, class: usize) -> String {
    names
        .and_then(|n| n.get(class))
        .cloned()
        .unwrap_or_else(|| class.to_string())
}

impl Report {
    /// The name of class `class` ([`Report::per_class`]), else its number.
    pub fn class_name(&self, class: usize) -> String {
        self.per_class
            .get(class)
            .map_or_else(|| class.to_string(), |c| c.name.clone())
    }

    /// The confusion matrix as CSV with class names as row and column headers
    /// (rows: true class, columns: prediction).
    pub fn confusion_csv(&self) -> String {
        let quote = |s: String| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s
            }
        };
        let classes = self.confusion.len();
        let mut text = String::from("true \\ predicted");
        for c in 0..classes {
            text.push(',');
            text.push_str(&quote(self.class_name(c)));
        }
        text.push('\n');
        for (c, row) in self.confusion.iter().enumerate() {
            text.push_str(&quote(self.class_name(c)));
            for v in row {
                text.push_str(&format!(",{v}"));
            }
            text.push('\n');
        }
        text
    }
}

/// The paths of the files [`write_run`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFiles {
    pub metrics_csv: PathBuf,
    pub report_json: PathBuf,
    pub curves_png: PathBuf,
    pub per_class_png: PathBuf,
    pub confusion_csv: PathBuf,
}

/// Writes all four files into `dir` (created if missing).
pub fn write_run(dir: &Path, epochs: &[EpochRecord], report: &Report) -> Result<RunFiles> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    Ok(RunFiles {
        metrics_csv: write_metrics_csv(dir, epochs)?,
        report_json: write_report_json(dir, report)?,
        curves_png: plot_curves(dir, epochs)?,
        per_class_png: plot_per_class(dir, report)?,
        confusion_csv: write_confusion_csv(dir, report)?,
    })
}

/// Writes `dir/confusion.csv`: [`Report::confusion_csv`].
pub fn write_confusion_csv(dir: &Path, report: &Report) -> Result<PathBuf> {
    let path = dir.join(CONFUSION_CSV);
    let text = report.confusion_csv();
    write_atomically(&path, |file| file.write_all(text.as_bytes()))?;
    Ok(path)
}

/// Rewrites `dir/metrics.csv` with all epochs so far. Rewriting the whole file
/// (a few kilobytes) keeps every version of it complete, even if the run is
/// killed mid-write.
pub fn write_metrics_csv(dir: &Path, epochs: &[EpochRecord]) -> Result<PathBuf> {
    let path = dir.join(METRICS_CSV);
    let mut text = String::from(METRICS_HEADER);
    text.push('\n');
    for record in epochs {
        text.push_str(&record.csv_row());
        text.push('\n');
    }
    write_atomically(&path, |file| file.write_all(text.as_bytes()))?;
    Ok(path)
}

/// Writes `dir/report.json`, pretty-printed for people and diffs.
pub fn write_report_json(dir: &Path, report: &Report) -> Result<PathBuf> {
    let path = dir.join(REPORT_JSON);
    let mut text =
        serde_json::to_string_pretty(report).map_err(|e| Error::io(&path, io::Error::other(e)))?;
    text.push('\n');
    write_atomically(&path, |file| file.write_all(text.as_bytes()))?;
    Ok(path)
}

/// Writes through a temporary file in the destination folder, then renames it
/// over `path`: readers see the old file or the new one, never a partial one.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
) -> Result<()> {
    let mut tmp = temp_file_beside(path, ".tmp")?;
    write(tmp.as_file_mut())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// A hidden temporary file in `path`'s folder (see [`crate::onnx::io`]'s).
fn temp_file_beside(path: &Path, suffix: &str) -> Result<tempfile::NamedTempFile> {
    let name = path
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy());
    crate::onnx::io::temp_file_in(parent_dir(path), &name, suffix).map_err(|e| Error::io(path, e))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

// ---------------------------------------------------------------------------
// Plots

pub(crate) const FONT_FAMILY: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("DejaVuSans.ttf");

/// plotters' `ab_glyph` text backend draws only registered fonts; registering
/// under "sans-serif" makes plotters' default text styles use it.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS).is_err() {
            panic!("the embedded DejaVuSans.ttf is a valid TrueType font");
        }
    });
}

const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const TEST_COLOR: RGBColor = RGBColor(214, 39, 40);
const MANY_COLOR: RGBColor = RGBColor(44, 160, 44);
const MEDIUM_COLOR: RGBColor = RGBColor(255, 127, 14);
const FEW_COLOR: RGBColor = RGBColor(148, 103, 189);
pub(crate) const GRID_COLOR: RGBColor = RGBColor(225, 225, 225);

/// The per-class accuracy axis every plot of classes shares: percent ticks up
/// to 100 (none in the headroom above, which keeps the legend clear), the grid
/// and the fonts; the caller sets the class axis.
pub(crate) fn accuracy_mesh<'m, 'a, 'b, X: Ranged, DB: DrawingBackend>(
    mesh: &'m mut MeshStyle<'a, 'b, X, RangedCoordf64, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, RangedCoordf64, DB> {
    mesh.disable_x_mesh()
        .light_line_style(GRID_COLOR)
        .y_label_formatter(&percent_tick)
        .y_desc("test accuracy (%)")
        .label_style((FONT_FAMILY, 14))
        .axis_desc_style((FONT_FAMILY, 18))
}

/// Draws the series' legend at `position` in the style every plot shares.
pub(crate) fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> std::result::Result<(), String>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT_FAMILY, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

fn percent_tick(value: &f64) -> String {
    if *value <= 100.0 {
        format!("{value:.0}")
    } else {
        String::new()
    }
}

fn shot_color(shot: Shot) -> RGBColor {
    match shot {
        Shot::Many => MANY_COLOR,
        Shot::Medium => MEDIUM_COLOR,
        Shot::Few => FEW_COLOR,
    }
}

fn shot_label(shot: Shot) -> &'static str {
    match shot {
        Shot::Many => "many-shot (>100 train)",
        Shot::Medium => "medium-shot (20-100)",
        Shot::Few => "few-shot (<20)",
    }
}

/// Draws a PNG through a temporary `.png` file in the folder (the encoder picks
/// the format from the extension), then renames it into place.
pub(crate) fn draw_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> std::result::Result<(), String>,
) -> Result<()> {
    register_font();
    let drawing_failed = |reason: String| {
        Error::io(
            path,
            io::Error::other(format!("drawing the plot failed: {reason}")),
        )
    };
    let tmp = temp_file_beside(path, ".png")?;
    {
        let root = BitMapBackend::new(tmp.path(), size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| drawing_failed(e.to_string()))?;
        draw(&root).map_err(drawing_failed)?;
        root.present().map_err(|e| drawing_failed(e.to_string()))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Pads a value range and keeps it non-empty, so a single epoch or a flat
/// loss still gets a drawable axis.
fn padded_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5 * lo.abs().max(1.0)
    };
    // Losses are non-negative: anchoring the axis at 0 shows how far they fell.
    let start = if lo >= 0.0 { 0.0 } else { lo - pad };
    start..hi + pad
}

/// `curves.png`: training loss (top) and train/test accuracy with the test
/// accuracy of each shot group (bottom), by epoch. Non-finite values (a diverged
/// epoch) are left out of the lines rather than stretching the axes.
pub fn plot_curves(dir: &Path, epochs: &[EpochRecord]) -> Result<PathBuf> {
    let path = dir.join(CURVES_PNG);
    if epochs.is_empty() {
        return Err(Error::io(&path, io::Error::other("no epochs to plot")));
    }
    let first = epochs[0].epoch as f64;
    let last = epochs[epochs.len() - 1].epoch as f64;
    let x_range = if last > first {
        first..last
    } else {
        first - 0.5..first + 0.5
    };
    let loss_range = padded_range(epochs.iter().map(|r| r.train_loss));
    // Epochs are whole numbers; a tick between two epochs gets no label.
    let epoch_label = |x: &f64| {
        if x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            String::new()
        }
    };
    draw_png(&path, (1100, 900), |root| {
        let (top, bottom) = root.split_vertically(380);
        let mut loss = ChartBuilder::on(&top)
            .caption("Training loss", (FONT_FAMILY, 26))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range.clone(), loss_range)
            .map_err(|e| e.to_string())?;
        loss.configure_mesh()
            .light_line_style(GRID_COLOR)
            .x_label_formatter(&epoch_label)
            .x_desc("epoch")
            .y_desc("loss")
            .label_style((FONT_FAMILY, 15))
            .axis_desc_style((FONT_FAMILY, 18))
            .draw()
            .map_err(|e| e.to_string())?;
        loss.draw_series(LineSeries::new(
            finite_points(epochs, |r| Some(r.train_loss)),
            TRAIN_COLOR.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;

        let mut accuracy = ChartBuilder::on(&bottom)
            .caption("Accuracy (%)", (FONT_FAMILY, 26))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, 0.0..100.0)
            .map_err(|e| e.to_string())?;
        accuracy
            .configure_mesh()
            .light_line_style(GRID_COLOR)
            .x_label_formatter(&epoch_label)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("epoch")
            .y_desc("accuracy (%)")
            .label_style((FONT_FAMILY, 15))
            .axis_desc_style((FONT_FAMILY, 18))
            .draw()
            .map_err(|e| e.to_string())?;
        let solid: [(&str, RGBColor, Column); 2] = [
            ("train", TRAIN_COLOR, |r| Some(r.train_acc)),
            ("test", TEST_COLOR, |r| r.test_acc),
        ];
        for (label, color, value) in solid {
            accuracy
                .draw_series(LineSeries::new(
                    finite_points(epochs, value),
                    color.stroke_width(3),
                ))
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], color.stroke_width(3))
                });
        }
        let groups: [(Shot, Column); 3] = [
            (Shot::Many, |r| r.many),
            (Shot::Medium, |r| r.medium),
            (Shot::Few, |r| r.few),
        ];
        for (shot, value) in groups {
            let points: Vec<(f64, f64)> = finite_points(epochs, value).collect();
            if points.is_empty() {
                continue;
            }
            let color = shot_color(shot);
            accuracy
                .draw_series(DashedLineSeries::new(points, 8, 5, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(format!("test, {}", shot_label(shot)))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], color.stroke_width(2))
                });
        }
        draw_legend(&mut accuracy, SeriesLabelPosition::LowerRight)?;
        Ok(())
    })?;
    Ok(path)
}

/// One plotted column of [`EpochRecord`].
type Column = fn(&EpochRecord) -> Option<f64>;

fn finite_points<'a>(
    epochs: &'a [EpochRecord],
    value: impl Fn(&EpochRecord) -> Option<f64> + 'a,
) -> impl Iterator<Item = (f64, f64)> + 'a {
    epochs.iter().filter_map(move |r| {
        value(r)
            .filter(|v| v.is_finite())
            .map(|v| (r.epoch as f64, v))
    })
}

/// `per_class.png`: one bar per class with its test accuracy, classes ordered
/// from most to fewest training examples (so the long tail reads left to right),
/// coloured by shot group, with the training count as a line on a log axis.
/// A class without test examples has no bar.
pub fn plot_per_class(dir: &Path, report: &Report) -> Result<PathBuf> {
    let path = dir.join(PER_CLASS_PNG);
    let train = &report.class_counts.train;
    let classes = report.per_class_accuracy.len();
    if classes == 0 || train.len() != classes {
        return Err(Error::io(
            &path,
            io::Error::other(format!(
                "{} training counts for {classes} classes",
                train.len()
            )),
        ));
    }
    // Stable sort: classes with equal counts keep their index order.
    let mut order: Vec<usize> = (0..classes).collect();
    order.sort_by_key(|&c| std::cmp::Reverse(train[c]));
    let max_count = train.iter().copied().max().unwrap_or(1).max(1) as f64;
    let min_count = train.iter().copied().min().unwrap_or(1).max(1) as f64;
    let width = (160 + 16 * classes as u32).clamp(1000, 3000);
    let group = |g: Option<f64>| g.map_or("-".to_string(), |v| format!("{v:.1}%"));
    let caption = format!(
        "Test accuracy by class: top-1 {:.2}%, many {}, medium {}, few {}",
        report.top1,
        group(report.groups.many),
        group(report.groups.medium),
        group(report.groups.few)
    );
    draw_png(&path, (width, 650), |root| {
        // plotters' integer ranges are inclusive when discrete: 0..C-1 is C slots.
        let positions = || (0..classes - 1).into_segmented();
        let mut chart = ChartBuilder::on(root)
            .caption(caption, (FONT_FAMILY, 24))
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .right_y_label_area_size(80)
            // Headroom above 100% keeps the legend clear of the bars.
            .build_cartesian_2d(positions(), 0.0..125.0)
            .map_err(|e| e.to_string())?
            .set_secondary_coord(positions(), (min_count / 1.5..max_count * 1.5).log_scale());
        let class_label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if *i < classes => {
                short_label(&report.class_name(order[*i]))
            }
            _ => String::new(),
        };
        accuracy_mesh(
            chart
                .configure_mesh()
                .x_labels(classes.min(50))
                .x_label_formatter(&class_label)
                .x_desc("class (sorted by training count, most to fewest)"),
        )
        .draw()
        .map_err(|e| e.to_string())?;
        chart
            .configure_secondary_axes()
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("training images (log scale)")
            .label_style((FONT_FAMILY, 14))
            .axis_desc_style((FONT_FAMILY, 18))
            .draw()
            .map_err(|e| e.to_string())?;
        for shot in [Shot::Many, Shot::Medium, Shot::Few] {
            let bars: Vec<Rectangle<(SegmentValue<usize>, f64)>> = order
                .iter()
                .enumerate()
                .filter(|&(_, &class)| Shot::of(train[class]) == shot)
                .filter_map(|(position, &class)| {
                    report.per_class_accuracy[class].map(|acc| {
                        let mut bar = Rectangle::new(
                            [
                                (SegmentValue::Exact(position), 0.0),
                                (SegmentValue::Exact(position + 1), acc),
                            ],
                            shot_color(shot).filled(),
                        );
                        bar.set_margin(0, 0, 2, 2);
                        bar
                    })
                })
                .collect();
            if bars.is_empty() {
                continue;
            }
            let color = shot_color(shot);
            chart
                .draw_series(bars)
                .map_err(|e| e.to_string())?
                .label(shot_label(shot))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
        }
        // Say why a slot is empty rather than leave it looking like 0%.
        let no_test_data = order
            .iter()
            .enumerate()
            .filter(|&(_, &class)| report.per_class_accuracy[class].is_none())
            .map(|(position, _)| {
                Text::new(
                    "n/a",
                    (SegmentValue::CenterOf(position), 1.5),
                    (FONT_FAMILY, 13)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            });
        chart.draw_series(no_test_data).map_err(|e| e.to_string())?;
        chart
            .draw_secondary_series(LineSeries::new(
                order.iter().enumerate().map(|(position, &class)| {
                    (SegmentValue::CenterOf(position), train[class] as f64)
                }),
                BLACK.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label("training images (right axis)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], BLACK.stroke_width(2)));
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })?;
    Ok(path)
}

/// A class name cut to fit under a bar (the full names are in `report.json`).
pub(crate) fn short_label(name: &str) -> String {
    const MAX: usize = 12;
    if name.chars().count() <= MAX {
        name.to_string()
    } else {
        let mut short: String = name.chars().take(MAX - 1).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_row_leaves_empty_groups_blank_and_keeps_full_precision() {
        let record = EpochRecord {
            epoch: 3,
            lr: 0.1 * 0.01,
            train_loss: 1.0 / 3.0,
            train_acc: 50.0,
            test_acc: Some(40.5),
            many: Some(60.0),
            medium: None,
            few: Some(0.0),
            images_per_s: 1234.5,
            seconds: 2.0,
        };
        let row = record.csv_row();
        assert_eq!(row, "3,0.001,0.3333333333333333,50,40.5,60,,0,1234.5,2");
        assert_eq!(row.split(',').count(), METRICS_HEADER.split(',').count());
    }

    #[test]
    fn padded_range_is_never_empty() {
        assert_eq!(padded_range([2.0].into_iter()), 0.0..3.0);
        assert_eq!(padded_range([f64::NAN].into_iter()), 0.0..1.0);
        let r = padded_range([1.0, 3.0].into_iter());
        assert!(r.start <= 0.0 && r.end > 3.0);
    }
}
