//! A client key's spending limit as configured (`budget_usd`,
//! `budget_period`); counted and enforced by `crate::pricing::budget`.

use super::choices::{BudgetPeriod, Named};

/// A key's spending limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub usd: f64,
    pub period: BudgetPeriod,
}

impl Budget {
    /// From the raw keys; `Err` names the key (relative to the client key)
    /// and the problem.
    pub fn resolve(usd: Option<f64>, period: Option<&str>) -> Result<Option<Budget>, String> {
        let period = match period {
            None => BudgetPeriod::Day,
            Some(p) => BudgetPeriod::named(p).map_err(|e| format!("budget_period: {e}"))?,
        };
        match usd {
            None => Ok(None),
            Some(u) if u.is_finite() && u >= 0.0 => Ok(Some(Budget { usd: u, period })),
            Some(_) => Err("budget_usd: must be a non-negative number".to_owned()),
        }
    }
}
