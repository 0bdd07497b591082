//! Content parts (`text`, `image_url`, ...) → IR, for request and response
//! decoding alike.

use serde_json::Value;

use super::{expected, req_string, take};
use crate::{ContentPart, ImageSource, TranslateError};

/// One element of a content array.
pub(super) fn decode_part(p: Value, path: &str, j: usize) -> Result<ContentPart, TranslateError> {
    let mut p = match p {
        Value::Object(p) => p,
        v => {
            return Err(expected(
                format_args!("{path}[{j}]"),
                "a content part object",
                &v,
            ))
        }
    };
    let ty = match p.remove("type") {
        Some(Value::String(s)) => s,
        None if p.contains_key("text") => "text".to_owned(),
        Some(v) => return Err(expected(format_args!("{path}[{j}].type"), "a string", &v)),
        None => return Err(TranslateError::new(format!("{path}[{j}].type: required"))),
    };
    let prefix = format!("{path}[{j}].");
    match ty.as_str() {
        "text" | "input_text" | "output_text" => Ok(ContentPart::Text {
            text: req_string(&mut p, "text", &prefix)?,
        }),
        "refusal" => Ok(ContentPart::Text {
            text: req_string(&mut p, "refusal", &prefix)?,
        }),
        "image_url" => {
            let url = match take(&mut p, "image_url") {
                Some(Value::Object(mut o)) => {
                    req_string(&mut o, "url", &format!("{prefix}image_url."))?
                }
                Some(Value::String(s)) => s,
                Some(v) => {
                    return Err(expected(
                        format_args!("{prefix}image_url"),
                        "an object with a url",
                        &v,
                    ))
                }
                None => return Err(TranslateError::new(format!("{prefix}image_url: required"))),
            };
            Ok(ContentPart::Image {
                source: parse_image_url(url, &format!("{prefix}image_url.url"))?,
            })
        }
        "input_audio" | "file" | "input_file" | "audio" | "video_url" | "input_video" => {
            Err(TranslateError::new(format!(
                "{path}[{j}]: content part type \"{ty}\" is not supported for translation"
            )))
        }
        other => Err(TranslateError::new(format!(
            "{path}[{j}].type: unknown content part type \"{other}\""
        ))),
    }
}

/// An `image_url.url`: http(s) or `data:<mime>[;params];base64,<data>`.
fn parse_image_url(mut url: String, path: &str) -> Result<ImageSource, TranslateError> {
    let starts = |p: &str| {
        url.as_bytes()
            .get(..p.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(p.as_bytes()))
    };
    if starts("http://") || starts("https://") {
        return Ok(ImageSource::Url { url });
    }
    if starts("data:") {
        let Some(comma) = url.find(',') else {
            return Err(TranslateError::new(format!(
                "{path}: malformed data URL (no comma)"
            )));
        };
        let meta = url.get(5..comma).unwrap_or_default();
        let mut fields = meta.split(';');
        let media_type = fields.next().unwrap_or_default().trim().to_owned();
        if !fields.any(|f| f.trim().eq_ignore_ascii_case("base64")) {
            return Err(TranslateError::new(format!(
                "{path}: only base64 data URLs are supported"
            )));
        }
        if media_type.is_empty() {
            return Err(TranslateError::new(format!(
                "{path}: data URL has no media type"
            )));
        }
        // Move the (possibly huge) payload instead of copying it.
        url.drain(..=comma);
        return Ok(ImageSource::Base64 {
            media_type,
            data: url,
        });
    }
    Err(TranslateError::new(format!(
        "{path}: expected an http(s) URL or a base64 data URL"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_urls() {
        let p = |u: &str| parse_image_url(u.to_owned(), "x");
        assert_eq!(
            p("HTTPS://a/b.png"),
            Ok(ImageSource::Url {
                url: "HTTPS://a/b.png".into()
            })
        );
        assert_eq!(
            p("data:image/webp;charset=x;base64,UklG"),
            Ok(ImageSource::Base64 {
                media_type: "image/webp".into(),
                data: "UklG".into()
            })
        );
        assert!(p("data:image/png,raw").is_err());
        assert!(p("data:;base64,AA").is_err());
        assert!(p("data:").is_err());
        assert!(p("héllo").is_err());
        assert!(p("").is_err());
    }
}
