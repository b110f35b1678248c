//! The app a request comes from (`X-App-Platform`, `X-App-Version`), and
//! the oldest version of each platform the service still serves.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Where a client app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppPlatform {
    Ios,
    Android,
    Web,
}

impl AppPlatform {
    pub const ALL: [Self; 3] = [Self::Ios, Self::Android, Self::Web];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ios => "ios",
            Self::Android => "android",
            Self::Web => "web",
        }
    }
}

impl FromStr for AppPlatform {
    type Err = InvalidAppVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or(InvalidAppVersion::Platform)
    }
}

/// A release version: `major.minor.patch` (a missing part is 0; a
/// pre-release or build suffix after `-` or `+` is kept for display and
/// ignored in comparisons).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidAppVersion {
    #[error("X-App-Platform must be ios, android or web")]
    Platform,
    #[error("X-App-Version must be a version like 2.4.1")]
    Version,
}

impl FromStr for AppVersion {
    type Err = InvalidAppVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let core = s.split(['-', '+']).next().unwrap_or_default();
        if core.is_empty() || s.len() > 64 {
            return Err(InvalidAppVersion::Version);
        }
        let mut parts = [0u32; 3];
        for (n, part) in core.split('.').enumerate() {
            let slot = parts.get_mut(n).ok_or(InvalidAppVersion::Version)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidAppVersion::Version);
            }
            *slot = part.parse().map_err(|_| InvalidAppVersion::Version)?;
        }
        Ok(Self {
            major: parts[0],
            minor: parts[1],
            patch: parts[2],
        })
    }
}

impl fmt::Display for AppVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl PartialOrd for AppVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AppVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch))
    }
}

/// The oldest version served per platform, and where to get a newer one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppVersionPolicy {
    pub min_ios: Option<AppVersion>,
    pub min_android: Option<AppVersion>,
    pub min_web: Option<AppVersion>,
    pub store_url_ios: Option<String>,
    pub store_url_android: Option<String>,
    pub store_url_web: Option<String>,
    /// Refuse requests that do not say which app they come from.
    pub require: bool,
}

/// What the policy says of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionVerdict {
    /// Served; the app, when it said which.
    Allowed(Option<(AppPlatform, AppVersion)>),
    /// Too old (or, with `require`, unnamed): upgrade first.
    UpgradeRequired {
        platform: Option<AppPlatform>,
        min: Option<AppVersion>,
        store_url: Option<String>,
    },
    /// The headers are there but do not parse.
    Invalid(InvalidAppVersion),
}

impl AppVersionPolicy {
    pub fn min(&self, platform: AppPlatform) -> Option<&AppVersion> {
        match platform {
            AppPlatform::Ios => self.min_ios.as_ref(),
            AppPlatform::Android => self.min_android.as_ref(),
            AppPlatform::Web => self.min_web.as_ref(),
        }
    }

    pub fn store_url(&self, platform: AppPlatform) -> Option<&String> {
        match platform {
            AppPlatform::Ios => self.store_url_ios.as_ref(),
            AppPlatform::Android => self.store_url_android.as_ref(),
            AppPlatform::Web => self.store_url_web.as_ref(),
        }
    }

    /// Whether a request with these header values is served.
    pub fn check(&self, platform: Option<&str>, version: Option<&str>) -> VersionVerdict {
        // Each header that is there must parse.
        let platform = match platform.map(str::parse::<AppPlatform>).transpose() {
            Ok(p) => p,
            Err(e) => return VersionVerdict::Invalid(e),
        };
        let version = match version.map(str::parse::<AppVersion>).transpose() {
            Ok(v) => v,
            Err(e) => return VersionVerdict::Invalid(e),
        };
        let (platform, version) = match (platform, version) {
            (Some(p), Some(v)) => (p, v),
            // One without the other cannot be checked: the app is unnamed.
            _ if !self.require => return VersionVerdict::Allowed(None),
            _ => {
                return VersionVerdict::UpgradeRequired {
                    platform: None,
                    min: None,
                    store_url: None,
                };
            }
        };
        match self.min(platform) {
            Some(min) if version < *min => VersionVerdict::UpgradeRequired {
                platform: Some(platform),
                min: Some(min.clone()),
                store_url: self.store_url(platform).cloned(),
            },
            _ => VersionVerdict::Allowed(Some((platform, version))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> AppVersion {
        s.parse().unwrap()
    }

    #[test]
    fn versions_parse_and_compare_numerically() {
        assert_eq!(
            v("2.4.1"),
            AppVersion {
                major: 2,
                minor: 4,
                patch: 1
            }
        );
        assert_eq!(v("2"), v("2.0.0"));
        assert_eq!(v("2.4.1-beta.3+77"), v("2.4.1"));
        assert!(v("2.10.0") > v("2.9.9"));
        assert!(v("10.0") > v("9.99.99"));
        for bad in ["", "a.b", "1..2", "1.2.3.4", "-1", "1.2.x", "99999999999"] {
            assert!(bad.parse::<AppVersion>().is_err(), "{bad:?}");
        }
        assert_eq!("IOS".parse::<AppPlatform>(), Ok(AppPlatform::Ios));
        assert!("windows".parse::<AppPlatform>().is_err());
    }

    #[test]
    fn the_policy_refuses_only_what_is_older_than_its_platforms_minimum() {
        let policy = AppVersionPolicy {
            min_ios: Some(v("2.0.0")),
            store_url_ios: Some("https://apps.apple.com/app/id1".into()),
            ..AppVersionPolicy::default()
        };
        assert_eq!(policy.check(None, None), VersionVerdict::Allowed(None));
        assert_eq!(
            policy.check(Some("ios"), Some("1.9.9")),
            VersionVerdict::UpgradeRequired {
                platform: Some(AppPlatform::Ios),
                min: Some(v("2.0.0")),
                store_url: Some("https://apps.apple.com/app/id1".into())
            }
        );
        assert_eq!(
            policy.check(Some("ios"), Some("2.0.0")),
            VersionVerdict::Allowed(Some((AppPlatform::Ios, v("2.0.0"))))
        );
        assert!(matches!(
            policy.check(Some("android"), Some("0.1")),
            VersionVerdict::Allowed(_)
        ));
        assert_eq!(
            policy.check(Some("ios"), Some("two")),
            VersionVerdict::Invalid(InvalidAppVersion::Version)
        );
        assert_eq!(
            policy.check(None, Some("1.0.0")),
            VersionVerdict::Allowed(None),
            "a version without its platform names no app"
        );
        assert_eq!(
            policy.check(None, Some("{}")),
            VersionVerdict::Invalid(InvalidAppVersion::Version),
            "but what is sent must parse"
        );
        let strict = AppVersionPolicy {
            require: true,
            ..policy
        };
        for (p, v) in [(None, None), (Some("ios"), None), (None, Some("3.0.0"))] {
            assert!(matches!(
                strict.check(p, v),
                VersionVerdict::UpgradeRequired { platform: None, .. }
            ));
        }
    }
}
