//! `${VAR}` and `${VAR:-default}` expansion inside the config's strings.

/// Expands every `${VAR}` / `${VAR:-default}` in `s` from `lookup`. Unset
/// variables without a default are reported by name; `$$` is a literal `$`.
#[cfg(test)]
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut unset = Vec::new();
    let mut used = Vec::new();
    let out = expand_noting(s, lookup, &mut unset, &mut used)?;
    match unset.first() {
        Some(name) => Err(format!("environment variable {name} is not set")),
        None => Ok(out),
    }
}

/// A value taken from the environment, remembered so that no problem line
/// echoes it (it may be a secret).
#[derive(Debug, Clone)]
pub struct EnvValue {
    pub name: String,
    pub value: String,
}

/// Like [`expand`], but an unset variable becomes an empty string and is
/// noted in `unset` (so every one of them is reported in one run), and every
/// value taken from the environment is noted in `used`. `Err` only for a
/// malformed `${...}`.
pub fn expand_noting(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
    used: &mut Vec<EnvValue>,
) -> Result<String, String> {
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
                (Some(v), _) => {
                    out.push_str(&v);
                    used.push(EnvValue {
                        name: name.to_owned(),
                        value: v,
                    });
                }
                (None, Some(d)) => out.push_str(d),
                (None, None) => unset.push(name.to_owned()),
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

/// `line` with every value taken from the environment replaced by
/// `<$NAME>`: a problem report must not echo a secret. Values are replaced
/// where they appear quoted (as `{:?}` prints them) and, when long enough
/// not to hit ordinary words, anywhere.
pub fn redact(line: &str, used: &[EnvValue]) -> String {
    let mut out = line.to_owned();
    for v in used.iter().filter(|v| !v.value.is_empty()) {
        let shown = format!("<${}>", v.name);
        out = out.replace(&format!("{:?}", v.value), &shown);
        if v.value.len() >= 6 {
            out = out.replace(&v.value, &shown);
        }
    }
    out
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
    fn every_unset_variable_is_noted_and_values_are_redacted() {
        let (mut unset, mut used) = (Vec::new(), Vec::new());
        let out = expand_noting("${A}-${KEY}-${B}", &env, &mut unset, &mut used).unwrap();
        assert_eq!(out, "-sk-123-");
        assert_eq!(unset, ["A", "B"]);
        let line = "providers[0].base_url: \"sk-123\" is not a URL (sk-123)";
        assert_eq!(
            redact(line, &used),
            "providers[0].base_url: <$KEY> is not a URL (<$KEY>)"
        );
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
