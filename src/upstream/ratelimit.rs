//! Providers' own rate-limit headers, read on every answer and kept per
//! key, so routing steers away from a key before it is answered 429.
//! Pure: header lookup and the time are passed in.

use serde::Serialize;

/// What a provider last said about one key's limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RateLimitReading {
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    /// When the request budget refills (ms since the epoch).
    pub requests_reset_ms: Option<u64>,
    pub tokens_reset_ms: Option<u64>,
    /// When this was read (ms since the epoch).
    pub read_at_ms: u64,
}

/// Tokens counted as "one request's worth" when judging a key nearly out.
const TOKENS_PER_RESERVED_REQUEST: u64 = 1_000;

/// How long a reading without a reset time is believed.
const DEFAULT_RESET_MS: u64 = 60_000;

/// How a rate-limit reset time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetForm {
    /// A duration from now, Go style (`6m0s`, `20ms`): OpenAI's.
    GoDuration,
    /// An RFC 3339 time: Anthropic's.
    Rfc3339,
}

/// The names of one provider kind's rate-limit headers; each list is
/// tried in order, the first present wins.
#[derive(Debug)]
pub struct RateLimitHeaders {
    pub remaining_requests: &'static [&'static str],
    pub remaining_tokens: &'static [&'static str],
    pub requests_reset: &'static [&'static str],
    pub tokens_reset: &'static [&'static str],
    pub reset_form: ResetForm,
    /// A header giving the wait after a 429 in milliseconds, read before
    /// `retry-after` (Azure's `retry-after-ms`).
    pub retry_after_ms: Option<&'static str>,
}

/// OpenAI's `x-ratelimit-*`.
pub const OPENAI_HEADERS: RateLimitHeaders = RateLimitHeaders {
    remaining_requests: &["x-ratelimit-remaining-requests"],
    remaining_tokens: &["x-ratelimit-remaining-tokens"],
    requests_reset: &["x-ratelimit-reset-requests"],
    tokens_reset: &["x-ratelimit-reset-tokens"],
    reset_form: ResetForm::GoDuration,
    retry_after_ms: None,
};

/// Anthropic's `anthropic-ratelimit-*`.
pub const ANTHROPIC_HEADERS: RateLimitHeaders = RateLimitHeaders {
    remaining_requests: &["anthropic-ratelimit-requests-remaining"],
    remaining_tokens: &[
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-input-tokens-remaining",
    ],
    requests_reset: &["anthropic-ratelimit-requests-reset"],
    tokens_reset: &[
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-reset",
    ],
    reset_form: ResetForm::Rfc3339,
    retry_after_ms: None,
};

/// A kind whose answers carry no rate-limit headers.
pub const NO_HEADERS: RateLimitHeaders = RateLimitHeaders {
    remaining_requests: &[],
    remaining_tokens: &[],
    requests_reset: &[],
    tokens_reset: &[],
    reset_form: ResetForm::GoDuration,
    retry_after_ms: None,
};

/// Reads the rate-limit headers named by `names` in one answer; `None`
/// when it has none.
pub fn parse<'a>(
    names: &RateLimitHeaders,
    header: impl Fn(&str) -> Option<&'a str>,
    now_ms: u64,
) -> Option<RateLimitReading> {
    let first = |list: &[&str]| list.iter().find_map(|n| header(n));
    let num = |list: &[&str]| first(list).and_then(|v| v.trim().parse::<u64>().ok());
    let reset = |list: &[&str]| {
        let v = first(list)?;
        match names.reset_form {
            ResetForm::GoDuration => parse_go_duration_ms(v).map(|d| now_ms + d),
            ResetForm::Rfc3339 => parse_rfc3339_ms(v),
        }
    };
    let r = RateLimitReading {
        remaining_requests: num(names.remaining_requests),
        remaining_tokens: num(names.remaining_tokens),
        requests_reset_ms: reset(names.requests_reset),
        tokens_reset_ms: reset(names.tokens_reset),
        read_at_ms: now_ms,
    };
    (r.remaining_requests.is_some() || r.remaining_tokens.is_some()).then_some(r)
}

/// The wait a refusal asks for, in whole seconds (rounded up): the
/// kind's milliseconds header when it has one, else `Retry-After`.
pub fn retry_after<'a>(
    names: &RateLimitHeaders,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Option<u64> {
    names
        .retry_after_ms
        .and_then(&header)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| ms.div_ceil(1000).max(1))
        .or_else(|| header("retry-after").and_then(retry_after_secs))
}

