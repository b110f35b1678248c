//! The FCM HTTP v1 message for one device.

use domain::PushToken;
use ports::PushMessage;
use serde_json::{Map, Value, json};

/// `{"message": {...}}` for `token`: the notification and data, plus the
/// Android, APNs and Web push options a mobile app needs. FCM applies the
/// block of the token's platform.
///
/// - High priority: Android `HIGH`; APNs priority 10 for a visible
///   notification (Apple refuses 10 for background pushes, which go at 5
///   with `content-available`); Web push `Urgency: high`.
/// - A data-only message is sent as a background push on iOS
///   (`content-available: 1`, `apns-push-type: background`).
/// - `collapse_key` is Android's `collapse_key`, APNs' `apns-collapse-id`
///   and Web push's `Topic`.
pub fn fcm_message(token: &PushToken, m: &PushMessage) -> Value {
    let mut message = Map::new();
    message.insert("token".into(), token.as_str().into());
    if m.is_visible() {
        let mut n = Map::new();
        if let Some(t) = &m.title {
            n.insert("title".into(), t.as_str().into());
        }
        if let Some(b) = &m.body {
            n.insert("body".into(), b.as_str().into());
        }
        message.insert("notification".into(), n.into());
    }
    if !m.data.is_empty() {
        message.insert("data".into(), json!(m.data));
    }

    let mut android = Map::new();
    android.insert(
        "priority".into(),
        if m.high_priority { "HIGH" } else { "NORMAL" }.into(),
    );
    if let Some(k) = &m.collapse_key {
        android.insert("collapse_key".into(), k.as_str().into());
    }
    if m.is_visible() {
        let mut n = Map::new();
        if let Some(s) = &m.sound {
            n.insert("sound".into(), s.as_str().into());
        }
        if let Some(b) = m.badge {
            n.insert("notification_count".into(), b.into());
        }
        if !n.is_empty() {
            android.insert("notification".into(), n.into());
        }
    }
    message.insert("android".into(), android.into());

    let mut headers = Map::new();
    let mut aps = Map::new();
    if m.is_visible() {
        headers.insert(
            "apns-priority".into(),
            if m.high_priority { "10" } else { "5" }.into(),
        );
        headers.insert("apns-push-type".into(), "alert".into());
        if let Some(s) = &m.sound {
            aps.insert("sound".into(), s.as_str().into());
        }
    } else {
        headers.insert("apns-priority".into(), "5".into());
        headers.insert("apns-push-type".into(), "background".into());
        aps.insert("content-available".into(), 1.into());
    }
    if let Some(b) = m.badge {
        aps.insert("badge".into(), b.into());
    }
    if let Some(k) = &m.collapse_key {
        headers.insert("apns-collapse-id".into(), k.as_str().into());
    }
    let mut apns = Map::new();
    apns.insert("headers".into(), headers.into());
    if !aps.is_empty() {
        apns.insert("payload".into(), json!({ "aps": aps }));
    }
    message.insert("apns".into(), apns.into());

    let mut web = Map::new();
    web.insert(
        "Urgency".into(),
        if m.high_priority { "high" } else { "normal" }.into(),
    );
    if let Some(k) = &m.collapse_key {
        web.insert("Topic".into(), k.as_str().into());
    }
    message.insert("webpush".into(), json!({ "headers": web }));

    json!({ "message": message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn token() -> PushToken {
        PushToken::parse("device-token-1").unwrap()
    }

    #[test]
    fn a_visible_high_priority_message_carries_every_platform_option() {
        let m = PushMessage {
            title: Some("New message".into()),
            body: Some("Ada: hi".into()),
            data: BTreeMap::from([("chat_id".into(), "42".into())]),
            high_priority: true,
            sound: Some("default".into()),
            badge: Some(3),
            collapse_key: Some("chat-42".into()),
        };
        assert_eq!(
            fcm_message(&token(), &m),
            json!({"message": {
                "token": "device-token-1",
                "notification": {"title": "New message", "body": "Ada: hi"},
                "data": {"chat_id": "42"},
                "android": {
                    "priority": "HIGH",
                    "collapse_key": "chat-42",
                    "notification": {"sound": "default", "notification_count": 3},
                },
                "apns": {
                    "headers": {"apns-priority": "10", "apns-push-type": "alert", "apns-collapse-id": "chat-42"},
                    "payload": {"aps": {"sound": "default", "badge": 3}},
                },
                "webpush": {"headers": {"Urgency": "high", "Topic": "chat-42"}},
            }})
        );
    }

    #[test]
    fn a_data_only_message_is_a_background_push_on_ios() {
        let m = PushMessage {
            data: BTreeMap::from([("sync".into(), "1".into())]),
            high_priority: true,
            ..PushMessage::default()
        };
        assert_eq!(
            fcm_message(&token(), &m),
            json!({"message": {
                "token": "device-token-1",
                "data": {"sync": "1"},
                "android": {"priority": "HIGH"},
                "apns": {
                    "headers": {"apns-priority": "5", "apns-push-type": "background"},
                    "payload": {"aps": {"content-available": 1}},
                },
                "webpush": {"headers": {"Urgency": "high"}},
            }})
        );
    }
}
