//! Samples and their summary: median, p90, p99, min, max — what every scenario reports.

use std::time::Duration;

use serde::Serialize;

/// One measured figure: a scenario, its parameters, its samples and their summary.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Scenario name, e.g. `pause`.
    pub scenario: String,
    /// Parameters that distinguish this row, e.g. `{"mib": 64, "contents": "random"}`.
    pub parameters: serde_json::Value,
    /// Unit of the samples and summary (`ms`, `MiB`, `bytes`, ...).
    pub unit: String,
    /// The raw samples, in the order they were taken.
    pub samples: Vec<f64>,
    /// Median of the samples.
    pub median: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// 99th percentile (nearest rank): the tail under load.
    pub p99: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// The same-run reference this figure is compared with, if any: (name, median in the same unit).
    pub reference: Option<(String, f64)>,
}

impl Measurement {
    /// Summarises `samples` (at least one).
    pub fn new(
        scenario: &str,
        parameters: serde_json::Value,
        unit: &str,
        samples: Vec<f64>,
    ) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if sorted.is_empty() {
                f64::NAN
            } else {
                sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
            }
        };
        let median = if sorted.is_empty() {
            f64::NAN
        } else if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        Self {
            scenario: scenario.to_owned(),
            parameters,
            unit: unit.to_owned(),
            median,
            p90: pick(0.9),
            p99: pick(0.99),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            samples,
            reference: None,
        }
    }

    /// Attaches the same-run reference figure this one is compared with.
    pub fn against(mut self, name: &str, median: f64) -> Self {
        self.reference = Some((name.to_owned(), median));
        self
    }

    /// This figure's median divided by its reference's, if it has one.
    pub fn ratio(&self) -> Option<f64> {
        self.reference.as_ref().map(|(_, r)| self.median / r)
    }
}

/// Milliseconds in a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        let m = Measurement::new(
            "x",
            serde_json::json!({}),
            "ms",
            vec![5.0, 1.0, 3.0, 2.0, 4.0],
        );
        assert_eq!(
            (m.median, m.min, m.max, m.p90, m.p99),
            (3.0, 1.0, 5.0, 5.0, 5.0)
        );
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let m = Measurement::new("x", serde_json::json!({}), "ms", hundred);
        assert_eq!((m.p90, m.p99), (90.0, 99.0));
        let even = Measurement::new("x", serde_json::json!({}), "ms", vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(even.median, 2.5);
        assert_eq!(even.against("ref", 1.25).ratio(), Some(2.0));
    }
}
