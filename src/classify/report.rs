//! The training report: `report.md` with the dev numbers of every variant and of the keyword
//! baseline, plus `confusion.png` and `pr_curve.png` drawn with plotters. Charts get text only when
//! the DejaVu font is installed; without it they are drawn bare rather than failing the training.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::metrics::{pr_curve, Metrics};
use super::train::TrainOutcome;
use super::Label;

const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT: &str = "sans-serif";

/// Registers the font once; false when it is missing or unreadable.
fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| match std::fs::read(FONT_PATH) {
        Ok(bytes) => {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
        }
        Err(_) => {
            tracing::warn!("{FONT_PATH} not found: charts are drawn without text");
            false
        }
    })
}

type PlotResult = Result<(), String>;

fn e<E: std::fmt::Debug>(err: E) -> String {
    format!("{err:?}")
}

/// Writes report.md and both charts into `dir`. Chart failures are logged, never fatal.
pub fn write(dir: &Path, outcome: &TrainOutcome) -> std::io::Result<()> {
    let gold: Vec<Label> = outcome.dev.iter().map(|x| x.label).collect();
    let p_closed: Vec<f32> = outcome
        .dev_predictions
        .iter()
        .map(|p| p.score(Label::Closed))
        .collect();
    let m = &outcome.model.metadata.dev_metrics;
    let base = &outcome.model.metadata.keyword_baseline_dev_metrics;
    if let Err(err) = confusion_png(&dir.join("confusion.png"), m) {
        tracing::warn!(error = %err, "confusion.png not drawn");
    }
    if let Err(err) = pr_png(&dir.join("pr_curve.png"), &gold, &p_closed, base) {
        tracing::warn!(error = %err, "pr_curve.png not drawn");
    }
    std::fs::write(dir.join("report.md"), markdown(outcome))
}

fn confusion_png(path: &Path, m: &Metrics) -> PlotResult {
    let text = font_available();
    let root = BitMapBackend::new(path, (520, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (x0, y0, cell) = (170i32, 90i32, 150i32);
    let labels = Label::ALL;
    for (gi, g) in labels.iter().enumerate() {
        let row_total: usize = m.confusion[g.as_str()].values().sum();
        for (pi, p) in labels.iter().enumerate() {
            let count = m.confusion[g.as_str()][p.as_str()];
            let f = if row_total == 0 {
                0.0
            } else {
                count as f64 / row_total as f64
            };
            let shade = |full: f64| (255.0 - full * f) as u8;
            let color = RGBColor(shade(200.0), shade(130.0), shade(40.0));
            let (cx, cy) = (x0 + pi as i32 * cell, y0 + gi as i32 * cell);
            root.draw(&Rectangle::new(
                [(cx, cy), (cx + cell, cy + cell)],
                color.filled(),
            ))
            .map_err(e)?;
            root.draw(&Rectangle::new(
                [(cx, cy), (cx + cell, cy + cell)],
                BLACK.stroke_width(1),
            ))
            .map_err(e)?;
            if text {
                let ink = if f > 0.55 { WHITE } else { BLACK };
                let style = TextStyle::from((FONT, 26).into_font()).color(&ink);
                root.draw(&Text::new(format!("{count}"), (cx + 55, cy + 50), style))
                    .map_err(e)?;
                let small = TextStyle::from((FONT, 16).into_font()).color(&ink);
                root.draw(&Text::new(
                    format!("{:.1}% of row", 100.0 * f),
                    (cx + 35, cy + 90),
                    small,
                ))
                .map_err(e)?;
            }
        }
    }
    if text {
        let title = TextStyle::from((FONT, 20).into_font());
        let axis = TextStyle::from((FONT, 16).into_font());
        root.draw(&Text::new(
            format!("Dev confusion matrix (n = {}, macro-F1 {:.3})", m.n, m.macro_f1),
            (20, 15),
            title,
        ))
        .map_err(e)?;
        root.draw(&Text::new("predicted", (x0 + cell - 35, 40), axis.clone()))
            .map_err(e)?;
        for (i, l) in labels.iter().enumerate() {
            root.draw(&Text::new(
                l.as_str(),
                (x0 + i as i32 * cell + 35, 65),
                axis.clone(),
            ))
            .map_err(e)?;
            root.draw(&Text::new(
                format!("gold {}", l.as_str()),
                (15, y0 + i as i32 * cell + 65),
                axis.clone(),
            ))
            .map_err(e)?;
        }
    }
    root.present().map_err(e)
}

fn pr_png(path: &Path, gold: &[Label], p_closed: &[f32], baseline: &Metrics) -> PlotResult {
    let text = font_available();
    let root = BitMapBackend::new(path, (600, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let curve = pr_curve(gold, p_closed);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption("Closed: precision vs recall on dev", (FONT, 20))
            .x_label_area_size(45)
            .y_label_area_size(55);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..1.0f64, 0f64..1.02f64)
        .map_err(e)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("recall (closed)")
            .y_desc("precision (closed)")
            .label_style((FONT, 14))
            .draw()
            .map_err(e)?;
    } else {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.02), (0.0, 1.02), (0.0, 0.0)],
                BLACK,
            )))
            .map_err(e)?;
    }
    let mut points = vec![(0.0, curve.first().map_or(1.0, |c| c.1))];
    points.extend(curve.iter().map(|&(_, p, r)| (r, p)));
    let line = chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(e)?;
    if text {
        line.label("model")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    }
    // The operating point (argmax = threshold 0.5 on the calibrated Closed probability).
    let op = curve.iter().filter(|c| c.0 > 0.5).last().map(|&(_, p, r)| (r, p));
    let c = baseline.label(Label::Closed);
    let base = chart
        .draw_series(std::iter::once(Cross::new(
            (c.recall, c.precision),
            8,
            RED.stroke_width(3),
        )))
        .map_err(e)?;
    if text {
        base.label("keyword baseline")
            .legend(|(x, y)| Cross::new((x + 10, y), 5, RED.stroke_width(2)));
    }
    if let Some(op) = op {
        let s = chart
            .draw_series(std::iter::once(Circle::new(op, 6, BLUE.filled())))
            .map_err(e)?;
        if text {
            s.label("model at p(closed) > 0.5")
                .legend(|(x, y)| Circle::new((x + 10, y), 5, BLUE.filled()));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)
}

