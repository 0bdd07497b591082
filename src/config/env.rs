//! `${VAR}` and `${VAR:-default}` expansion inside the config's strings.

/// Expands every `${VAR}` / `${VAR:-default}` in `s` from `lookup`. Unset
/// variables without a default are reported by name; `$$` is a literal `$`.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed '${{' in {s:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.find(":-") {
                Some(p) => (&expr[..p], Some(&expr[p + 2..])),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad variable name {name:?} in '${{{expr}}}'"));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_vars_and_defaults() {
        assert_eq!(expand("plain", &env).unwrap(), "plain");
        assert_eq!(expand("${KEY}", &env).unwrap(), "sk-123");
        assert_eq!(expand("Bearer ${KEY}!", &env).unwrap(), "Bearer sk-123!");
        assert_eq!(expand("${NOPE:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${NOPE:-}", &env).unwrap(), "");
        assert_eq!(expand("${EMPTY:-x}", &env).unwrap(), "");
        assert_eq!(expand("cost $5 and $$", &env).unwrap(), "cost $5 and $");
    }

    #[test]
    fn reports_unset_and_malformed() {
        assert_eq!(
            expand("${NOPE}", &env).unwrap_err(),
            "environment variable NOPE is not set"
        );
        assert!(expand("${KEY", &env).is_err());
        assert!(expand("${bad name}", &env).is_err());
    }
}
