//! PNG pictures of a run (plotters, bitmap backend, with an embedded DejaVu Sans so no system
//! fonts are needed): line charts of curves, a 2-D scatter coloured by label, and grids of
//! images. Every file is written to a temporary name and renamed, so a reader never sees half
//! a picture.

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The font is compiled in; registering it cannot fail at run time.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: cannot draw: {e}", path.display()))
}

/// Draws into a temporary file beside `path`, then renames it over `path`.
fn atomic(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(
        &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
) -> Result<()> {
    font();
    let tmp = path.with_extension("tmp.png");
    let drawn = (|| -> Result<()> {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(path, e))?;
        draw(&root).map_err(|e| err(path, e))?;
        root.present().map_err(|e| err(path, e))?;
        drop(root);
        std::fs::rename(&tmp, path).map_err(|e| err(path, e))
    })();
    if drawn.is_err() {
        // A failed draw (a full disk) leaves no temp file behind.
        let _ = std::fs::remove_file(&tmp);
    }
    drawn
}

/// (x min, x max, y min, y max) of the finite points; the unit box when there are none.
fn bounds<'a>(pts: impl Iterator<Item = &'a (f64, f64)>) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return (0.0, 1.0, 0.0, 1.0);
    }
    (x0, x1, y0, y1)
}

/// A colour per class (Tableau 10).
pub fn palette(i: usize) -> RGBColor {
    const C: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % 10];
    RGBColor(r, g, b)
}

/// One or more curves over a shared x axis.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<()> {
    let pts = series.iter().flat_map(|(_, s)| s.iter());
    let (x0, x1, y0, y1) = bounds(pts);
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    atomic(path, (800, 500), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (name, s)) in series.iter().enumerate() {
            let color = palette(i);
            chart
                .draw_series(LineSeries::new(s.iter().cloned(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// Points coloured by label.
pub fn scatter(path: &Path, title: &str, points: &[(f64, f64)], labels: &[u32]) -> Result<()> {
    let (x0, x1, y0, y1) = bounds(points.iter());
    atomic(path, (700, 700), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(x0..x1.max(x0 + 1e-9), y0..y1.max(y0 + 1e-9))
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().draw().map_err(|e| e.to_string())?;
        let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        for c in 0..classes {
            let color = palette(c);
            chart
                .draw_series(
                    points
                        .iter()
                        .zip(labels)
                        .filter(|(_, &l)| l as usize == c)
                        .map(|(&p, _)| Circle::new(p, 2, color.filled())),
                )
                .map_err(|e| e.to_string())?
                .label(c.to_string())
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// Rows of images (each row `[count, C, H, W]`, values in [0, 1], C = 1 or 3), enlarged by
/// `zoom`, with a caption per row.
pub fn image_grid(
    path: &Path,
    rows: &[(&str, Vec<f32>)],
    sample: [usize; 3],
    count: usize,
    zoom: usize,
) -> Result<()> {
    let [c, h, w] = sample;
    let (cell_w, cell_h, label_w) = (w * zoom + 4, h * zoom + 4, 110);
    let size = (
        (label_w + count * cell_w) as u32,
        (rows.len() * cell_h) as u32,
    );
    atomic(path, size, |root| {
        for (r, (caption, data)) in rows.iter().enumerate() {
            root.draw(&Text::new(
                caption.to_string(),
                (6, (r * cell_h + cell_h / 2) as i32 - 8),
                ("sans-serif", 16),
            ))
            .map_err(|e| e.to_string())?;
            for k in 0..count.min(data.len() / (c * h * w)) {
                for y in 0..h * zoom {
                    for x in 0..w * zoom {
                        let px = |ch: usize| {
                            let v = data[((k * c + ch) * h + y / zoom) * w + x / zoom];
                            (v.clamp(0.0, 1.0) * 255.0).round() as u8
                        };
                        let col = if c == 3 {
                            RGBColor(px(0), px(1), px(2))
                        } else {
                            RGBColor(px(0), px(0), px(0))
                        };
                        root.draw_pixel(
                            (
                                (label_w + k * cell_w + 2 + x) as i32,
                                (r * cell_h + 2 + y) as i32,
                            ),
                            &col,
                        )
                        .map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        Ok(())
    })
}
