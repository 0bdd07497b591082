//! Ordering candidates: a weighted random order over their scores.

use rand::Rng;

/// A random order in which each item comes first with a probability
/// proportional to its weight (Efraimidis–Spirakis: sort by `u^(1/w)`).
pub fn weighted_order<R: Rng>(weights: &[f64], rng: &mut R) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
            let key = if w > 0.0 {
                u.ln() / w
            } else {
                f64::NEG_INFINITY
            };
            (key, i)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn three_to_one_split_within_five_percent() {
        let mut rng = StdRng::seed_from_u64(7);
        let picks = 4000;
        let firsts = (0..picks)
            .filter(|_| weighted_order(&[3.0, 1.0], &mut rng)[0] == 0)
            .count();
        let share = firsts as f64 / picks as f64;
        assert!(
            (share - 0.75).abs() <= 0.05 * 0.75,
            "share of the weight-3 upstream: {share}"
        );
    }

    #[test]
    fn every_item_appears_once_and_zero_weights_go_last() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let o = weighted_order(&[0.0, 1.0, 5.0, 2.0], &mut rng);
            let mut s = o.clone();
            s.sort();
            assert_eq!(s, [0, 1, 2, 3]);
            assert_eq!(o[3], 0);
        }
    }
}