impl RateLimitReading {
    /// The key is nearly out of requests (at most `reserve` left) or tokens
    /// (at most `reserve` × 1000) until its reset, which has not come yet.
    pub fn low(&self, now_ms: u64, reserve: u64) -> bool {
        let until = |reset: Option<u64>| reset.unwrap_or(self.read_at_ms + DEFAULT_RESET_MS);
        let requests_low = self.remaining_requests.is_some_and(|r| r <= reserve)
            && now_ms < until(self.requests_reset_ms);
        let tokens_low = self
            .remaining_tokens
            .is_some_and(|t| t <= reserve.saturating_mul(TOKENS_PER_RESERVED_REQUEST))
            && now_ms < until(self.tokens_reset_ms);
        requests_low || tokens_low
    }

    /// Requests left, while the reading still holds.
    pub fn requests_left(&self, now_ms: u64) -> Option<u64> {
        let until = self
            .requests_reset_ms
            .unwrap_or(self.read_at_ms + DEFAULT_RESET_MS);
        self.remaining_requests.filter(|_| now_ms < until)
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by providers).
pub fn retry_after_secs(v: &str) -> Option<u64> {
    v.trim().parse::<u64>().ok()
}

/// OpenAI's reset durations: `1s`, `6m0s`, `20ms`, `1h2m3.5s`.
pub fn parse_go_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (mut total, mut rest) = (0f64, s);
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_end] {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * ms;
    }
    (total.is_finite() && total >= 0.0).then_some(total as u64)
}

/// An RFC 3339 UTC time (`2026-11-29T10:00:30Z`, fractions allowed) as ms
/// since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, sec) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let tail = &s[19..];
    let (frac, zone) = match tail.strip_prefix('.') {
        Some(t) => {
            let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let digits = &t[..end.min(3)];
            let ms = format!("{digits:0<3}").parse::<i64>().ok()?;
            (ms, &t[end..])
        }
        None => (0, tail),
    };
    let offset_min = match zone {
        "Z" | "z" => 0,
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (z.get(1..3)?.parse::<i64>().ok()? * 60 + z.get(4..6)?.parse::<i64>().ok()?)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1_000 + frac).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(h: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |n| h.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
    }

    #[test]
    fn reads_openai_and_anthropic_headers() {
        let h = [
            ("x-ratelimit-remaining-requests", "1"),
            ("x-ratelimit-remaining-tokens", "90000"),
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-reset-tokens", "20ms"),
        ];
        let r = parse(&OPENAI_HEADERS, headers(&h), 1_000).unwrap();
        assert_eq!(r.remaining_requests, Some(1));
        assert_eq!(r.requests_reset_ms, Some(361_000));
        assert_eq!(r.tokens_reset_ms, Some(1_020));
        assert!(r.low(2_000, 1));
        assert!(!r.low(361_000, 1), "reset has come");
        assert!(!r.low(2_000, 0));
        let h = [
            ("anthropic-ratelimit-requests-remaining", "40"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "1970-01-01T00:01:00Z"),
        ];
        let r = parse(&ANTHROPIC_HEADERS, headers(&h), 1_000).unwrap();
        assert_eq!(
            (r.remaining_requests, r.remaining_tokens, r.tokens_reset_ms),
            (Some(40), Some(0), Some(60_000))
        );
        assert!(r.low(59_999, 1));
        assert!(!r.low(60_000, 1));
        assert_eq!(
            parse(&OPENAI_HEADERS, headers(&[("content-type", "x")]), 0),
            None
        );
        assert_eq!(parse(&NO_HEADERS, headers(&h), 0), None);
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_go_duration_ms("1h2m3.5s"), Some(3_723_500));
        assert_eq!(parse_go_duration_ms("20ms"), Some(20));
        assert_eq!(parse_go_duration_ms("soon"), None);
        assert_eq!(parse_go_duration_ms(""), None);
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T10:00:30.25Z"),
            Some(1_795_946_430_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T11:00:30+01:00"),
            Some(1_795_946_430_000)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(retry_after_secs(" 7 "), Some(7));
        let ms_first = RateLimitHeaders {
            retry_after_ms: Some("retry-after-ms"),
            ..OPENAI_HEADERS
        };
        let h = [("retry-after", "1"), ("retry-after-ms", "1500")];
        assert_eq!(retry_after(&ms_first, headers(&h)), Some(2));
        assert_eq!(retry_after(&OPENAI_HEADERS, headers(&h)), Some(1));
        assert_eq!(retry_after(&ms_first, headers(&h[..1])), Some(1));
    }
}
