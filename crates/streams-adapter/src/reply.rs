//! Parsing the stream replies we need from fred's untyped `Value`s. fred's
//! typed helpers drop parts of some replies (XAUTOCLAIM's deleted ids), so the
//! commands that matter go through `custom` and are read here.

use fred::clients::Client;
use fred::interfaces::ClientLike as _;
use fred::prelude::{Error, Value};
use fred::types::CustomCommand;

/// One stream entry: its id and field/value pairs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub id: String,
    pub fields: Vec<(String, String)>,
}

impl Entry {
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn string(v: &Value) -> Option<String> {
    v.as_string()
}

fn pairs(v: Value) -> Vec<(String, String)> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| Some((string(kv.first()?)?, string(kv.get(1)?)?)))
            .collect(),
        Value::Map(map) => map
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), string(&v)?)))
            .collect(),
        _ => Vec::new(),
    }
}

/// `[id, [field, value, ...]]`; a deleted entry (`[id, nil]` or `nil`) is `None`.
fn entry(v: Value) -> Option<Entry> {
    let Value::Array(mut parts) = v else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let id = string(&parts.pop()?)?;
    if fields.is_null() {
        return None;
    }
    Some(Entry {
        id,
        fields: pairs(fields),
    })
}

pub(crate) fn entries(v: Value) -> Vec<Entry> {
    match v {
        Value::Array(items) => items.into_iter().filter_map(entry).collect(),
        _ => Vec::new(),
    }
}

/// XREADGROUP for one stream: `nil` (timeout), `[[stream, entries]]` (RESP2)
/// or `{stream: entries}` (RESP3).
pub(crate) fn xreadgroup(v: Value) -> Vec<Entry> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .flat_map(entries)
            .collect(),
        Value::Map(map) => map.inner().into_values().flat_map(entries).collect(),
        _ => Vec::new(),
    }
}

/// XAUTOCLAIM: `[next_cursor, entries, deleted_ids]` (the last only on Redis 7).
pub(crate) struct AutoClaim {
    pub next: String,
    pub entries: Vec<Entry>,
    pub deleted: Vec<String>,
}

pub(crate) fn xautoclaim(v: Value) -> AutoClaim {
    let mut parts = match v {
        Value::Array(p) => p.into_iter(),
        _ => Vec::new().into_iter(),
    };
    let next = parts
        .next()
        .and_then(|v| string(&v))
        .unwrap_or_else(|| "0-0".into());
    let entries = parts.next().map(entries).unwrap_or_default();
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids.iter().filter_map(string).collect(),
        _ => Vec::new(),
    };
    AutoClaim {
        next,
        entries,
        deleted,
    }
}

/// XPENDING (extended form): `[[id, consumer, idle_ms, deliveries], ...]` -> (id, deliveries).
pub(crate) fn xpending_deliveries(v: Value) -> Vec<(String, u64)> {
    match v {
        Value::Array(rows) => rows
            .into_iter()
            .filter_map(|row| match row {
                Value::Array(f) if f.len() == 4 => Some((string(&f[0])?, f[3].as_u64()?)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The groups of an `XINFO GROUPS` reply (RESP2 pairs or RESP3 maps).
pub(crate) fn xinfo_groups(v: Value) -> Vec<ports::StreamGroup> {
    let Value::Array(groups) = v else {
        return Vec::new();
    };
    groups
        .into_iter()
        .filter_map(|g| {
            let fields: std::collections::HashMap<String, Value> = match g {
                Value::Array(kv) => kv
                    .chunks(2)
                    .filter_map(|c| Some((string(&c[0])?, c.get(1)?.clone())))
                    .collect(),
                Value::Map(m) => m
                    .inner()
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
                    .collect(),
                _ => return None,
            };
            let n = |k: &str| fields.get(k).and_then(Value::as_u64);
            Some(ports::StreamGroup {
                name: fields.get("name").and_then(string)?,
                consumers: n("consumers").unwrap_or(0),
                pending: n("pending").unwrap_or(0),
                lag: n("lag"),
            })
        })
        .collect()
}

/// Runs `cmd args...` and returns the raw reply. On a Redis Cluster it goes
/// to the node of the command's (first) key.
pub(crate) async fn command(
    client: &Client,
    cmd: &'static str,
    blocking: bool,
    args: Vec<Value>,
) -> Result<Value, Error> {
    let hash = key_position(cmd, &args);
    client
        .custom::<Value, Value>(CustomCommand::new_static(cmd, hash, blocking), args)
        .await
}

/// Where the key that routes `cmd` is among its arguments.
fn key_position(cmd: &str, args: &[Value]) -> fred::types::ClusterHash {
    use fred::types::ClusterHash;
    match cmd {
        // EVAL script numkeys key ...
        "EVAL" => ClusterHash::Offset(2),
        // XGROUP CREATE key ..., XINFO GROUPS key
        "XGROUP" | "XINFO" => ClusterHash::Offset(1),
        // XREADGROUP GROUP g c [COUNT n] [BLOCK ms] STREAMS key ... id ...
        "XREADGROUP" => args
            .iter()
            .position(|a| {
                a.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("STREAMS"))
            })
            .map_or(ClusterHash::FirstKey, |i| ClusterHash::Offset(i + 1)),
        _ => ClusterHash::FirstKey,
    }
}

pub(crate) fn v(s: impl Into<String>) -> Value {
    Value::String(s.into().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        v(x)
    }

    #[test]
    fn commands_route_by_their_key_not_their_first_word() {
        use fred::types::ClusterHash;
        let xread = [
            s("GROUP"),
            s("g"),
            s("c"),
            s("COUNT"),
            s("5"),
            s("STREAMS"),
            s("k"),
            s(">"),
        ];
        assert_eq!(key_position("XREADGROUP", &xread), ClusterHash::Offset(6));
        assert_eq!(
            key_position("EVAL", &[s("return 1"), s("1"), s("k")]),
            ClusterHash::Offset(2)
        );
        assert_eq!(
            key_position("XINFO", &[s("GROUPS"), s("k")]),
            ClusterHash::Offset(1)
        );
        assert_eq!(
            key_position("XADD", &[s("k"), s("*")]),
            ClusterHash::FirstKey
        );
    }

    #[test]
    fn xreadgroup_replies_parse_in_both_shapes_and_skip_deleted_entries() {
        let resp2 = Value::Array(vec![Value::Array(vec![
            s("stream"),
            Value::Array(vec![
                Value::Array(vec![s("1-0"), Value::Array(vec![s("event"), s("{}")])]),
                Value::Array(vec![s("2-0"), Value::Null]),
            ]),
        ])]);
        let got = xreadgroup(resp2);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "1-0");
        assert_eq!(got[0].field("event"), Some("{}"));
        assert!(xreadgroup(Value::Null).is_empty());
    }

    #[test]
    fn xautoclaim_keeps_the_deleted_ids() {
        let reply = Value::Array(vec![
            s("0-0"),
            Value::Array(vec![Value::Array(vec![
                s("5-0"),
                Value::Array(vec![s("event"), s("x")]),
            ])]),
            Value::Array(vec![s("4-0")]),
        ]);
        let c = xautoclaim(reply);
        assert_eq!(c.next, "0-0");
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.deleted, ["4-0"]);
    }

    #[test]
    fn xpending_rows_give_delivery_counts() {
        let reply = Value::Array(vec![Value::Array(vec![
            s("7-0"),
            s("c1"),
            Value::Integer(1500),
            Value::Integer(3),
        ])]);
        assert_eq!(xpending_deliveries(reply), [("7-0".to_owned(), 3)]);
    }
}
