//! Pagination: offset pages (`PageRequest` -> `Page<T>`) and keyset pages with
//! opaque, tamper-evident cursors (`CursorPage<T>`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::Sha256;
use thiserror::Error;

/// A request for one page of an offset-paginated list. Whatever the caller
/// passes, `page >= 1` and `1 <= per_page <= 100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PageRequest {
    page: u32,
    per_page: u32,
}

impl PageRequest {
    pub const DEFAULT_PAGE: u32 = 1;
    pub const DEFAULT_PER_PAGE: u32 = 20;
    pub const MAX_PER_PAGE: u32 = 100;

    /// Clamps raw values (which may be absent, zero, negative or huge).
    pub fn new(page: Option<i64>, per_page: Option<i64>) -> Self {
        let page = page.map_or(Self::DEFAULT_PAGE, |p| {
            u32::try_from(p.clamp(1, i64::from(u32::MAX))).unwrap_or(u32::MAX)
        });
        Self {
            page,
            per_page: clamp_limit(per_page),
        }
    }

    pub fn page(&self) -> u32 {
        self.page
    }

    pub fn per_page(&self) -> u32 {
        self.per_page
    }

    /// Rows to skip: `(page - 1) * per_page`. At most `(2^32 - 2) * 100`, so it
    /// fits an `i64` (what SQL `OFFSET` takes) and can never be negative.
    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.per_page)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::new(None, None)
    }
}

/// Clamps a requested page size to `1..=100`, defaulting to 20.
pub fn clamp_limit(limit: Option<i64>) -> u32 {
    limit.map_or(PageRequest::DEFAULT_PER_PAGE, |l| {
        u32::try_from(l.clamp(1, i64::from(PageRequest::MAX_PER_PAGE)))
            .unwrap_or(PageRequest::DEFAULT_PER_PAGE)
    })
}

/// One page of an offset-paginated list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    pub total: u64,
    pub total_pages: u64,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, request: PageRequest, total: u64) -> Self {
        Self {
            items,
            page: request.page(),
            per_page: request.per_page(),
            total,
            total_pages: total.div_ceil(u64::from(request.per_page())),
        }
    }
}

/// A page of a keyset-paginated list as a repository returns it: the items and
/// the key to continue after, if there is more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysetPage<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

/// A page of a cursor-paginated list as clients see it: `next_cursor` is opaque.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorPage<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A cursor that was not made by this service (or not for this list): garbage,
/// truncated, tampered with, or too long.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid cursor")]
pub struct InvalidCursor;

/// Turns keyset positions into opaque cursors and back. A cursor is
/// `base64url(json) "." base64url(hmac_sha256(key, scope || json)[..16])`:
/// clients cannot read meaning into it, and any change to it is detected.
#[derive(Clone)]
pub struct CursorCodec {
    key: Vec<u8>,
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec { key: <redacted> }")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl CursorCodec {
    /// Cursors longer than this are refused before any decoding.
    pub const MAX_LEN: usize = 512;
    const TAG_LEN: usize = 16;

    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into() }
    }

    fn mac(&self, scope: &str, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(body);
        mac
    }

    /// Encodes `position` for the list named `scope`.
    pub fn encode<K: Serialize>(&self, scope: &str, position: &K) -> String {
        let body = serde_json::to_vec(position).unwrap_or_default();
        let tag = self.mac(scope, &body).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(&tag[..Self::TAG_LEN])
        )
    }

    /// Decodes a cursor made by [`encode`](Self::encode) with the same scope.
    pub fn decode<K: DeserializeOwned>(
        &self,
        scope: &str,
        cursor: &str,
    ) -> Result<K, InvalidCursor> {
        if cursor.len() > Self::MAX_LEN {
            return Err(InvalidCursor);
        }
        let (body, tag) = cursor.split_once('.').ok_or(InvalidCursor)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| InvalidCursor)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| InvalidCursor)?;
        if tag.len() != Self::TAG_LEN {
            return Err(InvalidCursor);
        }
        self.mac(scope, &body)
            .verify_truncated_left(&tag)
            .map_err(|_| InvalidCursor)?;
        serde_json::from_slice(&body).map_err(|_| InvalidCursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_page_one_of_twenty() {
        let r = PageRequest::default();
        assert_eq!((r.page(), r.per_page(), r.offset()), (1, 20, 0));
    }

    #[test]
    fn page_counts_round_up() {
        let r = PageRequest::new(Some(2), Some(10));
        let p = Page::new(vec![1, 2], r, 21);
        assert_eq!(p.total_pages, 3);
        assert_eq!(Page::<u8>::new(vec![], r, 0).total_pages, 0);
        assert_eq!(r.offset(), 10);
    }

    proptest! {
        #[test]
        fn any_input_is_clamped(page in proptest::option::of(any::<i64>()), per_page in proptest::option::of(any::<i64>())) {
            let r = PageRequest::new(page, per_page);
            prop_assert!(r.page() >= 1);
            prop_assert!((1..=100).contains(&r.per_page()));
            if let Some(pp) = per_page {
                prop_assert_eq!(i64::from(r.per_page()), pp.clamp(1, 100));
            }
        }

        #[test]
        fn offset_never_overflows_and_fits_sql(page in any::<i64>(), per_page in any::<i64>()) {
            let r = PageRequest::new(Some(page), Some(per_page));
            let offset = r.offset();
            prop_assert!(i64::try_from(offset).is_ok());
            prop_assert_eq!(offset, (u64::from(r.page()) - 1) * u64::from(r.per_page()));
        }

        #[test]
        fn cursors_round_trip(a in any::<i64>(), b in ".{0,40}") {
            let codec = CursorCodec::new(b"k".to_vec());
            let c = codec.encode("s", &(a, b.clone()));
            prop_assert_eq!(codec.decode::<(i64, String)>("s", &c), Ok((a, b)));
        }

        #[test]
        fn garbage_cursors_are_refused_without_panic(s in ".{0,600}") {
            let codec = CursorCodec::new(b"k".to_vec());
            prop_assert!(codec.decode::<(i64, String)>("s", &s).is_err());
        }
    }

    #[test]
    fn tampered_or_foreign_cursors_are_refused() {
        let codec = CursorCodec::new(b"secret".to_vec());
        let c = codec.encode("tokens", &(42_i64, "x"));
        let (body, tag) = c.split_once('.').unwrap();
        let forged_body = URL_SAFE_NO_PAD.encode(br#"[43,"x"]"#);
        assert_eq!(
            codec.decode::<(i64, String)>("tokens", &format!("{forged_body}.{tag}")),
            Err(InvalidCursor)
        );
        assert_eq!(
            codec.decode::<(i64, String)>("users", &c),
            Err(InvalidCursor)
        );
        let other = CursorCodec::new(b"other".to_vec());
        assert_eq!(
            other.decode::<(i64, String)>("tokens", &c),
            Err(InvalidCursor)
        );
        assert_eq!(
            codec.decode::<(i64, String)>("tokens", &format!("{body}.")),
            Err(InvalidCursor)
        );
        assert!(codec.decode::<(i64, String)>("tokens", &c).is_ok());
    }

    #[test]
    fn limits_clamp_into_range() {
        assert_eq!(clamp_limit(None), 20);
        assert_eq!(clamp_limit(Some(0)), 1);
        assert_eq!(clamp_limit(Some(-5)), 1);
        assert_eq!(clamp_limit(Some(1000)), 100);
        assert_eq!(clamp_limit(Some(i64::MIN)), 1);
    }
}
