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

/// Lines over simulated time: one per `(name, points)` in `series`, coloured in order, with
/// the y axis from zero to a little above the largest value.
///
/// # Errors
///
/// A drawing error from plotters, as text.
pub fn lines_svg(
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let points = || series.iter().flat_map(|(_, p)| p.iter());
        let x_max = points().map(|p| p.0).fold(1.0, f64::max);
        let y_max = points().map(|p| p.1).fold(0.0, f64::max);
        let y_max = if y_max > 0.0 { y_max * 1.05 } else { 1.0 };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("simulated seconds")
            .y_desc(y_desc)
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (name, points)) in series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}
