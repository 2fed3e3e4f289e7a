//! Plots of a run, as SVG (plotters' SVG backend: text is left to the viewer, no fonts needed).

use plotters::prelude::*;

/// The completion CDF: the share of `receivers` holding the release over simulated time, with
/// the Kumar-Ross bound as a vertical line.
///
/// # Errors
///
/// A drawing error from plotters, as text.
pub fn cdf_svg(times: &[f64], receivers: u32, bound: f64, title: &str) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let last = times.last().copied().unwrap_or(0.0);
        let x_max = (last.max(bound) * 1.1).max(1.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..x_max, 0f64..1.0f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("simulated seconds")
            .y_desc("share of receivers complete")
            .draw()
            .map_err(|e| e.to_string())?;
        let n = f64::from(receivers.max(1));
        let mut points = vec![(0.0, 0.0)];
        for (i, &t) in times.iter().enumerate() {
            points.push((t, i as f64 / n));
            points.push((t, (i + 1) as f64 / n));
        }
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label("receivers complete")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(vec![(bound, 0.0), (bound, 1.0)], RED))
            .map_err(|e| e.to_string())?
            .label("Kumar-Ross bound")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}
