//! A client key's spending limit as configured (`budget_usd`,
//! `budget_period`); counted and enforced by `crate::pricing::budget`.

/// How long a budget renews after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    /// A UTC calendar day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl BudgetPeriod {
    /// Its name in the config (`budget_period`).
    pub fn name(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        }
    }
}

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
            None | Some("day") => BudgetPeriod::Day,
            Some("month") => BudgetPeriod::Month,
            Some(other) => {
                return Err(format!("budget_period: {other:?} is not one of day, month"))
            }
        };
        match usd {
            None => Ok(None),
            Some(u) if u.is_finite() && u >= 0.0 => Ok(Some(Budget { usd: u, period })),
            Some(_) => Err("budget_usd: must be a non-negative number".to_owned()),
        }
    }
}
