//! The gateway-wide hedge budget: a token bucket that every generation
//! request fills by `routing.hedge_budget_percent` / 100 of a token and
//! every hedge empties by one, so hedges start for at most that share of
//! requests. Pure apart from its lock.

use parking_lot::Mutex;

/// Most unspent hedges the bucket keeps: a quiet spell does not bank a
/// storm of hedges for the next burst of slow answers.
pub const MAX_BANKED_HEDGES: f64 = 10.0;

/// Hedges left to start (fractions accumulate).
#[derive(Debug, Default)]
pub struct HedgeBudget {
    tokens: Mutex<f64>,
}

impl HedgeBudget {
    /// One request came in: it earns `percent` / 100 of a hedge.
    pub fn deposit(&self, percent: u32) {
        let mut t = self.tokens.lock();
        *t = (*t + f64::from(percent.min(100)) / 100.0).min(MAX_BANKED_HEDGES);
    }

    /// Takes one hedge when the budget has it.
    pub fn try_take(&self) -> bool {
        let mut t = self.tokens.lock();
        // The epsilon absorbs the rounding of ten 0.1 deposits.
        if *t >= 1.0 - 1e-9 {
            *t = (*t - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_percent_is_one_hedge_per_ten_requests() {
        let b = HedgeBudget::default();
        let mut hedges = 0;
        for _ in 0..100 {
            b.deposit(10);
            // Every request would like a hedge.
            if b.try_take() {
                hedges += 1;
            }
        }
        assert_eq!(hedges, 10);
    }

    #[test]
    fn zero_never_hedges_and_a_hundred_always_may() {
        let none = HedgeBudget::default();
        let all = HedgeBudget::default();
        for _ in 0..50 {
            none.deposit(0);
            assert!(!none.try_take());
            all.deposit(100);
            assert!(all.try_take());
        }
    }

    #[test]
    fn a_quiet_spell_banks_at_most_ten() {
        let b = HedgeBudget::default();
        for _ in 0..1000 {
            b.deposit(50);
        }
        let burst = (0..100).filter(|_| b.try_take()).count();
        assert_eq!(burst, MAX_BANKED_HEDGES as usize);
    }
}
