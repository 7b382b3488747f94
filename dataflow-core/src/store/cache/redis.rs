//! The Redis cache backend: fills and invalidations are Lua scripts, so each check of the
//! stored version and the write that follows it are one atomic step on the server.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::CacheStore;
use crate::error::{Error, Result};
use crate::secrets::redact_url;

/// Keys per invalidation script call.
const INVALIDATE_BATCH: usize = 250;

/// Redis, through one multiplexed, self-reconnecting connection.
pub struct RedisCache {
    manager: ConnectionManager,
    timeout: Duration,
    fill_script: redis::Script,
    invalidate_script: redis::Script,
}

/// `KEYS[1]` key, `ARGV` version, payload, ttl in ms. Values are `"{version}|{payload}"`,
/// tombstones `"!{version}"`.
const FILL: &str = r"
local cur = redis.call('GET', KEYS[1])
local v = tonumber(ARGV[1])
if cur then
  if string.sub(cur, 1, 1) == '!' then
    if v < tonumber(string.sub(cur, 2)) then return 0 end
  else
    local sep = string.find(cur, '|', 1, true)
    if sep and v <= tonumber(string.sub(cur, 1, sep - 1)) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1
";

/// `KEYS` keys, `ARGV[1]` ttl in ms, `ARGV[i+1]` the new version of `KEYS[i]`.
const INVALIDATE: &str = r"
for i, key in ipairs(KEYS) do
  local v = tonumber(ARGV[i + 1])
  local cur = redis.call('GET', key)
  if cur and string.sub(cur, 1, 1) == '!' and tonumber(string.sub(cur, 2)) > v then
    v = tonumber(string.sub(cur, 2))
  end
  redis.call('SET', key, '!' .. v, 'PX', ARGV[1])
end
return #KEYS
";

impl RedisCache {
    /// A cache at `url` (`redis://host:port/db`). Connects lazily, so a Redis that is down now
    /// does not stop the application; every call gives up after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::Config(format!("redis url '{}': {e}", redact_url(url))).without_password_of(url))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = client
            .get_connection_manager_lazy(config)
            .map_err(|e| Error::Config(format!("redis url '{}': {e}", redact_url(url))).without_password_of(url))?;
        Ok(RedisCache {
            manager,
            timeout,
            fill_script: redis::Script::new(FILL),
            invalidate_script: redis::Script::new(INVALIDATE),
        })
    }

    async fn bounded<T>(&self, action: &str, fut: impl Future<Output = redis::RedisResult<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::cache(action, e)),
            Err(_) => Err(Error::cache(action, format!("no answer within {:?}", self.timeout))),
        }
    }
}

#[async_trait]
impl CacheStore for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut con = self.manager.clone();
        let raw: Option<Vec<u8>> = self
            .bounded("reading a cached row", redis::cmd("GET").arg(key).query_async(&mut con))
            .await?;
        Ok(raw.and_then(|raw| {
            if raw.first() == Some(&b'!') {
                return None;
            }
            let sep = raw.iter().position(|&b| b == b'|')?;
            Some(raw[sep + 1..].to_vec())
        }))
    }

    async fn fill(&self, key: &str, version: i64, payload: &[u8], ttl: Duration) -> Result<()> {
        let mut con = self.manager.clone();
        let mut call = self.fill_script.key(key);
        call.arg(version).arg(payload).arg(ttl.as_millis().max(1) as u64);
        self.bounded("filling the cache", call.invoke_async::<i64>(&mut con))
            .await
            .map(|_| ())
    }

    async fn invalidate(&self, keys: &[(String, i64)], ttl: Duration) -> Result<()> {
        // Bounded batches keep each script call short. A write may wait longer for its
        // invalidation than a read waits for the cache: a failure leaves work for sync.
        let limit = (self.timeout * 4).max(Duration::from_secs(1));
        for chunk in keys.chunks(INVALIDATE_BATCH) {
            let mut con = self.manager.clone();
            let mut call = self.invalidate_script.prepare_invoke();
            call.arg(ttl.as_millis().max(1) as u64);
            for (key, version) in chunk {
                call.key(key).arg(*version);
            }
            match tokio::time::timeout(limit, call.invoke_async::<i64>(&mut con)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Error::cache("invalidating cached rows", e)),
                Err(_) => return Err(Error::cache("invalidating cached rows", format!("no answer within {limit:?}"))),
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<Duration> {
        let mut con = self.manager.clone();
        let start = Instant::now();
        let _: String = self.bounded("pinging", redis::cmd("PING").query_async(&mut con)).await?;
        Ok(start.elapsed())
    }
}
