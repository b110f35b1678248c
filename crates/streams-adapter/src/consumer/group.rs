//! The raw consumer-group commands of one consumer: what it says to Redis,
//! apart from what it decides.

use super::*;

/// KEYS: the stream. ARGV: max_len. When the stream is longer than
/// max_len, trims (`XTRIM MINID ~`) below the oldest entry any group still
/// needs: its oldest pending entry, or, with none pending, the last one it
/// was given (everything before it is acknowledged). A stream without groups
/// is left alone: a group created later would start from its beginning.
/// Returns {length before, entries trimmed}.
const TRIM_ACKNOWLEDGED: &str = r"
local len = redis.call('XLEN', KEYS[1])
if len <= tonumber(ARGV[1]) then return {len, 0} end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local floor = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local needed = f['last-delivered-id']
  if tonumber(f['pending']) > 0 then
    needed = redis.call('XPENDING', KEYS[1], f['name'])[2]
  end
  if floor == nil or less(needed, floor) then floor = needed end
end
if floor == nil then return {len, 0} end
return {len, redis.call('XTRIM', KEYS[1], 'MINID', '~', floor)}
";

impl RedisStreamConsumer {
    pub(super) async fn ensure_group(&self) -> Result<(), fred::error::Error> {
        let args = vec![
            v("CREATE"),
            v(self.settings.stream()),
            v(&*self.settings.group),
            v("0"),
            v("MKSTREAM"),
        ];
        match command(&self.client, "XGROUP", false, args).await {
            Ok(_) => {
                tracing::info!(stream = %self.settings.stream(), group = %self.settings.group, "created consumer group");
                Ok(())
            }
            Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn read(&self, own_pending: bool) -> Result<Vec<Entry>, fred::error::Error> {
        let s = &self.settings;
        let mut args = vec![
            v("GROUP"),
            v(&*s.group),
            v(&*s.consumer),
            v("COUNT"),
            Value::Integer(s.batch as i64),
        ];
        if !own_pending {
            args.extend([v("BLOCK"), Value::Integer(s.block.as_millis() as i64)]);
        }
        args.extend([
            v("STREAMS"),
            v(s.stream()),
            v(if own_pending { "0" } else { ">" }),
        ]);
        command(&self.client, "XREADGROUP", !own_pending, args)
            .await
            .map(reply::xreadgroup)
    }

    /// Delivery counts of this consumer's pending entries between two ids.
    pub(super) async fn deliveries(
        &self,
        entries: &[Entry],
    ) -> Result<HashMap<String, u64>, fred::error::Error> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(HashMap::new());
        };
        let s = &self.settings;
        let args = vec![
            v(s.stream()),
            v(&*s.group),
            v(&*first.id),
            v(&*last.id),
            Value::Integer(entries.len() as i64 * 4 + 16),
            v(&*s.consumer),
        ];
        let reply = command(&self.client, "XPENDING", false, args).await?;
        Ok(reply::xpending_deliveries(reply).into_iter().collect())
    }

    pub(super) async fn ack(&self, ids: &[String]) -> Result<(), fred::error::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec![v(self.settings.stream()), v(&*self.settings.group)];
        args.extend(ids.iter().map(|id| v(&**id)));
        command(&self.client, "XACK", false, args).await.map(drop)
    }

    pub(super) async fn dead_letter(
        &self,
        entry: &Entry,
        reason: &str,
        deliveries: u64,
    ) -> Result<(), fred::error::Error> {
        let s = &self.settings;
        let mut args = vec![
            v(s.dead_letter_stream()),
            v("MAXLEN"),
            v("~"),
            Value::Integer(100_000),
            v("*"),
            v("original_id"),
            v(&*entry.id),
            v("group"),
            v(&*s.group),
            v("consumer"),
            v(&*s.consumer),
            v("reason"),
            v(reason),
            v("deliveries"),
            v(deliveries.to_string()),
        ];
        for (k, val) in &entry.fields {
            args.extend([v(&**k), v(&**val)]);
        }
        command(&self.client, "XADD", false, args).await?;
        metrics::counter!("stream_dead_letters_total", "stream" => s.stream(), "group" => s.group.clone()).increment(1);
        tracing::error!(stream = %s.stream(), group = %s.group, entry = %entry.id, deliveries, reason, "entry dead-lettered");
        Ok(())
    }

    /// Which of `ids` were processed before (a pipelined `MGET`).
    pub(super) async fn seen(
        &self,
        events: &[&EventEnvelope],
    ) -> Result<Vec<bool>, fred::error::Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<Value> = events
            .iter()
            .map(|e| v(self.settings.seen_key(&e.id)))
            .collect();
        let reply = command(&self.client, "MGET", false, args).await?;
        Ok(match reply {
            Value::Array(values) => values.iter().map(|x| !x.is_null()).collect(),
            other => vec![!other.is_null()],
        })
    }

    pub(super) async fn mark_seen(&self, events: &[uuid::Uuid]) -> Result<(), fred::error::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let pipeline = self.client.pipeline();
        let ttl = self.settings.dedupe_ttl.as_secs().max(1) as i64;
        for id in events {
            let args = vec![
                v(self.settings.seen_key(id)),
                v("1"),
                v("EX"),
                Value::Integer(ttl),
            ];
            let _: () = pipeline
                .custom(
                    fred::types::CustomCommand::new_static(
                        "SET",
                        fred::types::ClusterHash::FirstKey,
                        false,
                    ),
                    args,
                )
                .await?;
        }
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }

    /// Trims what every group has acknowledged once the stream is longer
    /// than `max_len` (see there). One script, so the groups' positions and
    /// the trim agree.
    pub(super) async fn trim(&self) -> Result<(), fred::error::Error> {
        let s = &self.settings;
        let args = vec![
            v(TRIM_ACKNOWLEDGED),
            Value::Integer(1),
            v(s.stream()),
            Value::Integer(i64::try_from(s.max_len).unwrap_or(i64::MAX)),
        ];
        let reply = command(&self.client, "EVAL", false, args).await?;
        if let Value::Array(parts) = reply {
            let n = |i: usize| parts.get(i).and_then(Value::as_u64).unwrap_or(0);
            let (length, trimmed) = (n(0), n(1));
            metrics::gauge!("stream_length", "stream" => s.stream())
                .set(length.saturating_sub(trimmed) as f64);
            if trimmed > 0 {
                metrics::counter!("stream_entries_trimmed_total", "stream" => s.stream())
                    .increment(trimmed);
                tracing::debug!(stream = %s.stream(), trimmed, "trimmed acknowledged entries");
            }
        }
        Ok(())
    }

    /// Lag, pending and dead-letter gauges (best effort).
    pub(super) async fn report_metrics(&self) {
        let s = &self.settings;
        let labels = [("stream", s.stream()), ("group", s.group.clone())];
        if let Ok(reply) = command(
            &self.client,
            "XINFO",
            false,
            vec![v("GROUPS"), v(s.stream())],
        )
        .await
            && let Some(g) = reply::xinfo_groups(reply)
                .into_iter()
                .find(|g| g.name == s.group)
        {
            metrics::gauge!("stream_group_pending", &labels).set(g.pending as f64);
            if let Some(lag) = g.lag {
                metrics::gauge!("stream_group_lag", &labels).set(lag as f64);
            }
        }
        if let Ok(n) = command(&self.client, "XLEN", false, vec![v(s.dead_letter_stream())]).await
            && let Some(n) = n.as_u64()
        {
            metrics::gauge!("stream_dead_letter_length", &labels).set(n as f64);
        }
    }
}
