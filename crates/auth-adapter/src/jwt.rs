//! Splitting and decoding the parts of a compact JWT by hand, before any key
//! is looked at (and for `alg: none`, which jsonwebtoken cannot parse).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ports::InvalidToken;
use serde::Deserialize;

/// The JOSE header fields we look at.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
}

/// The three segments of a compact JWT.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

pub(crate) fn split(token: &str) -> Result<Parts<'_>, InvalidToken> {
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(header), Some(payload), Some(signature), None)
            if !header.is_empty() && !payload.is_empty() =>
        {
            Ok(Parts {
                header,
                payload,
                signature,
            })
        }
        _ => Err(InvalidToken::Malformed),
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, InvalidToken> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| InvalidToken::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| InvalidToken::Malformed)
}

pub(crate) fn header(parts: &Parts<'_>) -> Result<Header, InvalidToken> {
    decode_json(parts.header)
}

pub(crate) fn payload<T: serde::de::DeserializeOwned>(
    parts: &Parts<'_>,
) -> Result<T, InvalidToken> {
    let bytes = URL_SAFE_NO_PAD
        .decode(parts.payload.trim_end_matches('='))
        .map_err(|_| InvalidToken::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        InvalidToken::BadClaim(match e.classify() {
            serde_json::error::Category::Data => "a claim has the wrong type".into(),
            _ => "the payload is not JSON".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_three_non_empty_leading_segments_are_a_jwt() {
        assert!(split("a.b.c").is_ok());
        assert!(
            split("a.b.").is_ok(),
            "an empty signature is allowed (alg none)"
        );
        for bad in ["", "a", "a.b", "a.b.c.d", ".b.c", "a..c", "...."] {
            assert_eq!(split(bad).unwrap_err(), InvalidToken::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn garbage_segments_are_malformed_not_panics() {
        let parts = split("!!!.@@@.###").unwrap();
        assert_eq!(header(&parts).unwrap_err(), InvalidToken::Malformed);
        let parts = split("e30.e30.x").unwrap();
        assert_eq!(
            header(&parts).unwrap_err(),
            InvalidToken::Malformed,
            "{{}} has no alg"
        );
    }
}
