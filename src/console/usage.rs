//! `GET /admin/usage`: the store's daily usage counters (`apiproxy_store::usage`) over a range of days,
//! grouped by client key, model, provider or day, as JSON or CSV.

use std::collections::BTreeMap;

use apiproxy_store::usage::{day_string, parse_day, today, UsageAmounts, UsageRecord};
use serde_json::{json, Value};

use crate::error::GatewayError;

/// The longest range one report covers, in days.
pub const MAX_DAYS: i64 = 366;
/// The range without `from` / `to`: the last 30 days, today included.
const DEFAULT_DAYS: i64 = 30;

/// What a report is grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Key,
    Model,
    Provider,
    Day,
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::Key => "key",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::Day => "day",
        }
    }

    /// The group a record falls in: (what it is sorted and told apart by, its key id when grouped by key).
    fn of(self, r: &UsageRecord) -> (String, Option<String>) {
        match self {
            GroupBy::Key => (r.dims.key_name.clone(), Some(r.dims.key_id.clone())),
            GroupBy::Model => (r.dims.model.clone(), None),
            GroupBy::Provider => (r.dims.provider.clone(), None),
            GroupBy::Day => (r.day.clone(), None),
        }
    }
}

/// A parsed `/admin/usage` query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD`.
    pub from: String,
    /// Last day (included).
    pub to: String,
    pub group_by: GroupBy,
    /// `format=csv`.
    pub csv: bool,
}

impl UsageQuery {
    /// Reads `from`, `to`, `group_by` and `format` from the query string; a clear message for anything wrong.
    pub fn parse(query: Option<&str>) -> Result<Self, GatewayError> {
        let param = |name: &str| {
            query.and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            })
        };
        let day = |name: &str, default: i64| -> Result<i64, GatewayError> {
            match param(name) {
                None => Ok(default),
                Some(v) => parse_day(&v).ok_or_else(|| {
                    GatewayError::bad_request(format!(
                        "`{name}` must be a date as YYYY-MM-DD (UTC), got {v:?}"
                    ))
                }),
            }
        };
        let to = day("to", today())?;
        let from = day("from", to - (DEFAULT_DAYS - 1))?;
        if from > to {
            return Err(GatewayError::bad_request(format!(
                "`from` ({}) is after `to` ({})",
                day_string(from),
                day_string(to)
            )));
        }
        if to - from + 1 > MAX_DAYS {
            return Err(GatewayError::bad_request(format!(
                "the range covers {} days; at most {MAX_DAYS} per report",
                to - from + 1
            )));
        }
        let group_by = match param("group_by").as_deref() {
            None | Some("key") => GroupBy::Key,
            Some("model") => GroupBy::Model,
            Some("provider") => GroupBy::Provider,
            Some("day") => GroupBy::Day,
            Some(other) => {
                return Err(GatewayError::bad_request(format!(
                    "`group_by` must be key, model, provider or day, got {other:?}"
                )))
            }
        };
        let csv = match param("format").as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(other) => {
                return Err(GatewayError::bad_request(format!(
                    "`format` must be json or csv, got {other:?}"
                )))
            }
        };
        Ok(UsageQuery {
            from: day_string(from),
            to: day_string(to),
            group_by,
            csv,
        })
    }
}

/// One group of a report.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub group: String,
    /// The key's id, when grouped by key.
    pub key_id: Option<String>,
    pub amounts: UsageAmounts,
}

/// Sums `records` per group: days in order (every day of the range, empty ones too, so a chart has no gaps),
/// other groups by cost, then name.
pub fn group(q: &UsageQuery, records: &[UsageRecord]) -> (Vec<Row>, UsageAmounts) {
    let mut groups: BTreeMap<(String, Option<String>), UsageAmounts> = BTreeMap::new();
    if q.group_by == GroupBy::Day {
        if let (Some(first), Some(last)) = (parse_day(&q.from), parse_day(&q.to)) {
            for d in first..=last {
                groups.insert((day_string(d), None), UsageAmounts::default());
            }
        }
    }
    let mut totals = UsageAmounts::default();
    for r in records {
        groups.entry(q.group_by.of(r)).or_default().add(&r.amounts);
        totals.add(&r.amounts);
    }
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|((group, key_id), amounts)| Row {
            group,
            key_id,
            amounts,
        })
        .collect();
    if q.group_by != GroupBy::Day {
        rows.sort_by(|a, b| {
            b.amounts
                .cost_micros
                .cmp(&a.amounts.cost_micros)
                .then_with(|| b.amounts.requests.cmp(&a.amounts.requests))
                .then_with(|| a.group.cmp(&b.group))
        });
    }
    (rows, totals)
}

fn usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

fn amounts_json(a: &UsageAmounts) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("requests".into(), json!(a.requests));
    m.insert("input_tokens".into(), json!(a.input_tokens));
    m.insert("output_tokens".into(), json!(a.output_tokens));
    m.insert("cached_input_tokens".into(), json!(a.cached_input_tokens));
    m.insert("cost_usd".into(), json!(usd(a.cost_micros)));
    m
}

