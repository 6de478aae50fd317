//! Line plots of a value per layer, as probing papers print them (`hooks probe --plot`): one line
//! per series over the layers in order, the y axis from 0 to 1. Text is drawn in the font
//! `heatmap.rs` embeds.

use std::path::Path;

use plotters::prelude::*;

use crate::heatmap::FONT;

/// Series over named x positions.
pub struct LinePlot<'a> {
    /// Above the plot.
    pub title: &'a str,
    /// One name per x position (layer names), left to right.
    pub x_labels: &'a [String],
    /// The y axis' caption.
    pub y_label: &'a str,
    /// `(name, values)`, one value per x position; NaN leaves a gap.
    pub series: &'a [(String, Vec<f64>)],
}

/// The series' colours, in order.
const COLOURS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44)];

impl LinePlot<'_> {
    /// Draws the plot into the PNG at `path`: a line with a marker per value for each series, a
    /// legend, the x labels turned under their positions.
    ///
    /// # Errors
    ///
    /// The drawing backend's, as text (writing the file, most often).
    pub fn draw(&self, path: &Path) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| fail(&"the embedded font is not a valid TrueType font"))?;
        let n = self.x_labels.len().max(1);
        let longest = self.x_labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as u32;
        let bottom = 30 + 8 * longest;
        let width = (160 + 60 * n as u32)
            .max(640)
            .max(40 + 12 * self.title.chars().count() as u32);
        let height = 420 + bottom;
        let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(self.title, (FONT, 22).into_font())
            .margin(20)
            .x_label_area_size(bottom)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..1f64)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(0)
            .y_desc(self.y_label)
            .y_label_style((FONT, 13).into_font())
            .axis_desc_style((FONT, 15).into_font())
            .draw()
            .map_err(|e| fail(&e))?;
        // The x labels, turned to read downwards from under each position.
        for (i, label) in self.x_labels.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64, 0.0));
            let style = (FONT, 13).into_font().transform(FontTransform::Rotate90).color(&BLACK);
            root.draw(&Text::new(label.clone(), (x - 7, y + 10), style))
                .map_err(|e| fail(&e))?;
        }
        for (k, (name, values)) in self.series.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let points: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| (i as f64, v))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| fail(&e))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 4, colour.filled())))
                .map_err(|e| fail(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 14).into_font())
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
        Ok(())
    }
}
