//! AWS Signature Version 4 for S3, as far as presigning needs it: query
//! string signatures (GET, HEAD, DELETE, listing) and POST policies.
//!
//! Hand-written on `hmac` and `sha2` (see the crate docs for why): the
//! canonical request, string to sign and signing key follow AWS's
//! "Authenticating Requests: Using Query Parameters" and "Browser-Based
//! Uploads Using POST" pages, and the tests check them against the worked
//! examples published there.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// An access key, its secret and the region requests are signed for.
#[derive(Clone)]
pub(crate) struct Signer {
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) region: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key", &self.access_key)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters
/// kept, everything else `%XX` (upper case); `/` kept when `keep_slash`.
pub(crate) fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn amz_date(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

fn short_date(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d").to_string()
}

impl Signer {
    fn scope(&self, at: DateTime<Utc>) -> String {
        format!("{}/{}/s3/aws4_request", short_date(at), self.region)
    }

    fn credential(&self, at: DateTime<Utc>) -> String {
        format!("{}/{}", self.access_key, self.scope(at))
    }

    fn signing_key(&self, at: DateTime<Utc>) -> Vec<u8> {
        let k = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            short_date(at).as_bytes(),
        );
        let k = hmac(&k, self.region.as_bytes());
        let k = hmac(&k, b"s3");
        hmac(&k, b"aws4_request")
    }

    /// The query string (without `?`) that presigns `method` on `path`
    /// (already the bucket's path, unencoded) at `host` (with `:port`
    /// when not the scheme's default), with `extra` query parameters.
    pub(crate) fn presign_query(
        &self,
        method: &str,
        host: &str,
        path: &str,
        extra: &[(&str, &str)],
        expires_secs: u64,
        at: DateTime<Utc>,
    ) -> String {
        self.presign_query_with_headers(method, host, path, extra, &[], expires_secs, at)
    }

    /// Like [`Signer::presign_query`], also signing `headers` (lower-case
    /// names, sorted, none of them `host`) that the request then sends.
    #[expect(clippy::too_many_arguments, reason = "the parts of one request")]
    pub(crate) fn presign_query_with_headers(
        &self,
        method: &str,
        host: &str,
        path: &str,
        extra: &[(&str, &str)],
        headers: &[(&str, &str)],
        expires_secs: u64,
        at: DateTime<Utc>,
    ) -> String {
        let signed_headers = std::iter::once("host")
            .chain(headers.iter().map(|(k, _)| *k))
            .collect::<Vec<_>>()
            .join(";");
        let mut params: BTreeMap<String, String> = extra
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        for (k, v) in [
            ("X-Amz-Algorithm", ALGORITHM.to_owned()),
            ("X-Amz-Credential", self.credential(at)),
            ("X-Amz-Date", amz_date(at)),
            ("X-Amz-Expires", expires_secs.to_string()),
            ("X-Amz-SignedHeaders", signed_headers.clone()),
        ] {
            params.insert(uri_encode(k, false), uri_encode(&v, false));
        }
        let query = params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let canonical_headers: String = std::iter::once(("host", host))
            .chain(headers.iter().copied())
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let canonical = format!(
            "{method}\n{}\n{query}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD",
            uri_encode(path, true)
        );
        let to_sign = format!(
            "{ALGORITHM}\n{}\n{}\n{}",
            amz_date(at),
            self.scope(at),
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let signature = hex(&hmac(&self.signing_key(at), to_sign.as_bytes()));
        format!("{query}&X-Amz-Signature={signature}")
    }

    /// The form fields of a POST policy with `conditions` (besides the
    /// signature's own), expiring at `expires`.
    pub(crate) fn post_fields(
        &self,
        conditions: Vec<serde_json::Value>,
        fields: BTreeMap<String, String>,
        expires: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> BTreeMap<String, String> {
        let mut fields = fields;
        fields.insert("x-amz-algorithm".into(), ALGORITHM.into());
        fields.insert("x-amz-credential".into(), self.credential(at));
        fields.insert("x-amz-date".into(), amz_date(at));
        let mut all = conditions;
        for k in ["x-amz-algorithm", "x-amz-credential", "x-amz-date"] {
            all.push(serde_json::json!({ k: fields[k] }));
        }
        let policy = serde_json::json!({
            "expiration": expires.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "conditions": all,
        });
        let encoded = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
        let signature = hex(&hmac(&self.signing_key(at), encoded.as_bytes()));
        fields.insert("policy".into(), encoded);
        fields.insert("x-amz-signature".into(), signature);
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn example() -> Signer {
        // The credentials of AWS's published SigV4 examples.
        Signer {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn a_presigned_get_matches_the_aws_worked_example() {
        // "Authenticating Requests: Using Query Parameters (AWS Signature
        // Version 4)", the example for GET /test.txt, 86400 s.
        let at = Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap();
        let q = example().presign_query(
            "GET",
            "examplebucket.s3.amazonaws.com",
            "/test.txt",
            &[],
            86_400,
            at,
        );
        assert!(
            q.ends_with(
                "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            ),
            "{q}"
        );
        assert!(q.starts_with("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"));
    }

    #[test]
    fn the_signing_key_matches_the_aws_post_example() {
        // "Example: Browser-Based Upload using HTTP POST (Using AWS
        // Signature Version 4)": the published policy and its signature.
        let at = Utc.with_ymd_and_hms(2015, 12, 29, 0, 0, 0).unwrap();
        let policy = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
        let signature = hex(&hmac(&example().signing_key(at), policy.as_bytes()));
        assert_eq!(
            signature,
            "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
        );
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(uri_encode("a b/c~d.e_f-g", false), "a%20b%2Fc~d.e_f-g");
        assert_eq!(uri_encode("users/1 2", true), "users/1%202");
        assert_eq!(uri_encode("é", false), "%C3%A9");
    }
}
