//! The spread of a sample of simulated seconds, for the examples that run many seeds.

/// "min A s, median B s, p90 C s, max D s" of `times` (infinite for a run that never got there).
pub fn spread(mut times: Vec<f64>) -> String {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:.1} s, median {:.1} s, p90 {:.1} s, max {:.1} s",
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0)
    )
}
