//! The console's pages, compiled into the binary (no CDN, no build step):
//! one HTML page, its stylesheet and script, hand-written.

/// Served with every console file: only the gateway's own scripts, styles
/// and API; nothing inline, nothing from elsewhere.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON: &str = include_str!("assets/icon.svg");

/// The content type and bytes of console file `name` (`""`: the page).
pub fn get(name: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match name {
        "" | "index.html" => ("text/html; charset=utf-8", INDEX.as_bytes()),
        "app.js" => ("text/javascript; charset=utf-8", APP_JS.as_bytes()),
        "app.css" => ("text/css; charset=utf-8", APP_CSS.as_bytes()),
        "icon.svg" => ("image/svg+xml", ICON.as_bytes()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_compiled_in_files() {
        let (ctype, page) = get("").unwrap();
        assert!(ctype.starts_with("text/html"));
        let page = std::str::from_utf8(page).unwrap();
        for href in ["app.js", "app.css", "icon.svg"] {
            assert!(page.contains(href), "{href}");
            assert!(get(href).is_some(), "{href}");
        }
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(get("../Cargo.toml").is_none());
    }
}