/// The JSON report: `rows` (each named by the group: `key` and `key_id`, `model`, `provider` or `day`) and
/// `totals`.
pub fn to_json(q: &UsageQuery, rows: &[Row], totals: &UsageAmounts) -> Value {
    let name = q.group_by.name();
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut m = serde_json::Map::new();
            m.insert(name.into(), json!(r.group));
            if let Some(id) = &r.key_id {
                m.insert("key_id".into(), json!(id));
            }
            m.extend(amounts_json(&r.amounts));
            Value::Object(m)
        })
        .collect();
    json!({
        "from": q.from,
        "to": q.to,
        "group_by": name,
        "rows": rows,
        "totals": Value::Object(amounts_json(totals)),
    })
}

/// One CSV field: quoted when it holds a comma, quote or line break; a leading `=`, `+`, `-` or `@` (a formula
/// to a spreadsheet) gets a `'` in front, except a lone `-` (no key).
fn csv_field(s: &str) -> String {
    let s = if s.len() > 1 && s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The CSV report: a header line, one line per group, no totals line (a spreadsheet sums).
pub fn to_csv(q: &UsageQuery, rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(q.group_by.name());
    if q.group_by == GroupBy::Key {
        out.push_str(",key_id");
    }
    out.push_str(",requests,input_tokens,output_tokens,cached_input_tokens,cost_usd\n");
    for r in rows {
        out.push_str(&csv_field(&r.group));
        if let Some(id) = &r.key_id {
            out.push(',');
            out.push_str(&csv_field(id));
        }
        let a = &r.amounts;
        out.push_str(&format!(
            ",{},{},{},{},{}\n",
            a.requests,
            a.input_tokens,
            a.output_tokens,
            a.cached_input_tokens,
            usd(a.cost_micros)
        ));
    }
    out
}

/// The file name a CSV download is offered as.
pub fn csv_file_name(q: &UsageQuery) -> String {
    format!("usage-{}-{}-by-{}.csv", q.from, q.to, q.group_by.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiproxy_store::usage::UsageDims;

    fn rec(day: &str, key: &str, model: &str, cost: u64) -> UsageRecord {
        UsageRecord {
            day: day.into(),
            dims: UsageDims {
                key_id: format!("~{key}"),
                key_name: key.into(),
                model: model.into(),
                provider: "p".into(),
                upstream_model: "m".into(),
            },
            amounts: UsageAmounts {
                requests: 1,
                input_tokens: 10,
                output_tokens: 5,
                cached_input_tokens: 0,
                cost_micros: cost,
            },
        }
    }

    #[test]
    fn queries_parse_with_defaults_and_refuse_bad_input() {
        let q = UsageQuery::parse(None).unwrap();
        assert_eq!(q.to, day_string(today()));
        assert_eq!(parse_day(&q.to).unwrap() - parse_day(&q.from).unwrap(), 29);
        assert_eq!(q.group_by, GroupBy::Key);
        let q = UsageQuery::parse(Some(
            "from=2026-01-01&to=2026-01-31&group_by=day&format=csv",
        ))
        .unwrap();
        assert_eq!((q.group_by, q.csv), (GroupBy::Day, true));
        for bad in [
            "from=2026-02-30",
            "to=yesterday",
            "from=2026-02-01&to=2026-01-01",
            "from=2024-01-01&to=2025-12-31",
            "group_by=color",
            "format=xml",
        ] {
            let e = UsageQuery::parse(Some(bad)).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
        assert!(
            UsageQuery::parse(Some("from=2025-01-01&to=2026-01-01")).is_ok(),
            "366 days"
        );
    }

    #[test]
    fn groups_sum_and_days_have_no_gaps() {
        let records = [
            rec("2026-01-01", "a", "x", 5),
            rec("2026-01-03", "a", "y", 1),
            rec("2026-01-03", "b", "x", 9),
        ];
        let q = UsageQuery::parse(Some("from=2026-01-01&to=2026-01-03&group_by=day")).unwrap();
        let (rows, totals) = group(&q, &records);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].amounts.requests, 0);
        assert_eq!(rows[2].amounts.cost_micros, 10);
        assert_eq!(totals.requests, 3);
        let q = UsageQuery {
            group_by: GroupBy::Key,
            ..q
        };
        let (rows, _) = group(&q, &records);
        assert_eq!(rows[0].group, "b", "most cost first");
        assert_eq!(rows[1].amounts.requests, 2);
        let csv = to_csv(&q, &rows);
        assert_eq!(
            csv.lines().next(),
            Some("key,key_id,requests,input_tokens,output_tokens,cached_input_tokens,cost_usd")
        );
        assert_eq!(csv.lines().nth(1), Some("b,~b,1,10,5,0,0.000009"));
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("-"), "-");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
