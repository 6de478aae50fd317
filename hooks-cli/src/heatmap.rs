//! Heatmaps of a matrix with named rows and columns, as interpretability papers print them: the
//! `hooks compare` plot and the activation-patching example's (which includes this file by path).
//! Text is drawn in DejaVu Sans, embedded from the `dejavu` crate: no system font or fontconfig is
//! needed.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor;

/// The font the plot's text is drawn in, registered from the bytes the `dejavu` crate embeds.
pub(crate) const FONT: &str = "hooks-sans";

/// A matrix to draw: `values[i][j]` for row `rows[i]` and column `columns[j]`.
pub struct Heatmap<'a> {
    /// Above the plot.
    pub title: &'a str,
    /// Row names, top to bottom.
    pub rows: &'a [String],
    /// Column names, left to right.
    pub columns: &'a [String],
    /// Row-major, `rows.len()` rows of `columns.len()` values.
    pub values: &'a [Vec<f64>],
    /// Text for each cell instead of its value, laid out as `values` (the logit lens's top
    /// tokens); cut to fit the cell. With it, cells are always large enough to hold text.
    pub cell_labels: Option<&'a [Vec<String>]>,
}

/// The most characters of a cell label that fit a cell.
const LABEL_CHARS: usize = 9;

/// `text` cut to [`LABEL_CHARS`] characters, with `…` where it was cut.
fn fit(text: &str) -> String {
    if text.chars().count() <= LABEL_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(LABEL_CHARS - 1).collect();
    cut.push('…');
    cut
}

impl Heatmap<'_> {
    /// Draws the matrix into the PNG at `path`: row names down the left (row 0 at the top),
    /// column names under the columns, values in the cells when they fit, a viridis colour bar
    /// spanning at least 0 to 1, the title above.
    ///
    /// # Errors
    ///
    /// The drawing backend's, as text (writing the file, most often).
    pub fn draw(&self, path: &Path) -> Result<(), String> {
        let m = self;
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| fail(&"the embedded font is not a valid TrueType font"))?;
        let (rows, cols) = (m.rows.len(), m.columns.len());
        let longest = |names: &[String]| names.iter().map(|n| n.chars().count()).max().unwrap_or(1) as u32;
        let cell: u32 = if rows.max(cols) <= 16 || m.cell_labels.is_some() {
            64
        } else {
            28
        };
        let label_px = |chars: u32| 20 + chars * 8;
        let (left, bottom) = (label_px(longest(m.rows)), label_px(longest(m.columns)));
        let (title_h, bar_w, pad) = (60, 110, 20);
        // Wide enough for the title too (22 px text, about 12 px a character).
        let title_w = 2 * pad + 12 * m.title.chars().count() as u32;
        let width = (left + cell * cols as u32 + bar_w + pad).max(title_w);
        let height = title_h + cell * rows as u32 + bottom + pad;
        let (lo, hi) = m
            .values
            .iter()
            .flatten()
            .fold((0.0f64, 1.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        {
            let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| fail(&e))?;
            root.draw(&Text::new(
                m.title,
                (pad as i32, 18),
                (FONT, 22).into_font().color(&BLACK),
            ))
            .map_err(|e| fail(&e))?;
            let (main, bar) = root.split_horizontally(width - bar_w);
            let mut chart = ChartBuilder::on(&main)
                .margin_top(title_h - 10)
                .margin_right(10)
                .x_label_area_size(bottom)
                .y_label_area_size(left)
                .build_cartesian_2d(0..cols as i32, 0..rows as i32)
                .map_err(|e| fail(&e))?;
            let row_names = m.rows.to_vec();
            chart
                .configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .y_labels(rows + 1)
                .y_label_offset(-(cell as i32) / 2)
                .y_label_style((FONT, 14).into_font().color(&BLACK))
                // Row 0 at the top, as a matrix reads.
                .y_label_formatter(&|i| {
                    row_names
                        .get(rows.wrapping_sub(1 + *i as usize))
                        .cloned()
                        .unwrap_or_default()
                })
                .draw()
                .map_err(|e| fail(&e))?;
            for (i, row) in m.values.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    let y = (rows - 1 - i) as i32;
                    let colour = ViridisRGB.get_color_normalized(v, lo, hi);
                    chart
                        .draw_series([Rectangle::new([(j as i32, y), (j as i32 + 1, y + 1)], colour.filled())])
                        .map_err(|e| fail(&e))?;
                }
            }
            let (xs, ys) = chart.plotting_area().get_pixel_range();
            // Where cell (i, j)'s centre lies, in pixels.
            let centre = |i: usize, j: usize| {
                let w = f64::from(xs.end - xs.start) / cols as f64;
                let h = f64::from(ys.end - ys.start) / rows as f64;
                (
                    xs.start + ((j as f64 + 0.5) * w) as i32,
                    ys.start + ((i as f64 + 0.5) * h) as i32,
                )
            };
            // Column names, turned to read downwards from under each column.
            for (j, name) in m.columns.iter().enumerate() {
                let x = centre(0, j).0 - 8;
                let style = (FONT, 14).into_font().transform(FontTransform::Rotate90).color(&BLACK);
                root.draw(&Text::new(name.clone(), (x, ys.end + 8), style))
                    .map_err(|e| fail(&e))?;
            }
            if cell >= 48 {
                for (i, row) in m.values.iter().enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        // Dark text on the light end of viridis, white on the dark end.
                        let ink = if (v - lo) / (hi - lo) > 0.6 { BLACK } else { WHITE };
                        let style = (FONT, 13).into_font().color(&ink).pos(text_anchor::Pos::new(
                            text_anchor::HPos::Center,
                            text_anchor::VPos::Center,
                        ));
                        let label = match m.cell_labels.and_then(|l| l.get(i)).and_then(|row| row.get(j)) {
                            Some(label) => fit(label),
                            None => format!("{v:.2}"),
                        };
                        let text = Text::new(label, centre(i, j), style);
                        root.draw(&text).map_err(|e| fail(&e))?;
                    }
                }
            }
            // The colour bar, lo at the bottom.
            let bar_top = ys.start;
            let bar_h = ys.end - ys.start;
            let steps = 100;
            for s in 0..steps {
                let v = lo + (hi - lo) * f64::from(s) / f64::from(steps);
                let y0 = bar_top + bar_h - (bar_h * (s + 1)) / steps;
                let y1 = bar_top + bar_h - (bar_h * s) / steps;
                bar.draw(&Rectangle::new(
                    [(10, y0), (34, y1)],
                    ViridisRGB.get_color_normalized(v, lo, hi).filled(),
                ))
                .map_err(|e| fail(&e))?;
            }
            bar.draw(&Rectangle::new(
                [(10, bar_top), (34, bar_top + bar_h)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| fail(&e))?;
            for t in 0..=4 {
                let v = lo + (hi - lo) * f64::from(t) / 4.0;
                let y = bar_top + bar_h - (bar_h * t) / 4;
                bar.draw(&PathElement::new([(34, y), (40, y)], BLACK))
                    .map_err(|e| fail(&e))?;
                let style = (FONT, 13).into_font().color(&BLACK).pos(text_anchor::Pos::new(
                    text_anchor::HPos::Left,
                    text_anchor::VPos::Center,
                ));
                bar.draw(&Text::new(format!("{v:.2}"), (44, y), style))
                    .map_err(|e| fail(&e))?;
            }
            root.present().map_err(|e| fail(&e))?;
        }
        Ok(())
    }
}
