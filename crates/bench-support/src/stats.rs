//! The median and spread of repeated runs.

/// One figure over repeated runs: its median (the mean of the two middle values for
/// an even count) and its spread, the lowest and highest value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The lowest value.
    pub min: f64,
    /// The highest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`, in any order. Panics on no values or on a NaN: a run
    /// that measured nothing is a bug in the benchmark.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut values: Vec<f64> = values.into_iter().collect();
        assert!(!values.is_empty(), "the spread of no runs");
        assert!(
            values.iter().all(|value| !value.is_nan()),
            "a run measured NaN: {values:?}"
        );
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        };
        Spread {
            median,
            min: values[0],
            max: values[values.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(median: f64, min: f64, max: f64) -> Spread {
        Spread { median, min, max }
    }

    /// The middle value of an odd count, the mean of the two middle values of an
    /// even count, whatever order the runs came in.
    #[test]
    fn median_and_spread_of_odd_and_even_counts() {
        assert_eq!(Spread::of([4.0]), spread(4.0, 4.0, 4.0));
        assert_eq!(Spread::of([3.0, 1.0]), spread(2.0, 1.0, 3.0));
        assert_eq!(Spread::of([5.0, 1.0, 3.0]), spread(3.0, 1.0, 5.0));
        assert_eq!(Spread::of([8.0, 1.0, 2.0, 4.0]), spread(3.0, 1.0, 8.0));
        assert_eq!(Spread::of([9.0, 7.0, 1.0, 3.0, 5.0]), spread(5.0, 1.0, 9.0));
        // An outlier moves the spread, not the median.
        assert_eq!(
            Spread::of([10.0, 10.0, 1_000.0]),
            spread(10.0, 10.0, 1_000.0)
        );
    }

    #[test]
    #[should_panic(expected = "the spread of no runs")]
    fn no_runs_panics() {
        Spread::of([]);
    }

    #[test]
    #[should_panic(expected = "a run measured NaN")]
    fn nan_panics() {
        Spread::of([1.0, f64::NAN]);
    }
}
