//! Model names as clients send them: bounded and printable before they go
//! anywhere (routing, upstream bodies, logs, metric labels).

use crate::error::GatewayError;

/// 400 for a name longer than `max` bytes or holding control characters.
pub fn check(names: &[String], max: usize) -> Result<(), GatewayError> {
    for n in names {
        if n.len() > max {
            return Err(GatewayError::bad_request(format!(
                "model name is {} bytes long; at most {max} are accepted",
                n.len()
            )));
        }
        if n.chars().any(char::is_control) {
            return Err(GatewayError::bad_request(
                "model name must not contain control characters",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_or_control_names_are_refused() {
        assert!(check(&["gpt-4o".into()], 256).is_ok());
        assert_eq!(check(&["x".repeat(257)], 256).unwrap_err().status, 400);
        assert_eq!(check(&["a\nb".into()], 256).unwrap_err().status, 400);
    }
}
