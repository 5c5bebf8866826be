//! The `_secs` and `_ms` keys: a whole number in the key's unit, as before, or a duration with
//! units parsed by `humantime` (`"5m"`, `"1h 30m"`, `"250ms"`). A duration that is not a whole
//! number of the key's unit is refused rather than rounded.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(InUnit(Unit::Seconds))
}

pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(InUnit(Unit::Millis))
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Millis => "milliseconds",
        }
    }

    fn nanos(self) -> u128 {
        match self {
            Unit::Seconds => 1_000_000_000,
            Unit::Millis => 1_000_000,
        }
    }
}

fn in_unit(text: &str, unit: Unit) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    let duration: Duration = humantime::parse_duration(text).map_err(|e| {
        format!(
            "{e}: expected a number of {} or a duration such as `90s`, `5m`, `1h 30m`",
            unit.name()
        )
    })?;
    let nanos = duration.as_nanos();
    if !nanos.is_multiple_of(unit.nanos()) {
        return Err(format!("not a whole number of {}", unit.name()));
    }
    u64::try_from(nanos / unit.nanos()).map_err(|_| "too long".to_owned())
}

struct InUnit(Unit);

impl Visitor<'_> for InUnit {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a number of {} or a duration such as `5m`",
            self.0.name()
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("a duration cannot be negative ({v})")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        in_unit(v, self.0).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_in_the_keys_unit() {
        let s = |t: &str| in_unit(t, Unit::Seconds);
        let ms = |t: &str| in_unit(t, Unit::Millis);
        assert_eq!(s("300"), Ok(300));
        assert_eq!(s("5m"), Ok(300));
        assert_eq!(s("1h 30m"), Ok(5_400));
        assert_eq!(s("2days"), Ok(172_800));
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("5s"), Ok(5_000));
        assert_eq!(ms(" 100 "), Ok(100));
        assert_eq!(s("1.5m"), Ok(90));
        for bad in ["1500ms", "1.5s", "", "-1s", "5 parsecs", "ten"] {
            assert!(s(bad).is_err(), "{bad:?} accepted as seconds");
        }
        assert!(
            ms("1us")
                .unwrap_err()
                .contains("whole number of milliseconds")
        );
        assert!(s("99999999999999999999999y").is_err());
    }
}
