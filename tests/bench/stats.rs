//! Figures over several runs: each run's value paired with the ceiling taken in the same run,
//! reported as min / median / max of the values, of the ceilings and of the per-run ratios, with
//! the count of runs that failed (a failed run is counted, never silently dropped).

/// The median: the middle value, or the mean of the two middle values of an even count.
pub fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// The `q` quantile (0..=1) of `xs` by the nearest-rank method: the smallest value with at least
/// `q` of the values at or below it.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Min, median and max of some values.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(xs: &[f64]) -> Option<Spread> {
        (!xs.is_empty()).then(|| Spread {
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            median: median(xs),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    /// `median<unit> (min–max<unit>)`, or the one value when all runs agree or there was one.
    pub fn show(&self, decimals: usize, unit: &str) -> String {
        let d = decimals;
        if self.min == self.max {
            format!("{:.*}{unit}", d, self.median)
        } else {
            format!(
                "{:.*}{unit} ({:.*}–{:.*}{unit})",
                d, self.median, d, self.min, d, self.max
            )
        }
    }

    /// Each value times `k`.
    pub fn scaled(&self, k: f64) -> Spread {
        Spread {
            min: self.min * k,
            median: self.median * k,
            max: self.max * k,
        }
    }
}

/// One figure's runs.
#[derive(Debug, Default, Clone)]
pub struct Runs {
    /// Each successful run's value and the ceiling taken beside it in that run.
    pairs: Vec<(f64, Option<f64>)>,
    failed: usize,
}

impl Runs {
    /// A run that produced `value` beside `ceiling`.
    pub fn push(&mut self, value: f64, ceiling: Option<f64>) {
        self.pairs.push((value, ceiling));
    }

    /// A run that failed or timed out.
    pub fn fail(&mut self) {
        self.failed += 1;
    }

    pub fn failed(&self) -> usize {
        self.failed
    }

    pub fn ok(&self) -> usize {
        self.pairs.len()
    }

    pub fn values(&self) -> Option<Spread> {
        Spread::of(&self.pairs.iter().map(|p| p.0).collect::<Vec<_>>())
    }

    pub fn ceilings(&self) -> Option<Spread> {
        Spread::of(&self.pairs.iter().filter_map(|p| p.1).collect::<Vec<_>>())
    }

    /// value ÷ ceiling of each run that has both.
    pub fn ratios(&self) -> Option<Spread> {
        Spread::of(
            &self
                .pairs
                .iter()
                .filter_map(|&(v, c)| c.filter(|c| *c > 0.0).map(|c| v / c))
                .collect::<Vec<_>>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn ratios_are_taken_per_run_before_the_spread() {
        let mut r = Runs::default();
        r.push(10.0, Some(20.0));
        r.push(30.0, Some(30.0));
        r.fail();
        let ratios = r.ratios().unwrap();
        assert_eq!((ratios.min, ratios.median, ratios.max), (0.5, 0.75, 1.0));
        assert_eq!((r.ok(), r.failed()), (2, 1));
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), 50.0);
        assert_eq!(quantile(&xs, 0.99), 99.0);
        assert_eq!(quantile(&xs, 0.999), 100.0);
        assert_eq!(quantile(&xs, 1.0), 100.0);
    }
}