fn pct(x: f64) -> String {
    format!("{:.3}", x)
}

fn markdown(o: &TrainOutcome) -> String {
    let md = &o.model.metadata;
    let m = &md.dev_metrics;
    let b = &md.keyword_baseline_dev_metrics;
    let mut s = String::new();
    let _ = writeln!(s, "# Status model: training report\n");
    let _ = writeln!(
        s,
        "Model `{}@{}`, trained {} with seed {}:\n\n```sh\n{}\n```\n",
        md.name, md.version, md.trained_at, md.seed, md.command
    );
    let _ = writeln!(
        s,
        "## Data\n\n| role | file | rows | used | sha256 |\n|---|---|---|---|---|"
    );
    for (role, files) in [
        ("train", &md.data.train),
        ("mixed in", &md.data.mixed_in),
        ("tried, not used", &md.data.tried_not_used),
    ] {
        for f in files {
            let _ = writeln!(
                s,
                "| {role} | `{}` | {} | {} | `{}` |",
                f.path,
                f.rows,
                f.used,
                &f.sha256[..12]
            );
        }
    }
    let d = &md.data.dev;
    let _ = writeln!(
        s,
        "| dev | `{}` | {} | {} | `{}` |\n",
        d.path,
        d.rows,
        d.used,
        &d.sha256[..12]
    );
    let encoder = match &md.finetuned {
        None if md.head == super::ngrams::HEAD_NAME => {
            "not read by this head (the lexical n-gram head reads the text alone; the server still \
             embeds every message for grouping)"
                .to_string()
        }
        None => "frozen".to_string(),
        Some(f) => {
            let sha = &f.encoder_sha256[..12.min(f.encoder_sha256.len())];
            let how = if f.config.objective == super::finetune::Objective::SetFit {
                format!(
                    "SetFit-style on {} pairs per reply and epoch (`encoder.safetensors`, sha256 `{sha}`);",
                    f.config.pairs_per_reply
                )
            } else {
                let per_epoch: Vec<String> = f
                    .dev_macro_f1_per_epoch
                    .iter()
                    .map(|x| format!("{x:.4}"))
                    .collect();
                format!(
                    "with a linear head (`encoder.safetensors`, sha256 `{sha}`): dev macro-F1 per epoch {};",
                    per_epoch.join(", ")
                )
            };
            format!(
                "layers {}.. fine-tuned {how} epoch {} kept",
                f.from_layer, f.best_epoch
            )
        }
    };
    let _ = writeln!(
        s,
        "Embedder: `{}` at `{}` (weights sha256 `{}`), {encoder}.\n",
        md.embedder.name,
        md.embedder.revision,
        &md.embedder.weights_sha256[..12]
    );
    // Chosen by cross-validation (`selection.folds` present) or on the dev file.
    let cv = md.hyper_parameters["selection"]["folds"].as_u64();
    let (on, epoch) = match cv {
        Some(_) => ("cross-validation, out of fold", "epochs (median of folds)"),
        None => ("dev", "best epoch"),
    };
    let _ = writeln!(
        s,
        "## Variants tried ({on}, before calibration)\n\n| variant | {epoch} | loss | macro-F1 | accuracy | Closed precision | Closed recall |\n|---|---|---|---|---|---|---|"
    );
    for v in &md.variants {
        let mark = if v.name == md.chosen { " **(kept)**" } else { "" };
        let _ = writeln!(
            s,
            "| {}{mark} | {} | {:.4} | {} | {} | {} | {} |",
            v.name,
            v.best_epoch,
            v.dev_loss,
            pct(v.dev_macro_f1),
            pct(v.dev_accuracy),
            pct(v.dev_closed_precision),
            pct(v.dev_closed_recall)
        );
    }
    let _ = writeln!(
        s,
        "\nKept: **{}** (best {on} macro-F1; ties go to higher Closed precision, then the simpler \
         candidate). Temperature fitted on {}: **{:.3}**. Hyper-parameters:\n\n```json\n{}\n```\n",
        md.chosen,
        if cv.is_some() {
            "the out-of-fold logits"
        } else {
            "dev"
        },
        md.temperature,
        serde_json::to_string_pretty(&md.hyper_parameters).unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "## Dev metrics: model vs keyword baseline\n\n| | model | keywords |\n|---|---|---|\n| macro-F1 | {} | {} |\n| accuracy | {} | {} |",
        pct(m.macro_f1),
        pct(b.macro_f1),
        pct(m.accuracy),
        pct(b.accuracy)
    );
    for l in Label::ALL {
        let (a, c) = (m.label(l), b.label(l));
        let _ = writeln!(
            s,
            "| {0} precision | {1} | {2} |\n| {0} recall | {3} | {4} |\n| {0} F1 | {5} | {6} |",
            l.as_str(),
            pct(a.precision),
            pct(c.precision),
            pct(a.recall),
            pct(c.recall),
            pct(a.f1),
            pct(c.f1)
        );
    }
    let _ = writeln!(
        s,
        "\nMargin over the baseline: **{:+.3}** macro-F1. Closed average precision: {:.3}.\n",
        m.macro_f1 - b.macro_f1,
        md.dev_closed_average_precision
    );
    let _ = writeln!(
        s,
        "Confusion (rows gold, columns predicted):\n\n| gold \\ predicted | in_progress | closed |\n|---|---|---|"
    );
    for g in Label::ALL {
        let row = &m.confusion[g.as_str()];
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            g.as_str(),
            row["in_progress"],
            row["closed"]
        );
    }
    let _ = writeln!(
        s,
        "\n![confusion matrix](confusion.png)\n\n![precision-recall curve](pr_curve.png)\n"
    );
    if !md.evaluations.is_empty() {
        let _ = writeln!(
            s,
            "## Other files (scored with the final model; not used for any choice)\n\n| file | rows | macro-F1 | accuracy | Closed precision | Closed recall | Closed AP | keywords macro-F1 |\n|---|---|---|---|---|---|---|---|"
        );
        for e in &md.evaluations {
            let c = e.metrics.label(Label::Closed);
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
                e.file.path,
                e.file.rows,
                pct(e.metrics.macro_f1),
                pct(e.metrics.accuracy),
                pct(c.precision),
                pct(c.recall),
                pct(e.closed_average_precision),
                pct(e.keyword_baseline_macro_f1)
            );
        }
        for e in &md.evaluations {
            let _ = writeln!(
                s,
                "\nErrors by kind in `{}`:\n\n| kind | rows | gold closed | accuracy | closed missed | closed wrongly |\n|---|---|---|---|---|---|",
                e.file.path
            );
            for (k, g) in &e.by_kind {
                let _ = writeln!(
                    s,
                    "| {k} | {} | {} | {} | {} | {} |",
                    g.n,
                    g.gold_closed,
                    pct(g.accuracy),
                    g.missed_closed,
                    g.wrong_closed
                );
            }
        }
        let _ = writeln!(s);
    }
    let mut errors: Vec<(usize, f32)> = o
        .dev
        .iter()
        .zip(&o.dev_predictions)
        .enumerate()
        .filter(|(_, (ex, p))| ex.label != p.label)
        .map(|(i, (_, p))| (i, p.score(Label::Closed)))
        .collect();
    errors.sort_by(|a, b| (b.1 - 0.5).abs().total_cmp(&(a.1 - 0.5).abs()));
    let _ = writeln!(
        s,
        "## Most confident dev errors\n\n| gold | p(closed) | text |\n|---|---|---|"
    );
    for (i, p) in errors.iter().take(15) {
        let text = o.dev[*i].text.replace('|', "\\|").replace('\n', " ");
        let _ = writeln!(s, "| {} | {:.2} | {} |", o.dev[*i].label.as_str(), p, text);
    }
    let _ = writeln!(s, "\n## Notes\n");
    for n in &md.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}
